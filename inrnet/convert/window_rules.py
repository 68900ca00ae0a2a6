"""Rules for window layers (convolution, pooling) and for leaving the field (pooling to a size, flatten).

Window layers read their pixel spacing off the lattice at their node, which after strides is
a sub-lattice: spacing = previous spacing x stride, also for odd sizes. Padding per side is
compared with ``'same'`` (``(k - 1) // 2`` before, ``k // 2`` after): equal on every side
is ``padding='zeros'``, zero on every side is ``'none'``, anything in between crops the
outputs to the box where the discrete window fits ([`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv]), and more
than ``'same'`` (outputs centred outside the input) is an error. See `window_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from inrnet.convert.box_pool import BoxPool, adaptive_boxes
from inrnet.convert.registry import Site, check_site, copy_weights, register_rule
from inrnet.convert.twin_layers import CroppedBSplineConv, StridedChannelMixing, UpsampleToAncestor
from inrnet.field import PointSet
from inrnet.nn import AvgPool, BSplineConv, ChannelMixing, MaxPool
from inrnet.nn.geometry import as_tuple, output_points, window_support
from inrnet.nn.resample import nearest_index

__all__ = ["window_plan", "lower_conv", "adaptive_pool", "flatten_field", "UPSAMPLE_MODES", "check_upsample_mode"]


def _same_lattice(a: PointSet, b: PointSet) -> bool:
    la, lb = a.lattice, b.lattice
    return la.shape == lb.shape and all(abs(x - y) <= 1e-9 for x, y in zip(la.origin + la.step, lb.origin + lb.step))


def window_plan(kernel: Sequence[int], stride: Sequence[int], pads: Sequence[tuple[int, int]], module, site: Site
                ) -> tuple[str, list[tuple[float | None, float | None]] | None]:
    """Padding mode (and crop box) of a window layer padded ``pads[k] = (before, after)`` per axis.

    Where the layer has its outputs at the same pixels as with ``'same'`` padding (e.g. a
    ``2 x 2`` stride-2 window without padding on an even size) the two compute the same
    thing, and ``'zeros'`` is chosen: on scattered points it keeps the whole domain.

    Returns:
        ``("zeros", None)``, ``("none", None)``, or ``("zeros", crop)`` with per-axis bounds
        (``None``: keep the domain's) of the outputs, for [`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv].
    """
    same = [((k - 1) // 2, k // 2) for k in kernel]
    for (pb, pa), (sb, sa), k in zip(pads, same, kernel):
        if pb > sb or pa > sa:
            raise site.error(module, f"padding ({pb}, {pa}) exceeds 'same' padding ({sb}, {sa}) of a {k}-tap window: "
                                     "the discrete layer has outputs centred outside its input")
    if all(tuple(p) == s for p, s in zip(pads, same)):
        return "zeros", None
    zeros_out = site.points.downsample(stride)
    if all(tuple(p) == (0, 0) for p in pads):
        none_out = output_points(site.points, window_support(kernel, site.spacing), stride, "none")
        return ("zeros" if _same_lattice(none_out, zeros_out) else "none"), None
    lat = site.points.lattice
    crop = []
    for o, h, n, (pb, pa), (sb, sa) in zip(lat.origin, lat.step, lat.shape, pads, same):
        lo, hi = o - h / 2, o + (n - 0.5) * h
        crop.append((None if pb == sb else lo + h * (0.5 + sb - pb), None if pa == sa else hi - h * (0.5 + sa - pa)))
    bounds = [(b[0] if lo is None else lo, b[1] if hi is None else hi) for (lo, hi), b in zip(crop, site.points.bounds)]
    if _same_lattice(site.points.restrict(bounds).downsample(stride), zeros_out):
        return "zeros", None
    return "zeros", crop


def _conv_pads(m: nn.modules.conv._ConvNd) -> list[tuple[int, int]]:
    if m.padding == "same":
        return [((k - 1) // 2, k // 2) for k in m.kernel_size]
    if m.padding == "valid":
        return [(0, 0)] * len(m.kernel_size)
    return [(p, p) for p in m.padding]


def lower_conv(m: nn.modules.conv._ConvNd, site: Site, pads: Sequence[tuple[int, int]]):
    """A convolution with explicit per-axis ``(before, after)`` padding as a continuous layer.

    ``1 x 1`` convolutions become [`ChannelMixing`][inrnet.nn.pointwise.ChannelMixing] (strided:
    [`StridedChannelMixing`][inrnet.convert.StridedChannelMixing]); others a [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv] with the
    feature map's spacing ([`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv] for in-between paddings).
    ``padding_mode="reflect"`` with ``'same'`` padding becomes ``padding="reflect"`` (torch's
    reflect, exact on the grid); other padding modes are an error unless nothing is padded.
    """
    d = m.weight.dim() - 2
    check_site(m, site, d)
    if any(v != 1 for v in m.dilation):
        raise site.error(m, f"dilation {m.dilation} is not supported (only 1)")
    k, stride = tuple(m.kernel_size), tuple(m.stride)
    padded = any(p != (0, 0) for p in pads)
    if m.padding_mode not in ("zeros", "reflect") and padded:
        raise site.error(m, f"padding_mode={m.padding_mode!r} is not supported (only 'zeros' and 'reflect')")
    mode, crop = window_plan(k, stride, pads, m, site)
    if m.padding_mode == "reflect" and padded:
        same = [((kk - 1) // 2, kk // 2) for kk in k]
        if any(tuple(p) != s for p, s in zip(pads, same)):
            raise site.error(m, f"padding_mode='reflect' is supported with 'same' padding {same}, got {list(pads)}")
        mode = "reflect"
    bias = m.bias is not None
    if all(v == 1 for v in k) and m.groups == 1:
        if all(s == 1 for s in stride):
            new = ChannelMixing(m.in_channels, m.out_channels, bias=bias)
        else:
            new = StridedChannelMixing(m.in_channels, m.out_channels, stride, bias=bias)
        return copy_weights(new, m, reshape=True), site.points.downsample(stride)
    kwargs = dict(stride=stride, groups=m.groups, bias=bias)
    if crop is None:
        new = BSplineConv(m.in_channels, m.out_channels, k, site.spacing, padding=mode, **kwargs)
    else:
        new = CroppedBSplineConv(m.in_channels, m.out_channels, k, site.spacing, crop=crop, **kwargs)
    copy_weights(new, m)
    return new, new.output_points(site.points)


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(m, site):
    return lower_conv(m, site, _conv_pads(m))


def _pool_pads(m, d: int) -> list[tuple[int, int]]:
    pad = m.padding if isinstance(m.padding, Sequence) else (m.padding,) * d
    return [(p, p) for p in pad]


def _pool_window(m, site: Site, d: int):
    """Kernel, stride and padding mode of a max or average pool, checked to be exact."""
    check_site(m, site, d)
    k, pads = as_tuple(m.kernel_size, d), _pool_pads(m, d)
    stride = as_tuple(m.stride if m.stride is not None else m.kernel_size, d)
    if any(v != 1 for v in as_tuple(getattr(m, "dilation", 1), d)):
        raise site.error(m, f"dilation {m.dilation} is not supported (only 1)")
    if getattr(m, "return_indices", False):
        raise site.error(m, "return_indices=True is not supported")
    if m.ceil_mode:
        for n, kk, s, (p, _) in zip(site.spatial, k, stride, pads):
            floor_out = (n + 2 * p - kk) // s + 1
            ceil_out = -(-(n + 2 * p - kk) // s) + 1
            if (ceil_out - 1) * s >= n + p:
                ceil_out -= 1
            if ceil_out != floor_out:
                raise site.error(m, f"ceil_mode=True adds a partial window on a {site.spatial} feature map; it is "
                                    "only supported where it changes nothing")
    mode, crop = window_plan(k, stride, pads, m, site)
    if crop is not None:
        raise site.error(m, f"padding {pads} (neither 0 nor 'same') is only supported for convolutions")
    return k, stride, mode, output_points(site.points, window_support(k, site.spacing), stride, mode)


@register_rule(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(m, site):
    k, stride, mode, out = _pool_window(m, site, {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(m)])
    return MaxPool(k, site.spacing, stride, mode, unbiased=False), out


@register_rule(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(m, site):
    if getattr(m, "divisor_override", None) is not None:
        raise site.error(m, "divisor_override is not supported")
    k, stride, mode, out = _pool_window(m, site, {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}[type(m)])
    return AvgPool(k, site.spacing, stride, mode, m.count_include_pad), out


def adaptive_pool(m, site: Site, output_size) -> BoxPool:
    """Adaptive average pooling to ``output_size`` (``None`` entries keep the size) as a [`BoxPool`][inrnet.convert.BoxPool]."""
    size = tuple(n if o is None else int(o) for o, n in zip(as_tuple(output_size, site.dim), site.spatial))
    if all(s == 1 for s in size):
        return BoxPool(None, site.dim)
    return BoxPool(adaptive_boxes(site.points.lattice, size), site.dim)


@register_rule(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
def _adaptive_avg_pool(m, site):
    check_site(m, site, {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}[type(m)])
    return adaptive_pool(m, site, m.output_size), None


def flatten_field(module, site: Site, start_dim: int, end_dim: int) -> BoxPool:
    """``torch.flatten(x, 1)`` of a feature map: one box per pixel, then flatten."""
    ndim = len(site.info.shape)
    if start_dim % ndim != 1 or end_dim % ndim != ndim - 1:
        raise site.error(module, f"flattening dims {start_dim}..{end_dim} of a feature map of shape "
                                 f"{site.info.shape}; only flatten(1) (everything but the batch) is supported")
    lattice = site.points.lattice
    return BoxPool(adaptive_boxes(lattice, lattice.shape), site.dim, flatten=True, channels_last=site.layout == "last")


@register_rule(nn.Flatten)
def _flatten(m, site):
    return flatten_field(m, site, m.start_dim, m.end_dim), None


UPSAMPLE_MODES = {
    "nearest": lambda j, n_in, n_out: j * n_in // n_out,  # floor(j * n_in / n_out)
    "nearest-exact": lambda j, n_in, n_out: (2 * j + 1) * n_in // (2 * n_out),  # floor((j + 1/2) * n_in / n_out)
}
"""``nn.Upsample`` / ``F.interpolate`` modes that convert: ``mode -> source pixel of output pixel j``
for ``n_in -> n_out`` pixels per axis, torch's index rule in integer arithmetic."""


def check_upsample_mode(mode: str) -> str | None:
    """The reason ``mode`` does not convert (naming it and the supported ones), or ``None`` if it does."""
    if mode in UPSAMPLE_MODES:
        return None
    return (f"mode={mode!r} is not supported; the supported modes are {', '.join(map(repr, UPSAMPLE_MODES))} "
            "(interpolating modes have no continuous layer yet)")


@register_rule(nn.Upsample)
def _upsample(m, site):
    check_site(m, site)
    if (reason := check_upsample_mode(m.mode)) is not None:
        raise site.error(m, reason)
    target = tuple(site.out_shape[2:])
    node, hops = site.points, 0
    while node is not None and (node.lattice is None or node.lattice.shape != target):
        node, hops = node.parent, hops + 1
    if node is None or hops == 0:
        raise site.error(m, f"upsampling {site.spatial} to {target} needs the feature map to have been strided "
                            f"from a {target} feature map (nearest upsampling goes back to those points)")
    expected = torch.zeros((), dtype=torch.long)
    for n_in, n_out in zip(site.spatial, target):
        expected = expected.unsqueeze(-1) * n_in + UPSAMPLE_MODES[m.mode](torch.arange(n_out), n_in, n_out)
    actual = nearest_index(site.points, node)
    if not torch.equal(actual.cpu(), expected.reshape(-1)):
        raise site.error(m, f"{m.mode!r} upsampling {site.spatial} -> {target} picks other pixels than torch here "
                            "(exact for a factor 2)")
    return UpsampleToAncestor(hops), node
