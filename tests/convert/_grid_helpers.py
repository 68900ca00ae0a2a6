"""Shared by the converter's layer tests: a converted model checked against torch on the grid."""

import torch
from torch import nn

from inrnet.convert import from_torch
from inrnet.field import Field
from inrnet.testing import grid_field

D64 = torch.float64


def to_values(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, *spatial] -> [B, N, C]`` in the lattice's C order."""
    return x.flatten(2).transpose(1, 2)


def exact(net: nn.Module, shape, channels: int = 3, seed: int = 0):
    """Convert ``net`` at ``shape`` and check it against torch on the grid (float64).

    Returns:
        The converted model.
    """
    torch.manual_seed(seed)
    net = net.double().eval()
    images = torch.randn(2, channels, *shape, dtype=D64)
    inet = from_torch(net, shape, in_channels=channels)
    with torch.no_grad():
        out, ref = inet(grid_field(images)), net(images)
    if isinstance(out, Field):
        assert out.points.lattice.shape == tuple(ref.shape[2:])
        out, ref = out.values, to_values(ref)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    return inet
