"""The layers of dense-prediction networks (issue 16.1): dilated convolutions, ``ceil_mode`` and
partially padded pooling, (bi/tri)linear resizing, transposed convolutions, ``x.shape`` /
``x.size(d)`` and ``torch.cat`` with a pooled branch; exact against torch on the grid (float64)
and, off the grid, against slow loop references."""

import copy
import functools
import math

import pytest
import timm.layers
import torch
import torch.nn.functional as F
from _grid_helpers import D64, exact, to_values
from torch import nn

from inrnet.convert import from_torch
from inrnet.convert.function_rules import concat_constants, feature_map_shape
from inrnet.convert.resize_layers import LinearResample, TransposedBSplineConv
from inrnet.convert.twin_layers import DilatedBSplineConv, crop_points, dilated_expansion, window_extent
from inrnet.convert.window_pool import CroppedAvgPool, CroppedMaxPool
from inrnet.field import Field, Lattice, PointSet
from inrnet.nn import AvgPool, BSplineConv, MaxPool
from inrnet.nn.kernels import cardinal_bspline
from inrnet.sampling import sobol
from inrnet.testing import grid_field

SHAPES = [(9, 9), (10, 8), (11, 12)]


# --- dilated convolutions -------------------------------------------------------------------


def dense_dilated_basis(u: torch.Tensor, kernel_size, dilation, degree: int) -> torch.Tensor:
    """The obvious reference: every control point of the window's ``(k - 1) d + 1`` pixels,
    ``B(u - j)`` per axis, summed into the tap it is (pixels between taps are dropped).

    Returns:
        Tensor[E, prod(kernel_size)].
    """
    out = torch.zeros(u.shape[0], math.prod(kernel_size), dtype=u.dtype)
    extent = window_extent(kernel_size, dilation)
    for pixel in torch.cartesian_prod(*[torch.arange(n) for n in extent]).reshape(-1, len(extent)):
        if any(int(j) % d for j, d in zip(pixel, dilation)):
            continue
        tap = 0
        for j, k, d in zip(pixel.tolist(), kernel_size, dilation):
            tap = tap * k + j // d
        basis = torch.ones(u.shape[0], dtype=u.dtype)
        for axis, j in enumerate(pixel.tolist()):
            if not 0 <= j < extent[axis]:
                continue
            basis = basis * cardinal_bspline(u[:, axis] - j, degree)
        out[:, tap] += basis
    return out


def scatter(index: torch.Tensor, value: torch.Tensor, atoms: int) -> torch.Tensor:
    return torch.zeros(index.shape[0], atoms, dtype=value.dtype).scatter_add_(1, index, value)


@pytest.mark.parametrize("kernel_size,dilation", [((3,), (2,)), ((3, 3), (2, 2)), ((3, 2), (3, 2)),
                                                  ((2, 3, 3), (2, 1, 3)), ((3, 3), (1, 1))])
@pytest.mark.parametrize("degree", [0, 1])
def test_dilated_expansion_is_the_dense_spline_of_the_dilated_window(kernel_size, dilation, degree):
    extent = window_extent(kernel_size, dilation)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(400, len(extent), generator=g, dtype=D64) * torch.tensor(extent, dtype=D64) - 0.5
    pixels = torch.cartesian_prod(*[torch.arange(n, dtype=D64) for n in extent]).reshape(-1, len(extent))
    u = torch.cat([u, pixels, pixels + 0.5])  # random, on every pixel, between pixels
    index, value = dilated_expansion(u, kernel_size, dilation, degree)
    assert index.shape == value.shape == (u.shape[0], (degree + 1) ** len(extent))
    assert int(index.min()) >= 0 and int(index.max()) < math.prod(kernel_size)
    got = scatter(index, value, math.prod(kernel_size))
    torch.testing.assert_close(got, dense_dilated_basis(u, kernel_size, dilation, degree), rtol=1e-12, atol=1e-12)
    # on the pixels: 1 at the taps, 0 between them
    on_pixels = got[400:400 + pixels.shape[0]]
    is_tap = torch.stack([(pixels[:, a] % d == 0) for a, d in enumerate(dilation)]).all(0)
    assert torch.equal(on_pixels.sum(1), is_tap.to(D64))


def test_dilated_conv_on_scattered_points_is_the_sum_over_pairs():
    """Off the grid: ``g(y) = sum_j w_j K(x_j - y) f_j + b`` with ``K`` the hat bumps at the taps,
    ``d`` pixels apart, cut to the window's ``(k - 1) d + 1`` pixels."""
    torch.manual_seed(0)
    h, k, d = (0.2, 0.25), (3, 2), (2, 3)
    conv = DilatedBSplineConv(2, 3, k, h, dilation=d).double()
    points = PointSet(sobol(300, 2, seed=0).double(), torch.rand(300, dtype=D64) + 0.5)
    queries = PointSet(sobol(40, 2, seed=5).double())
    values = torch.randn(2, 300, 2, dtype=D64)
    out = conv(Field(values, points), queries).values
    e = window_extent(k, d)
    center = torch.tensor([0.0 if n % 2 else hh / 2 for n, hh in zip(e, h)], dtype=D64)  # even windows: half a pixel
    ref = torch.empty_like(out)
    for m in range(queries.n):
        delta = points.coords - queries.coords[m]  # (N, 2)
        inside = ((delta - center).abs() <= torch.tensor([n * hh / 2 for n, hh in zip(e, h)], dtype=D64)).all(1)
        kernel = torch.zeros(points.n, 2, 3, dtype=D64)  # (N, C_in, C_out)
        for i in range(k[0]):
            for j in range(k[1]):
                tap = center + torch.tensor([(i * d[0] - (e[0] - 1) / 2) * h[0], (j * d[1] - (e[1] - 1) / 2) * h[1]],
                                            dtype=D64)
                hat = (1 - (delta - tap).abs() / torch.tensor(h, dtype=D64)).clamp_min(0).prod(1)  # (N,)
                kernel += hat[:, None, None] * conv.weight[:, :, i, j].T.detach() / (h[0] * h[1])
        kernel = kernel * inside[:, None, None]
        ref[:, m] = torch.einsum("n,bni,nio->bo", points.weights, values, kernel) + conv.bias.detach()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_dilated_conv_arguments():
    with pytest.raises(ValueError, match="degree 0 or 1"):
        DilatedBSplineConv(2, 2, 3, 0.1, dilation=2, degree=2)
    with pytest.raises(ValueError, match="crop needs padding='zeros'"):
        DilatedBSplineConv(2, 2, 3, 0.1, dilation=2, padding="none", crop=((None, 0.5), (None, None)))
    with pytest.raises(ValueError, match="box of its window's pixels"):
        DilatedBSplineConv(2, 2, 3, 0.1, dilation=2, support_extent="basis")
    plain = DilatedBSplineConv(2, 2, 5, 0.1, dilation=1, support_extent="basis")
    assert plain.degree == 2  # undilated: a plain B-spline convolution's default degree and support
    assert plain.support == BSplineConv(2, 2, 5, 0.1, support_extent="basis").support
    dilated = DilatedBSplineConv(2, 2, (3, 2), (0.1, 0.2), dilation=(2, 3))
    assert dilated.degree == 1 and dilated.support.half_width == (0.25, 0.4)
    assert dilated.support.center == (0.0, 0.1)


DILATED = [  # (conv kwargs): dilation 2 and 3, 'same', 0 and = dilation, stride 1 and 2, groups
    dict(kernel_size=3, dilation=2, padding="same"), dict(kernel_size=3, dilation=3, padding="same"),
    dict(kernel_size=3, dilation=2, padding=0), dict(kernel_size=3, dilation=3, padding=0),
    dict(kernel_size=3, dilation=2, padding=2), dict(kernel_size=3, dilation=3, padding=3),
    dict(kernel_size=3, dilation=2, padding=2, stride=2), dict(kernel_size=3, dilation=3, padding=3, stride=2),
    dict(kernel_size=3, dilation=2, padding=0, stride=2), dict(kernel_size=3, dilation=2, padding=1),
    dict(kernel_size=3, dilation=2, padding=2, groups=3), dict(kernel_size=3, dilation=3, padding=3, groups=3,
                                                               bias=False),
    dict(kernel_size=2, dilation=2, padding=1), dict(kernel_size=2, dilation=3, padding="same"),
    dict(kernel_size=(3, 2), dilation=(2, 3), padding=(2, 1)),
    dict(kernel_size=3, dilation=2, padding=2, padding_mode="reflect"),
    dict(kernel_size=3, dilation=3, padding=3, stride=2, padding_mode="reflect"),
]


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kwargs", DILATED, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_dilated_conv2d_converts_exactly(kwargs, shape):
    inet = exact(nn.Sequential(nn.Conv2d(3, 6, **kwargs)), shape)
    assert type(inet.get_submodule("0")) is DilatedBSplineConv


def test_dilated_conv_after_a_stride_and_1d_3d():
    exact(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=2, dilation=2)),
          (13, 12))
    exact(nn.Sequential(nn.Conv1d(2, 3, 3, padding=3, dilation=3), nn.Conv1d(3, 2, 3, dilation=2)), (17,), channels=2)
    exact(nn.Sequential(nn.Conv3d(2, 3, 3, padding=2, dilation=2)), (5, 6, 7), channels=2)
    for shape in (9, 9), (10, 8):  # TF 'SAME' padding of a dilated window
        exact(nn.Sequential(timm.layers.Conv2dSame(3, 4, 3, stride=2, dilation=2)), shape)


# --- pooling: ceil_mode and paddings between 0 and 'same' -----------------------------------

POOLS = [  # (pool, shapes)
    (nn.MaxPool2d(3, 2, ceil_mode=True), [(7, 7), (8, 8), (9, 6)]),
    (nn.MaxPool2d(2, 2, ceil_mode=True), [(7, 7), (8, 9)]),
    (nn.AvgPool2d(3, 2, ceil_mode=True), [(7, 7), (8, 8), (9, 6)]),
    (nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False), [(8, 8)]),
    (nn.AvgPool2d(2, 2, ceil_mode=True), [(7, 7), (8, 9)]),
    (nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), [(7, 7)]),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), [(7, 7)]),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), [(7, 7)]),
    (nn.AvgPool2d(5, 2, 1, ceil_mode=True), [(7, 7), (8, 9)]),
    (nn.AvgPool2d(5, 2, 1, ceil_mode=True, count_include_pad=False), [(7, 7), (8, 9)]),
    (nn.MaxPool2d(4, 2, 1), [(7, 7), (8, 8)]),
    (nn.MaxPool2d(5, 1, 1), [(7, 7)]),
    (nn.AvgPool2d(4, 2, 1), [(7, 7), (8, 8)]),
    (nn.AvgPool2d(4, 2, 1, count_include_pad=False), [(7, 7), (8, 8)]),
    (nn.AvgPool2d(5, 2, 1), [(9, 8)]),
    (nn.AvgPool2d(5, 1, 1, count_include_pad=False), [(7, 6)]),
]


@pytest.mark.parametrize("pool,shape", [(p, s) for p, shapes in POOLS for s in shapes],
                         ids=lambda v: repr(v).replace(" ", "") if isinstance(v, nn.Module) else "x".join(map(str, v)))
@pytest.mark.parametrize("strided", [False, True], ids=["grid", "after-stride"])
def test_ceil_mode_and_partially_padded_pools_convert_exactly(pool, shape, strided):
    """On the input grid and on the off-centre lattice of a stride-2 layer."""
    if strided:
        exact(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), pool), tuple(2 * s - 1 for s in shape))
    else:
        exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool), shape)


def test_pool_layers_chosen():
    def layer(pool, shape):
        return from_torch(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool), shape).get_submodule("1")

    assert type(layer(nn.MaxPool2d(3, 2, ceil_mode=True), (8, 8))) is CroppedMaxPool
    assert type(layer(nn.MaxPool2d(3, 2, ceil_mode=True), (7, 7))) is MaxPool  # ceil mode changes nothing
    assert type(layer(nn.MaxPool2d(2, 2, ceil_mode=True), (7, 7))) is MaxPool  # = 'same' padding
    assert type(layer(nn.AvgPool2d(2, 2, ceil_mode=True), (7, 7))) is CroppedAvgPool  # torch's divisor
    assert type(layer(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), (7, 7))) is AvgPool
    assert type(layer(nn.AvgPool2d(4, 2, 1), (7, 7))) is CroppedAvgPool
    assert type(layer(nn.AvgPool2d(4, 2, 1), (8, 8))) is AvgPool  # the same outputs as 'same' padding


def test_ceil_mode_window_centred_outside_the_feature_map_raises():
    with pytest.raises(Exception, match=r"ceil_mode=True adds a last window at pixels 7\.\.9 of an axis of 8"):
        from_torch(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1, ceil_mode=True)), (8, 8))


def test_cropped_pools_on_scattered_points_are_window_reductions():
    """Off the grid, on ``crop_points``: the maximum over the window's points; the average with
    ``count_include_pad=True`` is ``sum_j w_j f_j`` over the window divided by the measure of the
    window inside the box grown by ``pad`` pixels, with ``False`` the weighted mean."""
    points = PointSet(sobol(400, 2, seed=2).double(), torch.rand(400, dtype=D64) + 0.5)
    values = torch.randn(1, 400, 2, dtype=D64)
    h, k, stride, crop = (0.25, 0.25), (3, 4), (2, 2), ((-0.6, None), (None, 0.7))
    expected = crop_points(points, crop, stride)
    half = torch.tensor([1.5 * h[0], 2 * h[1]], dtype=D64)
    shift = torch.tensor([0.0, h[1] / 2], dtype=D64)  # an even window sits half a pixel past its point
    layers = [CroppedMaxPool(k, h, stride, crop)] + [CroppedAvgPool(k, h, stride, crop, pad)
                                                      for pad in (((1, 1), (1, 2)), None)]
    for layer in layers:
        out = layer(Field(values, points))
        assert torch.equal(out.points.coords, expected.coords)
        for m in range(out.points.n):
            lo, hi = out.points.coords[m] + shift - half, out.points.coords[m] + shift + half
            inside = ((points.coords >= lo) & (points.coords <= hi)).all(1)
            w = points.weights * inside
            if isinstance(layer, CroppedMaxPool):
                ref = values[0, inside].max(0).values
            elif layer.pad is None:
                ref = (w[:, None] * values[0]).sum(0) / w.sum()
            else:
                box_lo = torch.tensor([-1 - p[0] * s for p, s in zip(layer.pad, h)], dtype=D64)
                box_hi = torch.tensor([1 + p[1] * s for p, s in zip(layer.pad, h)], dtype=D64)
                measure = (torch.minimum(hi, box_hi) - torch.maximum(lo, box_lo)).clamp_min(0).prod()
                ref = (w[:, None] * values[0]).sum(0) / measure
            torch.testing.assert_close(out.values[0, m], ref, rtol=1e-10, atol=1e-10)


# --- linear resizing ------------------------------------------------------------------------


class Resize(nn.Module):
    """A conv (strided or not), then ``up``."""

    def __init__(self, up, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1)
        self.up = up

    def forward(self, x):
        return self.up(self.conv(x))


class ResizeToSkip(nn.Module):
    """A decoder step: the coarse branch interpolated to its skip's ``shape[-2:]``, concatenated."""

    def __init__(self, align_corners: bool | None):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.align_corners = align_corners

    def forward(self, x):
        a = self.a(x)
        y = F.interpolate(self.down(a), size=a.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return torch.cat([a, y], 1)


LINEAR = [
    (nn.Upsample(scale_factor=2, mode="bilinear"), 1), (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), 1),
    (nn.Upsample(scale_factor=2, mode="bilinear"), 2), (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), 2),
    (nn.Upsample(scale_factor=3, mode="bilinear"), 1), (nn.Upsample(size=(11, 5), mode="bilinear"), 1),
    (nn.Upsample(size=(11, 5), mode="bilinear", align_corners=True), 2),
    (functools.partial(F.interpolate, size=(13, 4), mode="bilinear"), 2),
    (functools.partial(F.interpolate, scale_factor=1.7, mode="bilinear"), 2),
    (functools.partial(F.interpolate, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True), 2),
    (functools.partial(F.interpolate, scale_factor=0.5, mode="bilinear", align_corners=True), 1),
]


@pytest.mark.parametrize("shape", [(7, 7), (8, 6)])
@pytest.mark.parametrize("up,stride", LINEAR, ids=lambda v: repr(v).replace(" ", "")[:70] if not isinstance(v, int)
                         else f"stride{v}")
def test_bilinear_resizing_converts_exactly(up, stride, shape):
    inet = exact(Resize(up, stride), shape)
    assert any(isinstance(m, LinearResample) for m in inet.modules())


@pytest.mark.parametrize("shape", [(7, 7), (8, 6), (9, 10)])
@pytest.mark.parametrize("align_corners", [None, False, True])
def test_interpolate_to_the_skips_shape_goes_back_to_its_points(align_corners, shape):
    inet = exact(ResizeToSkip(align_corners), shape)
    (resize,) = [m for m in inet.modules() if isinstance(m, LinearResample)]
    assert resize.hops == 1 and resize.lattice is None


class Linear1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)

    def forward(self, x):
        return F.interpolate(self.conv(x), scale_factor=2, mode="linear", align_corners=False)


class Trilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=(2, 1.5, 2), mode="trilinear", align_corners=True)

    def forward(self, x):
        return self.up(self.conv(x))


def test_linear_and_trilinear():
    exact(Linear1d(), (7,), channels=2)
    exact(Trilinear(), (3, 4, 5), channels=2)
    # an axis whose size a scale factor keeps is copied, as torch does, whatever the factor
    exact(Resize(functools.partial(F.interpolate, scale_factor=(2, 1.2), mode="bilinear")), (5, 3))


def test_linear_resample_on_scattered_points_is_the_normalised_hat_mean():
    """Off the grid: the hat-weighted mean of the inputs around each clamped source point; the
    nearest input where no input is in the hat."""
    points = PointSet(sobol(200, 2, seed=4).double(), torch.rand(200, dtype=D64) + 0.5)
    values = torch.randn(2, 200, 3, dtype=D64)
    lattice = Lattice((-0.9, -0.95), (0.2, 0.1), (10, 20))
    step, scale, offset, lo, hi = (0.15, 0.05), (0.5, 1.0), (0.1, -0.02), (-0.8, -0.9), (0.8, 0.9)
    layer = LinearResample(step, scale, offset, lo, hi, lattice=lattice, bounds=((-1, 1), (-1, 1)))
    out = layer(Field(values, points))
    target = out.points
    assert target.lattice == lattice and torch.equal(target.coords, lattice.coords(D64))
    empty = 0
    for m in range(target.n):
        q = (target.coords[m] * torch.tensor(scale, dtype=D64) + torch.tensor(offset, dtype=D64))
        q = torch.minimum(torch.maximum(q, torch.tensor(lo, dtype=D64)), torch.tensor(hi, dtype=D64))
        hat = (1 - (points.coords - q).abs() / torch.tensor(step, dtype=D64)).clamp_min(0).prod(1) * points.weights
        if hat.sum() == 0:
            empty += 1
            ref = values[:, int((points.coords - q).norm(dim=1).argmin())]
        else:
            ref = (hat[None, :, None] * values).sum(1) / hat.sum()
        torch.testing.assert_close(out.values[:, m], ref, rtol=1e-10, atol=1e-10)
    assert 0 < empty < target.n, "both branches are exercised"
    assert out.points is layer(Field(values, points)).points  # the target point set is memoised


def test_converted_bilinear_upsampling_runs_on_sobol_points():
    inet = from_torch(ResizeToSkip(False), (8, 8))
    points = PointSet(sobol(256, 2, seed=0))
    field = Field(torch.randn(2, 256, 3), points)
    out = inet(field)
    assert out.points is points and out.values.shape == (2, 256, 8) and torch.isfinite(out.values).all()


# --- transposed convolutions ----------------------------------------------------------------

TRANSPOSED = [
    dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=4, stride=2, padding=1), dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=3, stride=3), dict(kernel_size=3, stride=2, dilation=2),
    dict(kernel_size=3, stride=2, padding=1, groups=2), dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 1)),
    dict(kernel_size=5, stride=2, padding=2, output_padding=1, bias=False),
]


@pytest.mark.parametrize("shape", [(7, 7), (8, 6)])
@pytest.mark.parametrize("stride", [1, 2], ids=["grid", "after-stride"])
@pytest.mark.parametrize("kwargs", TRANSPOSED, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv_transpose2d_converts_exactly(kwargs, stride, shape):
    inet = exact(Resize(nn.ConvTranspose2d(4, 4, **kwargs), stride), shape)
    assert type(inet.get_submodule("up")) is TransposedBSplineConv


class UNet(nn.Module):
    """Down with a strided conv, up with a transposed conv back to the skip connection's pixels."""

    def __init__(self, down: nn.Module, up: nn.Module):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.down, self.up = down, up
        self.out = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.a(x))
        return self.out(torch.cat([a, self.up(F.relu(self.down(a)))], 1))


@pytest.mark.parametrize("down,up,shape", [
    (nn.Conv2d(4, 4, 2, stride=2), nn.ConvTranspose2d(4, 4, 2, stride=2), (8, 6)),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1), (10, 8)),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
     (8, 8)),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1), (7, 9)),
], ids=["k2s2", "k4s2p1", "k3s2p1op1", "k3s2p1-odd"])
def test_unet_transpose_goes_back_to_the_points_it_was_strided_from(down, up, shape):
    inet = exact(UNet(down, up), shape)
    assert inet.get_submodule("up").hops == 1


def test_conv_transpose_1d_3d():
    exact(nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1)), (7,),
          channels=2)
    exact(nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.ConvTranspose3d(3, 2, 2, stride=2)), (3, 4, 5), channels=2)


def test_transposed_conv_on_scattered_points_is_the_sum_over_pairs():
    """Off the grid: ``g(y) = sum_j w_j K(x_j - y) f_j + b``, ``K`` the hat bumps of torch's taps:
    tap ``i`` of input ``x`` reaches output ``x s - p + i d``, i.e. offset ``delta_0 + (p - i d) h``."""
    torch.manual_seed(0)
    k, h, d, p, delta0 = (3, 2), (0.1, 0.125), (2, 1), (1, 0), (0.03, -0.05)
    e = window_extent(k, d)
    center = tuple(c + (pp - (n - 1) / 2) * hh for c, pp, n, hh in zip(delta0, p, e, h))
    lattice = Lattice((-0.95, -0.9375), h, (20, 16))
    conv = TransposedBSplineConv(4, 3, k, h, cell=0.05, center=center, dilation=d, groups=1, lattice=lattice,
                                 bounds=((-1, 1), (-1, 1))).double()
    points = PointSet(sobol(150, 2, seed=1).double(), torch.rand(150, dtype=D64) + 0.5)
    values = torch.randn(2, 150, 4, dtype=D64)
    out = conv(Field(values, points))
    assert out.points.lattice == lattice
    ref = torch.empty_like(out.values)
    w, hh = conv.weight.detach(), torch.tensor(h, dtype=D64)
    half = torch.tensor([n * s / 2 for n, s in zip(e, h)], dtype=D64)
    for m in range(out.points.n):
        delta = points.coords - out.points.coords[m]  # (N, 2)
        inside = ((delta - torch.tensor(center, dtype=D64)).abs() <= half).all(1)
        kernel = torch.zeros(points.n, 4, 3, dtype=D64)
        for i in range(k[0]):
            for j in range(k[1]):
                tap = torch.tensor([delta0[0] + (p[0] - i * d[0]) * h[0], delta0[1] + (p[1] - j * d[1]) * h[1]],
                                   dtype=D64)
                hat = (1 - (delta - tap).abs() / hh).clamp_min(0).prod(1)
                kernel += hat[:, None, None] * w[:, :, i, j] / 0.05
        kernel = kernel * inside[:, None, None]
        ref[:, m] = torch.einsum("n,bni,nio->bo", points.weights, values, kernel) + conv.bias.detach()
    torch.testing.assert_close(out.values, ref, rtol=1e-10, atol=1e-10)


# --- shapes and the ASPP pooling branch -----------------------------------------------------


class Sizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.conv(x)
        size = (x.size(2), x.size(-1))
        scale = y.size(1) / 4 + y.shape[0] * 0  # channels and batch of the field
        return F.interpolate(y, size=size, mode="bilinear") * scale


def test_shape_and_size_of_a_feature_map():
    exact(Sizes(), (9, 8))
    field = grid_field(torch.randn(3, 4, 5, 6))
    assert feature_map_shape(field, (5, 6), "first") == torch.Size((3, 4, 5, 6))
    assert feature_map_shape(field, (5, 6), "last") == torch.Size((3, 5, 6, 4))
    assert feature_map_shape(field, (5, 6), "first", -1) == 6 and feature_map_shape(field, (5, 6), "last", 1) == 5


def test_concat_constants_broadcasts_to_the_points():
    field = grid_field(torch.randn(2, 3, 4, 5))
    const = torch.randn(2, 6, 1, 1)
    out = concat_constants([field, const, field])
    assert out.points is field.points
    torch.testing.assert_close(out.values, torch.cat([field.values, const.flatten(1)[:, None].expand(-1, 20, -1),
                                                      field.values], -1))


class ASPP(nn.Module):
    """DeepLab's head in small: a 1 x 1 branch, atrous branches, a global-average-pool branch
    resized back with ``F.interpolate(size=x.shape[-2:])``, concatenated, projected and
    upsampled to the input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b0 = nn.Conv2d(8, 4, 1)
        self.b1 = nn.Sequential(nn.Conv2d(8, 4, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.b2 = nn.Conv2d(8, 4, 3, padding=3, dilation=3)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4),
                                  nn.ReLU())
        self.project = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        size = x.shape[-2:]
        y = F.relu(self.stem(x))
        pooled = F.interpolate(self.pool(y), size=y.shape[-2:], mode="bilinear", align_corners=False)
        z = self.project(torch.cat([self.b0(y), self.b1(y), self.b2(y), pooled], 1))
        return F.interpolate(z, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("shape", SHAPES)
def test_aspp_head_converts_exactly(shape, h):
    inet = exact(h.randomize_norms(ASPP()), shape)
    assert "concat_constants" in inet.code
    assert "interpolate(" not in inet.code.replace("self.interpolate", ""), "no resizing of the pooled branch left"


def test_dense_models_in_float32_copies_and_saved_models(tmp_path, h):
    """float32 on the grid as for the classifiers; deep copies and saved models keep the resizing layers."""
    torch.manual_seed(0)
    for net, shape in ((h.randomize_norms(ASPP()), (11, 12)),
                       (UNet(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1)),
                        (10, 8))):
        err, inet, out, _ = h.compare(net, shape)
        assert err < 1e-5
        field = grid_field(torch.randn(2, 3, *shape))
        ref = inet(field).values
        torch.save(inet, tmp_path / "inet.pt")
        for other in (copy.deepcopy(inet), torch.load(tmp_path / "inet.pt", weights_only=False)):
            torch.testing.assert_close(other(field).values, ref)
