"""Smooth INRs: certified Lipschitz bounds hold and are tight where they can be; Liu and K-Lipschitz fits."""

import math

import pytest
import torch

from inrnet.inr import FourierFamily, FunctaFamily, INRDataset, PixelFamily, SirenFamily, build_dataset, fit, save_inrs
from inrnet.inr.smoothness import (DEFAULT_MARGIN, KLipschitz, LiuRegularizer, allocate, empirical_lipschitz,
                                   estimate_budget, fourier_embedding_bound, image_lipschitz, liu_init, liu_weights,
                                   project, project_to_budget)
from inrnet.sampling import grid

SIREN = SirenFamily(2, 1, width=16, depth=3, omega_0=30.0, first_omega_0=30.0)
FOURIER = FourierFamily(2, 1, features=8, sigma=2.0, width=16, depth=3)


def _points(n: int = 4096, seed: int = 0, extent: float = 1.2) -> torch.Tensor:
    """The 48 x 48 grid plus ``n`` random points in ``[-extent, extent]^2``, float64 Tensor[48^2 + n, 2]."""
    g = torch.Generator().manual_seed(seed)
    rand = extent * (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
    return torch.cat([grid((48, 48), dtype=torch.float64), rand])


def _images(n: int = 3, size: int = 10, seed: int = 0) -> torch.Tensor:
    """Blurred random images with a sharp bar: Tensor[n, 1, size, size] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    x[:, :, :, size // 2] = 1.0
    return x.clamp(0, 1)


# --- the bounds hold, and are tight where they can be ---


@pytest.mark.parametrize("family", [SirenFamily(2, 3, width=16, depth=4), SirenFamily(3, 1, width=8, depth=2),
                                    FourierFamily(2, 2, features=8, sigma=2.0, width=16, depth=3),
                                    FourierFamily(1, 1, features=4, sigma=1.0, width=8, depth=1)],
                         ids=["siren-3ch", "siren-3d", "fourier-2ch", "fourier-1layer"])
def test_bound_holds_for_random_inrs(family):
    params = family.init_params(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bound = family.lipschitz_bound(params)
    g = torch.Generator().manual_seed(2)
    points = 1.2 * (2 * torch.rand(6000, family.in_features, generator=g, dtype=torch.float64) - 1)
    emp = empirical_lipschitz(family, params, points)
    assert bound.dtype == torch.float64 and bound.shape == (4,)
    assert bool((emp > 0).all()) and bool((emp <= bound * (1 + 1e-9)).all()), (emp, bound)


def test_bound_holds_for_fitted_inrs():
    images = _images()
    points = _points()
    for family in (SIREN, FOURIER):
        for option in (None, LiuRegularizer(1e-3), KLipschitz(allocation="uniform")):
            inrs, quality = fit(images, family, steps=30, lr=3e-3, progress=False, lipschitz=option)
            emp = empirical_lipschitz(family, inrs.params, points)
            torch.testing.assert_close(quality["lipschitz_bound"], family.lipschitz_bound(inrs.params))
            assert bool((emp <= quality["lipschitz_bound"] * (1 + 1e-6)).all()), (family, option, emp, quality)


def test_bound_is_exact_on_one_sine_unit_and_one_fourier_feature():
    """SIREN 2 -> 1 -> 1: f = w1 sin(omega w0 . x + b0) + b1, constant omega |w0| |w1| (|cos| reaches 1);
    Fourier, one feature, one layer: f = a cos(2 pi b . x) + c sin(2 pi b . x), constant 2 pi |b| |(a, c)|.
    The dense maximum of the gradient norm comes within 0.1% of the bound."""
    siren = SirenFamily(2, 1, width=1, depth=2, omega_0=30.0, first_omega_0=10.0)
    f64 = torch.float64
    p = {"weight0": torch.tensor([[[0.3, -0.4]]], dtype=f64), "bias0": torch.tensor([[0.2]], dtype=f64),
         "weight1": torch.tensor([[[-1.5]]], dtype=f64), "bias1": torch.tensor([[0.1]], dtype=f64)}
    fourier = FourierFamily(2, 1, features=1, sigma=1.0, width=8, depth=1)
    q = {"freq": torch.tensor([[[0.7, 1.1]]], dtype=f64), "weight0": torch.tensor([[[0.8, -0.6]]], dtype=f64),
         "bias0": torch.tensor([[0.3]], dtype=f64)}
    points = _points(20000, extent=1.0)
    for family, params, exact in ((siren, p, 10.0 * 0.5 * 1.5), (fourier, q, 2 * math.pi * math.hypot(0.7, 1.1))):
        bound = float(family.lipschitz_bound(params))
        emp = float(empirical_lipschitz(family, params, points))
        assert bound == pytest.approx(exact, rel=1e-12)
        assert bound / 1.001 <= emp <= bound * (1 + 1e-12), (family, emp, bound)


def test_fourier_embedding_constant_is_two_pi_sigma_max_without_sqrt2():
    """[cos(2 pi B x), sin(2 pi B x)] has J^T J = 4 pi^2 B^T B everywhere: the constant is 2 pi ||B||_2."""
    freq = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.rand(5, 3, dtype=torch.float64).requires_grad_()

    def embed(y):  # (3,) -> (12,)
        phase = 2 * math.pi * freq[0] @ y
        return torch.cat([phase.cos(), phase.sin()])

    want = 2 * math.pi * torch.linalg.matrix_norm(freq[0], ord=2)
    for y in x:
        jac = torch.autograd.functional.jacobian(embed, y)  # (12, 3)
        torch.testing.assert_close(torch.linalg.matrix_norm(jac, ord=2), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(fourier_embedding_bound(freq)[0], want)


def test_functa_and_pixel_bounds():
    functa = FunctaFamily(2, 1, width=8, depth=3, latent_dim=4)
    functa = functa.with_shared(functa.random_base(generator=torch.Generator().manual_seed(0)))
    latent = {"latent": torch.randn(3, 4, generator=torch.Generator().manual_seed(1))}
    bound = functa.lipschitz_bound(latent)
    assert torch.equal(bound, bound[:1].expand(3))  # shifts move phases, not slopes
    assert bool((empirical_lipschitz(functa, latent, _points()) <= bound).all())
    values = {"values": torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)}
    linear = PixelFamily((7, 5), 1, "linear")
    bound = linear.lipschitz_bound(values)
    emp = empirical_lipschitz(linear, values, _points(40000, extent=1.0))
    assert bool((emp <= bound * (1 + 1e-9)).all()) and bool((emp >= 0.97 * bound).all()), (emp, bound)
    nearest = PixelFamily((7, 5), 1, "nearest")
    flat = {"values": torch.cat([values["values"][:1], torch.full((1, 1, 7, 5), 0.5, dtype=torch.float64)])}
    assert nearest.lipschitz_bound(flat).tolist() == [math.inf, 0.0]


# --- the budget estimate ---


def test_budget_estimate_of_a_linear_ramp_is_its_slope():
    x = grid((9, 12), dtype=torch.float64)  # (108, 2) cell centres
    ramp = (0.3 * x[:, 0] - 0.2 * x[:, 1] + 0.5).reshape(1, 1, 9, 12)
    assert float(image_lipschitz(ramp)) == pytest.approx(math.hypot(0.3, 0.2), rel=1e-12)
    two = torch.stack([0.3 * x[:, 0] - 0.2 * x[:, 1], 0.1 * x[:, 1]]).reshape(1, 2, 9, 12)  # Jacobian [[.3, -.2], [0, .1]]
    want = torch.linalg.matrix_norm(torch.tensor([[0.3, -0.2], [0.0, 0.1]], dtype=torch.float64), ord=2)
    assert float(image_lipschitz(two)) == pytest.approx(float(want), rel=1e-12)
    cube = grid((4, 5, 6), dtype=torch.float64)
    ramp3 = (cube @ torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)).reshape(1, 1, 4, 5, 6)
    assert float(estimate_budget(ramp3, margin=2.0)) == pytest.approx(6.0, rel=1e-12)
    step = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    step[..., 2:] = 1.0  # one jump of 1 over a pixel spacing of 2/4: slope 2
    assert float(image_lipschitz(step)) == pytest.approx(2.0)
    assert float(image_lipschitz(torch.ones(1, 3, 1, 6))) == 0.0


def test_fit_estimates_the_budget_in_the_family_units():
    images = _images(2)
    for family in (SIREN, FOURIER):
        scale = family.value_range[1] - family.value_range[0]
        inrs, quality = fit(images, family, steps=20, lr=3e-3, progress=False, lipschitz=KLipschitz(margin=1.0))
        budget = scale * image_lipschitz(images)
        assert bool((quality["lipschitz_bound"] <= budget * (1 + 1e-5)).all()), (quality, budget)
    assert DEFAULT_MARGIN == 4.0


# --- Liu et al. ---


def test_liu_normalisation_caps_every_row():
    params = SIREN.init_params(2, generator=torch.Generator().manual_seed(0))
    c = liu_init(SIREN, params)  # (2, 3): softplus(c) = the initial max-norms
    torch.testing.assert_close(liu_weights(SIREN, params, c)["weight1"], params["weight1"])  # at init: untouched
    c = c - 1.0
    out = liu_weights(SIREN, params, c)
    for i, (name, factor) in enumerate(SIREN.lipschitz_layers()):
        rows = factor * out[name].abs().sum(-1)  # (2, out)
        cap = torch.nn.functional.softplus(c[:, i])
        assert bool((rows <= cap[:, None] * (1 + 1e-6)).all())
        assert torch.allclose(rows.amax(1), cap, rtol=1e-5)  # the largest row sits on the cap
        assert torch.equal(out[name.replace("weight", "bias")], params[name.replace("weight", "bias")])


def test_liu_larger_alpha_gives_smoother_inrs():
    images = _images(3, 12)
    points = _points()
    for family in (SIREN, FOURIER):
        results = []
        for option in (None, LiuRegularizer(1e-4), LiuRegularizer(1e-2)):
            inrs, quality = fit(images, family, steps=60, lr=3e-3, progress=False, lipschitz=option)
            results.append((quality["lipschitz_bound"], empirical_lipschitz(family, inrs.params, points)))
        (b_plain, e_plain), (b_small, e_small), (b_large, e_large) = results
        assert bool((b_large < b_small).all()) and bool((b_large < b_plain).all()), results
        assert bool((e_large < e_small).all()) and bool((e_large < e_plain).all()), results


def test_liu_stores_the_effective_weights():
    """The stored INR is an ordinary family INR: its bound is from the normalised weights, and it
    evaluates the same when saved and reloaded."""
    images = _images(2)
    inrs, quality = fit(images, SIREN, steps=10, progress=False, lipschitz=LiuRegularizer(1e-3))
    torch.testing.assert_close(quality["lipschitz_bound"], SIREN.lipschitz_bound(inrs.params))
    assert all(not v.requires_grad for v in inrs.params.values())


# --- K-Lipschitz ---


@pytest.mark.parametrize("allocation", ["uniform", "nonuniform", "adaptive"])
def test_k_lipschitz_fit_keeps_the_budget(allocation):
    images = _images(2)
    for family in (SIREN, FOURIER):
        for budget in (5.0, 60.0):
            _, quality = fit(images, family, steps=25, lr=1e-2, progress=False,
                             lipschitz=KLipschitz(budget=budget, allocation=allocation))
            assert bool((quality["lipschitz_bound"] <= budget * (1 + 1e-5)).all()), (family, budget, quality)


def test_allocations_multiply_to_the_budget_and_projections_reach_them():
    for family in (SIREN, FOURIER):
        params = family.init_params(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        budget = torch.tensor([0.5, 3.0, 40.0], dtype=torch.float64)
        for allocation in ("uniform", "nonuniform"):
            caps = allocate(family, params, budget, allocation)  # (3, L)
            torch.testing.assert_close(family.embedding_lipschitz(params) * caps.prod(1), budget)
            moved = {k: v.clone() for k, v in params.items()}
            project(family, moved, caps)
            assert bool((family.lipschitz_bound(moved) <= budget * (1 + 1e-9)).all())
        uniform = allocate(family, params, budget, "uniform")
        assert torch.allclose(uniform, uniform[:, :1].expand_as(uniform))
        moved = {k: v.clone() for k, v in params.items()}
        project_to_budget(family, moved, budget)
        before, after = family.lipschitz_bound(params), family.lipschitz_bound(moved)
        torch.testing.assert_close(after, torch.minimum(before, budget))  # only INRs over budget move, onto it


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="alpha"):
        LiuRegularizer(-1.0)
    with pytest.raises(ValueError, match="lr"):
        LiuRegularizer(1.0, lr=0.0)
    for budget in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="budget"):
            KLipschitz(budget=budget)
    with pytest.raises(ValueError, match="allocation"):
        KLipschitz(allocation="layerwise")
    with pytest.raises(ValueError, match="margin"):
        KLipschitz(margin=0.0)
    with pytest.raises(ValueError, match="margin"):
        KLipschitz(budget=3.0, margin=2.0)
    with pytest.raises(ValueError, match="margin"):
        estimate_budget(_images(1), margin=-1.0)
    with pytest.raises(ValueError, match="allocation"):
        allocate(SIREN, SIREN.init_params(1), 1.0, "spectral")
    with pytest.raises(ValueError, match="lipschitz"):
        fit(_images(1), SIREN, steps=1, progress=False, lipschitz="liu")
    with pytest.raises(ValueError, match="PixelFamily"):
        fit(_images(1), PixelFamily((10, 10), 1, "linear"), steps=1, progress=False, lipschitz=LiuRegularizer(1.0))


# --- the defaults are unchanged, and the bound is stored ---


def test_plain_fit_is_unchanged():
    """``lipschitz=None`` is the plain fit, bit for bit; and the plain fit still gives the parameters it gave
    before the option existed (sums measured with the code before it, same seed)."""
    images = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    siren = SirenFamily(2, 1, width=8, depth=3)
    fourier = FourierFamily(2, 1, features=4, sigma=1.0, width=8, depth=2)
    before = {"siren": {"weight0": [0.378275, 0.056069], "bias0": [-0.080811, -0.943786],
                        "weight1": [-0.092514, 0.103634], "weight2": [0.184331, 0.066952],
                        "bias2": [0.244113, -0.036999]},
              "fourier": {"freq": [-6.394208, 2.887658], "weight0": [-0.117642, -0.999439],
                          "weight1": [1.156073, 0.03918], "bias1": [-0.106039, 0.198061]}}
    psnr = {"siren": [12.037216186523438, 13.149749755859375], "fourier": [7.7236738204956055, 8.43344497680664]}
    for family in (siren, fourier):
        a, qa = fit(images, family, steps=5, lr=1e-2, progress=False)
        b, qb = fit(images, family, steps=5, lr=1e-2, progress=False, lipschitz=None)
        assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
        assert all(torch.equal(qa[k], qb[k]) for k in qa)
        for k, sums in before[family.name].items():
            torch.testing.assert_close(a.params[k].double().flatten(1).sum(1), torch.tensor(sums, dtype=torch.float64),
                                       rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(qa["psnr_grid"], torch.tensor(psnr[family.name]), rtol=1e-4, atol=1e-3)
        assert set(qa) == {"psnr_grid", "psnr_offgrid", "lipschitz_bound"}


def test_the_bound_is_stored_and_old_datasets_load(tmp_path):
    images = _images(5)
    source = [(img, torch.tensor(i)) for i, img in enumerate(images)]
    ds = build_dataset(tmp_path / "built", source, SIREN, shard_size=2, progress=False,
                       fit_kwargs={"steps": 5, "lipschitz": KLipschitz(budget=20.0)})
    inrs, _ = ds.batch(range(5))
    torch.testing.assert_close(ds.quality["lipschitz_bound"], SIREN.lipschitz_bound(inrs.params))
    assert bool((ds.quality["lipschitz_bound"] <= 20.0 * (1 + 1e-5)).all())
    # a dataset written before the bound existed (no quality.lipschitz_bound) still opens and reads
    save_inrs(tmp_path / "old", inrs, torch.arange(5), quality={"psnr_grid": torch.rand(5)}, shard_size=2)
    old = INRDataset(tmp_path / "old")
    assert set(old.quality) == {"psnr_grid"} and len(old.batch([0, 4])[0]) == 2
