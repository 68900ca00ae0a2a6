"""Tests for ``inrnet.field``: Lattice, PointSet and Field."""

import gc
import math
import pickle
import re
import weakref

import pytest
import torch
from torch import nn

from inrnet import Field, Lattice, PointSet
from inrnet.convert import from_torch
from inrnet.field import check_same_points
from inrnet.inr import PixelINR, sample
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.sampling import grid, halton, shrunk, sobol, uniform


def _sobol_points(n=64, d=2, seed=0):
    return PointSet(sobol(n, d, seed=seed))


# --------------------------------------------------------------------------------------
# Lattice
# --------------------------------------------------------------------------------------
def test_lattice_grid_and_sub_by_hand():
    lattice = Lattice.grid((4, 2))
    assert lattice.origin == (-0.75, -0.5) and lattice.step == (0.5, 1.0) and lattice.size == 8
    torch.testing.assert_close(lattice.coords(torch.float64), grid((4, 2), dtype=torch.float64), rtol=0, atol=0)
    sub, index = lattice.sub((1, 0), (2, 1), (4, 2))  # rows 1, 3; both columns
    assert sub == Lattice((-0.25, -0.5), (1.0, 1.0), (2, 2))
    assert index.tolist() == [2, 3, 6, 7]
    with pytest.raises(ValueError, match="empty"):
        lattice.sub((4, 0), (1, 1), (4, 2))


# --------------------------------------------------------------------------------------
# PointSet construction and validation
# --------------------------------------------------------------------------------------
def test_default_weights_sum_to_the_domain_volume():
    assert _sobol_points(64, 2).weights.sum().item() == pytest.approx(4.0)
    assert _sobol_points(100, 3).weights.sum().item() == pytest.approx(8.0)
    p = PointSet(torch.rand(10, 2) * 0.5, bounds=[(0.0, 0.5), (0.0, 2.0)])
    assert p.bounds == ((0.0, 0.5), (0.0, 2.0)) and p.volume == 1.0
    torch.testing.assert_close(p.weights, torch.full((10,), 0.1))


def test_basic_properties():
    p = _sobol_points(50, 3)
    assert (p.n, p.dim, len(p), p.dtype, p.device.type) == (50, 3, 50, torch.float32, "cpu")
    assert p.bounds == ((-1.0, 1.0),) * 3 and p.volume == 8.0 and p.lattice is None
    assert p.order == "nested" and repr(p) == "PointSet(n=50, d=3, nested, device=cpu)"
    assert p.uid != _sobol_points(50, 3).uid


def test_explicit_weights_are_kept_and_cast():
    w = torch.linspace(1, 2, 5, dtype=torch.float64)
    p = PointSet(torch.zeros(5, 1), w)
    assert p.weights.dtype == torch.float32
    torch.testing.assert_close(p.weights, w.float())


@pytest.mark.parametrize("coords, match", [
    ([[0.0, 0.0]], "floating Tensor"),
    (torch.zeros(4), r"floating Tensor\[N, d\].*\(4,\)"),
    (torch.zeros(2, 3, 2), r"\(2, 3, 2\)"),
    (torch.zeros(4, 2, dtype=torch.long), "floating"),
    (torch.zeros(0, 2), "at least one point"),
    (torch.zeros(3, 0), "at least one point"),
    (torch.tensor([[0.0, float("nan")]]), "NaN"),
    (torch.tensor([[0.0], [float("inf")]]), "infinite"),
])
def test_bad_coords_raise(coords, match):
    with pytest.raises(ValueError, match=match):
        PointSet(coords)


@pytest.mark.parametrize("weights, match", [
    (torch.ones(3), r"Tensor\[4\].*\(3,\)"),
    (torch.ones(4, 1), r"\(4, 1\)"),
    (torch.tensor([1.0, 0.0, 1.0, 1.0]), "positive"),
    (torch.tensor([1.0, -1.0, 1.0, 1.0]), "positive"),
    (torch.tensor([1.0, float("nan"), 1.0, 1.0]), "positive"),
    (torch.tensor([1.0, float("inf"), 1.0, 1.0]), r"finite and positive.*1 of 4.*\[inf\]"),
    (torch.tensor([-float("inf"), 1.0, 1.0, 1.0]), r"finite and positive.*\[-inf\]"),
    (torch.full((4,), 1e300, dtype=torch.float64), r"finite.*4 of 4"),  # inf once cast to the coords' float32
])
def test_bad_weights_raise(weights, match):
    with pytest.raises(ValueError, match=match):
        PointSet(torch.zeros(4, 2), weights)


def test_points_outside_the_bounds_raise():
    # pixel units in [3, 5]^2 against the default domain [-1, 1]^2: every integral would be wrong
    with pytest.raises(ValueError, match=r"coordinate 0 of the points spans \[3, 5\], outside the domain "
                                         r"\[-1, 1\] x \[-1, 1\].*bounds="):
        PointSet(torch.tensor([[3.0, 4.0], [5.0, 5.0]]))
    assert PointSet(torch.tensor([[3.0, 4.0], [5.0, 5.0]]), bounds=[(3, 5), (3, 5)]).volume == 4.0
    with pytest.raises(ValueError, match=r"coordinate 1 .*\[-0.5, 1.0001\]"):
        PointSet(torch.tensor([[0.0, -0.5], [0.0, 1.0001]]))
    with pytest.raises(ValueError, match=r"coordinate 0 .*\[-2, 0\].*\[-1, 1\]"):
        PointSet(torch.tensor([[-2.0], [0.0]]))
    # points on the boundary, and within BOUNDARY_TOL of it, are inside
    edge = torch.tensor([[-1.0, 1.0], [1.0 + 5e-7, -1.0 - 5e-7]])
    assert PointSet(edge).n == 2
    assert PointSet(torch.tensor([[10.0]], dtype=torch.float64), bounds=[(0.0, 10.0)]).n == 1


def test_bad_bounds_and_lattice_raise():
    with pytest.raises(ValueError, match="2 pairs"):
        PointSet(torch.zeros(4, 2), bounds=[(-1, 1)])
    with pytest.raises(ValueError, match="lo <"):
        PointSet(torch.zeros(4, 1), bounds=[(1, -1)])
    with pytest.raises(ValueError, match=r"lattice of shape \(2, 3\) has 6 points, coords have 4"):
        PointSet(torch.zeros(4, 2), lattice=Lattice.grid((2, 3)))


@pytest.mark.parametrize("shape", [(4,), (2, 3), (6, 4), (2, 2, 2), (8, 8)])
def test_grid_point_set(shape):
    p = PointSet.grid(shape)
    assert p.lattice == Lattice.grid(shape) and p.n == math.prod(shape)
    torch.testing.assert_close(p.coords, grid(shape), rtol=0, atol=1e-7)
    assert p.weights.sum().item() == pytest.approx(2.0 ** len(shape))
    torch.testing.assert_close(p.weights, torch.full((p.n,), 2.0 ** len(shape) / p.n))


@pytest.mark.parametrize("shape", [(3,), (7,), (11, 27)])
def test_grid_point_set_equals_sampling_grid_exactly(shape):
    p = PointSet.grid(shape)
    check_same_points(p, PointSet(grid(shape)))


@pytest.mark.parametrize("shape", [(1,), (3,), (10,), (7, 11), (33, 35), (5, 6, 7), (224, 224)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_grid_point_set_coordinates_are_sampling_grid_bit_for_bit(shape, dtype):
    """``PointSet.grid`` computes its coordinates as ``Lattice.grid(shape).coords``, rounded as ``grid`` rounds
    (``origin + step * i`` differs from ``(2 i + 1) / n - 1`` in the last bit for most sizes)."""
    coords = PointSet.grid(shape, dtype=dtype).coords
    assert coords.dtype == dtype and torch.equal(coords, grid(shape, dtype=dtype))
    assert torch.equal(Lattice.grid(shape).coords(dtype), coords)


# --------------------------------------------------------------------------------------
# Order: lattice, nested or unordered
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (1, 8), (8, 8), (6, 4), (11, 27), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_raw_grid_coordinates_are_the_grid_lattice(shape, dtype):
    p = PointSet(grid(shape, dtype=dtype))
    assert p.order == "lattice" and p.lattice == Lattice.grid(shape) and repr(p).count(f"lattice {shape}") == 1


def test_raw_grid_coordinates_downsample_like_the_grid():
    # The 8x8 grid with stride 2 kept its first 16 points, the two top rows of the image.
    raw, lattice = PointSet(grid((8, 8))).downsample(2), PointSet.grid((8, 8)).downsample(2)
    assert raw.lattice == lattice.lattice and torch.equal(raw.coords, lattice.coords)
    assert raw.coords[:, 0].unique().tolist() == [-0.875, -0.375, 0.125, 0.625]  # rows 0, 2, 4, 6


def _small_strided_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 5)).double().eval()


def test_a_converted_strided_cnn_is_exact_on_raw_grid_coordinates():
    # inrnet.sample(inrs, grid(shape)) wraps raw coordinates in a PointSet: it must see the lattice.
    cnn = _small_strided_cnn()
    inet = from_torch(cnn, (8, 8))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out = inet(sample(PixelINR(x), grid((8, 8), dtype=torch.float64)))
    torch.testing.assert_close(out, cnn(x), rtol=1e-10, atol=1e-10)


def _permuted(shape):
    return grid(shape)[torch.randperm(math.prod(shape), generator=torch.Generator().manual_seed(0))]


def _fortran(shape):
    return grid(shape[::-1]).flip(-1)  # the last axis varies slowest


def _masked(shape):
    return grid(shape)[torch.rand(math.prod(shape), generator=torch.Generator().manual_seed(0)) < 0.7]


@pytest.mark.parametrize("coords", [_permuted((8, 8)), _permuted((4, 3, 2)), _fortran((4, 6)), _masked((8, 8)),
                                    grid((7,)).flip(0), grid((16, 16))[:200]], ids=lambda c: str(tuple(c.shape)))
def test_grids_in_a_scan_order_are_unordered_and_refuse_prefixes(coords):
    p = PointSet(coords)
    assert p.order == "unordered" and p.lattice is None and "unordered" in repr(p)
    fix = r"PointSet.grid\(shape\).*lattice=.*order='nested'"
    with pytest.raises(ValueError, match=r"cannot be downsampled by \(2(, 2)*,?\).*'unordered'.*first rows.*" + fix):
        p.downsample(2)
    with pytest.raises(ValueError, match=r"cannot give a prefix of 3 points.*" + fix):
        p.prefix(3)
    with pytest.raises(ValueError, match="unordered"):
        BSplineConv(1, 1, (3,) * p.dim, spacing=0.25, stride=2)(Field(torch.randn(1, p.n, 1), p))


@pytest.mark.parametrize("coords", [sobol(64, 2, seed=0), sobol(2, 2, seed=1), sobol(100, 1, seed=2), halton(50, 3),
                                    uniform(30, 2, seed=0), shrunk(64, 2, seed=0), torch.zeros(4, 2)],
                         ids=lambda c: str(tuple(c.shape)))
def test_scattered_points_are_nested(coords):
    p = PointSet(coords)
    assert p.order == "nested" and p.lattice is None
    assert p.downsample(2) is p.prefix(math.ceil(p.n / 2 ** p.dim))


def test_equally_spaced_lattices_that_are_not_cell_centres():
    p = PointSet(torch.cartesian_prod(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 3)))
    assert p.order == "lattice" and p.lattice.shape == (5, 3) and p.lattice.origin == (-1.0, -1.0)
    assert p.lattice.step == pytest.approx((0.5, 1.0), rel=1e-12)
    torch.testing.assert_close(p.downsample(2).coords, p.coords.reshape(5, 3, 2)[::2, ::2].reshape(-1, 2))
    top = PointSet(grid((8, 8))[:16])  # the first two rows of a grid, in C order
    assert top.lattice == Lattice((-0.875, -0.875), (0.25, 0.25), (2, 8))


def test_an_explicit_order_wins():
    nested = PointSet(grid((8, 8)), order="nested")
    assert nested.lattice is None and nested.downsample(2) is nested.prefix(16)
    with pytest.raises(ValueError, match="unordered"):
        PointSet(sobol(64, 2, seed=0), order="unordered").downsample(2)
    assert PointSet(_permuted((8, 8)), order="nested").downsample(2).n == 16
    lattice = PointSet(grid((2, 2)), lattice=Lattice.grid((2, 2)), order="lattice")
    assert lattice.order == "lattice" and lattice.lattice == Lattice.grid((2, 2))
    with pytest.raises(ValueError, match=r"order='lattice' needs the lattice="):
        PointSet(grid((2, 2)), order="lattice")
    with pytest.raises(ValueError, match=r"order='nested' contradicts lattice=Lattice"):
        PointSet(grid((2, 2)), lattice=Lattice.grid((2, 2)), order="nested")
    with pytest.raises(ValueError, match=r"order must be one of \('lattice', 'nested', 'unordered'\), got 'sobol'"):
        PointSet(grid((2, 2)), order="sobol")


def test_derived_point_sets_keep_their_order():
    s = _sobol_points(256)
    assert s.prefix(10).order == "nested" and s.downsample(2).order == "nested"
    assert s.restrict([(-0.5, 0.5)] * 2).order == "nested"  # a subsequence keeps its prefixes spread out
    assert s.subset(torch.tensor([1, 5, 9])).order == "nested"
    assert s.subset(torch.tensor([9, 5, 1])).order == "unordered"
    assert s.subset(torch.tensor([9, 5, 1]), order="nested").order == "nested"
    g = PointSet.grid((8, 8))
    assert g.downsample(2).order == "lattice" and g.restrict([(-0.5, 0.5)] * 2).order == "lattice"
    assert g.subset(torch.tensor([0, 2, 3])).order == "unordered"
    assert PointSet(_permuted((8, 8))).restrict([(-0.5, 0.5)] * 2).order == "unordered"
    assert g.to(dtype=torch.float64).order == "lattice" and s.to(dtype=torch.float64).order == "nested"
    with pytest.raises(ValueError, match=r"prefix of 8 points: a prefix of a lattice .* first rows.*downsample"):
        g.prefix(8)


# --------------------------------------------------------------------------------------
# Derived point sets
# --------------------------------------------------------------------------------------
def test_prefix_is_a_memoised_child():
    p = _sobol_points(100)
    q = p.prefix(30)
    assert p.prefix(30) is q and q.parent is p
    assert torch.equal(q.coords, p.coords[:30]) and q.parent_index.tolist() == list(range(30))
    torch.testing.assert_close(q.weights, torch.full((30,), 4 / 30))
    assert p.prefix(31) is not q


def test_prefix_rescales_non_uniform_weights():
    p = PointSet(torch.zeros(4, 1), torch.tensor([1.0, 3.0, 2.0, 2.0]))
    torch.testing.assert_close(p.prefix(2).weights, torch.tensor([2.0, 6.0]))


@pytest.mark.parametrize("m", [0, 101, -1])
def test_bad_prefix_raises(m):
    with pytest.raises(ValueError, match=r"prefix length must be in \[1, 100\]"):
        _sobol_points(100).prefix(m)


def test_downsample_scattered_keeps_a_prefix():
    p = _sobol_points(101, 2)
    assert p.downsample(2) is p.prefix(26)  # ceil(101 / 4)
    assert p.downsample((2, 1)) is p.prefix(51)
    assert p.downsample(1) is p and p.downsample((1, 1)) is p
    assert _sobol_points(64, 3).downsample(2).n == 8
    assert p.downsample(2).weights.sum().item() == pytest.approx(4.0)


def test_downsample_lattice_keeps_every_other_point_from_the_first():
    p = PointSet.grid((6, 4))
    q = p.downsample(2)
    assert p.downsample(2) is q and p.downsample((2, 2)) is q and q.parent is p
    # rows 0, 2, 4 of 6 (centres -5/6, -1/6, 1/2); columns 0, 2 of 4 (-3/4, 1/4)
    expected = torch.tensor([[r, c] for r in (-5 / 6, -1 / 6, 1 / 2) for c in (-0.75, 0.25)])
    torch.testing.assert_close(q.coords, expected)
    assert q.parent_index.tolist() == [0, 2, 8, 10, 16, 18]
    assert q.lattice.shape == (3, 2)
    torch.testing.assert_close(q.lattice.coords(), expected)
    torch.testing.assert_close(q.weights, torch.full((6,), 4 / 6))
    # anisotropic factor
    r = p.downsample((1, 4))
    assert r.lattice.shape == (6, 1) and r.parent_index.tolist() == [0, 4, 8, 12, 16, 20]
    # chained downsampling equals one bigger step
    torch.testing.assert_close(PointSet.grid((8, 8)).downsample(2).downsample(2).coords,
                               PointSet.grid((8, 8)).downsample(4).coords)


def test_lattice_weights_are_the_cell_measure():
    # On a lattice every point stands for one cell of the lattice, prod(step): the weight a
    # discrete twin needs. It sums to the domain volume only where the cells tile the domain.
    p = PointSet.grid((5, 6))
    derived = [p, p.downsample(2), p.downsample((3, 1)), p.restrict([(-0.6, 0.6), (-2 / 3, 1.0)]),
               p.restrict([(-0.6, 0.6), (-2 / 3, 1.0)]).downsample(2)]
    for q in derived:
        torch.testing.assert_close(q.weights, torch.full((q.n,), math.prod(q.lattice.step)))
    odd = p.downsample(2)
    assert odd.lattice.shape == (3, 3) and odd.weights.sum().item() == pytest.approx(9 * 0.8 * 2 / 3)
    assert PointSet.grid((6, 6)).downsample(2).weights.sum().item() == pytest.approx(4.0)


@pytest.mark.parametrize("factor", [0, (2, 2, 2), (2, -1)])
def test_bad_downsample_raises(factor):
    with pytest.raises(ValueError, match="downsampling factor"):
        PointSet.grid((4, 4)).downsample(factor)


def test_restrict_lattice_keeps_boundary_points():
    p = PointSet.grid((8, 8))  # centres -0.875, -0.625, ..., 0.875
    q = p.restrict([(-0.625, 0.625), (-0.125, 0.875)])
    assert p.restrict([(-0.625, 0.625), (-0.125, 0.875)]) is q and q.parent is p
    assert q.lattice == Lattice((-0.625, -0.125), (0.25, 0.25), (6, 5))
    assert q.bounds == ((-0.625, 0.625), (-0.125, 0.875))
    torch.testing.assert_close(q.coords, q.lattice.coords())
    torch.testing.assert_close(q.coords, p.coords[q.parent_index])
    assert q.parent_index[:6].tolist() == [11, 12, 13, 14, 15, 19]
    torch.testing.assert_close(q.weights, torch.full((30,), 4 / 64))  # each point keeps its cell


@pytest.mark.parametrize("n", [5, 28, 224])
def test_restrict_reproduces_unpadded_discrete_output_sizes(n):
    # A k-tap window has reach k*h/2 around its (for even k, +h/2 shifted) centre; the
    # points where it fits inside the domain are the n - k + 1 outputs of torch padding=0.
    h = 2 / n
    p = PointSet.grid((n,))
    for k in (2, 3, 4, 5):
        shift = h / 2 if k % 2 == 0 else 0.0
        q = p.restrict([(-1 + k * h / 2 - shift, 1 - k * h / 2 - shift)])
        assert q.n == n - k + 1 and q.parent_index.tolist() == list(range((k - 1) // 2, (k - 1) // 2 + n - k + 1))


def test_restrict_to_a_zero_width_box_keeps_the_lattice_line():
    # A window as wide as the domain leaves one line of outputs (torch: n - k + 1 = 1).
    q = PointSet.grid((5, 5)).restrict([(0.0, 0.0), (-1.0, 1.0)])
    assert q.lattice.shape == (1, 5) and q.parent_index.tolist() == [10, 11, 12, 13, 14] and q.volume == 0.0


def test_restrict_scattered_and_empty():
    p = _sobol_points(200)
    q = p.restrict([(-0.5, 0.5), (0.0, 1.0)])
    inside = ((p.coords[:, 0].abs() <= 0.5) & (p.coords[:, 1] >= 0)).nonzero().squeeze(-1)
    assert torch.equal(q.parent_index, inside) and torch.equal(q.coords, p.coords[inside])
    assert q.lattice is None and q.bounds == ((-0.5, 0.5), (0.0, 1.0))
    with pytest.raises(ValueError, match="no point"):
        PointSet.grid((2, 2)).restrict([(-0.1, 0.1)] * 2)


def test_subset_and_cached():
    p = _sobol_points(10)
    q = p.subset(torch.tensor([3, 1]))
    assert torch.equal(q.coords, p.coords[[3, 1]]) and q.parent is p and q.parent_index.tolist() == [3, 1]
    calls = []
    first = p.cached("k", lambda: calls.append(1) or object())
    assert p.cached("k", lambda: calls.append(1) or object()) is first and calls == [1]


def test_cache_entries_keyed_by_another_point_set_die_with_it():
    p, q = _sobol_points(16), _sobol_points(8, seed=1)
    first = p.cached(("pair", q, 3), lambda: torch.zeros(5))
    assert p.cached(("pair", q, 3), lambda: torch.ones(5)) is first
    assert p.cached(("self", p), lambda: 1) == 1  # a key holding the point set itself needs no link
    child = p.prefix(4)
    assert len(p._cache) == 3
    del q, first
    gc.collect()
    assert list(p._cache.values()) == [1, child]


def test_a_long_lived_query_set_keeps_no_point_set_alive():
    q = _sobol_points(8, seed=1)
    refs = []
    for seed in range(20):
        p = _sobol_points(16, seed=seed)
        p.cached(("pair", q), lambda: torch.zeros(1000))
        refs.append(weakref.ref(p))
    del p
    gc.collect()
    assert all(r() is None for r in refs) and weakref.getweakrefcount(q) == 0


def test_pickling_drops_the_entries_tied_to_other_point_sets():
    p, q = PointSet.grid((4, 4)), PointSet.grid((2, 2))
    p.cached(("pair", q), lambda: 1)
    child = p.downsample(2)
    copy = pickle.loads(pickle.dumps(p))
    assert list(copy._cache) == [("downsample", (2, 2))] and copy.order == "lattice"
    assert torch.equal(copy.downsample(2).coords, child.coords)


def test_to_same_device_is_identity_and_dtype_converts():
    p = PointSet.grid((3, 3))
    assert p.to("cpu") is p and p.to() is p
    q = p.to(dtype=torch.float64)
    assert q.dtype == torch.float64 and q.weights.dtype == torch.float64 and q.lattice == p.lattice
    torch.testing.assert_close(q.coords, p.coords.double())


# --------------------------------------------------------------------------------------
# Field
# --------------------------------------------------------------------------------------
def test_field_basics():
    p = _sobol_points(20, 2)
    v = torch.randn(3, 20, 5)
    f = Field(v, p)
    assert (f.batch_size, f.channels) == (3, 5) and f.values is v and f.points is p and f.coords is p.coords
    assert "B=3" in repr(f) and "C=5" in repr(f)
    g = f.replace(torch.zeros(3, 20, 2))
    assert g.points is p and g.channels == 2
    f.check_channels(5)
    with pytest.raises(ValueError, match=r"conv1 expects 4 input channels.*\(3, 20, 5\)"):
        f.check_channels(4, "conv1")
    h = f.to(dtype=torch.float64)
    assert h.values.dtype == torch.float64 and h.points.dtype == torch.float64


@pytest.mark.parametrize("values", [torch.zeros(20, 5), torch.zeros(2, 19, 5), torch.zeros(1, 2, 20, 5)])
def test_field_rejects_bad_values(values):
    with pytest.raises(ValueError, match=r"Tensor\[B, N=20, C\].*" + re.escape(str(tuple(values.shape)))):
        Field(values, _sobol_points(20))


def test_field_rejects_non_point_sets_and_bad_replacements():
    with pytest.raises(TypeError, match="PointSet"):
        Field(torch.zeros(1, 4, 1), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="N=4"):
        Field(torch.zeros(1, 4, 1), PointSet.grid((2, 2))).replace(torch.zeros(1, 5, 1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_field_rejects_values_on_another_device():
    with pytest.raises(ValueError, match="cuda.*cpu"):
        Field(torch.zeros(1, 4, 1, device="cuda"), PointSet.grid((2, 2)))


def test_check_same_points():
    p = _sobol_points(16)
    check_same_points(p, p)
    check_same_points(p, PointSet(p.coords.clone()))
    with pytest.raises(ValueError, match=r"skip.*different point sets.*n=16.*n=15"):
        check_same_points(p, p.prefix(15), "skip")
    with pytest.raises(ValueError, match="different point sets"):
        check_same_points(p, _sobol_points(16, seed=1))
    with pytest.raises(ValueError, match="different point sets"):
        check_same_points(p, _sobol_points(16, d=3))
