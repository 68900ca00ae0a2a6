"""Continuous convolutions: discrete twins on grids, fast path vs slow references,
binned vs exact MLP kernels, convergence under QMC (Property 3), gradcheck."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.interpolate import BSpline

from inrnet.field import Field, PointSet
from inrnet.neighbors import Support, neighbors
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import conv_pairs, support_fraction
from inrnet.nn.kernels import bspline_interpolation_matrix, cardinal_bspline
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.sampling import sobol
from inrnet.testing import assert_matches_discrete, grid_field

D64 = torch.float64


def torch_conv(x, weight, bias, stride, padding_mode, groups):
    """torch's convolution with 'same' padding (even kernels pad (k-1)//2 before, k//2
    after) by zeros, torch's reflect (about the edge pixel) or numpy's symmetric (edge pixel
    repeated; F.pad has none), or no padding."""
    k = weight.shape[2:]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(k)]
    if padding_mode == "none":
        return conv(x, weight, bias, stride=stride, groups=groups)
    pads = [p for kk in reversed(k) for p in ((kk - 1) // 2, kk // 2)]
    if padding_mode in ("zeros", "reflect"):
        x = F.pad(x, pads, mode="constant" if padding_mode == "zeros" else "reflect")
    else:
        widths = [(0, 0), (0, 0)] + [((kk - 1) // 2, kk // 2) for kk in k]
        x = torch.from_numpy(np.pad(x.numpy(), widths, mode="symmetric"))
    return conv(x, weight, bias, stride=stride, groups=groups)


def twin(shape, k, stride, padding, groups, c_in=4, c_out=8, dtype=D64, degree=None):
    x = torch.randn(2, c_in, *shape, dtype=dtype)
    layer = BSplineConv(c_in, c_out, k, tuple(2 / s for s in shape), stride=stride, padding=padding,
                        groups=groups, degree=degree).to(dtype)
    out = layer(grid_field(x))
    ref = torch_conv(x, layer.weight, layer.bias, stride, padding, groups)
    return out, ref


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


def loop_conv(layer, values, points: PointSet, queries: PointSet, kernel_fn):
    """Slow reference: every (query, point) pair, membership tested directly."""
    b, n, c_in = values.shape
    out = torch.zeros(b, queries.n, layer.out_channels, dtype=D64)
    cg, og = c_in // layer.groups, layer.out_channels // layer.groups
    for m in range(queries.n):
        for j in range(n):
            delta = (points.coords[j] - queries.coords[m]).double()
            u = (delta - torch.tensor(layer.support.center, dtype=D64)) / torch.tensor(layer.support.half_width, dtype=D64)
            inside = u.abs().max() <= 1 if layer.support.shape == "box" else (u * u).sum() <= 1
            if not inside:
                continue
            k = torch.as_tensor(kernel_fn(delta.numpy()), dtype=D64)  # (Cg, C_out)
            for g in range(layer.groups):
                out[:, m, g * og:(g + 1) * og] += points.weights[j].double() * (
                    values[:, j, g * cg:(g + 1) * cg].double() @ k[:, g * og:(g + 1) * og])
    return out + layer.bias.detach().double()


@pytest.mark.parametrize("degree,k,groups,shape", [(0, 3, 1, "box"), (1, 3, 2, "box"), (2, 4, 1, "box"),
                                                   (3, 5, 1, "ball")])
def test_bspline_fast_path_matches_loop_reference(degree, k, groups, shape):
    pts = PointSet(sobol(48, 2, seed=1, dtype=D64))
    layer = BSplineConv(4, 6, k, 0.15, degree=degree, groups=groups, support_shape=shape, stride=2).double()
    vals = torch.randn(2, 48, 4, dtype=D64)
    out = layer(Field(vals, pts))
    ref = loop_conv(layer, vals, pts, out.points, lambda d: reference_bspline_kernel(layer, d))
    torch.testing.assert_close(out.values, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", [
    lambda: MLPConv(3, 4, 0.4, hidden=(8,)),
    lambda: MLPConv(3, 4, Support(0.4, "ball"), hidden=(8,), n_bins=16),
    lambda: LegendreConv(3, 4, (0.4, 0.3), degree=3),
])
def test_learned_kernels_match_loop_reference(make):
    layer = make().double()
    pts = PointSet(sobol(40, 2, seed=2, dtype=D64))
    vals = torch.randn(2, 40, 3, dtype=D64)
    out = layer(Field(vals, pts))
    ref = loop_conv(layer, vals, pts, out.points,
                    lambda d: layer.pair_kernel(torch.as_tensor(d)[None]).detach()[0])
    torch.testing.assert_close(out.values, ref, rtol=1e-10, atol=1e-10)


def test_per_pair_path_matches_atom_path():
    pts = PointSet(sobol(200, 2, seed=3, dtype=D64))
    field = Field(torch.randn(3, 200, 6, dtype=D64), pts)
    for layer in [BSplineConv(6, 4, 3, 0.1, groups=2).double(), MLPConv(6, 4, 0.2, n_bins=32).double(),
                  LegendreConv(6, 6, 0.2, groups=6, estimator="mean").double()]:
        out = layer(field)
        nb = neighbors(pts, out.points, layer.support)
        ref = conv_pairs(field.values, nb, layer._pair_weight(pts, out.points, nb), layer.pair_kernel(nb.offset),
                         layer.groups) + layer.bias
        torch.testing.assert_close(out.values, ref, rtol=1e-12, atol=1e-12)


def test_cardinal_bspline_matches_scipy_and_interpolates_taps():
    v = torch.linspace(-2.5, 2.5, 101, dtype=D64)
    for p in range(4):
        ref = BSpline.basis_element(np.arange(p + 2) - (p + 1) / 2, extrapolate=False)(v.numpy())
        torch.testing.assert_close(cardinal_bspline(v, p), torch.from_numpy(np.nan_to_num(ref)), atol=1e-12, rtol=0)
        a = bspline_interpolation_matrix(5, p)
        torch.testing.assert_close(a.sum(1)[1:-1], torch.ones(3, dtype=D64))  # partition of unity inside
    # the kernel of a degree-2 conv equals its weights at the taps and is continuous between
    layer = BSplineConv(1, 1, 5, 0.1).double()
    taps = torch.tensor([[i * 0.1, j * 0.1] for i in range(-2, 3) for j in range(-2, 3)], dtype=D64)
    k = layer.pair_kernel(taps)[:, 0, 0] * 0.01
    torch.testing.assert_close(k, layer.weight.detach().reshape(-1))


def test_binned_mlp_converges_to_exact():
    pts = PointSet(sobol(1024, 2, seed=0, dtype=D64))
    field = Field(torch.randn(2, 1024, 3, dtype=D64), pts)
    layer = MLPConv(3, 4, 0.3, hidden=(16, 16)).double()
    exact = layer(field).values
    errors = []
    for n_bins in [4, 16, 64, 256, 1024]:
        layer.n_bins = n_bins
        errors.append((layer(field).values - exact).norm().item() / exact.norm().item())
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0]


def test_binned_mlp_evaluates_kernel_n_bins_times():
    calls = []
    layer = MLPConv(2, 2, 0.2, n_bins=32)
    layer.mlp[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    for n in [256, 4096]:
        calls.clear()
        layer(Field(torch.randn(1, n, 2), PointSet(sobol(n, 2, seed=0))))
        assert calls == [32]


def analytic_field(n, seed):
    pts = PointSet(sobol(n, 2, seed=seed, dtype=D64))
    x = pts.coords
    vals = torch.stack([torch.sin(math.pi * x[:, 0]) * torch.cos(math.pi * x[:, 1]), torch.exp(-(x * x).sum(-1))], -1)
    return Field(vals[None], pts)


def test_outputs_and_gradients_converge_with_more_points():
    """Paper Property 3: at fixed query points, outputs and parameter gradients converge."""
    torch.manual_seed(0)
    layer = MLPConv(2, 3, 0.5, hidden=(16,)).double()
    query = PointSet(torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.5]], dtype=D64))

    def run(n, seed):
        layer.zero_grad()
        out = layer(analytic_field(n, seed), query=query).values
        out.square().sum().backward()
        return out.detach().clone(), layer.mlp[0].weight.grad.clone()

    limit_out, limit_grad = run(2 ** 16, 99)
    errs = []
    for n in [2 ** 8, 2 ** 10, 2 ** 12, 2 ** 14]:
        o = [run(n, s) for s in range(3)]
        errs.append(((sum((a - limit_out).norm() for a, _ in o) / 3).item(),
                     (sum((g - limit_grad).norm() for _, g in o) / 3).item()))
    for k in range(2):
        assert errs[-1][k] < 0.1 * errs[0][k], errs
        slope = np.polyfit(np.log([2 ** 8, 2 ** 10, 2 ** 12, 2 ** 14]), np.log([e[k] for e in errs]), 1)[0]
        assert slope < -0.6, (slope, errs)


def test_mean_estimator_integrates_constants_exactly():
    pts = PointSet(sobol(500, 2, seed=4, dtype=D64))
    ones = Field(torch.ones(1, 500, 1, dtype=D64), pts)
    layer = LegendreConv(1, 1, 0.3, degree=0, bias=False, estimator="mean").double()
    frac = support_fraction(pts, pts.bounds, layer.support)
    expected = layer.weight.detach()[0, 0, 0] * frac  # P_0 = 1: K is constant, W / |S|
    torch.testing.assert_close(layer(ones).values[0, :, 0], expected)


@pytest.mark.parametrize("make", [
    lambda: BSplineConv(2, 3, 3, 0.4, degree=2, groups=1),
    lambda: MLPConv(2, 2, 0.5, hidden=(4,), groups=2),
    lambda: MLPConv(2, 3, 0.5, hidden=(4,), n_bins=8),
    lambda: LegendreConv(2, 3, 0.5, degree=2, padding="symmetric"),
])
def test_gradcheck(make):
    layer = make().double()
    pts = PointSet(sobol(24, 2, seed=5, dtype=D64))
    v = torch.randn(2, 24, 2, dtype=D64, requires_grad=True)
    params = [p for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda v, *ps: layer(Field(v, pts)).values, (v, *params))


def test_neighbours_and_plan_are_built_once():
    pts = PointSet(sobol(256, 2, seed=0))
    layer = BSplineConv(2, 2, 3, 0.1)
    field = Field(torch.randn(1, 256, 2), pts)
    layer(field)
    keys = set(pts._cache)
    other = BSplineConv(2, 5, 3, 0.1)
    other(field)
    layer(field)
    assert set(pts._cache) == keys


def test_bad_inputs():
    layer = BSplineConv(3, 4, 3, 0.1)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        layer(Field(torch.randn(1, 16, 2), PointSet(sobol(16, 2, seed=0))))
    with pytest.raises(ValueError, match="dimension 3"):
        layer(Field(torch.randn(1, 16, 3), PointSet(sobol(16, 3, seed=0))))
    with pytest.raises(ValueError, match="multiples of groups"):
        BSplineConv(3, 4, 3, 0.1, groups=2)
    with pytest.raises(ValueError, match="padding"):
        BSplineConv(3, 4, 3, 0.1, padding="circular")
    with pytest.raises(ValueError, match="spacing needs 3 entries"):
        BSplineConv(3, 4, (3, 3, 3), (0.1, 0.1))
    with pytest.raises(ValueError, match="wider than the domain"):
        BSplineConv(1, 1, 5, 1.0, padding="none")(Field(torch.randn(1, 16, 1), PointSet(sobol(16, 2, seed=0))))


CONVS = {
    "bspline": lambda: BSplineConv(2, 3, 3, 0.5),
    "mlp-exact": lambda: MLPConv(2, 3, 0.5),
    "mlp-binned": lambda: MLPConv(2, 3, 0.5, n_bins=16),
    "legendre": lambda: LegendreConv(2, 3, 0.5),
}


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
def test_convs_name_themselves_for_non_float_values_and_other_devices(make):
    layer, points = make(), PointSet.grid((4, 4))
    name = type(layer).__name__
    for dtype in (torch.long, torch.complex64):
        with pytest.raises(TypeError, match=f"^{name} needs floating-point values, got a field of {dtype}"):
            layer(Field(torch.ones(1, 16, 2, dtype=dtype), points))
    with pytest.raises(TypeError, match=f"^{name} expects a Field, got Tensor"):
        layer(torch.ones(1, 16, 2))
    with pytest.raises(ValueError, match=f"^{name} is on meta but the field's values are on cpu"):
        layer.to("meta")(Field(torch.ones(1, 16, 2), points))


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
def test_convs_compute_in_the_dtype_of_the_values(make):
    """A float32 layer on float64 values equals its float64 copy (kernels are cast to the values' dtype)."""
    layer = make()
    field = Field(torch.randn(2, 64, 2, dtype=D64), PointSet(sobol(64, 2, seed=1).double()))
    torch.testing.assert_close(layer(field).values, layer.double()(field).values, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Mirrored paddings: "reflect" is torch's, "symmetric" is numpy's
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k,stride", [
    ((7, 6), 3, 1), ((8, 9), 5, 1), ((9, 8), 3, 2), ((10, 7), 5, 2), ((2, 5), 3, 1), ((13,), 3, 1), ((12,), 5, 2),
    ((5, 6, 4), 3, 1),
])
def test_reflect_padding_is_torchs_reflect(shape, k, stride):
    x = torch.randn(2, 3, *shape, dtype=D64)
    layer = BSplineConv(3, 4, k, tuple(2 / s for s in shape), stride=stride, padding="reflect").double()
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(shape)](
        3, 4, k, stride=stride, padding=k // 2, padding_mode="reflect").double()
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    out = layer(grid_field(x))
    ref = conv(x)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)
    assert out.points.lattice.shape == tuple(ref.shape[2:])


@pytest.mark.parametrize("shape,k,padding", [((8, 8), 4, "reflect"), ((7, 9), 2, "reflect"), ((9, 6), 4, "symmetric")])
def test_mirrored_padding_of_even_kernels(shape, k, padding):
    """Even kernels pad (k - 1) // 2 before and k // 2 after, as torch's 'same'."""
    out, ref = twin(shape, k, 1, padding, 1)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,k,stride", [((7, 6), 3, 1), ((8, 9), 5, 1), ((9, 8), 5, 2), ((2, 6), 5, 1)])
def test_symmetric_padding_is_numpys_symmetric(shape, k, stride):
    """Reference: np.pad(mode='symmetric') (the edge pixel repeated), then an unpadded conv."""
    x = torch.randn(2, 3, *shape, dtype=D64)
    layer = BSplineConv(3, 4, k, tuple(2 / s for s in shape), stride=stride, padding="symmetric").double()
    padded = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0)] + [(k // 2, k // 2)] * 2, mode="symmetric"))
    ref = F.conv2d(padded, layer.weight, layer.bias, stride=stride)
    torch.testing.assert_close(layer(grid_field(x)).values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", ["reflect", "symmetric"])
@pytest.mark.parametrize("shape", [(8, 9), (9, 8)])
def test_mirrored_padding_after_a_stride_mirrors_the_strided_feature_map(padding, shape):
    """On an even axis the strided lattice ends a pixel short of the domain: the mirrors are
    its own (its outermost pixel centres, its cells' faces), as torch's on the strided tensor."""
    x = torch.randn(2, 2, *shape, dtype=D64)
    first = BSplineConv(2, 3, 3, tuple(2 / s for s in shape), stride=2).double()
    second = BSplineConv(3, 2, 3, tuple(4 / s for s in shape), padding=padding).double()
    with torch.no_grad():
        out = second(first(grid_field(x)))
        mid = torch_conv(x, first.weight, first.bias, 2, "zeros", 1)
        ref = torch_conv(mid, second.weight, second.bias, 1, padding, 1)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


def _mirrored_conv_reference(layer, field, inset):
    """``g(q) = sum_j w_j sum_y K(y - q) f_j`` over ``x_j`` itself and its mirror images ``y``
    about the planes ``inset`` inside the domain's faces that land outside the domain, by loops."""
    points = field.points
    queries = layer.output_points(points)
    lo = [b[0] for b in points.bounds]
    hi = [b[1] for b in points.bounds]
    d = points.dim
    out = torch.zeros(field.batch_size, queries.n, layer.out_channels, dtype=D64)
    for j, x in enumerate(points.coords.double().tolist()):
        images = []
        for sides in itertools.product((0, -1, 1), repeat=d):
            y, outside = list(x), True
            for k, s in enumerate(sides):
                if s == -1:
                    y[k] = 2 * (lo[k] + inset[k]) - x[k]
                    outside = outside and y[k] < lo[k]
                elif s == 1:
                    y[k] = 2 * (hi[k] - inset[k]) - x[k]
                    outside = outside and y[k] > hi[k]
            if outside:
                images.append(y)
        offsets = (torch.tensor(images, dtype=D64)[None] - queries.coords.double()[:, None]).reshape(-1, d)  # (M*I, d)
        rows = torch.arange(queries.n).repeat_interleave(len(images))
        inside = layer.support.contains(offsets)
        kernel = layer.pair_kernel(offsets[inside])  # (E, C_in, C_out)
        msg = torch.einsum("bc,eco->beo", field.values[:, j].double(), kernel) * points.weights[j].double()
        out.index_add_(1, rows[inside], msg)
    return out + layer.bias.double()


@pytest.mark.parametrize("padding,inset", [("reflect", (0.125, 0.1)), ("symmetric", (0.0, 0.0))])
def test_mirrored_padding_on_scattered_points_matches_a_loop_reference(padding, inset):
    """On scattered points 'reflect' mirrors about the planes half a tap spacing inside the
    faces: f(lo - t) = f(lo + h + t); 'symmetric' across the faces: f(lo - t) = f(lo + t)."""
    points = PointSet(sobol(96, 2, seed=3, dtype=D64))
    field = Field(torch.randn(2, 96, 2, dtype=D64), points)
    layer = BSplineConv(2, 3, 3, (0.25, 0.2), padding=padding).double()
    torch.testing.assert_close(layer(field).values, _mirrored_conv_reference(layer, field, inset),
                               rtol=1e-10, atol=1e-10)


def test_mirrored_paddings_fill_the_support_like_torch():
    """A constant stays constant under either mirror, also at the faces and corners."""
    for padding in ("reflect", "symmetric"):
        layer = BSplineConv(1, 1, 3, 0.25, padding=padding, bias=False).double()
        out = layer(grid_field(torch.ones(1, 1, 8, 8, dtype=D64))).values
        torch.testing.assert_close(out, torch.full_like(out, float(layer.weight.detach().sum())), rtol=1e-12, atol=1e-12)


def test_reflect_needs_taps_and_at_most_n_minus_1_padding():
    for make in (lambda: MLPConv(2, 2, 0.5, padding="reflect"), lambda: LegendreConv(2, 2, 0.5, padding="reflect")):
        with pytest.raises(ValueError, match="use padding='symmetric'"):
            make()
    # torch reflects by at most n - 1 pixels: a 5-tap filter (2 per side) needs 3 pixels
    x = torch.randn(1, 1, 2, 6, dtype=D64)
    with pytest.raises(RuntimeError):
        F.pad(x, (2, 2, 2, 2), mode="reflect")
    with pytest.raises(ValueError, match="along axis 0.*second one would add"):
        BSplineConv(1, 1, 5, (1.0, 1 / 3), padding="reflect").double()(grid_field(x))
    with pytest.raises(ValueError, match="one pixel"):
        BSplineConv(1, 1, 3, (2.0, 1 / 3), padding="reflect").double()(grid_field(torch.randn(1, 1, 1, 6)))
    with pytest.raises(ValueError, match="padding must be one of"):
        BSplineConv(1, 1, 3, 0.5, padding="replicate")


def test_paddings_on_the_same_points_keep_their_own_neighbours():
    """The cached neighbours and plans are per mirror: each padding stays its torch/numpy twin."""
    x = torch.randn(1, 2, 7, 8, dtype=D64)
    field = grid_field(x)
    for padding in ("reflect", "symmetric", "zeros", "reflect"):
        layer = BSplineConv(2, 3, 3, (2 / 7, 2 / 8), padding=padding).double()
        with torch.no_grad():
            out, ref = layer(field).values, torch_conv(x, layer.weight, layer.bias, 1, padding, 1)
        torch.testing.assert_close(out, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="mirror inset must be 2 non-negative"):
        neighbors(field.points, field.points, Support(0.1), reflect=True, inset=(0.1,))
