"""Helpers for the converter tests: compare a converted model with its CNN on grid samples."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from inrnet.convert import from_torch
from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |out - ref| / max |ref|``."""
    assert out.shape == ref.shape, f"{tuple(out.shape)} != {tuple(ref.shape)}"
    return float((out - ref).abs().max() / ref.abs().max())


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name, lo, hi in (("weight", 0.5, 1.5), ("bias", -0.3, 0.3), ("running_mean", -0.3, 0.3),
                                 ("running_var", 0.5, 2.0)):
                t = getattr(m, name, None)
                if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) and t is not None:
                    t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)
    return model


def compare(cnn: nn.Module, shape, *, batch: int = 2, dtype=torch.float32, channels: int = 3, images=None,
            **options):
    """Convert ``cnn`` at ``shape`` (``options``: more keywords of ``from_torch``) and run both on the same
    images (the converted one on ``PixelINR(images)`` sampled on ``PointSet.grid(shape)``).

    Returns:
        (relative error, converted model, converted output, CNN output).
    """
    cnn = cnn.to(dtype).eval()
    if images is None:
        images = torch.randn(batch, channels, *shape, dtype=dtype)
    inet = from_torch(cnn, shape, **options)
    with torch.no_grad():
        out = inet(sample(PixelINR(images), PointSet.grid(shape, dtype=dtype)))
        ref = cnn(images)
    if isinstance(out, Field):
        return relative_error(out.values, ref.flatten(2).transpose(1, 2)), inet, out, ref
    return relative_error(out, ref), inet, out, ref


@pytest.fixture
def h():
    """The helpers: ``h.compare``, ``h.randomize_norms``, ``h.relative_error``."""
    return SimpleNamespace(compare=compare, randomize_norms=randomize_norms, relative_error=relative_error)
