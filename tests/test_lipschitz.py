"""Certified Lipschitz bounds (inrnet.lipschitz): never below the true constant, close to it where it is known.

Everything runs in float64. The true constants come from dense matrices built the slow,
obvious way: the layer evaluated on one-hot fields.
"""

import math

import pytest
import torch
from torch import nn

from inrnet import Field, PointSet
from inrnet.lipschitz import (adversarial_ratio, certified_accuracy, certified_radius, conv_matrix, field_distance,
                              lipschitz_bound)
from inrnet.models import INRNetClassifier, INRNetSegmenter
from inrnet.neighbors import Support
from inrnet.nn import (AvgPool, BatchNorm, BSplineConv, ChannelMixing, Downsample, GlobalAvgPool, InstanceNorm,
                       MaxPool, MLPConv, Pointwise, Upsample)
from inrnet.sampling import sobol

F64 = torch.float64
SCHUR_FACTOR = 3.0
"""The Schur (and Gram) bounds of a single conv are within this factor of its true 2-norm."""


def _grid(n: int) -> PointSet:
    return PointSet.grid((n, n), dtype=F64)


def _sobol(n: int, seed: int = 0) -> PointSet:
    return PointSet(sobol(n, 2, seed=seed, dtype=F64))


def _probe_matrix(layer: nn.Module, points: PointSet, query: PointSet | None = None,
                  c_in: int | None = None) -> torch.Tensor:
    """The dense weighted matrix of a linear layer, one column per one-hot input field.

    Returns:
        Tensor[M * C_out, N * C_in]: ``sqrt(v_m / w_j) * (layer(e_{j,c}) - layer(0))[m, o]``.
    """
    c_in = layer.in_channels if c_in is None else c_in
    n = points.n
    eye = torch.eye(n * c_in, dtype=F64).view(n * c_in, n, c_in)
    with torch.no_grad():
        kw = {} if query is None else {"query": query}
        out = layer(Field(eye, points), **kw)
        zero = layer(Field(torch.zeros(1, n, c_in, dtype=F64), points), **kw)
    cols = (out.values - zero.values)  # (N * C_in, M, C_out)
    v, w = out.points.weights, points.weights
    a = cols.permute(1, 2, 0) * v.sqrt().view(-1, 1, 1) / w.sqrt().repeat_interleave(c_in).view(1, 1, -1)
    return a.reshape(-1, n * c_in)


def _below(ratio: float, bound: float) -> bool:
    """A measured ratio does not exceed the bound (up to the float64 rounding of the measurement itself)."""
    return ratio <= bound * (1 + 1e-12)


def _norm2(a: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a.detach(), ord=2))


def _random_bn(c: int, seed: int) -> BatchNorm:
    g = torch.Generator().manual_seed(seed)
    bn = BatchNorm(c).double().eval()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g, dtype=F64) * 4 - 2)
        bn.bias.copy_(torch.randn(c, generator=g, dtype=F64))
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=F64))
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=F64) * 2 + 0.1)
    return bn


CONVS = {
    "bspline": lambda: BSplineConv(2, 3, 3, 2 / 8),
    "bspline-stride2": lambda: BSplineConv(2, 4, 3, 2 / 8, stride=2),
    "bspline-basis": lambda: BSplineConv(2, 3, 3, 2 / 8, support_extent="basis"),  # zero kernel at the edge
    "bspline-basis-deg2": lambda: BSplineConv(2, 3, 3, 2 / 8, degree=2, support_extent="basis"),
    "bspline-symmetric": lambda: BSplineConv(2, 3, 3, 2 / 8, padding="symmetric"),
    "bspline-groups": lambda: BSplineConv(4, 4, 3, 2 / 8, groups=2),
    "bspline-mean": lambda: BSplineConv(2, 3, 3, 2 / 8, estimator="mean"),
    "mlp-binned": lambda: MLPConv(2, 3, Support((1.5 * 2 / 8,) * 2), n_bins=16),
    "mlp-exact-mean": lambda: MLPConv(2, 3, Support((1.5 * 2 / 8,) * 2), estimator="mean"),
}


@pytest.fixture(params=["grid", "sobol"])
def small_points(request):
    return _grid(8) if request.param == "grid" else _sobol(64)


@pytest.mark.parametrize("kind", list(CONVS))
def test_conv_matrix_matches_the_one_hot_reference(kind, small_points):
    torch.manual_seed(0)
    conv = CONVS[kind]().double()
    assert torch.allclose(conv_matrix(conv, small_points), _probe_matrix(conv, small_points), atol=1e-12)


@pytest.mark.parametrize("kind", list(CONVS))
def test_conv_bound_exact_and_within_the_stated_factor(kind, small_points):
    torch.manual_seed(1)
    conv = CONVS[kind]().double().eval()
    true = _norm2(_probe_matrix(conv, small_points))
    exact = lipschitz_bound(conv, small_points)
    assert exact.layers[0].method == "exact"
    assert exact.total == pytest.approx(true, rel=1e-8) and exact.total >= true
    fast = lipschitz_bound(conv, small_points, exact_max=0).layers[0]  # no SVD: the other bounds
    assert "exact" not in fast.candidates
    for method, value in fast.candidates.items():
        assert value >= true * (1 - 1e-12), method
    assert true <= fast.candidates["schur"] <= SCHUR_FACTOR * true
    assert true <= fast.candidates["gram"] <= fast.candidates["schur"] * (1 + 1e-9)
    if small_points.lattice is not None and conv.padding == "zeros" and conv.estimator == "sum":
        assert true <= fast.candidates["fft"] <= 1.5 * true


def test_conv_linf_bound_is_the_exact_row_sum(small_points):
    torch.manual_seed(2)
    conv = BSplineConv(2, 3, 3, 2 / 8, stride=2).double().eval()
    a = conv_matrix(conv, small_points, weighted=False)
    assert lipschitz_bound(conv, small_points, "linf").total == pytest.approx(float(a.abs().sum(1).max()), rel=1e-8)


def test_fft_bound_tracks_the_true_norm_on_a_larger_grid():
    """On a lattice the polyphase symbol bound is nearly exact, also with a stride, and a BN folded in."""
    torch.manual_seed(3)
    points = _grid(16)
    for stride in (1, 2):
        chain = nn.Sequential(BSplineConv(3, 4, 3, 2 / 16, stride=stride), _random_bn(4, stride)).double().eval()
        true = _norm2(_bn_folded_probe(chain, points))
        lb = lipschitz_bound(chain, points, exact_max=0).layers[0]
        assert lb.name == "0+1" and lb.method == "fft"
        assert true <= lb.factor <= 1.1 * true


def _bn_folded_probe(chain: nn.Sequential, points: PointSet) -> torch.Tensor:
    """The weighted matrix of conv -> frozen BN (its linear part)."""
    conv, bn = chain
    a = _probe_matrix(conv, points)  # rows (m, o)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    m = a.shape[0] // conv.out_channels
    return a * scale.repeat(m).view(-1, 1)


def test_batch_norm_factor_is_exact():
    bn = _random_bn(5, 0).requires_grad_(False)
    points = _sobol(32)
    expected = float((bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)).max())
    for norm in ("l2", "linf"):
        got = lipschitz_bound(bn, points, norm, in_channels=5).total
        assert got == pytest.approx(expected, rel=1e-8) and got >= expected
    c = int((bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)).argmax())  # attained by a change of channel c
    f = torch.randn(1, 32, 5, dtype=F64)
    d = torch.zeros_like(f)
    d[..., c] = 0.1
    with torch.no_grad():
        diff = bn(Field(f + d, points)).values - bn(Field(f, points)).values
    assert float(diff.norm() / d.norm()) == pytest.approx(expected, rel=1e-10)


def test_linear_layer_is_the_exact_spectral_norm():
    torch.manual_seed(4)
    head = nn.Sequential(GlobalAvgPool(), nn.Linear(6, 5)).double().eval()
    points = _sobol(40)
    lb = lipschitz_bound(head, points, in_channels=6)
    svd = float(torch.linalg.svdvals(head[1].weight.detach()).max())
    assert lb.layers[1].factor == pytest.approx(svd, rel=1e-8) and lb.layers[1].factor >= svd
    assert lb.layers[0].factor == pytest.approx(1 / math.sqrt(4.0), rel=1e-8)  # the domain's volume is 4
    # GlobalAvgPool -> Linear is linear: its constant is attained (constant fields), so the bound is exact
    assert adversarial_ratio(head, Field(torch.randn(2, 40, 6, dtype=F64), points), steps=50) == pytest.approx(
        lb.total, rel=1e-6)
    assert lipschitz_bound(head, points, "linf", in_channels=6).layers[1].factor == pytest.approx(
        float(head[1].weight.detach().abs().sum(1).max()), rel=1e-8)


def test_pooling_and_resampling_factors_are_true_bounds():
    """Average pooling: its weighted matrix's exact norm; max pooling, down/upsampling: never exceeded."""
    torch.manual_seed(5)
    points = _grid(8)
    avg = AvgPool(2, 2 / 8).eval()
    true = _norm2(_probe_matrix(avg, points, c_in=1))
    assert lipschitz_bound(avg, points, in_channels=1).total == pytest.approx(true, rel=1e-8)
    assert lipschitz_bound(avg, points, in_channels=1, exact_max=0).total == pytest.approx(true, rel=1e-6)
    for layer in (MaxPool(2, 2 / 8), MaxPool(3, 2 / 8, stride=2, scale=1.5), Downsample(2),
                  nn.Sequential(Downsample(2), Upsample())):
        for norm in ("l2", "linf"):
            bound = lipschitz_bound(layer.eval(), points, norm, in_channels=2).total
            f = Field(torch.randn(3, 64, 2, dtype=F64), points)
            assert _below(adversarial_ratio(layer, f, norm, steps=60, restarts=2), bound)


def _classifier(latent: str, extent: str, seed: int, estimator: str = "sum") -> INRNetClassifier:
    torch.manual_seed(seed)
    model = INRNetClassifier(1, 5, widths=(4, 6), residual_blocks=1, hidden=12, base_resolution=16,
                             latent=latent, support_extent=extent, estimator=estimator).double()
    for m in model.modules():  # frozen statistics that are not the identity
        if isinstance(m, BatchNorm):
            m.load_state_dict(_random_bn(m.num_channels, seed + m.num_channels).state_dict())
    return model.eval()


@pytest.mark.parametrize("latent,extent", [("points", "taps"), ("lattice", "basis"), ("points", "basis")])
@pytest.mark.parametrize("where", ["grid", "sobol"])
def test_classifier_bound_is_never_exceeded(latent, extent, where):
    points = _grid(16) if where == "grid" else _sobol(256, seed=1)
    for seed in range(3):
        model = _classifier(latent, extent, seed)
        for norm in ("l2", "linf"):
            bound = lipschitz_bound(model, points, norm)
            assert bound.total == pytest.approx(math.prod(s.factor for s in bound.layers), rel=1e-12)
            g = torch.Generator().manual_seed(seed)
            f = torch.rand(4, points.n, 1, generator=g, dtype=F64)
            with torch.no_grad():  # random perturbations of every size
                for scale in (1e-3, 1e-1, 10.0):
                    d = torch.randn(f.shape, generator=g, dtype=F64) * scale
                    diff = model(Field(f + d, points)) - model(Field(f, points))
                    if norm == "l2":
                        ratio = diff.norm(dim=1) / (d.square().sum(-1) * points.weights).sum(1).sqrt()
                    else:
                        ratio = diff.abs().amax(1) / d.abs().flatten(1).amax(1)
                    assert _below(float(ratio.max()), bound.total)
            adv = adversarial_ratio(model, Field(f, points), norm, steps=150, restarts=2, seed=seed)
            assert 0 < adv and _below(adv, bound.total)


def test_mean_estimator_bound_holds():
    points = _sobol(256, seed=2)
    model = _classifier("points", "taps", 0, estimator="mean")
    bound = lipschitz_bound(model, points)
    f = Field(torch.rand(2, 256, 1, dtype=F64), points)
    assert _below(adversarial_ratio(model, f, steps=150, restarts=2), bound.total)


def test_adversarial_search_finds_the_constant_of_a_linear_chain():
    """The lower estimate the tests rely on is strong: on a linear chain (conv, BN, conv, pool,
    linear) it reaches the true constant, which the layer-wise bound stays above."""
    torch.manual_seed(6)
    points = _grid(16)
    chain = nn.Sequential(BSplineConv(1, 3, 3, 2 / 16, stride=2), _random_bn(3, 7), BSplineConv(3, 4, 3, 4 / 16),
                          ChannelMixing(4, 4), GlobalAvgPool(), nn.Linear(4, 3)).double().eval()
    eye = torch.eye(256, dtype=F64).view(256, 256, 1)
    with torch.no_grad():
        jac = chain(Field(eye, points)) - chain(Field(torch.zeros(1, 256, 1, dtype=F64), points))  # (N, K)
    true = _norm2(jac.T / points.weights.sqrt())
    adv = adversarial_ratio(chain, Field(torch.rand(2, 256, 1, dtype=F64), points), steps=30)
    bound = lipschitz_bound(chain, points).total
    assert adv == pytest.approx(true, rel=1e-6)
    assert true <= bound


def test_eval_mode_and_unsupported_modules_are_refused():
    points = _sobol(64)
    model = _classifier("points", "taps", 0).train()
    with pytest.raises(ValueError, match="eval"):
        lipschitz_bound(model, points)
    with pytest.raises(TypeError, match=r"1 \(InstanceNorm\)"):
        lipschitz_bound(nn.Sequential(BSplineConv(1, 2, 3, 0.25), InstanceNorm(2)).eval(), points)
    with pytest.raises(TypeError, match="GELU"):
        lipschitz_bound(nn.Sequential(BSplineConv(1, 2, 3, 0.25), Pointwise(nn.GELU())).eval(), points)
    with pytest.raises(TypeError, match="INRNetSegmenter"):
        lipschitz_bound(INRNetSegmenter(1, 2, width=4).eval(), points)
    with pytest.raises(ValueError, match="norm"):
        lipschitz_bound(_classifier("points", "taps", 0), points, norm="l1")


def test_float32_model_and_points_give_the_float64_bound():
    model = _classifier("points", "taps", 0)
    points = _sobol(128)
    b64 = lipschitz_bound(model, points).total
    b32 = lipschitz_bound(model.float(), PointSet(sobol(128, 2, seed=0))).total
    assert b32 == pytest.approx(b64, rel=1e-5)


# --- certificates: radius, certified accuracy, distances ---------------------------------------------------

def _linear_head(weight: torch.Tensor) -> nn.Sequential:
    """GlobalAvgPool -> Linear with the given weight Tensor[K, C]: a linear classifier of fields."""
    k, c = weight.shape
    head = nn.Sequential(GlobalAvgPool(), nn.Linear(c, k)).double().eval()
    with torch.no_grad():
        head[1].weight.copy_(weight)
        head[1].bias.copy_(torch.linspace(-0.3, 0.4, k, dtype=F64))
    return head.requires_grad_(False)


def _norm_of(d: torch.Tensor, points: PointSet, norm: str) -> torch.Tensor:
    """Per-item input norm of perturbations Tensor[B, N, C] (written out, not the library's)."""
    if norm == "linf":
        return d.abs().flatten(1).amax(1)
    return (d.square().sum(-1) * points.weights).sum(1).sqrt()


def _pgd_flips(model: nn.Module, f: torch.Tensor, points: PointSet, radius: torch.Tensor, norm: str,
               steps: int = 40) -> torch.Tensor:
    """Projected gradient ascent on (best other logit - predicted logit) within ``||d|| <= radius`` per
    item (steepest ascent in the weighted geometry); bool Tensor[B]: some iterate changed the class."""
    with torch.no_grad():
        y = model(Field(f, points)).argmax(1)
    r = radius.view(-1, 1, 1)
    d = torch.zeros_like(f)
    flipped = torch.zeros(f.shape[0], dtype=torch.bool)
    for _ in range(steps):
        d.requires_grad_(True)
        z = model(Field(f + d, points))
        flipped |= z.argmax(1) != y
        other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), -math.inf).amax(1)
        (grad,) = torch.autograd.grad((other - z.gather(1, y[:, None])[:, 0]).sum(), d)
        with torch.no_grad():
            if norm == "l2":
                u = grad / points.weights.view(1, -1, 1)  # the gradient in the weighted inner product
                d = d + 0.25 * r * u / _norm_of(u, points, norm).clamp_min(1e-300).view(-1, 1, 1)
                d = d * (r / _norm_of(d, points, norm).clamp_min(1e-300).view(-1, 1, 1)).clamp_max(1.0)
            else:
                d = (d + 0.25 * r * grad.sign()).clamp(-r, r)
    with torch.no_grad():
        flipped |= model(Field(f + d, points)).argmax(1) != y
    return flipped


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_certified_radius_is_the_distance_to_the_decision_boundary_of_a_linear_model(norm):
    """For z = c [u; -u] mean(f) + b the certificate is tight in both norms: a constant perturbation
    just beyond the radius flips the class, one just inside does not (also against the attack)."""
    points = _sobol(64, seed=3)
    u = torch.tensor([0.6, -0.8, 0.5], dtype=F64)
    c = 2.5
    head = _linear_head(c * torch.stack([u, -u]))
    bound = lipschitz_bound(head, points, norm, in_channels=3)
    exact_l = c * (math.sqrt(2) * float(u.norm()) / 2 if norm == "l2" else float(u.abs().sum()))
    assert bound.total == pytest.approx(exact_l, rel=1e-8)
    f = torch.rand(5, 64, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    z = head(Field(f, points))
    y = z.argmax(1)
    radius = certified_radius(z, bound, norm)
    margin = (z[:, 0] - z[:, 1]).abs()
    # (z_k - z_y)(f + d) = (z_k - z_y)(f) + 2 c (+-u) . mean(d): the smallest d that reaches the boundary
    analytic = margin / (2 * c * float(u.norm()) / 2) if norm == "l2" else margin / (2 * c * float(u.abs().sum()))
    torch.testing.assert_close(radius, analytic, rtol=1e-8, atol=0)
    toward = torch.where(y == 0, -1.0, 1.0).view(-1, 1, 1) * u  # (B, 1, C): raises the other logit
    direction = toward / toward.norm(dim=-1, keepdim=True) if norm == "l2" else toward.sign()
    unit = direction.expand(-1, 64, -1) / _norm_of(direction.expand(-1, 64, -1), points, norm).view(-1, 1, 1)
    with torch.no_grad():
        inside = head(Field(f + unit * (radius * (1 - 1e-6)).view(-1, 1, 1), points)).argmax(1)
        beyond = head(Field(f + unit * (radius * (1 + 1e-6)).view(-1, 1, 1), points)).argmax(1)
    assert torch.equal(inside, y) and bool((beyond != y).all())
    assert not bool(_pgd_flips(head, f, points, radius * (1 - 1e-6), norm).any())
    assert bool(_pgd_flips(head, f, points, radius * 1.01, norm).all())  # the attack reaches the boundary


def test_certified_radius_is_exact_for_orthonormal_rows_with_three_classes():
    """W = c Q (orthonormal rows): ||W_k - W_y|| = sqrt(2) ||W||, so margin / (sqrt(2) L) is the exact
    L2 distance min_k (z_y - z_k) / ||W_k - W_y|| * sqrt(sum w) to the decision boundary."""
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(1)))
    c = 3.0
    head = _linear_head(c * q[:3])
    points = _sobol(128, seed=4)
    bound = lipschitz_bound(head, points, in_channels=4)
    assert bound.total == pytest.approx(c / 2, rel=1e-8)
    z = head(Field(torch.rand(6, 128, 4, dtype=F64, generator=torch.Generator().manual_seed(2)), points))
    y = z.argmax(1)
    gaps = (z.gather(1, y[:, None]) - z).masked_fill(torch.nn.functional.one_hot(y, 3).bool(), math.inf)  # (B, K)
    analytic = (gaps / (c * math.sqrt(2))).amin(1) * 2.0  # * sqrt(sum w) = 2: the mean's norm is ||d|| / 2
    torch.testing.assert_close(certified_radius(z, bound), analytic, rtol=1e-8, atol=0)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_no_perturbation_within_the_radius_changes_the_class(norm):
    """A small INR-Net with frozen non-trivial batch norms: random perturbations of exactly the
    radius, and a gradient attack within it, never change the predicted class."""
    points = _sobol(128, seed=5)
    model = _classifier("points", "taps", 1)
    g = torch.Generator().manual_seed(3)
    f = torch.rand(6, 128, 1, generator=g, dtype=F64)
    with torch.no_grad():
        z = model(Field(f, points))
    bound = lipschitz_bound(model, points, norm)
    radius = certified_radius(z, bound, norm)  # (B,)
    assert bool((radius > 0).all())
    for _ in range(8):
        d = torch.randn(f.shape, generator=g, dtype=F64) if norm == "l2" else \
            torch.randint(0, 2, f.shape, generator=g).to(F64) * 2 - 1
        d = d * (radius / _norm_of(d, points, norm)).view(-1, 1, 1) * (1 - 1e-9)
        with torch.no_grad():
            assert torch.equal(model(Field(f + d, points)).argmax(1), z.argmax(1))
    assert not bool(_pgd_flips(model, f, points, radius, norm, steps=25).any())


def test_certified_accuracy_curve():
    g = torch.Generator().manual_seed(4)
    radii = torch.rand(200, generator=g, dtype=F64) ** 3
    correct = torch.rand(200, generator=g) < 0.7
    eps = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-4, 0.5, 40, dtype=F64)])
    curve = certified_accuracy(radii, correct, eps)
    assert curve.shape == eps.shape
    assert bool((curve[1:] <= curve[:-1]).all())  # non-increasing
    assert float(curve[0]) == pytest.approx(float(correct.double().mean()))  # clean accuracy at 0
    assert float(curve[-1]) == 0.0  # beyond every radius
    brute = torch.tensor([sum(bool(c) and float(r) >= float(e) for r, c in zip(radii, correct)) / 200 for e in eps],
                         dtype=F64)
    torch.testing.assert_close(curve, brute)
    assert certified_accuracy(radii, correct, 0.0).shape == ()
    with pytest.raises(ValueError, match="Tensor"):
        certified_accuracy(radii, correct[:10], eps)


def test_field_distance_is_the_bounds_input_norm():
    points = _sobol(96, seed=6)
    model = _classifier("points", "taps", 2)
    g = torch.Generator().manual_seed(5)
    f = Field(torch.rand(4, 96, 1, generator=g, dtype=F64), points)
    h = Field(f.values + 0.05 * torch.randn(4, 96, 1, generator=g, dtype=F64), points)
    d = f.values - h.values
    manual = {"l2": (d.square().sum(-1) * points.weights).sum(1).sqrt(), "linf": d.abs().amax((1, 2))}
    with torch.no_grad():
        change = model(f) - model(h)
    for norm in ("l2", "linf"):
        dist = field_distance(f, h, norm=norm)
        torch.testing.assert_close(dist, manual[norm])
        torch.testing.assert_close(field_distance(f.values, h.values, points, norm), dist)
        bound = lipschitz_bound(model, points, norm)
        out = change.norm(dim=1) if norm == "l2" else change.abs().amax(1)
        assert bool((out <= bound.total * dist * (1 + 1e-12)).all())
        with pytest.raises(ValueError, match="norm"):
            certified_radius(change, bound, "linf" if norm == "l2" else "l2")
    with pytest.raises(ValueError, match="same points"):
        field_distance(f, Field(h.values, _sobol(96, seed=7)))
    with pytest.raises(ValueError, match="points="):
        field_distance(f.values, h.values)
    with pytest.raises(ValueError, match="K >= 2"):
        certified_radius(torch.zeros(3, 1), 1.0)
