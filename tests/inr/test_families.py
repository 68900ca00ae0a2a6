"""SIREN and Fourier-feature families: batched evaluation against per-INR float64 loops."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from inrnet.inr import (FAMILIES, FourierFamily, FourierFeatures, INRBatch, INRModule, PixelINR, Siren, SirenFamily,
                        family_from_dict, sample)
from inrnet.sampling import sobol


def _siren_ref(fam: SirenFamily, params: dict, b: int, x: torch.Tensor) -> torch.Tensor:
    """INR ``b`` of a SIREN batch at coords [N, d], one F.linear per layer."""
    h = x
    for i in range(fam.depth):
        h = F.linear(h, params[f"weight{i}"][b], params[f"bias{i}"][b])
        if i < fam.depth - 1:
            h = torch.sin((fam.first_omega_0 if i == 0 else fam.omega_0) * h)
    return h


def _fourier_ref(fam: FourierFamily, params: dict, b: int, x: torch.Tensor) -> torch.Tensor:
    """INR ``b`` of a Fourier-feature batch at coords [N, d], frequency by frequency."""
    freq = params["freq"][b]
    feats = [torch.cos(2 * math.pi * (x @ freq[j])) for j in range(fam.features)]
    feats += [torch.sin(2 * math.pi * (x @ freq[j])) for j in range(fam.features)]
    h = torch.stack(feats, -1)
    for i in range(fam.depth):
        h = F.linear(h, params[f"weight{i}"][b], params[f"bias{i}"][b])
        if i < fam.depth - 1:
            h = torch.relu(h)
    return h


CASES = [
    (SirenFamily(2, 3, width=16, depth=3), _siren_ref),
    (SirenFamily(3, 1, width=8, depth=4, omega_0=10.0, first_omega_0=20.0), _siren_ref),
    (FourierFamily(2, 3, features=6, sigma=2.0, width=16, depth=3), _fourier_ref),
    (FourierFamily(1, 2, features=4, sigma=1.0, width=8, depth=1), _fourier_ref),
]


@pytest.mark.parametrize("family,ref", CASES)
@pytest.mark.parametrize("chunk_size", [1, 3, 8, 64])
def test_batched_equals_per_inr_float64(family, ref, chunk_size):
    b = 7
    params = family.init_params(b, dtype=torch.float64)
    x = sobol(50, family.in_features, seed=1, dtype=torch.float64)
    got = sample(INRBatch(family, params), x, chunk_size=chunk_size).values
    want = torch.stack([ref(family, params, i, x) for i in range(b)])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family,ref", CASES)
def test_per_inr_transform(family, ref):
    params = family.init_params(5, dtype=torch.float64)
    x = sobol(20, family.in_features, seed=2, dtype=torch.float64)
    shifts = 0.1 * torch.randn(5, 1, family.in_features, dtype=torch.float64)
    got = sample(INRBatch(family, params), x, chunk_size=2, transform=lambda c: c + shifts).values
    want = torch.stack([ref(family, params, i, x + shifts[i]) for i in range(5)])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_siren_init_bounds_and_seed():
    fam = SirenFamily(2, 3, width=256, depth=5, omega_0=30.0)
    p = fam.init_params(4, generator=torch.Generator().manual_seed(3))
    assert p["weight0"].abs().max() <= 1 / 2 and p["weight0"].abs().max() > 0.45
    bound = math.sqrt(6 / 256) / 30
    for i in (1, 2, 3, 4):
        w = p[f"weight{i}"]
        assert w.abs().max() <= bound * (1 + 1e-6) and w.abs().max() > 0.95 * bound
        assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.02 * bound
    assert p["bias1"].abs().max() <= 1 / 16
    q = fam.init_params(4, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(p[k], q[k]) for k in p)
    assert not torch.equal(p["weight1"][0], p["weight1"][1])


def test_fourier_freq_is_frozen_and_gaussian():
    fam = FourierFamily(2, 1, features=4096, sigma=3.0, width=4, depth=2)
    assert "freq" not in fam.trainable and "weight0" in fam.trainable
    freq = fam.init_params(1)["freq"]
    assert abs(float(freq.std()) - 3.0) < 0.1
    module = FourierFeatures(2, 1, features=8, width=4, depth=2)
    assert not module.freq.requires_grad and module.weight0.requires_grad


def test_module_batch_round_trip():
    torch.manual_seed(0)
    modules = [Siren(2, 3, width=8, depth=3) for _ in range(3)]
    batch = INRBatch.stack(modules)
    x = sobol(30, 2, seed=0)
    want = torch.stack([m(x) for m in modules]).detach()
    torch.testing.assert_close(sample(batch, x).values, want)
    torch.testing.assert_close(sample(modules, x).values, want)
    torch.testing.assert_close(sample(modules[1], x).values, want[1:2])
    one = batch[1]
    assert isinstance(one, INRModule) and torch.equal(one(x).detach(), want[1])
    torch.testing.assert_close(sample(batch[[2, 0]], x).values, want[[2, 0]])
    torch.testing.assert_close(sample(batch[torch.tensor([True, False, True])], x).values, want[[0, 2]])
    assert len(INRBatch.cat([batch, batch[:2]])) == 5
    assert batch.to(dtype=torch.float64).dtype == torch.float64


def test_a_batch_needs_at_least_one_inr():
    fam = SirenFamily(2, 1, width=8, depth=3)
    batch = INRBatch(fam, fam.init_params(3))
    for empty in ([], torch.tensor([], dtype=torch.long), slice(3, None), torch.zeros(3, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"an INR batch needs at least one INR.*selects none of the 3"):
            batch[empty]
    with pytest.raises(ValueError, match=r"an INR batch needs at least one INR, got parameters \[0, "):
        INRBatch(fam, fam.init_params(0))
    with pytest.raises(ValueError, match="an INR batch needs at least one INR"):
        PixelINR(torch.zeros(0, 1, 4, 4))
    assert len(batch[[2]]) == 1 and len(batch[torch.tensor([True, False, False])]) == 1


def test_module_is_trainable_and_shapes_checked():
    m = Siren(2, 1, width=8, depth=3)
    loss = m(torch.rand(10, 2)).pow(2).sum()
    loss.backward()
    assert m.weight1.grad is not None
    with pytest.raises(ValueError, match=r"\[N, d=2\]"):
        m(torch.rand(10, 3))
    fam = SirenFamily(2, 1, width=8, depth=3)
    bad = fam.init_params(2)
    bad["weight1"] = bad["weight1"][:, :4]
    with pytest.raises(ValueError, match="weight1"):
        INRBatch(fam, bad)
    with pytest.raises(ValueError, match="batch dim"):
        INRBatch(fam, {**fam.init_params(2), "bias0": torch.zeros(3, 8)})
    with pytest.raises(ValueError, match="different families"):
        INRBatch.cat([INRBatch(fam, fam.init_params(1)), INRBatch(SirenFamily(2, 1, 8, 4), SirenFamily(2, 1, 8, 4).init_params(1))])


@pytest.mark.parametrize("family", [f for f, _ in CASES])
def test_registry_rebuilds_from_json(family):
    spec = json.loads(json.dumps(family.to_dict()))
    rebuilt = family_from_dict(spec)
    assert rebuilt == family and type(rebuilt) is type(family)
    assert set(FAMILIES) >= {"siren", "fourier", "pixel"}
    with pytest.raises(ValueError, match="unknown INR family"):
        family_from_dict({"name": "nerf", "config": {}})
    config = {**family.config(), "hidden": 3}
    with pytest.raises(ValueError, match=rf"does not fit INR family '{family.name}' .*'hidden'.*it takes the keys"):
        family_from_dict({"name": family.name, "config": config})


def test_bad_configs():
    with pytest.raises(ValueError, match="depth"):
        SirenFamily(depth=1)
    with pytest.raises(ValueError, match="omega_0"):
        SirenFamily(omega_0=0.0)
    with pytest.raises(ValueError, match="sigma"):
        FourierFamily(sigma=-1.0)
