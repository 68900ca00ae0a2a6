"""Tests for the point generators of ``inrnet.sampling.points``."""

import functools
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import erf

from inrnet import PointSet, _limits
from inrnet.sampling import grid, grid_axes, halton, shrunk, sobol, uniform
from inrnet.sampling.points import check_count, total_memory

GENERATORS = {"sobol": sobol, "halton": halton, "uniform": uniform, "shrunk": shrunk}

# --------------------------------------------------------------------------------------
# QMC integration: analytic integrands over [-1, 1]^d with known integrals
# --------------------------------------------------------------------------------------
BUMP_CENTRE = (0.1, -0.2, 0.3)
BUMP_SIGMA = 0.5


def _integrand(name: str, x: torch.Tensor) -> torch.Tensor:
    """f(x) for x (Tensor[N, d]) -> Tensor[N]."""
    if name == "prod_cos":
        return torch.cos(x).prod(-1)
    if name == "exp_sum":
        return torch.exp(x.sum(-1))
    c = x.new_tensor(BUMP_CENTRE[: x.shape[1]])
    return torch.exp(-((x - c) ** 2).sum(-1) / (2 * BUMP_SIGMA**2))


def _integral(name: str, d: int) -> float:
    """The exact integral of :func:`_integrand` over [-1, 1]^d."""
    if name == "prod_cos":
        return (2 * math.sin(1.0)) ** d
    if name == "exp_sum":
        return (math.e - 1 / math.e) ** d
    s = BUMP_SIGMA * math.sqrt(2)
    return math.prod(BUMP_SIGMA * math.sqrt(math.pi / 2) * (erf((1 - c) / s) - erf((-1 - c) / s))
                     for c in BUMP_CENTRE[:d])


LOG2_N = np.arange(8, 17)  # N = 2^8 ... 2^16
INTEGRANDS = ("prod_cos", "exp_sum", "bump")
QMC_SEEDS = {"sobol": range(8), "halton": range(8), "uniform": range(16)}


@functools.cache
def _mean_errors(generator: str, d: int) -> dict[str, np.ndarray]:
    """Seed-averaged absolute integration errors, one per N, for every integrand.

    Uses the prefix property: the first 2^k points of one 2^16-point draw are the
    2^k-point set (for Monte Carlo a prefix of i.i.d. points is i.i.d.).
    """
    seeds = QMC_SEEDS[generator]
    errors = {name: np.zeros((len(seeds), len(LOG2_N))) for name in INTEGRANDS}
    for a, seed in enumerate(seeds):
        x = GENERATORS[generator](2 ** int(LOG2_N[-1]), d, seed=seed, dtype=torch.float64)  # (N_max, d)
        for name in INTEGRANDS:
            partial = torch.cumsum(_integrand(name, x), 0)  # running sums, (N_max,)
            for b, k in enumerate(LOG2_N):
                estimate = 2.0**d * partial[2**k - 1].item() / 2**k  # volume * mean
                errors[name][a, b] = abs(estimate - _integral(name, d))
    return {name: e.mean(0) for name, e in errors.items()}


def _slope(errors: np.ndarray) -> float:
    """Least-squares slope of log(error) against log(N)."""
    return float(np.polyfit(LOG2_N * math.log(2), np.log(errors), 1)[0])


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", INTEGRANDS)
def test_qmc_converges_faster_than_monte_carlo(name, d):
    # Slopes measured over 20 disjoint sets of 8 seeds for each integrand and d:
    # Sobol -1.29 .. -2.69, Halton -0.86 .. -1.09, Monte Carlo -0.34 .. -0.64.
    sobol_err, halton_err, mc_err = (_mean_errors(g, d)[name] for g in ("sobol", "halton", "uniform"))
    assert -0.75 < _slope(mc_err) < -0.25, _slope(mc_err)
    assert _slope(sobol_err) < -1.0, _slope(sobol_err)
    assert _slope(halton_err) < -0.75, _slope(halton_err)
    assert sobol_err[-1] < 0.1 * mc_err[-1]
    assert halton_err[-1] < 0.1 * mc_err[-1]


def test_integrand_reference_values():
    # The exact integrals themselves, checked against a fine midpoint rule.
    x = grid((400, 400), dtype=torch.float64)  # (160000, 2)
    for name in INTEGRANDS:
        midpoint = 4.0 * _integrand(name, x).mean().item()
        assert midpoint == pytest.approx(_integral(name, 2), rel=1e-5)


# --------------------------------------------------------------------------------------
# Range, determinism, prefix
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_points_lie_in_the_box_with_the_right_shape(name, d):
    x = GENERATORS[name](1000, d, seed=3)
    assert x.shape == (1000, d) and x.dtype == torch.float32
    assert bool(((x >= -1) & (x <= 1)).all())
    assert x.unique(dim=0).shape[0] == 1000


@pytest.mark.parametrize("name", list(GENERATORS))
def test_points_fill_the_box(name):
    # Every coordinate spreads over the whole interval: each of 8 bins gets points.
    x = GENERATORS[name](512, 3, seed=0)
    for k in range(3):
        counts = torch.histc(x[:, k], bins=8, min=-1, max=1)
        assert bool((counts > 0).all())


@pytest.mark.parametrize("name", list(GENERATORS))
def test_same_seed_same_points_different_seed_different_points(name):
    gen = GENERATORS[name]
    assert torch.equal(gen(64, 2, seed=7), gen(64, 2, seed=7))
    assert not torch.equal(gen(64, 2, seed=7), gen(64, 2, seed=8))
    assert not torch.equal(gen(64, 2), gen(64, 2))  # seed=None: a fresh draw each time


def test_seed_none_leaves_global_rng_alone():
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    for gen in GENERATORS.values():
        gen(16, 2)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)


@pytest.mark.parametrize("name", ["sobol", "halton", "shrunk", "uniform"])
@pytest.mark.parametrize("m, n", [(1, 7), (64, 256), (100, 1000), (256, 256)])
def test_prefix_property(name, m, n):
    gen = GENERATORS[name]
    assert torch.equal(gen(m, 3, seed=11), gen(n, 3, seed=11)[:m])


def test_sobol_power_of_two_is_stratified():
    # A scrambled Sobol (0, m, 2) net: 2^8 points put exactly one point in each of
    # the 16 x 16 cells of side 1/8 (and in every 2^a x 2^b cell with a + b = 8).
    u = (sobol(256, 2, seed=5, dtype=torch.float64) + 1) / 2  # (256, 2) in [0, 1)
    for a in range(9):
        cell = (torch.floor(u[:, 0] * 2**a) * 2 ** (8 - a) + torch.floor(u[:, 1] * 2 ** (8 - a))).long()
        assert torch.equal(torch.bincount(cell, minlength=256), torch.ones(256, dtype=torch.long))


def test_shrunk_is_sobol_times_abs():
    x = sobol(300, 2, seed=4, dtype=torch.float64)
    torch.testing.assert_close(shrunk(300, 2, seed=4, dtype=torch.float64), x * x.abs(), rtol=0, atol=0)
    # pulled towards the centre: more points in the central quarter than uniform would put there
    y = shrunk(4096, 2, seed=4)
    assert float((y.abs() <= 0.5).all(-1).float().mean()) > 0.45


def test_dtype_and_device_arguments():
    for gen in GENERATORS.values():
        assert gen(8, 2, seed=0, dtype=torch.float64, device="cpu").dtype == torch.float64
    assert grid((2, 2), dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_bad_counts_raise(bad):
    for gen in GENERATORS.values():
        with pytest.raises(ValueError, match="number of points"):
            gen(bad, 2, seed=0)
        with pytest.raises(ValueError, match="dimension"):
            gen(4, bad, seed=0)


SIZE = r"(?:\d{1,3}(?:,\d{3})*)"  # 1,234,567


@pytest.mark.parametrize("make, n", [
    (lambda: grid((10**6, 10**6)), "1,000,000,000,000"),
    (lambda: PointSet.grid((10**6, 10**6)), "1,000,000,000,000"),
    (lambda: sobol(10**13, 2), "10,000,000,000,000"),
    (lambda: halton(10**13, 2), "10,000,000,000,000"),
    (lambda: uniform(10**13, 2), "10,000,000,000,000"),
    (lambda: shrunk(10**13, 2), "10,000,000,000,000"),
])
def test_absurd_sizes_are_refused_before_allocating(make, n):
    limit, _ = total_memory()
    with pytest.raises(ValueError, match=rf"{n} points in 2 dimensions need {SIZE} bytes \([\d.]+ TiB\) of float64 "
                                         rf"coordinates, more than the {limit:,} bytes .* of memory of this machine"):
        make()


def test_check_count_compares_with_the_device_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=2**20))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert total_memory("cuda:3") == (2**20, "cuda:3") and total_memory("cuda")[1] == "cuda:0"
    check_count(2**16, 2, dtype=torch.float32, device="cuda")  # 512 KiB of float32 fits in 1 MiB
    with pytest.raises(ValueError, match=r"262,144 points in 2 dimensions need 2,097,152 bytes \(2.0 MiB\) of "
                                         r"torch.float32 coordinates, more than the 1,048,576 bytes \(1.0 MiB\) of "
                                         r"memory of cuda:0; use fewer points"):
        check_count(2**18, 2, dtype=torch.float32, device="cuda")
    check_count(2**18, 2, dtype=torch.float32)  # the CPU only needs the machine's memory


def test_total_memory_of_the_machine(monkeypatch):
    assert total_memory("cpu")[0] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(_limits, "total_memory", lambda device=None: (64 * 2**30, "this machine"))
    with pytest.raises(ValueError, match=r"160,000,000,000 bytes \(149.0 GiB\) of float64 .* 68,719,476,736 bytes"):
        grid((100_000, 100_000))


# --------------------------------------------------------------------------------------
# Grid: exact values, ordering
# --------------------------------------------------------------------------------------
def test_grid_2x3_by_hand():
    expected = torch.tensor([[-0.5, -2 / 3], [-0.5, 0.0], [-0.5, 2 / 3],
                             [0.5, -2 / 3], [0.5, 0.0], [0.5, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(grid((2, 3), dtype=torch.float64), expected, rtol=0, atol=1e-15)


def test_grid_1d_odd_and_even_by_hand():
    torch.testing.assert_close(grid((3,), dtype=torch.float64)[:, 0],
                               torch.tensor([-2 / 3, 0.0, 2 / 3], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(grid(4, dtype=torch.float64)[:, 0],
                               torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(grid((1,), dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))


def test_grid_2x2x2_by_hand():
    expected = torch.tensor([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)],
                            dtype=torch.float64)
    torch.testing.assert_close(grid((2, 2, 2), dtype=torch.float64), expected, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1,), (5,), (4, 7), (3, 1, 2), (2, 3, 4, 5)])
def test_grid_matches_flatten_order_and_cell_centres(shape):
    x = grid(shape, dtype=torch.float64)  # (prod(shape), d)
    assert x.shape == (math.prod(shape), len(shape))
    # Row r is the centre of the cell tensor.flatten()[r]: recover each axis index from
    # a tensor that stores its own multi-index and compare with the coordinates.
    for k, n in enumerate(shape):
        index = torch.arange(n).reshape([n if a == k else 1 for a in range(len(shape))]).expand(shape)
        centre = -1 + (2 * index.flatten().double() + 1) / n  # (prod(shape),)
        torch.testing.assert_close(x[:, k], centre, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 28, 224])
def test_grid_axes_cell_centres(n):
    (axis,) = grid_axes((n,), dtype=torch.float64)
    edges = torch.linspace(-1, 1, n + 1, dtype=torch.float64)
    torch.testing.assert_close(axis, (edges[:-1] + edges[1:]) / 2, rtol=0, atol=1e-15)
    torch.testing.assert_close(grid(n, dtype=torch.float64)[:, 0], axis, rtol=0, atol=0)


def test_grid_symmetric_about_zero():
    x = grid((5, 6), dtype=torch.float64)
    torch.testing.assert_close(x.flip(0), -x, rtol=0, atol=1e-15)


@pytest.mark.parametrize("bad", [(), (0,), (3, -1), (2.0, 2), (True, 2)])
def test_bad_grid_shapes_raise(bad):
    with pytest.raises(ValueError, match="grid shape"):
        grid(bad)
