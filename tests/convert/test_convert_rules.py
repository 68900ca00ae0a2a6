"""Each conversion rule against its torch layer (float64, on grid samples), and its choices."""

import pytest
import timm.layers
import torch
import torchvision
from torch import nn

from inrnet.convert import ConversionError, CroppedBSplineConv, StridedChannelMixing, from_torch
from inrnet.convert.pointwise_rules import ELEMENTWISE
from inrnet.nn import BSplineConv, ChannelMixing

D64 = torch.float64


class ToLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class ToFirst(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


CONVS = [  # (shape, conv kwargs, expected layer, expected padding)
    ((9, 8), dict(kernel_size=3, padding=1), BSplineConv, "zeros"),
    ((9, 8), dict(kernel_size=3, stride=2, padding=1), BSplineConv, "zeros"),
    ((11, 10), dict(kernel_size=5, stride=2, padding=2, groups=3), BSplineConv, "zeros"),
    ((10, 9), dict(kernel_size=4, stride=2, padding=1), CroppedBSplineConv, "zeros"),
    ((12, 11), dict(kernel_size=4, stride=4), BSplineConv, "none"),
    ((8, 10), dict(kernel_size=2, stride=2), BSplineConv, "zeros"),  # = 'same' on even sizes
    ((9, 8), dict(kernel_size=2, stride=2), BSplineConv, "none"),
    ((9, 9), dict(kernel_size=3), BSplineConv, "none"),
    ((10, 9), dict(kernel_size=5, padding=1), CroppedBSplineConv, "zeros"),
    ((8, 9), dict(kernel_size=4, padding="same"), BSplineConv, "zeros"),
    ((8, 9), dict(kernel_size=3, padding="valid", bias=False), BSplineConv, "none"),
    ((9, 9), dict(kernel_size=(3, 5), padding=(1, 2)), BSplineConv, "zeros"),
    ((9, 9), dict(kernel_size=(3, 5), padding=(1, 0)), CroppedBSplineConv, "zeros"),
    ((9, 7), dict(kernel_size=1), ChannelMixing, None),
    ((9, 7), dict(kernel_size=1, stride=2), StridedChannelMixing, None),
    ((9, 7), dict(kernel_size=1, groups=3), BSplineConv, "zeros"),
]


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("shape,kwargs,cls,padding", CONVS)
def test_conv2d_rules(shape, kwargs, cls, padding, h):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, **kwargs)
    err, inet, _, ref = h.compare(nn.Sequential(conv), shape, dtype=D64, images=torch.randn(2, 3, *shape, dtype=D64))
    assert err < 1e-10
    layer = inet.get_submodule("0")
    assert type(layer) is cls
    if padding is not None:
        assert layer.padding == padding


@pytest.mark.parametrize("conv,shape", [(nn.Conv1d(2, 3, 4, stride=2, padding=1), (13,)),
                                        (nn.Conv3d(2, 3, 3, stride=2, padding=1), (5, 6, 4))])
def test_conv1d_conv3d(conv, shape, h):
    err, *_ = h.compare(nn.Sequential(conv), shape, dtype=D64, channels=2)
    assert err < 1e-10


POOLS = [
    ((9, 8), nn.MaxPool2d(3, 2, 1)), ((8, 8), nn.MaxPool2d(2)), ((9, 7), nn.MaxPool2d(2)),
    ((9, 9), nn.MaxPool2d(3, 2, 1, ceil_mode=True)), ((9, 8), nn.AvgPool2d(3, 2, 1)),
    ((9, 8), nn.AvgPool2d(3, 2, 1, count_include_pad=False)), ((7, 9), nn.AvgPool2d(2)),
    ((8, 9), nn.AdaptiveAvgPool2d((3, 4))), ((3, 2), nn.AdaptiveAvgPool2d(7)),
    ((9, 6), nn.AdaptiveAvgPool2d((None, 2))),
    ((5, 7), nn.AdaptiveAvgPool2d(1)), ((5, 7), nn.Flatten()),
]


@pytest.mark.parametrize("shape,pool", POOLS)
def test_pool_rules(shape, pool, h):
    # a conv first so that the pool sees a strided, off-centre lattice
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), pool)
    full = tuple(2 * s - 1 for s in shape)
    err, *_ = h.compare(net, full, dtype=D64)
    assert err < 1e-10


NORMS = [
    nn.BatchNorm2d(4), nn.BatchNorm2d(4, affine=False), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True),
    nn.InstanceNorm2d(4, affine=True, track_running_stats=True), torchvision.models.convnext.LayerNorm2d(4),
    timm.layers.LayerNorm2d(4), timm.layers.BatchNormAct2d(4, act_layer=nn.SiLU), nn.Dropout2d(0.3),
    nn.Sequential(ToLast(), nn.LayerNorm(4), nn.Linear(4, 5), ToFirst()),
    nn.Sequential(ToLast(), timm.layers.LayerNorm(4), timm.layers.Linear(4, 5), ToFirst()),
]


@pytest.mark.parametrize("norm", NORMS, ids=lambda m: type(m).__name__)
def test_norm_and_channel_rules(norm, h):
    net = h.randomize_norms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm))
    err, *_ = h.compare(net, (7, 6), dtype=D64)
    assert err < 1e-10


class Branches(nn.Module):
    """A conv, then every elementwise module on its output, concatenated."""

    def __init__(self, acts):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.acts = nn.ModuleList(acts)

    def forward(self, x):
        x = self.conv(x)
        return torch.cat([act(x) for act in self.acts], dim=1)


def test_elementwise_rules(h):
    acts = [nn.Threshold(0.1, 1.0) if t is nn.Threshold else t() for t in ELEMENTWISE]
    err, inet, out, _ = h.compare(Branches(acts), (5, 6), dtype=D64)
    assert err < 1e-10 and out.channels == 4 * len(acts)


def test_inplace_activations_are_copied_out_of_place(h):
    relu = nn.ReLU(inplace=True)
    _, inet, *_ = h.compare(nn.Sequential(nn.Conv2d(3, 4, 3), relu), (6, 6))
    assert relu.inplace and not inet.get_submodule("1").fn.inplace


@pytest.mark.parametrize("module,match", [
    (nn.Conv2d(3, 4, 3, padding=3, dilation=2), "exceeds 'same' padding"),
    (nn.Conv2d(3, 4, 3, padding=2), "exceeds 'same' padding"),
    (nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), "padding_mode"),
    (nn.Conv2d(3, 4, 3, padding=2, dilation=2, padding_mode="replicate"), "padding_mode='replicate'"),
    (nn.MaxPool2d(4, 3, 1, ceil_mode=True), "ceil_mode=True adds a last window .* centred outside the feature map"),
    (nn.MaxPool2d(3, 1, dilation=2), "dilation"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
    (nn.PReLU(3), "no conversion rule"),
    (nn.Linear(9, 3), "channels-last"),
    (nn.Upsample(scale_factor=2, mode="bicubic"), "mode='bicubic'"),
    (nn.Upsample(scale_factor=2, mode="area"), "mode='area'"),
])
def test_unsupported_layers_raise_with_their_path(module, match):
    net = nn.Sequential(nn.Identity(), nn.Sequential(module))
    with pytest.raises(ConversionError, match=match) as info:
        from_torch(net, (9, 9), in_channels=3)
    assert "'1.0'" in str(info.value)
