"""A converted torchvision CNN (random weights, randomised norms) on the device against the
CNN itself in float64 on the CPU: logits and the gradient of the input."""

import pytest
import torch
import torchvision
from torch import nn

from inrnet.convert import from_torch
from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample

pytestmark = pytest.mark.gpu

D64 = torch.float64


def _randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial affine parameters and running statistics in every batch norm."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for name, lo, hi in (("weight", 0.5, 1.5), ("bias", -0.3, 0.3), ("running_mean", -0.3, 0.3),
                                     ("running_var", 0.5, 2.0)):
                    t = getattr(m, name)
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``max |got - want| / max |want|``, on the CPU in float64."""
    assert got.shape == want.shape, f"{tuple(got.shape)} != {tuple(want.shape)}"
    want = want.detach()
    return float((got.detach().cpu().double() - want).abs().max() / want.abs().max())


# (name, input shape): residual blocks and strided convs; depthwise convs, squeeze-excite and hardswish
MODELS = [("resnet18", (32, 32)), ("mobilenet_v3_small", (33, 35))]


@pytest.mark.parametrize("name,shape", MODELS, ids=[m for m, _ in MODELS])
def test_converted_cnn_on_the_device_matches_the_cnn(name, shape, device):
    torch.manual_seed(0)
    cnn = _randomise_norms(torchvision.models.get_model(name, weights=None)).eval()
    inet = from_torch(cnn, shape).to(device)
    cnn = cnn.double()
    images = torch.randn(2, 3, *shape)
    points = PointSet.grid(shape, device=device)
    with torch.no_grad():
        sampled = inet(sample(PixelINR(images.to(device)), points))  # through the INR front door
    x64 = images.double().requires_grad_()
    ref = cnn(x64)
    assert _relative_error(sampled, ref) < 1e-4
    values = images.to(device, copy=True).flatten(2).transpose(1, 2).requires_grad_()  # (B, N, 3) leaf
    out = inet(Field(values, points))
    g = torch.randn(ref.shape, dtype=D64)
    out.backward(g.to(device, torch.float32))
    ref.backward(g)
    assert _relative_error(out, ref) < 1e-4
    assert _relative_error(values.grad, x64.grad.flatten(2).transpose(1, 2)) < 1e-4
