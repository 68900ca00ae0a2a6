"""Rules for window layers (convolution, pooling), for leaving the field (pooling to a size, flatten)
and for going to finer points (upsampling, transposed convolution).

Window layers read their pixel spacing off the lattice at their node, which after strides is
a sub-lattice: spacing = previous spacing x stride, also for odd sizes. A window of ``k``
taps ``d`` pixels apart (dilation) spans ``(k - 1) d + 1`` pixels and is padded like an
undilated window that wide. Padding per side is compared with ``'same'`` (``(k - 1) // 2``
before, ``k // 2`` after): equal on every side is ``padding='zeros'``, zero on every side is
``'none'``, anything in between crops the outputs to the box where the discrete window fits
([`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv], `inrnet.convert.window_pool`), and
more than ``'same'`` (outputs centred outside the input) is an error. See `window_plan`.
Pooling with ``ceil_mode=True`` is padded on the far side up to its last (partial)
window's centre.

Upsampling and transposed convolutions put their outputs on the points the feature map was
strided from when those have the CNN's output size (and, for a transposed convolution, its
pixel size), otherwise on a lattice fixed at conversion (`inrnet.convert.resize_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from inrnet.convert.box_pool import BoxPool, adaptive_boxes
from inrnet.convert.registry import Site, check_site, copy_weights, register_rule
from inrnet.convert.resize_layers import LinearResample, TransposedBSplineConv
from inrnet.convert.twin_layers import (
    Crop,
    CroppedBSplineConv,
    DilatedBSplineConv,
    StridedChannelMixing,
    UpsampleToAncestor,
    window_extent,
)
from inrnet.convert.window_pool import CroppedAvgPool, CroppedMaxPool
from inrnet.field import Lattice, PointSet
from inrnet.neighbors import tiled_box
from inrnet.nn import AvgPool, BSplineConv, ChannelMixing, MaxPool
from inrnet.nn.geometry import as_tuple, output_points, window_support
from inrnet.nn.resample import nearest_index

__all__ = ["window_plan", "crop_box", "lower_conv", "adaptive_pool", "flatten_field", "UPSAMPLE_MODES",
           "LINEAR_MODES", "check_upsample_mode"]


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) <= 1e-9 for x, y in zip(a, b))


def _same_lattice(a: PointSet, b: PointSet) -> bool:
    la, lb = a.lattice, b.lattice
    return la.shape == lb.shape and _close(la.origin + la.step, lb.origin + lb.step)


def _same_pads(kernel: Sequence[int]) -> list[tuple[int, int]]:
    return [((k - 1) // 2, k // 2) for k in kernel]


def crop_box(site: Site, kernel: Sequence[int], pads: Sequence[tuple[int, int]]) -> Crop:
    """Per axis the ``(lo, hi)`` bounds of the outputs of a window of ``kernel`` pixels padded ``pads``.

    ``None`` where a side is padded as ``'same'`` (keep the domain's bound); otherwise the
    centre of the first / last pixel the window can be centred on, ``'same'`` minus the
    padding pixels in from the edge of the box the feature map tiles.
    """
    lat = site.points.lattice
    crop = []
    for o, h, n, (pb, pa), (sb, sa) in zip(lat.origin, lat.step, lat.shape, pads, _same_pads(kernel)):
        lo, hi = o - h / 2, o + (n - 0.5) * h
        crop.append((None if pb == sb else lo + h * (0.5 + sb - pb), None if pa == sa else hi - h * (0.5 + sa - pa)))
    return tuple(crop)


def window_plan(kernel: Sequence[int], stride: Sequence[int], pads: Sequence[tuple[int, int]], module, site: Site
                ) -> tuple[str, list[tuple[float | None, float | None]] | None]:
    """Padding mode (and crop box) of a window layer padded ``pads[k] = (before, after)`` per axis.

    Where the layer has its outputs at the same pixels as with ``'same'`` padding (e.g. a
    ``2 x 2`` stride-2 window without padding on an even size) the two compute the same
    thing, and ``'zeros'`` is chosen: on scattered points it keeps the whole domain.

    Args:
        kernel: the window's extent in pixels per axis (``(k - 1) d + 1`` when dilated).
        stride: per axis.
        pads: per axis ``(before, after)`` padding in pixels.
        module: the layer, named in the errors.
        site: where it is called.

    Returns:
        ``("zeros", None)``, ``("none", None)``, or ``("zeros", crop)`` with per-axis bounds
        (``None``: keep the domain's) of the outputs ([`crop_box`][inrnet.convert.window_rules.crop_box]), for
        [`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv] and the cropped pools.

    Raises:
        ConversionError: padding beyond ``'same'`` on a side.
    """
    same = _same_pads(kernel)
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
    crop = crop_box(site, kernel, pads)
    bounds = [(b[0] if lo is None else lo, b[1] if hi is None else hi) for (lo, hi), b in zip(crop, site.points.bounds)]
    if _same_lattice(site.points.restrict(bounds).downsample(stride), zeros_out):
        return "zeros", None
    return "zeros", crop


def _conv_pads(m: nn.modules.conv._ConvNd) -> list[tuple[int, int]]:
    if m.padding == "same":
        return _same_pads(window_extent(m.kernel_size, m.dilation))
    if m.padding == "valid":
        return [(0, 0)] * len(m.kernel_size)
    return [(p, p) for p in m.padding]


def lower_conv(m: nn.modules.conv._ConvNd, site: Site, pads: Sequence[tuple[int, int]]):
    """A convolution with explicit per-axis ``(before, after)`` padding as a continuous layer.

    ``1 x 1`` convolutions become [`ChannelMixing`][inrnet.nn.pointwise.ChannelMixing] (strided:
    [`StridedChannelMixing`][inrnet.convert.StridedChannelMixing]); others a [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv] with the
    feature map's spacing ([`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv] for in-between paddings), dilated
    ones a `DilatedBSplineConv` (padded like an undilated window of ``(k - 1) d + 1`` taps).
    ``padding_mode="reflect"`` with ``'same'`` padding becomes ``padding="reflect"`` (torch's
    reflect, exact on the grid); other padding modes are an error unless nothing is padded.
    """
    d = m.weight.dim() - 2
    check_site(m, site, d)
    k, stride, dilation = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
    extent = window_extent(k, dilation)
    padded = any(p != (0, 0) for p in pads)
    if m.padding_mode not in ("zeros", "reflect") and padded:
        raise site.error(m, f"padding_mode={m.padding_mode!r} is not supported (only 'zeros' and 'reflect')")
    mode, crop = window_plan(extent, stride, pads, m, site)
    if m.padding_mode == "reflect" and padded:
        same = _same_pads(extent)
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
    if any(v != 1 for v in dilation):
        new = DilatedBSplineConv(m.in_channels, m.out_channels, k, site.spacing, dilation=dilation, padding=mode,
                                 crop=crop, **kwargs)
    elif crop is None:
        new = BSplineConv(m.in_channels, m.out_channels, k, site.spacing, padding=mode, **kwargs)
    else:
        new = CroppedBSplineConv(m.in_channels, m.out_channels, k, site.spacing, crop=crop, **kwargs)
    copy_weights(new, m)
    return new, new.output_points(site.points)


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(m, site):
    """A convolution as a continuous one on the feature map's points (`lower_conv`: B-spline, ``1 x 1``,
    dilated, cropped)."""
    return lower_conv(m, site, _conv_pads(m))


def _pool_pads(m, d: int) -> list[tuple[int, int]]:
    pad = m.padding if isinstance(m.padding, Sequence) else (m.padding,) * d
    return [(p, p) for p in pad]


def _ceil_pads(m, site: Site, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[tuple[int, int]]
               ) -> list[tuple[int, int]]:
    """Per axis the ``(before, after)`` padding whose outputs are ``ceil_mode=True``'s.

    Where ceil mode adds a last window (it starts inside the input or its leading padding
    but hangs over the far end), the far side is padded up to that window's centre, which
    must lie on the feature map; elsewhere ``pads`` is kept.
    """
    out = []
    for n, k, s, (pb, pa) in zip(site.spatial, kernel, stride, pads):
        floor_n = (n + pb + pa - k) // s + 1
        ceil_n = -(-(n + pb + pa - k) // s) + 1
        if (ceil_n - 1) * s >= n + pb:  # torch's rule: the last window starts inside the (leading-padded) input
            ceil_n -= 1
        if ceil_n == floor_n:
            out.append((pb, pa))
            continue
        last = (ceil_n - 1) * s - pb + (k - 1) // 2  # the pixel the last window is centred on
        if last > n - 1:
            raise site.error(m, f"ceil_mode=True adds a last window at pixels {last - (k - 1) // 2}..{last + k // 2} "
                                f"of an axis of {n} pixels (feature map {site.spatial}), centred outside the feature "
                                "map; only partial windows centred on it convert")
        out.append((pb, last - (n - 1) + k // 2))
    return out


def _pool_window(m, site: Site, d: int):
    """Kernel, stride, padding (as given and with ``ceil_mode``'s last window), padding mode and crop of a pool."""
    check_site(m, site, d)
    k, pads = as_tuple(m.kernel_size, d), _pool_pads(m, d)
    stride = as_tuple(m.stride if m.stride is not None else m.kernel_size, d)
    if any(v != 1 for v in as_tuple(getattr(m, "dilation", 1), d)):
        raise site.error(m, f"dilation {m.dilation} is not supported (only 1): the continuous window is a box, whose "
                            "maximum would also take the pixels between the taps")
    if getattr(m, "return_indices", False):
        raise site.error(m, "return_indices=True is not supported")
    ceil = _ceil_pads(m, site, k, stride, pads) if m.ceil_mode else pads
    mode, crop = window_plan(k, stride, ceil, m, site)
    return k, stride, pads, ceil, mode, crop


@register_rule(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(m, site):
    """Max pooling as a `MaxPool` over each window's support (``unbiased=False``, the CNN's max); ceil
    mode's cropped last windows as a `CroppedMaxPool`."""
    k, stride, _, _, mode, crop = _pool_window(m, site, {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(m)])
    if crop is not None:
        new = CroppedMaxPool(k, site.spacing, stride, crop)
        return new, new.output_points(site.points)
    return (MaxPool(k, site.spacing, stride, mode, unbiased=False),
            output_points(site.points, window_support(k, site.spacing), stride, mode))


@register_rule(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(m, site):
    """Average pooling; where ceil mode's last window hangs over the padded input, torch divides by its part inside
    (with ``count_include_pad``), which `CroppedAvgPool` does."""
    if getattr(m, "divisor_override", None) is not None:
        raise site.error(m, "divisor_override is not supported")
    k, stride, pads, ceil, mode, crop = _pool_window(
        m, site, {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}[type(m)])
    overhang = m.count_include_pad and list(ceil) != list(pads)
    if crop is not None or overhang:
        new = CroppedAvgPool(k, site.spacing, stride, crop_box(site, k, ceil), pads if m.count_include_pad else None)
        return new, new.output_points(site.points)
    return (AvgPool(k, site.spacing, stride, mode, m.count_include_pad),
            output_points(site.points, window_support(k, site.spacing), stride, mode))


def adaptive_pool(m, site: Site, output_size) -> BoxPool:
    """Adaptive average pooling to ``output_size`` (``None`` entries keep the size) as a [`BoxPool`][inrnet.convert.BoxPool]."""
    size = tuple(n if o is None else int(o) for o, n in zip(as_tuple(output_size, site.dim), site.spatial))
    if all(s == 1 for s in size):
        return BoxPool(None, site.dim)
    return BoxPool(adaptive_boxes(site.points.lattice, size), site.dim)


@register_rule(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
def _adaptive_avg_pool(m, site):
    """Adaptive average pooling as a `BoxPool`: the quadrature mean over each of torch's boxes; a plain tensor."""
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
    """``nn.Flatten()`` of a feature map: one box per pixel, then flatten; a plain tensor."""
    return flatten_field(m, site, m.start_dim, m.end_dim), None


UPSAMPLE_MODES = {
    "nearest": lambda j, n_in, n_out: j * n_in // n_out,  # floor(j * n_in / n_out)
    "nearest-exact": lambda j, n_in, n_out: (2 * j + 1) * n_in // (2 * n_out),  # floor((j + 1/2) * n_in / n_out)
}
"""Nearest ``nn.Upsample`` / ``F.interpolate`` modes that convert: ``mode -> source pixel of output pixel j``
for ``n_in -> n_out`` pixels per axis, torch's index rule in integer arithmetic."""

LINEAR_MODES = ("linear", "bilinear", "trilinear")
"""Interpolating modes that convert, to `LinearResample` (``align_corners`` either way)."""


def check_upsample_mode(mode: str) -> str | None:
    """The reason ``mode`` does not convert (naming it and the supported ones), or ``None`` if it does."""
    if mode in UPSAMPLE_MODES or mode in LINEAR_MODES:
        return None
    return (f"mode={mode!r} is not supported; the supported modes are "
            f"{', '.join(map(repr, (*UPSAMPLE_MODES, *LINEAR_MODES)))} ({mode!r} has no continuous layer yet)")


def _ancestor_with(points: PointSet, shape: tuple[int, ...], step: Sequence[float] | None = None
                   ) -> tuple[PointSet | None, int]:
    """The nearest of ``points`` and the point sets it derives from whose lattice has ``shape`` (and
    ``step``), and how many derivations up it is; ``(None, _)`` if none has."""
    node, hops = points, 0
    while node is not None and (node.lattice is None or node.lattice.shape != shape
                                or (step is not None and not _close(node.lattice.step, step))):
        node, hops = node.parent, hops + 1
    return node, hops


def _hull(bounds, lattice: Lattice) -> list[tuple[float, float]]:
    """``bounds`` grown to hold the points of ``lattice``."""
    return [(min(lo, o), max(hi, o + (n - 1) * h)) for (lo, hi), o, h, n in zip(bounds, lattice.origin, lattice.step,
                                                                                  lattice.shape)]


def _linear_upsample(m: nn.Upsample, site: Site, target: tuple[int, ...]):
    """``'linear'`` / ``'bilinear'`` / ``'trilinear'`` resizing: torch's source index per axis, in coordinates.

    Output pixel ``j`` of ``n_out`` reads input index ``t = a j + b`` (``align_corners``:
    ``a = (n_in - 1) / (n_out - 1)``, ``b = 0``; otherwise ``a = 1 / scale_factor`` when the
    scale factor is given and not recomputed, else ``n_in / n_out``, and ``b = (a - 1) / 2``;
    an axis that keeps its size copies), clamped to ``[0, n_in - 1]``. With the input
    lattice at ``X_0 + H t`` and the output at ``Y_0 + h j``, the output point ``y`` reads the
    source point ``(H a / h) y + X_0 + H b - (H a / h) Y_0``.
    """
    src = site.points.lattice
    node, hops = _ancestor_with(site.points, target)
    if node is not None:
        dest, where = node.lattice, dict(hops=hops)
    else:  # a lattice of the target size on the box the feature map tiles: torch's pixel geometry
        box = tiled_box(site.points)
        step = tuple((hi - lo) / n for (lo, hi), n in zip(box, target))
        dest = Lattice(tuple(lo + h / 2 for (lo, _), h in zip(box, step)), step, target)
        where = dict(lattice=dest, bounds=_hull(site.points.bounds, dest))
    factors = (None,) * site.dim if m.scale_factor is None else as_tuple(m.scale_factor, site.dim, "scale_factor")
    scale, offset = [], []
    for x0, big, n_in, y0, small, n_out, f in zip(src.origin, src.step, src.shape, dest.origin, dest.step, dest.shape,
                                                  factors):
        if n_out == n_in:
            a, b = 1.0, 0.0
        elif m.align_corners:
            a, b = ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0), 0.0
        else:
            a = 1 / f if f is not None and not m.recompute_scale_factor else n_in / n_out
            b = (a - 1) / 2
        scale.append(big * a / small)
        offset.append(x0 + big * b - big * a / small * y0)
    hi = [o + (n - 1) * h for o, h, n in zip(src.origin, src.step, src.shape)]
    new = LinearResample(src.step, scale, offset, src.origin, hi, **where)
    return new, new.output_points(site.points)


@register_rule(nn.Upsample)
def _upsample(m, site):
    """``nn.Upsample``: linear modes as a `LinearResample` onto the finer lattice; nearest modes back to
    the points the feature map was strided from."""
    check_site(m, site)
    if (reason := check_upsample_mode(m.mode)) is not None:
        raise site.error(m, reason)
    target = tuple(site.out_shape[2:])
    if m.mode in LINEAR_MODES:
        return _linear_upsample(m, site, target)
    node, hops = _ancestor_with(site.points, target)
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


@register_rule(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose(m, site):
    """A transposed convolution as a `TransposedBSplineConv` on the output pixels (``input spacing / stride``).

    The outputs are the points the feature map was strided from if they have the CNN's
    output size and pixel size, otherwise a lattice of that size and pixel size centred on
    the input's (for ``n_out = stride * n_in``, the input's box in finer pixels). Output
    pixel ``y`` takes tap ``i`` from input ``x`` when ``y = x s - p + i d``: in coordinates the
    taps sit ``X_0 - Y_0 + (p - i d) h`` from the output point, a support centred
    ``X_0 - Y_0 + (p - (e - 1) / 2) h`` away (``e = (k - 1) d + 1``).
    """
    d = m.weight.dim() - 2
    check_site(m, site, d)
    if m.padding_mode != "zeros":
        raise site.error(m, f"padding_mode={m.padding_mode!r} is not supported (only 'zeros')")
    k, stride, pads, dilation = (tuple(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
    src, target = site.points.lattice, tuple(site.out_shape[2:])
    step = tuple(h / s for h, s in zip(src.step, stride))
    node, hops = _ancestor_with(site.points, target, step)
    if node is not None:
        dest, where = node.lattice, dict(hops=hops)
    else:
        origin = tuple(o + ((n_in - 1) * big - (n_out - 1) * h) / 2
                       for o, big, n_in, h, n_out in zip(src.origin, src.step, src.shape, step, target))
        dest = Lattice(origin, step, target)
        where = dict(lattice=dest, bounds=_hull(site.points.bounds, dest))
    center = tuple(x0 - y0 + (p - (e - 1) / 2) * h for x0, y0, p, e, h in
                   zip(src.origin, dest.origin, pads, window_extent(k, dilation), step))
    new = TransposedBSplineConv(m.in_channels, m.out_channels, k, step, cell=math.prod(src.step), center=center,
                                dilation=dilation, groups=m.groups, bias=m.bias is not None, **where)
    copy_weights(new, m)
    return new, new.output_points(site.points)
