"""Tests for ``inrnet.neighbors``: every backend against a brute-force double loop."""

import functools
import itertools
import math
import os

import pytest
import torch

from inrnet import Field, Neighbors, PointSet, Support
from inrnet.models.inr_nets import INRNetSegmenter
from inrnet.neighbors import (BACKENDS, NEAREST_BACKENDS, _cell_candidates, find_neighbors, k_nearest, nearest,
                             neighbors)
from inrnet.sampling import grid, sobol, uniform

SEARCH_BACKENDS = ["brute", "kdtree", "cells"]
LATTICE_BACKENDS = SEARCH_BACKENDS + ["lattice"]
"""Backends for queries that are a lattice in C order (``"lattice"`` needs them)."""
HALF_WIDTH = {1: (0.15,), 2: (0.3, 0.2), 3: (0.5, 0.45, 0.4)}
SHIFT = (0.07, -0.05, 0.03)


def reference_pairs(points: PointSet, queries: PointSet, support: Support, reflect: bool) -> list:
    """Every (query, point, offset) pair by a plain double loop in float64.

    With ``reflect`` each point also appears mirrored across every face, edge and corner
    of the domain box (``3^d - 1`` images), still labelled with its own index.

    Returns:
        The sorted list of ``(i, j, offset)`` with ``offset`` a tuple of d floats.
    """
    x = points.coords.double().tolist()
    q = queries.coords.double().tolist()
    d = len(x[0])
    images = []
    for j, xj in enumerate(x):
        for sides in itertools.product((0, -1, 1), repeat=d):
            if any(sides) and not reflect:
                continue
            y = [xk if s == 0 else 2 * points.bounds[k][0 if s < 0 else 1] - xk
                 for k, (s, xk) in enumerate(zip(sides, xj))]
            images.append((j, y))
    hw, c = support.half_width * (d // len(support.half_width)), support.center * (d // len(support.center))
    pairs = []
    for i, qi in enumerate(q):
        for j, y in images:
            offset = tuple(y[k] - qi[k] for k in range(d))
            u = [(offset[k] - c[k]) / hw[k] for k in range(d)]
            inside = max(abs(v) for v in u) <= 1 if support.shape == "box" else sum(v * v for v in u) <= 1
            if inside:
                pairs.append((i, j, offset))
    return sorted(pairs)


def as_pairs(nb: Neighbors) -> list:
    """The CSR result as a sorted list of (i, j, offset), after checking its structure."""
    m = nb.num_queries
    assert nb.indptr.shape == (m + 1,) and nb.indptr[0] == 0 and nb.indptr[-1] == nb.num_pairs
    assert nb.row.shape == nb.col.shape == (nb.num_pairs,) and nb.offset.shape[0] == nb.num_pairs
    assert torch.equal(nb.row, torch.repeat_interleave(torch.arange(m), nb.counts()))
    assert bool((nb.col >= 0).all()) and bool((nb.col < nb.num_points).all())
    return sorted(zip(nb.row.tolist(), nb.col.tolist(), map(tuple, nb.offset.double().tolist())))


def assert_same_pairs(got: list, expected: list) -> None:
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
    if expected:
        torch.testing.assert_close(torch.tensor([o for *_, o in got], dtype=torch.float64),
                                   torch.tensor([o for *_, o in expected], dtype=torch.float64),
                                   rtol=0, atol=1e-6)


def _points(d):
    return PointSet(sobol(48, d, seed=d))


def _queries(d, same):
    return _points(d) if same else PointSet(uniform(33, d, seed=10 + d))


@functools.cache
def _case(d, shape, shifted, same, reflect):
    points = _points(d)
    queries = points if same else _queries(d, same)
    support = Support(HALF_WIDTH[d], shape, SHIFT[:d] if shifted else None)
    return points, queries, support, reference_pairs(points, queries, support, reflect)


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
@pytest.mark.parametrize("reflect", [False, True], ids=["plain", "reflect"])
@pytest.mark.parametrize("same", [True, False], ids=["self", "other"])
@pytest.mark.parametrize("shifted", [False, True], ids=["centred", "shifted"])
@pytest.mark.parametrize("shape", ["box", "ball"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_matches_brute_force_double_loop(d, shape, shifted, same, reflect, backend):
    points, queries, support, expected = _case(d, shape, shifted, same, reflect)
    assert len(expected) > queries.n  # the supports are big enough to be a real test
    nb = find_neighbors(points, queries, support, reflect=reflect, backend=backend)
    assert nb.num_points == points.n and nb.offset.dtype == points.dtype
    assert_same_pairs(as_pairs(nb), expected)
    if not reflect:
        # sorted by (query, point) and offset = x_j - q_i
        key = nb.row * points.n + nb.col
        assert bool((key.diff() > 0).all())
        torch.testing.assert_close(nb.offset, points.coords[nb.col] - queries.coords[nb.row])


def test_reflect_reaches_mirrors_that_plain_search_misses():
    points, queries, support, plain = _case(2, "box", False, True, False)
    *_, mirrored = _case(2, "box", False, True, True)
    assert len(mirrored) > len(plain) and set(plain) < set(mirrored)


def test_auto_backend():
    points, queries, support, expected = _case(2, "ball", True, False, False)
    assert_same_pairs(as_pairs(find_neighbors(points, queries, support)), expected)
    assert "auto" in BACKENDS


def test_float64_points_keep_float64_offsets():
    points = PointSet(sobol(40, 2, seed=1, dtype=torch.float64))
    nb = find_neighbors(points, points, Support(0.3), backend="cells")
    assert nb.offset.dtype == torch.float64
    torch.testing.assert_close(nb.offset, points.coords[nb.col] - points.coords[nb.row], rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# Lattices: supports whose boundary passes exactly through lattice points
# --------------------------------------------------------------------------------------
def _per_axis(n, lo, hi):
    """Tensor[n]: how many of offsets lo..hi (in cells) stay inside an axis of n cells."""
    i = torch.arange(n)
    return torch.stack([((i + o >= 0) & (i + o < n)) for o in range(lo, hi + 1)]).sum(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", LATTICE_BACKENDS)
def test_lattice_ties_are_kept(backend, dtype):
    p = PointSet.grid((8, 8), dtype=dtype)
    h = 0.25

    def counts(support, reflect=False):
        return find_neighbors(p, p, support, reflect=reflect, backend=backend).counts().reshape(8, 8)  # (8, 8)

    # box of half width exactly 1 and 2 cells: 3x3 and 5x5 windows, cut at the border
    for k in (1, 2):
        assert torch.equal(counts(Support(k * h)), _per_axis(8, -k, k)[:, None] * _per_axis(8, -k, k)[None, :])
        assert torch.equal(counts(Support(k * h), reflect=True), torch.full((8, 8), (2 * k + 1) ** 2))
    # even windows (k = 2, 4 taps), centre shifted by half a cell: taps -k/2+1 .. k/2
    for k in (2, 4):
        c = counts(Support(k * h / 2, center=(h / 2,)))
        assert torch.equal(c, _per_axis(8, 1 - k // 2, k // 2)[:, None] * _per_axis(8, 1 - k // 2, k // 2)[None, :])
    # balls of radius exactly 1, sqrt(2) and 2 cells: 5, 9 and 13 lattice points inside
    for radius, expected in ((1.0, 5), (math.sqrt(2), 9), (2.0, 13)):
        assert counts(Support(radius * h, "ball"))[3, 4] == expected
        assert bool((counts(Support(radius * h, "ball"), reflect=True) == expected).all())


@pytest.mark.parametrize("backend", LATTICE_BACKENDS)
def test_reflect_on_a_lattice_mirrors_across_the_domain_faces(backend):
    # The corner cell's 3x3 window: itself, its 3 neighbours and the 5 mirror images
    # outside the domain, which repeat the border cells (0 four times, 1 and 8 twice).
    p = PointSet.grid((8, 8), dtype=torch.float64)
    nb = find_neighbors(p, p, Support(0.25), reflect=True, backend=backend)
    corner = slice(int(nb.indptr[0]), int(nb.indptr[1]))
    assert sorted(nb.col[corner].tolist()) == [0, 0, 0, 0, 1, 1, 8, 8, 9]
    offsets = sorted(map(tuple, (nb.offset[corner] / 0.25).round().long().tolist()))
    assert offsets == sorted(itertools.product((-1, 0, 1), repeat=2))


@pytest.mark.parametrize("backend", LATTICE_BACKENDS)
def test_lattice_ties_are_kept_on_float32_non_dyadic_grids(backend):
    # float32 rounds -1 + (2i + 1) / n by up to ~6e-8, a relative 1e-5 of a 224-pixel cell
    for n in (28, 100, 224, 1000):
        p = PointSet.grid((n,))
        for k in (1, 2):
            counts = find_neighbors(p, p, Support(k * 2 / n), backend=backend).counts()
            assert torch.equal(counts, _per_axis(n, -k, k)), (n, k)
    p = PointSet.grid((28, 100))
    for shape in ("box", "ball"):
        counts = find_neighbors(p, p, Support((2 / 28, 2 / 100), shape), backend=backend).counts()
        expected = _per_axis(28, -1, 1)[:, None] * _per_axis(100, -1, 1)[None, :]  # (28, 100)
        if shape == "ball":  # the plus-shaped window: the centre row plus the centre column
            expected = _per_axis(28, -1, 1)[:, None] + _per_axis(100, -1, 1)[None, :] - 1
        assert torch.equal(counts.reshape(28, 100), expected), shape


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
def test_reflect_keeps_mirror_ties_for_queries_on_the_domain_face(backend):
    # query at -1 with half width (2i + 1) / 28: points 0..i and their mirror images lie
    # inside, the outermost two exactly on the support boundary
    p, q = PointSet.grid((28,)), PointSet(torch.tensor([[-1.0]]))
    for i in range(6):
        nb = find_neighbors(p, q, Support((2 * i + 1) / 28), reflect=True, backend=backend)
        assert sorted(nb.col.tolist()) == sorted(2 * list(range(i + 1))), i


# --------------------------------------------------------------------------------------
# The lattice backend: scattered points, queries on a lattice (a latent grid, a sub-lattice)
# --------------------------------------------------------------------------------------
LATTICE_QUERIES = {1: ((9,), None), 2: ((7, 5), None), 3: ((4, 3, 5), None), "sub": ((12, 10), 3)}


@pytest.mark.parametrize("reflect", [False, True], ids=["plain", "reflect"])
@pytest.mark.parametrize("shifted", [False, True], ids=["centred", "shifted"])
@pytest.mark.parametrize("shape", ["box", "ball"])
@pytest.mark.parametrize("case", [1, 2, 3, "sub"])
def test_lattice_backend_matches_brute_force_double_loop(case, shape, shifted, reflect):
    grid_shape, stride = LATTICE_QUERIES[case]
    d = len(grid_shape)
    points = _points(d)
    queries = PointSet.grid(grid_shape)
    if stride:  # a strided layer's outputs: the sub-lattice [1::stride], its own origin and step
        lattice, index = queries.lattice.sub((1,) * d, (stride,) * d, grid_shape)
        queries = queries.subset(index, lattice=lattice, order="lattice")
    support = Support(HALF_WIDTH[d], shape, SHIFT[:d] if shifted else None)
    expected = reference_pairs(points, queries, support, reflect)
    assert len(expected) > queries.n
    nb = find_neighbors(points, queries, support, reflect=reflect, backend="lattice")
    assert_same_pairs(as_pairs(nb), expected)
    auto = find_neighbors(points, queries, support, reflect=reflect)
    assert torch.equal(auto.col, nb.col) and torch.equal(auto.indptr, nb.indptr)


@pytest.mark.parametrize("shape", [(3, 3), (2, 5), (1, 4)])
def test_lattice_backend_with_supports_wider_than_the_lattice(shape):
    # a coarse level of a U-Net: its support spans the whole lattice and beyond
    queries = PointSet.grid(shape)
    for points in (queries, PointSet(sobol(40, 2, seed=2))):
        for support in (Support(1.3), Support(3.0), Support((2.5, 0.7), "ball", (0.4, -0.3))):
            expected = reference_pairs(points, queries, support, False)
            assert_same_pairs(as_pairs(find_neighbors(points, queries, support, backend="lattice")), expected)


def test_lattice_backend_chunks_give_the_same_pairs(monkeypatch):
    from inrnet import neighbors as nb_module
    points, queries = PointSet(sobol(300, 2, seed=4)), PointSet.grid((16, 16))
    whole = find_neighbors(points, queries, Support(0.2), backend="lattice")
    real = nb_module._lattice_candidates
    monkeypatch.setattr(nb_module, "_lattice_candidates", lambda *a: real(*a, chunk=50))  # a few points per chunk
    chunked = find_neighbors(points, queries, Support(0.2), backend="lattice")
    assert torch.equal(whole.col, chunked.col) and torch.equal(whole.indptr, chunked.indptr)


def test_lattice_backend_refuses_queries_off_a_lattice():
    points = _points(2)
    with pytest.raises(ValueError, match="lattice's points in C order"):
        find_neighbors(points, PointSet(uniform(20, 2, seed=3)), Support(0.2), backend="lattice")


# --------------------------------------------------------------------------------------
# Never truncated, empty results, cell-list chunking
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
@pytest.mark.parametrize("shape", ["box", "ball"])
def test_dense_support_returns_every_pair(backend, shape):
    points = PointSet(sobol(300, 2, seed=2))
    queries = PointSet(uniform(50, 2, seed=3))
    nb = find_neighbors(points, queries, Support(3.0, shape), backend=backend)
    assert nb.num_pairs == 300 * 50
    assert torch.equal(nb.col.reshape(50, 300), torch.arange(300).expand(50, 300))  # (M, N)


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
def test_no_pairs(backend):
    points = PointSet(sobol(20, 2, seed=0) * 0.2 - 0.7)  # in [-0.9, -0.5]^2
    queries = PointSet(torch.tensor([[0.9, 0.9], [0.5, 0.8]]))
    nb = find_neighbors(points, queries, Support(0.05), backend=backend)
    assert nb.num_pairs == 0 and nb.indptr.tolist() == [0, 0, 0] and nb.offset.shape == (0, 2)


def test_cell_list_chunks_give_the_same_candidates():
    x = sobol(500, 2, seed=4, dtype=torch.float64)  # (N, d)
    q = uniform(70, 2, seed=5, dtype=torch.float64)  # (M, d)
    reach = torch.tensor([0.2, 0.1], dtype=torch.float64)
    whole = sorted(zip(*(t.tolist() for t in _cell_candidates(q, x, reach))))
    chunked = sorted(zip(*(t.tolist() for t in _cell_candidates(q, x, reach, max_candidates=64))))
    assert whole == chunked
    inside = ((x[None] - q[:, None]).abs() <= reach).all(-1)  # (M, N)
    assert set(zip(*(t.tolist() for t in inside.nonzero(as_tuple=True)))) <= set(whole)
    assert len(whole) < 500 * 70 / 4


# --------------------------------------------------------------------------------------
# Nearest point: every backend against a double loop, ties to the lowest index
# --------------------------------------------------------------------------------------
def reference_nearest(points: torch.Tensor, queries: torch.Tensor) -> list[int]:
    """For each query the first point at the least squared distance, a double loop on Python floats."""
    x, q = points.double().tolist(), queries.double().tolist()
    best = []
    for qi in q:
        dist = [sum((a - b) ** 2 for a, b in zip(xj, qi)) for xj in x]
        best.append(dist.index(min(dist)))  # index() returns the first, i.e. lowest, minimum
    return best


def _tied_case(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice points in random order, some twice, and queries on them, between two of them
    and at cell centres: exact ties (dyadic coordinates, so every distance is exact)."""
    axis = torch.arange(4, dtype=torch.float64) / 4 - 0.375  # (4,)
    lattice = torch.cartesian_prod(*[axis] * d).reshape(-1, d)  # (4^d, d)
    both = torch.cat([lattice, lattice[::3]])  # every third point twice
    points = both[torch.randperm(both.shape[0])]
    queries = torch.cat([lattice, lattice + 0.125, lattice + torch.tensor([0.125] + [0.0] * (d - 1))])
    return points, queries


@pytest.mark.parametrize("backend", NEAREST_BACKENDS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_nearest_matches_the_loop_with_ties_to_the_lowest_index(backend, d):
    points, queries = _tied_case(d)
    expected = reference_nearest(points, queries)
    dist = [[sum((a - b) ** 2 for a, b in zip(x, q)) for x in points.tolist()] for q in queries.tolist()]
    assert sum(row.count(min(row)) > 1 for row in dist) > len(dist) // 4  # many queries have tied nearest points
    assert nearest(points, queries, backend=backend, chunk=7).tolist() == expected
    assert nearest(points.float(), queries.float(), backend=backend).tolist() == expected


@pytest.mark.parametrize("backend", NEAREST_BACKENDS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_nearest_on_scattered_points_matches_the_loop(backend, d):
    points, queries = sobol(97, d, seed=1, dtype=torch.float64), uniform(211, d, seed=2, dtype=torch.float64)
    assert nearest(points, queries, backend=backend, chunk=500).tolist() == reference_nearest(points, queries)


def test_torch_and_kdtree_nearest_agree():
    source, target = PointSet(sobol(37, 3, seed=1)), PointSet(sobol(300, 3, seed=2))
    brute = torch.cdist(target.coords.double(), source.coords.double()).argmin(1)
    torch.testing.assert_close(nearest(source.coords, target.coords, backend="kdtree"), brute, rtol=0, atol=0)
    torch.testing.assert_close(nearest(source.coords, target.coords, backend="torch", chunk=500), brute,
                               rtol=0, atol=0)


def reference_k_nearest(points: torch.Tensor, queries: torch.Tensor, k: int) -> list[list[int]]:
    """For each query the k points of least squared distance, ties to the lower index: a double
    loop on Python floats."""
    x, q = points.double().tolist(), queries.double().tolist()
    out = []
    for qi in q:
        dist = [sum((a - b) ** 2 for a, b in zip(xj, qi)) for xj in x]
        out.append(sorted(range(len(x)), key=lambda j: (dist[j], j))[:k])
    return out


@pytest.mark.parametrize("backend", NEAREST_BACKENDS)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_k_nearest_matches_the_loop_with_ties_to_the_lower_index(backend, d, k):
    points, queries = _tied_case(d)
    expected = reference_k_nearest(points, queries, k)
    assert k_nearest(points, queries, k, backend=backend, chunk=7).tolist() == expected
    assert k_nearest(points.float(), queries.float(), k, backend=backend).tolist() == expected
    scattered, others = sobol(97, d, seed=1, dtype=torch.float64), uniform(211, d, seed=2, dtype=torch.float64)
    assert k_nearest(scattered, others, k, backend=backend, chunk=500).tolist() == \
        reference_k_nearest(scattered, others, k)


def test_k_nearest_bad_inputs():
    points = sobol(5, 2, seed=0)
    assert k_nearest(points, points, 5).shape == (5, 5)
    assert k_nearest(points, torch.zeros(0, 2), 3).shape == (0, 3)
    for k in (0, 6):
        with pytest.raises(ValueError, match=f"1 <= k <= N, got k={k} for 5 points"):
            k_nearest(points, points, k)


def test_nearest_edge_cases_and_bad_inputs():
    points = sobol(5, 2, seed=0)
    for backend in NEAREST_BACKENDS:
        assert nearest(points, torch.zeros(0, 2), backend=backend).shape == (0,)
        assert nearest(points[:1], sobol(4, 2, seed=1), backend=backend).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown nearest-neighbour backend 'cells'"):
        nearest(points, points, backend="cells")
    with pytest.raises(ValueError, match=r"Tensor\[N, d\].*\(5, 2\) and \(3, 3\)"):
        nearest(points, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no nearest point"):
        nearest(torch.zeros(0, 2), points)


# --------------------------------------------------------------------------------------
# Caching, Support, bad inputs
# --------------------------------------------------------------------------------------
def test_cache_returns_the_same_object():
    points, queries = _points(2), _queries(2, False)
    first = neighbors(points, queries, Support(0.2))
    assert neighbors(points, queries, Support(0.2)) is first
    assert neighbors(points, queries, Support((0.2, 0.2)), backend="cells") is first
    assert neighbors(points, queries, Support(0.2), reflect=True) is not first
    assert neighbors(points, queries, Support(0.2, "ball")) is not first
    assert neighbors(points, points, Support(0.2)) is not first
    assert find_neighbors(points, queries, Support(0.2)) is not first


def test_fresh_query_sets_leave_the_cache_bounded():
    # Each neighbour graph lives on `points` only as long as its query set does.
    points = _points(2)
    sizes = []
    for seed in range(300):
        queries = PointSet(sobol(32, 2, seed=seed))
        assert neighbors(points, queries, Support(0.2)) is neighbors(points, queries, Support(0.2))
        sizes.append(len(points._cache))
    del queries
    assert max(sizes) == 1 and len(points._cache) == 0


def _segmenter_steps(steps: int, shape=(16, 16), labels: int = 64, multiscale: bool = False, on_step=None):
    """Train-like steps of a segmenter on one fixed grid, scored at fresh random label points
    (what the segmentation DataModule's ``train_label_points`` does)."""
    points = PointSet.grid(shape)
    model = INRNetSegmenter(3, 4, width=4, multiscale=multiscale, base_resolution=shape[0])
    field = Field(torch.rand(2, points.n, 3), points)
    for step in range(steps):
        pick = torch.randperm(points.n)[:labels]
        model(field, PointSet(grid(shape)[pick])).values.square().mean().backward()
        if on_step is not None:
            on_step(step, points)


@pytest.mark.parametrize("multiscale", [False, True])
def test_a_segmenter_scored_at_fresh_label_points_keeps_its_caches_bounded(multiscale):
    sizes = []
    _segmenter_steps(60, multiscale=multiscale, on_step=lambda step, points: sizes.append(len(points._cache)))
    assert len(set(sizes)) == 1, sizes  # each step's graphs and gather plans go with its label points


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc")
def test_a_segmenter_scored_at_fresh_label_points_keeps_its_memory_flat():
    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    rss = {}
    _segmenter_steps(250, shape=(32, 32), labels=256,
                     on_step=lambda step, points: rss.setdefault(step, rss_mb()) if step in (49, 249) else None)
    assert rss[249] - rss[49] < 40  # about 120 MB when every step left its graphs in the cache


def test_support_normalisation_and_volume():
    s = Support(0.5)
    assert s.half_width == (0.5,) and s.center == (0.0,) and s.shape == "box"
    t = s.for_dim(3)
    assert t.half_width == (0.5,) * 3 and t.center == (0.0,) * 3 and t.for_dim(3) is t
    assert Support((1, 2), center=(0.5, 0)).for_dim(2).center == (0.5, 0.0)
    assert Support(0.5).for_dim(2).volume == pytest.approx(1.0)
    assert Support((1.0, 2.0), "ball").volume == pytest.approx(math.pi * 2)
    assert Support(1.0, "ball").for_dim(3).volume == pytest.approx(4 / 3 * math.pi)
    offsets = torch.tensor([[1.5, 0.0], [0.5, 0.6], [-0.4, 0.0]])  # (3, 2)
    inside = Support((1.0, 0.5), "ball", center=(0.5, 0.0)).contains(offsets)
    assert inside.tolist() == [True, False, True]


@pytest.mark.parametrize("kwargs, match", [
    (dict(half_width=-1.0), "positive and finite"),
    (dict(half_width=0.0), "positive and finite"),
    (dict(half_width=(0.1, float("nan"))), "positive and finite"),
    (dict(half_width=float("inf")), "positive and finite"),
    (dict(half_width=()), "positive and finite"),
    (dict(half_width=0.1, shape="cube"), "'box' or 'ball'.*'cube'"),
])
def test_bad_support_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Support(**kwargs)


def test_support_of_the_wrong_dimension_raises():
    p = _points(2)
    with pytest.raises(ValueError, match="does not fit dimension 2"):
        neighbors(p, p, Support((0.1, 0.1, 0.1)))
    with pytest.raises(ValueError, match="does not fit dimension 2"):
        find_neighbors(p, p, Support(0.1, center=(0.0, 0.1, 0.0)))


def test_dimension_mismatch_raises():
    with pytest.raises(ValueError, match="dimension 3.*dimension 2"):
        neighbors(_points(2), _points(3), Support(0.1))


@pytest.mark.parametrize("call", [neighbors, find_neighbors])
def test_unknown_backend_raises(call):
    p = _points(2)
    with pytest.raises(ValueError, match="unknown neighbour backend 'octree'"):
        call(p, p, Support(0.1), backend="octree")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", SEARCH_BACKENDS + ["auto"])
def test_cuda_matches_cpu(backend):
    points, queries, support, expected = _case(3, "ball", True, False, True)
    nb = find_neighbors(points.to("cuda"), queries.to("cuda"), support, reflect=True, backend=backend)
    assert nb.col.device.type == "cuda"
    on_cpu = Neighbors(*(t.cpu() for t in (nb.indptr, nb.row, nb.col, nb.offset)), nb.num_points)
    assert_same_pairs(as_pairs(on_cpu), expected)
    with pytest.raises(ValueError, match="cuda.*cpu"):
        find_neighbors(points, queries.to("cuda"), support)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", NEAREST_BACKENDS)
def test_nearest_on_cuda_matches_the_loop(backend):
    points, queries = _tied_case(3)
    got = nearest(points.to("cuda"), queries.to("cuda"), backend=backend)
    assert got.device.type == "cuda" and got.tolist() == reference_nearest(points, queries)
    with pytest.raises(ValueError, match="cuda.*cpu"):
        nearest(points, queries.to("cuda"))


@pytest.mark.parametrize("span", [1, 300, (1 << 16) - 1, 1 << 16, 1 << 20, (1 << 32) - 1, 1 << 40])
def test_stable_argsort_is_torchs_stable_sort_at_every_key_span(span):
    from inrnet.neighbors import stable_argsort
    torch.manual_seed(span % 997)
    keys = torch.randint(0, min(span, 1 << 62), (5000,)) - span // 3  # negative keys too, and many ties
    keys[:7] = torch.tensor([span - 1 - span // 3, -(span // 3), 0, 0, 1, 1, 0]).clamp(max=span - 1 - span // 3)
    expected = torch.argsort(keys, stable=True)
    assert torch.equal(stable_argsort(keys), expected)
    assert stable_argsort(keys[:0]).shape == (0,)
