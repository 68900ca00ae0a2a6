"""B-spline convolutions: the discrete twin on grids (all degrees, 1-3 d, strides) and the
fast path against scipy's B-spline basis on scattered points."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _conv_helpers import D64, loop_conv, torch_conv, twin
from scipy.interpolate import BSpline

from inrnet.field import Field, PointSet
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.sampling import sobol
from inrnet.testing import assert_matches_discrete, grid_field


@pytest.mark.parametrize("shape,k,stride,padding,groups", [
    ((8, 9), 3, 1, "zeros", 1), ((8, 9), 3, 2, "zeros", 1), ((7, 7), 3, 2, "zeros", 2),
    ((6, 7), 2, 1, "zeros", 1), ((8, 8), 4, 1, "zeros", 2), ((9, 8), 4, 2, "zeros", 1),
    ((11, 10), 5, 2, "zeros", 1), ((7, 8), 3, 1, "none", 1), ((9, 8), 4, 2, "none", 1),
    ((8, 8), 2, 2, "none", 2), ((10, 9), 7, 3, "none", 1), ((7, 6), 3, 1, "symmetric", 1),
    ((8, 8), 4, 1, "symmetric", 1), ((9, 9), (3, 5), (1, 2), "zeros", 1), ((8, 8), 3, 1, "zeros", 4),
])
def test_bspline_conv_reproduces_conv2d(shape, k, stride, padding, groups):
    out, ref = twin(shape, k, stride, padding, groups)
    assert out.values.shape == (ref.shape[0], math.prod(ref.shape[2:]), ref.shape[1])
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)
    # the output points are where torch's output pixels sit
    assert out.points.lattice.shape == tuple(ref.shape[2:])


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_bspline_conv_float32_and_all_degrees(degree):
    out, ref = twin((10, 9), 5, 2, "zeros", 1, dtype=torch.float32, degree=degree)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,k", [((13,), 3), ((12,), 4), ((5, 6, 4), 3), ((6, 5, 5), 2)])
def test_bspline_conv_1d_and_3d(shape, k):
    for padding, stride in [("zeros", 1), ("none", 2)]:
        out, ref = twin(shape, k, stride, padding, 1, c_in=2, c_out=3)
        torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


def test_twin_through_the_shared_assert():
    conv = torch.nn.Conv2d(3, 4, 5, stride=2, padding=2)
    layer = BSplineConv(3, 4, 5, (2 / 12, 2 / 11), stride=2)
    layer.load_state_dict(conv.state_dict())
    assert_matches_discrete(layer, conv, torch.randn(2, 3, 12, 11), atol=1e-5, rtol=1e-5)


def test_stacked_strided_convs_stay_exact():
    """A second conv on the sub-lattice of a strided one still matches (odd size)."""
    x = torch.randn(2, 3, 11, 11, dtype=D64)
    a = BSplineConv(3, 4, 3, 2 / 11, stride=2).double()
    b = BSplineConv(4, 5, 3, 4 / 11, stride=2).double()
    out = b(a(grid_field(x)))
    ref = F.conv2d(F.conv2d(x, a.weight, a.bias, stride=2, padding=1), b.weight, b.bias, stride=2, padding=1)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


def reference_bspline_kernel(layer: BSplineConv, offset: np.ndarray) -> np.ndarray:
    """The kernel at one offset from scipy's B-spline basis, looping over control points."""
    p = layer.degree
    basis = BSpline.basis_element(np.arange(p + 2) - (p + 1) / 2, extrapolate=False)
    ctrl = layer.control_points().detach().double().numpy()  # (C_out, Cg, *k)
    u = [(offset[k] - layer.support.center[k]) / layer.spacing[k] + (layer.kernel_size[k] - 1) / 2
         for k in range(layer.dim)]
    out = np.zeros(ctrl.shape[:2])
    for taps in itertools.product(*[range(n) for n in layer.kernel_size]):
        vals = [basis(u[k] - taps[k]) for k in range(layer.dim)]
        w = np.prod([0.0 if np.isnan(v) else float(v) for v in vals])
        out += w * ctrl[(slice(None), slice(None), *taps)]
    return out.T / math.prod(layer.spacing)  # (Cg, C_out)


@pytest.mark.parametrize("degree,k,groups,shape", [(0, 3, 1, "box"), (1, 3, 2, "box"), (2, 4, 1, "box"),
                                                   (3, 5, 1, "ball")])
def test_bspline_fast_path_matches_loop_reference(degree, k, groups, shape):
    pts = PointSet(sobol(48, 2, seed=1, dtype=D64))
    layer = BSplineConv(4, 6, k, 0.15, degree=degree, groups=groups, support_shape=shape, stride=2).double()
    vals = torch.randn(2, 48, 4, dtype=D64)
    out = layer(Field(vals, pts))
    ref = loop_conv(layer, vals, pts, out.points, lambda d: reference_bspline_kernel(layer, d))
    torch.testing.assert_close(out.values, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,k,stride", [((9, 10), 3, 1), ((11, 11), 3, 2), ((8, 9), 4, 2), ((9, 8), 2, 1)])
def test_basis_extent_is_still_the_twin_for_degree_one(shape, k, stride):
    x = torch.randn(2, 3, *shape, dtype=D64)
    taps = BSplineConv(3, 4, k, tuple(2 / s for s in shape), stride=stride, degree=1).double()
    basis = BSplineConv(3, 4, k, tuple(2 / s for s in shape), stride=stride, degree=1, support_extent="basis").double()
    basis.load_state_dict(taps.state_dict())
    assert all(b > t for b, t in zip(basis.support.half_width, taps.support.half_width))
    assert basis.support.center == taps.support.center
    ref = torch_conv(x, taps.weight, taps.bias, stride, "zeros", 1).flatten(2).transpose(1, 2)
    torch.testing.assert_close(basis(grid_field(x)).values, ref, rtol=1e-10, atol=1e-10)


def test_basis_extent_keeps_whole_edge_basis_functions():
    """The kernel is the spline surface itself: on scattered points it has no jump where the
    taps' footprint ends, and each edge tap keeps its whole basis function's integral."""
    h = 0.25
    taps = BSplineConv(1, 1, 3, h, degree=1, bias=False).double()
    basis = BSplineConv(1, 1, 3, h, degree=1, bias=False, support_extent="basis").double()
    with torch.no_grad():
        for layer in (taps, basis):
            layer.weight.zero_()
            layer.weight[0, 0, 0, 1] = 1.0  # one edge tap, at offset (-h, 0)
    # the kernel along axis 0 just inside / outside the footprint's edge at -1.5 h
    off = torch.tensor([[-1.5 * h + 1e-9, 0.0], [-1.5 * h - 1e-9, 0.0], [-2 * h + 1e-9, 0.0]], dtype=D64)
    kt, kb = taps.pair_kernel(off)[:, 0, 0], basis.pair_kernel(off)[:, 0, 0]
    torch.testing.assert_close(kb[0], kb[1])  # continuous across -1.5 h
    assert kb[2] < 1e-6 * kb[0] and kb[1] > 0  # and falls to zero at -2 h
    # a dense quadrature of the kernel (a 256 x 256 grid of ones): the output is the kernel's integral in
    # pixel units, the whole hat's (1) with "basis", 0.875 of it with "taps"
    ones = grid_field(torch.ones(1, 1, 256, 256, dtype=D64))
    centre = PointSet(torch.zeros(1, 2, dtype=D64))
    with torch.no_grad():
        i_taps, i_basis = (float(layer(ones, query=centre).values) for layer in (taps, basis))
    assert abs(i_basis - 1.0) < 1e-6 and abs(i_taps - 0.875) < 1e-6
    with pytest.raises(ValueError, match="support_extent must be one of"):
        BSplineConv(1, 1, 3, h, support_extent="all")
