"""Segmentation networks convert (issue 16.2): torchvision's FCN, DeepLabV3 and LR-ASPP and a timm
backbone (``features_only``) with a feature-pyramid head, exact on the grid at the label
coordinates (dense outputs, float32, random weights and randomised norms), and queryable at
sub-pixel coordinates.

LR-ASPP and the pyramid on a ResNet-18 run by default (under a second each on 2 cores);
the others are ``slow`` (``pytest -m slow tests/convert``).
"""

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models.segmentation as tvseg
from torch import nn

from inrnet.convert import from_torch
from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample


class FeaturePyramid(nn.Module):
    """A timm ``features_only`` backbone with an FPN head: lateral 1x1 convolutions, a top-down
    path (nearest upsampling to the skip's shape, added), 3x3 smoothing, the levels resized
    bilinearly to the finest one, concatenated, classified, and resized to the input."""

    def __init__(self, backbone: nn.Module, classes: int = 5, width: int = 16):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in channels)
        self.classify = nn.Conv2d(width * len(channels), classes, 1)

    def forward(self, x):
        levels = [lateral(f) for lateral, f in zip(self.lateral, self.backbone(x))]
        for i in range(len(levels) - 2, -1, -1):
            levels[i] = levels[i] + F.interpolate(levels[i + 1], size=levels[i].shape[-2:], mode="nearest")
        levels = [smooth(level) for smooth, level in zip(self.smooth, levels)]
        size = levels[0].shape[-2:]
        merged = torch.cat([levels[0], *(F.interpolate(level, size=size, mode="bilinear", align_corners=False)
                                         for level in levels[1:])], 1)
        return F.interpolate(self.classify(merged), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _torchvision(name: str, aux: bool):
    kwargs = {"aux_loss": True} if aux else {}
    return lambda: getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=5, **kwargs)


def _pyramid(name: str):
    return lambda: FeaturePyramid(timm.create_model(name, pretrained=False, features_only=True))


# (name, builder, input shape); odd sizes test sub-lattices and torch's resizing rounding
MODELS = [
    ("lraspp_mobilenet_v3_large", _torchvision("lraspp_mobilenet_v3_large", False), (65, 63)),
    ("fpn_resnet18", _pyramid("resnet18"), (64, 64)),
    ("fcn_resnet50", _torchvision("fcn_resnet50", True), (49, 47)),
    ("deeplabv3_mobilenet_v3_large", _torchvision("deeplabv3_mobilenet_v3_large", True), (64, 66)),
    ("deeplabv3_resnet50", _torchvision("deeplabv3_resnet50", False), (48, 48)),
    ("fpn_efficientnet_b0", _pyramid("efficientnet_b0"), (64, 64)),
    ("fpn_convnext_atto", _pyramid("convnext_atto"), (64, 64)),
]
FAST = 2


def _dense(out) -> dict[str, Field]:
    return out if isinstance(out, dict) else {"out": out}


@pytest.mark.parametrize("name,build,shape", [
    m if i < FAST else pytest.param(*m, marks=pytest.mark.slow) for i, m in enumerate(MODELS)])
def test_segmentation_model_is_exact_at_the_label_coordinates(name, build, shape, h):
    torch.manual_seed(0)
    net = h.randomize_norms(build()).eval()
    inet = from_torch(net, shape)
    images = torch.randn(2, 3, *shape)
    with torch.no_grad():
        out, ref = _dense(inet(sample(PixelINR(images), PointSet.grid(shape)))), _dense(net(images))
    assert set(out) == set(ref)
    for key in ref:
        assert isinstance(out[key], Field) and out[key].points.lattice.shape == shape, key
        err = h.relative_error(out[key].values, ref[key].flatten(2).transpose(1, 2))
        assert err < 1e-4, f"{name}[{key}]: relative error {err:.2e}"


def test_segmentation_output_is_queryable_at_sub_pixel_coordinates(h):
    """``inet(field, query)`` resamples the dense output at any points: at each pixel centre's
    neighbourhood (less than half a pixel away) it is that pixel's score."""
    torch.manual_seed(0)
    shape = (33, 31)
    net = h.randomize_norms(_torchvision("lraspp_mobilenet_v3_large", False)()).eval()
    inet = from_torch(net, shape)
    images = torch.randn(2, 3, *shape)
    field = sample(PixelINR(images), PointSet.grid(shape))
    grid = PointSet.grid(shape)
    step = torch.tensor(grid.lattice.step, dtype=grid.coords.dtype)
    jitter = (torch.rand(grid.n, 2, generator=torch.Generator().manual_seed(1)) - 0.5) * 0.9 * step
    query = PointSet(grid.coords + jitter)
    with torch.no_grad():
        dense = inet(field)["out"]
        queried = inet(field, query)["out"]
    assert queried.points is query
    torch.testing.assert_close(queried.values, dense.values)
    torch.testing.assert_close(queried.values, net(images)["out"].flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4)


def test_query_must_be_a_point_set():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    inet = from_torch(net, (8, 8))
    field = sample(PixelINR(torch.randn(1, 3, 8, 8)), PointSet.grid((8, 8)))
    with pytest.raises(TypeError, match="query must be a PointSet"):
        inet(field, torch.zeros(3, 2))
