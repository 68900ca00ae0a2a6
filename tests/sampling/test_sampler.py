"""Tests for ``inrnet.sampling.Sampler``."""

import pytest
import torch

from inrnet import PointSet, _limits
from inrnet.lightning.data import parse_sampler
from inrnet.sampling import SCHEMES, Sampler, grid, halton, shrunk, sobol, uniform


@pytest.mark.parametrize("scheme", ["sobol", "halton", "shrunk", "mc"])
def test_rescramble_gives_a_fresh_point_set_per_call(scheme):
    sampler = Sampler(scheme, n=128, dim=2, seed=3, rescramble=True)
    first, second = sampler(), sampler()
    assert isinstance(first, PointSet) and first is not second
    assert first.coords.shape == (128, 2) and first.lattice is None
    assert not torch.equal(first.coords, second.coords)
    torch.testing.assert_close(first.weights, torch.full((128,), 4 / 128))


@pytest.mark.parametrize("scheme", ["sobol", "halton", "shrunk", "mc"])
def test_same_seed_replays_the_same_sequence(scheme):
    a = Sampler(scheme, n=64, dim=3, seed=5)
    b = Sampler(scheme, n=64, dim=3, seed=5)
    c = Sampler(scheme, n=64, dim=3, seed=6)
    runs = [[s().coords for _ in range(3)] for s in (a, b, c)]
    assert all(torch.equal(x, y) for x, y in zip(runs[0], runs[1]))
    assert not any(torch.equal(x, y) for x, y in zip(runs[0], runs[2]))


@pytest.mark.parametrize("scheme, draw",
                         [("sobol", sobol), ("halton", halton), ("shrunk", shrunk), ("mc", uniform)])
def test_fixed_sampler_returns_the_same_object(scheme, draw):
    sampler = Sampler(scheme, n=100, dim=2, seed=9, rescramble=False)
    points = sampler()
    assert sampler() is points and sampler() is points
    assert torch.equal(points.coords, draw(100, 2, seed=9))
    # the neighbour cache therefore survives across calls
    points.cached("key", lambda: object())
    assert "key" in sampler()._cache


def test_draw_with_an_explicit_seed():
    sampler = Sampler("sobol", n=32, dim=2)
    assert torch.equal(sampler.draw(4).coords, sobol(32, 2, seed=4))
    assert sampler.draw(4) is not sampler.draw(4)


@pytest.mark.parametrize("rescramble", [True, False])
def test_grid_scheme(rescramble):
    sampler = Sampler("grid", shape=(4, 6), rescramble=rescramble)
    points = sampler()
    assert sampler() is points
    assert (sampler.n, sampler.dim) == (24, 2)
    assert torch.equal(points.coords, grid((4, 6)))
    assert points.lattice is not None and points.lattice.shape == (4, 6)
    torch.testing.assert_close(points.weights, torch.full((24,), 4 / 24))


def test_dtype():
    assert Sampler("sobol", n=8, dtype=torch.float64)().dtype == torch.float64
    assert Sampler("grid", shape=(3,), dtype=torch.float64)().dtype == torch.float64


def test_repr_names_the_scheme():
    assert "sobol" in repr(Sampler("sobol", n=8)) and "n=8" in repr(Sampler("sobol", n=8))
    assert "(2, 2)" in repr(Sampler("grid", shape=(2, 2)))


def test_schemes_constant():
    assert set(SCHEMES) == {"sobol", "halton", "grid", "shrunk", "mc"}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown sampling scheme 'lhs'"):
        Sampler("lhs")
    with pytest.raises(ValueError, match="needs a shape"):
        Sampler("grid")
    with pytest.raises(ValueError, match="grid shape"):
        Sampler("grid", shape=(0, 3))
    with pytest.raises(ValueError, match="number of points"):
        Sampler("sobol", n=0)
    with pytest.raises(ValueError, match="dimension"):
        Sampler("sobol", n=8, dim=0)


@pytest.mark.parametrize("make", [lambda: Sampler("grid", shape=(10**6, 10**6)), lambda: Sampler("sobol", n=10**13),
                                  lambda: Sampler("grid", shape=(10**10, 10**10)),
                                  lambda: parse_sampler("grid:1000000x1000000"), lambda: parse_sampler("mc:10000000000000")])
def test_absurd_sizes_are_refused_when_the_sampler_is_made(make):
    with pytest.raises(ValueError, match=r"points in \d dimensions need [\d,]+ bytes .* more than the [\d,]+ bytes"):
        make()


def test_a_config_grid_too_big_for_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(_limits, "total_memory", lambda device=None: (64 * 2**30, "this machine"))
    with pytest.raises(ValueError, match=r"10,000,000,000 points in 2 dimensions need 160,000,000,000 bytes"):
        parse_sampler("grid:100000x100000")


@pytest.mark.parametrize("scheme", ["sobol", "halton", "shrunk", "mc"])
@pytest.mark.parametrize("n, dim", [(2, 1), (3, 1), (64, 2)])
def test_scattered_samplers_give_nested_point_sets(scheme, n, dim):
    # said explicitly, not inferred: two points in 1-d always look like a lattice
    p = Sampler(scheme, n=n, dim=dim, seed=3)()
    assert p.order == "nested" and p.lattice is None
    assert p.downsample(2) is p.prefix(-(-n // 2 ** dim))
    assert Sampler("grid", shape=(4, 6))().order == "lattice"


@pytest.mark.parametrize("scheme", ["sobol", "halton", "shrunk", "mc"])
def test_state_dict_resumes_the_sequence(scheme):
    straight = Sampler(scheme, n=32, dim=2, seed=4)
    first = [straight().coords for _ in range(5)]
    interrupted = Sampler(scheme, n=32, dim=2, seed=4)
    for _ in range(3):
        interrupted()
    resumed = Sampler(scheme, n=32, dim=2, seed=4)
    resumed.load_state_dict(interrupted.state_dict())
    assert resumed.state_dict() == {"calls": 3}
    assert torch.equal(resumed().coords, first[3]) and torch.equal(resumed().coords, first[4])


def test_fixed_samplers_do_not_count():
    sampler = Sampler("sobol", n=8, rescramble=False)
    sampler(), sampler()
    assert sampler.state_dict() == {"calls": 0}
    grid_sampler = Sampler("grid", shape=(2, 2))
    grid_sampler()
    assert grid_sampler.state_dict() == {"calls": 0}


@pytest.mark.parametrize("state", [{}, {"calls": -1}, {"calls": 1.5}, {"calls": True}, [3]])
def test_load_state_dict_rejects_bad_states(state):
    with pytest.raises(ValueError, match="a Sampler state is"):
        Sampler("sobol", n=8).load_state_dict(state)


def test_a_count_range_draws_a_log_uniform_count_per_call_reproducibly():
    a, b = Sampler("sobol", (64, 1024), seed=3), Sampler("sobol", (64, 1024), seed=3)
    counts = [a().n for _ in range(200)]
    assert counts == [b().n for _ in range(200)]
    assert min(counts) >= 64 and max(counts) <= 1024 and len(set(counts)) > 50
    # log-uniform: about half the draws below the geometric mean 256
    assert 0.35 < sum(c < 256 for c in counts) / len(counts) < 0.65
    assert Sampler("sobol", (100, 100))().n == 100


def test_a_count_range_resumes_with_the_same_counts():
    a = Sampler("sobol", (64, 1024), seed=1)
    for _ in range(5):
        a()
    b = Sampler("sobol", (64, 1024), seed=1)
    b.load_state_dict(a.state_dict())
    assert [a().n for _ in range(5)] == [b().n for _ in range(5)]


@pytest.mark.parametrize("bad", [(0, 10), (10, 5), (1, 2, 3), (1.5, 4), (True, 4)])
def test_bad_count_ranges_raise(bad):
    with pytest.raises(ValueError, match="point-count range"):
        Sampler("sobol", bad)


def test_a_fixed_sampler_refuses_a_count_range():
    with pytest.raises(ValueError, match="fixed"):
        Sampler("sobol", (64, 128), rescramble=False)


# --------------------------------------------------------------------------------------
# MixedSampler: each training step from one of several samplers
# --------------------------------------------------------------------------------------
def test_mixed_sampler_draws_from_each_part_and_reuses_the_grid():
    from inrnet.sampling import MixedSampler
    g, s = Sampler("grid", shape=(8, 8)), Sampler("sobol", (32, 64), 2, seed=1)
    mixed = MixedSampler([g, s], seed=1)
    sets = [mixed() for _ in range(40)]
    grids = [p for p in sets if p.lattice is not None]
    scattered = [p for p in sets if p.lattice is None]
    assert 8 <= len(grids) <= 32 and len(grids) + len(scattered) == 40  # about half each
    assert all(p is g() for p in grids)  # one grid PointSet: its neighbour caches are reused
    assert all(32 <= p.n <= 64 for p in scattered) and len({p.n for p in scattered}) > 1
    assert not torch.equal(scattered[0].coords, scattered[1].coords)  # fresh scrambles
    # the sequence is a function of the seed and the call count: a restored state replays it
    again = MixedSampler([Sampler("grid", shape=(8, 8)), Sampler("sobol", (32, 64), 2, seed=1)], seed=1)
    again.load_state_dict({"calls": 20})
    assert mixed.state_dict() == {"calls": 40}
    for p, q in zip(sets[20:], [again() for _ in range(20)]):
        assert torch.equal(p.coords, q.coords)


def test_mixed_sampler_rejects():
    from inrnet.sampling import MixedSampler
    with pytest.raises(ValueError, match="at least two"):
        MixedSampler([Sampler("sobol", 16)])
    with pytest.raises(ValueError, match="dimension"):
        MixedSampler([Sampler("sobol", 16, 2), Sampler("sobol", 16, 3)])
    with pytest.raises(ValueError, match="rescramble"):
        MixedSampler([Sampler("grid", shape=(4, 4)), Sampler("sobol", 16, rescramble=False)])
    with pytest.raises(ValueError, match="calls"):
        MixedSampler([Sampler("sobol", 16), Sampler("mc", 16)]).load_state_dict({"calls": -1})
