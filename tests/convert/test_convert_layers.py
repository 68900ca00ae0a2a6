"""The converter's own layers against loop references and torch."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inrnet.convert import ConversionError, from_torch
from inrnet.convert.box_pool import BoxPool, adaptive_boxes, box_means
from inrnet.convert.twin_layers import ChannelDropout, CroppedBSplineConv, StridedChannelMixing, UpsampleToAncestor
from inrnet.field import Field, Lattice, PointSet
from inrnet.nn.resample import downsample
from inrnet.sampling import sobol
from inrnet.testing import grid_field

D64 = torch.float64


@pytest.mark.parametrize("n,m", [(8, 4), (9, 4), (7, 3), (2, 7), (1, 7), (5, 5), (13, 1)])
def test_adaptive_boxes_hold_torchs_windows(n, m):
    """Each box holds exactly the lattice pixels torch's adaptive pooling averages, also on a strided lattice."""
    lattice, _ = Lattice.grid((2 * n - 1,)).sub((0,), (2,), (2 * n - 1,))  # odd size after a stride: off-centre
    (boxes,) = adaptive_boxes(lattice, (m,))
    centres = [lattice.origin[0] + j * lattice.step[0] for j in range(n)]
    for i, (lo, hi) in enumerate(boxes):
        inside = [j for j, c in enumerate(centres) if lo <= c < hi]
        assert inside == list(range(i * n // m, math.ceil((i + 1) * n / m)))
    assert boxes[0][0] == -math.inf and boxes[-1][1] == math.inf


def test_box_means_match_loop_reference():
    points = PointSet(sobol(300, 2, seed=1).double(), torch.rand(300, dtype=D64) + 0.5)
    values = torch.randn(2, 300, 3, dtype=D64)
    boxes = ((((-1.0, -0.2), (-0.5, 0.5), (0.1, 1.0))), ((-1.0, 0.0), (0.0, 1.0)))
    out = box_means(Field(values, points), boxes)
    assert out.shape == (2, 3, 3, 2)
    x, w = points.coords, points.weights
    for i, (a0, b0) in enumerate(boxes[0]):
        for j, (a1, b1) in enumerate(boxes[1]):
            num, den = torch.zeros(2, 3, dtype=D64), 0.0
            for k in range(300):
                if a0 <= x[k, 0] < b0 and a1 <= x[k, 1] < b1:
                    num += w[k] * values[:, k]
                    den += w[k]
            torch.testing.assert_close(out[:, :, i, j], num / den, rtol=1e-12, atol=1e-12)


def test_box_pool_is_adaptive_avg_pool_on_a_grid_and_flattens_like_torch():
    x = torch.randn(2, 3, 8, 9, dtype=D64)
    field = grid_field(x)
    boxes = adaptive_boxes(field.points.lattice, (3, 4))
    torch.testing.assert_close(BoxPool(boxes, 2)(field), F.adaptive_avg_pool2d(x, (3, 4)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(BoxPool(None, 2)(field), x.mean((2, 3), keepdim=True), rtol=1e-12, atol=1e-12)
    cells = adaptive_boxes(field.points.lattice, (8, 9))
    torch.testing.assert_close(BoxPool(cells, 2, flatten=True)(field), x.flatten(1))
    torch.testing.assert_close(BoxPool(cells, 2, flatten=True, channels_last=True)(field),
                               x.permute(0, 2, 3, 1).flatten(1))


def test_box_pool_weights_and_gradients():
    """Global pooling is the weighted mean; gradients reach the values."""
    points = PointSet(sobol(64, 2, seed=0).double(), torch.rand(64, dtype=D64) + 0.1)
    values = torch.randn(1, 64, 2, dtype=D64, requires_grad=True)
    out = BoxPool(None, 2, flatten=True)(Field(values, points))
    ref = (values * points.weights[None, :, None]).sum(1) / points.weights.sum()
    torch.testing.assert_close(out, ref)
    boxes = ((( -1.0, 0.0), (0.0, 1.0)), ((-1.0, 1.0),))
    assert torch.autograd.gradcheck(lambda v: box_means(Field(v, points), boxes), (values,))


def test_empty_box_raises():
    points = PointSet(torch.tensor([[0.5, 0.5]], dtype=D64))
    with pytest.raises(ValueError, match="holds none of the 1 points"):
        box_means(Field(torch.ones(1, 1, 1, dtype=D64), points), (((-1.0, 0.0),), ((-1.0, 1.0),)))
    with pytest.raises(ValueError, match="1 axes, expected 2"):
        BoxPool((((-1.0, 1.0),),), 2)


@pytest.mark.parametrize("k,pads,stride", [(4, (1, 1), 2), (4, (1, 1), 1), (5, (1, 1), 1), (3, (0, 1), 2),
                                           (4, (0, 2), 3)])
def test_cropped_conv_is_torchs_asymmetric_padding(k, pads, stride):
    """Zero-pad ``pads`` (before, after) then convolve: the cropped B-spline conv reproduces it."""
    shape = (11, 10)
    x = torch.randn(2, 3, *shape, dtype=D64)
    field = grid_field(x)
    lat = field.points.lattice
    same = ((k - 1) // 2, k // 2)
    crop = []
    for o, h, n in zip(lat.origin, lat.step, lat.shape):
        lo, hi = o - h / 2, o + (n - 0.5) * h
        crop.append((None if pads[0] == same[0] else lo + h * (0.5 + same[0] - pads[0]),
                     None if pads[1] == same[1] else hi - h * (0.5 + same[1] - pads[1])))
    conv = CroppedBSplineConv(3, 4, k, lat.step, stride=stride, crop=crop).double()
    out = conv(field)
    ref = F.conv2d(F.pad(x, (pads[0], pads[1], pads[0], pads[1])), conv.weight, conv.bias, stride=stride)
    assert out.points.lattice.shape == tuple(ref.shape[2:])
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


def test_strided_channel_mixing_is_a_strided_1x1_conv():
    x = torch.randn(2, 3, 9, 7, dtype=D64)
    layer = StridedChannelMixing(3, 5, (2, 3)).double()
    out = layer(grid_field(x))
    ref = F.conv2d(x, layer.weight[:, :, None, None], layer.bias, stride=(2, 3))
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2))
    assert out.points.lattice.shape == (5, 3)


def test_channel_dropout():
    values = torch.ones(4, 50, 6)
    drop = ChannelDropout(0.5)
    assert torch.equal(drop.eval()(values), values)
    out = drop.train()(values)
    per_channel = out[:, :1, :].expand_as(out)
    assert torch.equal(out, per_channel), "whole channels of a sample are kept or dropped"
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    with pytest.raises(ValueError, match="probability"):
        ChannelDropout(1.5)


def test_upsample_to_ancestor_is_nearest_upsampling():
    x = torch.randn(1, 2, 8, 6, dtype=D64)
    coarse = downsample(grid_field(x), 2)
    out = UpsampleToAncestor(1)(coarse)
    ref = F.interpolate(x[:, :, ::2, ::2], scale_factor=2, mode="nearest")
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="not derived 2 times"):
        UpsampleToAncestor(2)(coarse)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("shape", [(7, 7), (8, 6), (9, 10)])
def test_reflect_padded_convs_convert_exactly(shape, h):
    """padding_mode='reflect' becomes padding='reflect' (also after a stride, on the strided
    lattice, and for even kernels with 'same' padding); the adaptive pool after it does not divide."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                        nn.Conv2d(3, 4, 5, stride=2, padding=2, padding_mode="reflect"), nn.ReLU(),
                        nn.Conv2d(4, 3, (3, 2), padding="same", padding_mode="reflect"), nn.AdaptiveAvgPool2d(3))
    err, inet, out, _ = h.compare(cnn, shape, dtype=D64, channels=2)
    assert err < 1e-10
    assert [inet.get_submodule(name).padding for name in ("0", "2", "4")] == ["reflect"] * 3


def test_adaptive_avg_pool_that_does_not_divide_converts_exactly(h):
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                        nn.Linear(36, 5))
    err, *_ = h.compare(cnn, (7, 7), dtype=D64)
    assert err < 1e-10


@pytest.mark.parametrize("conv,match", [
    (nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate"), "padding_mode='replicate' is not supported"),
    (nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), "padding_mode='circular' is not supported"),
    (nn.Conv2d(3, 4, 5, padding=1, padding_mode="reflect"), "'reflect' is supported with 'same' padding"),
])
def test_other_padding_modes_raise(conv, match):
    with pytest.raises(ConversionError, match=match):
        from_torch(nn.Sequential(conv), (9, 9), in_channels=3)
    from_torch(nn.Sequential(nn.Conv2d(3, 4, 3, padding_mode="replicate")), (9, 9), in_channels=3)  # nothing padded
