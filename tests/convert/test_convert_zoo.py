"""torchvision and timm CNNs convert and are exact on the grid (random weights, randomised norms).

Three run by default (about a second each on an idle 2-core CPU); the others are ``slow``
(1-7 s each): ``pytest -m slow tests/convert``.
"""

import pytest
import timm
import torch
import torchvision
from torch import nn

D64 = torch.float64

# (source, name, input shape, batch); small inputs keep them fast, odd sizes test sub-lattices
MODELS = [
    ("torchvision", "resnet18", (32, 32), 2), ("torchvision", "mobilenet_v3_small", (33, 35), 1),
    ("timm", "efficientnet_b0", (33, 32), 2),
    ("torchvision", "efficientnet_b0", (32, 32), 1), ("timm", "resnet18", (33, 35), 1),
    ("timm", "mobilenetv3_small_100", (32, 34), 2), ("timm", "tf_efficientnet_b0", (33, 30), 1),
    ("torchvision", "resnet50", (33, 35), 2), ("torchvision", "convnext_tiny", (35, 33), 2),
    ("torchvision", "vgg11_bn", (64, 64), 2), ("timm", "resnet50", (32, 32), 2), ("timm", "convnext_tiny", (32, 32), 1),
    ("timm", "vgg11_bn", (33, 35), 2), ("torchvision", "vgg11_bn", (224, 224), 1),
    ("torchvision", "squeezenet1_0", (65, 63), 2), ("torchvision", "googlenet", (64, 65), 2),
    ("torchvision", "shufflenet_v2_x0_5", (33, 35), 2), ("torchvision", "densenet121", (32, 32), 1),
]
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True}}
FAST = 3


def build(source: str, name: str) -> nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        return timm.create_model(name, pretrained=False)
    return torchvision.models.get_model(name, weights=None, **KWARGS.get(name, {}))


@pytest.mark.parametrize("source,name,shape,batch", [
    m if i < FAST else pytest.param(*m, marks=pytest.mark.slow) for i, m in enumerate(MODELS)])
def test_zoo_model_is_exact_on_the_grid(source, name, shape, batch, h):
    cnn = h.randomize_norms(build(source, name))
    err, inet, out, ref = h.compare(cnn, shape, batch=batch)
    assert err < 1e-4, f"{source} {name}: relative error {err:.2e}"
    assert out.shape == ref.shape == (batch, 1000)


def test_resnet18_float64(h):
    cnn = h.randomize_norms(build("torchvision", "resnet18"))
    err, *_ = h.compare(cnn, (33, 32), batch=2, dtype=D64)
    assert err < 1e-9


def test_truncated_efficientnet_backbone(h):
    """The paper's INR-Net-EN: the first EfficientNet stages, pooling and a new linear head."""
    features = h.randomize_norms(build("torchvision", "efficientnet_b0").features[:3])
    net = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    err, inet, *_ = h.compare(net, (33, 31), batch=3)
    assert err < 1e-4
    err_features, *_ = h.compare(features, (33, 31), batch=2, dtype=D64)  # a Field output, exact to rounding
    assert err_features < 1e-9
