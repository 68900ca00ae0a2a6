"""Neighbour search on the device (cell list, brute force, k-d tree round trip, ``auto``)
against the CPU searches that ``tests/test_neighbors.py`` checks against a double loop."""

import pytest
import torch

from inrnet import neighbors as nbr
from inrnet.field import PointSet
from inrnet.neighbors import Neighbors, Support, find_neighbors, neighbors
from inrnet.sampling import sobol, uniform

pytestmark = pytest.mark.gpu

DEVICE_BACKENDS = ["cells", "brute", "kdtree", "auto"]
HALF_WIDTH = {1: (0.05,), 2: (0.15, 0.1), 3: (0.3, 0.25, 0.2)}
SHIFT = (0.03, -0.02, 0.01)


def assert_same_neighbors(got: Neighbors, want: Neighbors) -> None:
    """The same CSR pairs in the same order (indices exact, offsets to float32 rounding)."""
    assert got.num_points == want.num_points
    for name in ("indptr", "row", "col"):
        assert torch.equal(getattr(got, name).cpu(), getattr(want, name)), name
    torch.testing.assert_close(got.offset.cpu(), want.offset, rtol=0, atol=1e-6)


@pytest.mark.parametrize("reflect", [False, True], ids=["plain", "reflect"])
@pytest.mark.parametrize("shape", ["box", "ball"])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_every_backend_on_the_device_matches_cpu_brute_force(d, shape, reflect, device):
    points, queries = PointSet(sobol(300, d, seed=d)), PointSet(uniform(200, d, seed=10 + d))
    support = Support(HALF_WIDTH[d], shape, SHIFT[:d])
    want = find_neighbors(points, queries, support, reflect=reflect, backend="brute")
    assert want.num_pairs > 2 * queries.n  # supports big enough for a real test
    for backend in DEVICE_BACKENDS:
        got = find_neighbors(points.to(device), queries.to(device), support, reflect=reflect, backend=backend)
        assert got.col.device.type == got.offset.device.type == device.type, backend
        assert_same_neighbors(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lattice_ties_on_the_device(dtype, device):
    """Supports whose edges pass exactly through grid points: the rounding slack must keep
    the same pairs on the device (1 and 1.5 cells, centred and half a cell off)."""
    grid = PointSet.grid((16, 12), dtype=dtype)
    h = (2 / 16, 2 / 12)
    for support in (Support(h), Support(tuple(1.5 * s for s in h)), Support(h, center=tuple(s / 2 for s in h))):
        want = find_neighbors(grid, grid, support, backend="brute")
        for backend in ("cells", "auto"):
            got = find_neighbors(grid.to(device), grid.to(device), support, backend=backend)
            assert_same_neighbors(got, want)


def test_cell_list_in_many_query_chunks(device, monkeypatch):
    """4096 points, the cell list forced to walk the queries in many chunks (two sorted
    searches per chunk), cached on the device point set."""
    points = PointSet(sobol(4096, 2, seed=7))
    support = Support(0.08, "ball")
    want = find_neighbors(points, points, support, backend="kdtree")
    assert want.num_pairs > 10 * points.n
    cell_candidates, searchsorted, searches = nbr._cell_candidates, torch.searchsorted, []

    def counting(*args, **kwargs):
        searches.append(1)
        return searchsorted(*args, **kwargs)
    monkeypatch.setattr(nbr, "_cell_candidates", lambda c, x, r: cell_candidates(c, x, r, max_candidates=2048))
    monkeypatch.setattr(torch, "searchsorted", counting)
    on_device = points.to(device)
    got = neighbors(on_device, on_device, support, backend="cells")
    assert len(searches) > 2 * 8, f"expected many query chunks, got {len(searches) // 2}"
    assert_same_neighbors(got, want)
    assert neighbors(on_device, on_device, support) is got


@pytest.mark.parametrize("k", [1, 16])
def test_k_nearest_on_the_device_matches_the_cpu_tree(k, device):
    """The chunked-distance backend on the device (``auto`` there), many chunks, against the
    CPU k-d tree, both with the rule nearest first, ties to the lower index."""
    points, queries = sobol(3000, 2, seed=5, dtype=torch.float64), uniform(700, 2, seed=6, dtype=torch.float64)
    want = nbr.k_nearest(points, queries, k, backend="kdtree")
    got = nbr.k_nearest(points.to(device), queries.to(device), k, chunk=3000 * 64)
    assert torch.equal(got.cpu(), want)
