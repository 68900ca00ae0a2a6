"""CSR segment reductions against slow float64 loop references."""

import pytest
import torch

from inrnet.field import PointSet
from inrnet.neighbors import Neighbors, Support, neighbors
from inrnet.nn._segment import gather, gather_scale_sum, segment_max, segment_mean, segment_sum, segment_weight_sum
from inrnet.sampling.points import sobol


def _csr(rows: list[list[int]], num_points: int) -> Neighbors:
    """Hand-built CSR pairs: ``rows[i]`` lists the points of query ``i``."""
    counts = torch.tensor([len(r) for r in rows])
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    row = torch.repeat_interleave(torch.arange(len(rows)), counts)
    col = torch.tensor([j for r in rows for j in r], dtype=torch.long)
    return Neighbors(indptr, row, col, torch.zeros(len(col), 2), num_points)


def _scattered() -> Neighbors:
    points = PointSet(sobol(64, 2, seed=3))
    return neighbors(points, points.prefix(16), Support(0.3))


def _ref(pairs, nbrs, weight, reduce, fill=0.0):
    """Loop reference in float64: one query, one batch element, one channel at a time."""
    b, _, c = pairs.shape
    out = torch.full((b, nbrs.num_queries, c), fill, dtype=torch.float64)
    for i in range(nbrs.num_queries):
        lo, hi = int(nbrs.indptr[i]), int(nbrs.indptr[i + 1])
        for bb in range(b):
            for cc in range(c):
                vals = [float(pairs[bb, e, cc]) for e in range(lo, hi)]
                ws = [1.0 if weight is None else float(weight[e]) for e in range(lo, hi)]
                if not vals:
                    continue
                if reduce == "sum":
                    out[bb, i, cc] = sum(w * v for w, v in zip(ws, vals))
                elif reduce == "mean":
                    out[bb, i, cc] = sum(w * v for w, v in zip(ws, vals)) / sum(ws)
                else:
                    out[bb, i, cc] = max(vals)
    return out


@pytest.mark.parametrize("make", [_scattered, lambda: _csr([[0, 2], [], [1, 2, 3], [3]], 4)])
@pytest.mark.parametrize("weighted", [False, True])
def test_sum_and_mean_match_loops(make, weighted):
    nbrs = make()
    values = torch.randn(2, nbrs.num_points, 3)
    pairs = gather(values, nbrs)
    torch.testing.assert_close(pairs, values[:, nbrs.col])
    weight = torch.rand(nbrs.num_pairs) + 0.1 if weighted else None
    torch.testing.assert_close(segment_sum(pairs, nbrs, weight).double(), _ref(pairs, nbrs, weight, "sum"))
    torch.testing.assert_close(segment_mean(pairs, nbrs, weight).double(), _ref(pairs, nbrs, weight, "mean"))


@pytest.mark.parametrize("make", [_scattered, lambda: _csr([[0, 2], [], [1, 2, 3], [3]], 4)])
def test_max_matches_loop(make):
    nbrs = make()
    pairs = gather(torch.randn(3, nbrs.num_points, 2), nbrs)
    torch.testing.assert_close(segment_max(pairs, nbrs, fill=-5.0).double(), _ref(pairs, nbrs, None, "max", -5.0))


def test_weight_sum_counts_and_totals():
    nbrs = _csr([[0, 1, 2], [], [3]], 4)
    torch.testing.assert_close(segment_weight_sum(nbrs), torch.tensor([3.0, 0.0, 1.0]))
    w = torch.tensor([1.0, 2.0, 3.0, 0.5])
    torch.testing.assert_close(segment_weight_sum(nbrs, w), torch.tensor([6.0, 0.0, 0.5]))


def test_max_gradient_goes_to_first_maximum_only():
    nbrs = _csr([[0, 1, 2], [2, 3]], 4)
    values = torch.tensor([[[1.0], [4.0], [4.0], [2.0]]], requires_grad=True)
    out = segment_max(gather(values, nbrs), nbrs)
    assert out.flatten().tolist() == [4.0, 4.0]
    out.sum().backward()
    assert values.grad.flatten().tolist() == [0.0, 1.0, 1.0, 0.0]


def test_max_propagates_nan_and_fills_empty():
    nbrs = _csr([[0, 1], [], [2]], 3)
    values = torch.tensor([[[float("nan")], [1.0], [2.0]]])
    out = segment_max(gather(values, nbrs), nbrs, fill=7.0).flatten()
    assert torch.isnan(out[0]) and out[1:].tolist() == [7.0, 2.0]


def test_no_pairs_at_all():
    nbrs = _csr([[], []], 3)
    pairs = gather(torch.randn(2, 3, 4), nbrs)
    assert segment_max(pairs, nbrs, fill=1.5).eq(1.5).all()
    assert segment_sum(pairs, nbrs).eq(0).all() and segment_mean(pairs, nbrs).eq(0).all()


def test_gradcheck():
    nbrs = _csr([[0, 2], [1, 2, 3], [3]], 4)
    values = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(nbrs.num_pairs, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda v: segment_sum(gather(v, nbrs), nbrs, w), (values,))
    assert torch.autograd.gradcheck(lambda v: segment_mean(gather(v, nbrs), nbrs, w), (values,))
    assert torch.autograd.gradcheck(lambda v: segment_max(gather(v, nbrs), nbrs), (values,))


@pytest.mark.parametrize("make", [_scattered, lambda: _csr([[0, 2], [], [1, 2, 3], [3]], 4)])
@pytest.mark.parametrize("chunk_bytes", [1, 40, None])  # one pair per chunk, a few, all at once
def test_gather_scale_sum_is_its_unfused_reference_in_chunks(make, chunk_bytes):
    torch.manual_seed(0)
    nbrs = make()
    values = torch.randn(2, nbrs.num_points, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(nbrs.num_pairs, 3, dtype=torch.float64, requires_grad=True)
    out = gather_scale_sum(values, nbrs, scale, chunk_bytes)
    ref = segment_sum(gather(values, nbrs) * scale, nbrs)  # the unfused products
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, _ref((gather(values, nbrs) * scale).detach(), nbrs, None, "sum"))
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (values, scale), g)
    refs = torch.autograd.grad(ref, (values, scale), g)
    for a, b in zip(grads, refs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v, s: gather_scale_sum(v, nbrs, s, chunk_bytes), (values, scale))
    with pytest.raises(ValueError, match="scale Tensor"):
        gather_scale_sum(values, nbrs, scale[:, :2])


def test_bad_shapes_raise():
    nbrs = _csr([[0, 1], [1]], 2)
    with pytest.raises(ValueError, match=r"N=2"):
        gather(torch.randn(1, 3, 1), nbrs)
    with pytest.raises(ValueError, match=r"E=3"):
        segment_sum(torch.randn(1, 2, 1), nbrs)
    with pytest.raises(ValueError, match=r"E=3"):
        segment_max(torch.randn(3, 1), nbrs)
    with pytest.raises(ValueError, match=r"pair weights"):
        segment_mean(torch.randn(1, 3, 1), nbrs, torch.ones(2))
