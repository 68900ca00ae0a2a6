"""Shared by the continuous-convolution tests: torch's discrete twin of a conv and a slow loop
reference for any conv on scattered points."""

import numpy as np
import torch
import torch.nn.functional as F

from inrnet.field import PointSet
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.testing import grid_field

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
