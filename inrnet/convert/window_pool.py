"""Window pooling whose outputs are cropped to a box: `CroppedMaxPool` and `CroppedAvgPool`.

The converter's ``MaxPool`` / ``AvgPool`` where the discrete layer has outputs at other
pixels than ``padding='zeros'`` or ``'none'`` give (see `inrnet.convert.window_rules`):
paddings between ``0`` and ``'same'``, and ``ceil_mode=True`` where it adds a last window
that hangs over the input's (padded) end. As for
[`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv], the outputs are
``points.restrict(crop).downsample(stride)`` (`inrnet.convert.twin_layers.crop_points`);
points outside the domain do not exist, which is torch's padding of a max pool (``-inf``)
and of an average's numerator (zeros). The average's divisor is torch's: the part of the
window inside the padded input (``count_include_pad=True``) or the points in it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from inrnet.convert.twin_layers import Crop, check_crop, crop_points
from inrnet.field import Field, PointSet, check_field
from inrnet.neighbors import neighbors, tiled_box
from inrnet.nn._segment import gather, segment_max, segment_mean, segment_sum
from inrnet.nn.conv import support_fraction
from inrnet.nn.geometry import as_tuple, window_support

__all__ = ["CroppedMaxPool", "CroppedAvgPool"]


class _CroppedWindow(nn.Module):
    """A pooling window of ``kernel_size`` pixels (``spacing`` wide) whose outputs are `crop_points`."""

    def __init__(self, kernel_size: Sequence[int], spacing: Sequence[float], stride: Sequence[int], crop: Crop):
        super().__init__()
        dim = len(crop)
        self.kernel_size = as_tuple(kernel_size, dim, "kernel_size", int)
        self.spacing = as_tuple(spacing, dim, "spacing", float)
        self.stride = as_tuple(stride, dim, "stride", int)
        self.crop = check_crop(crop, dim)
        self.support = window_support(self.kernel_size, self.spacing)

    def output_points(self, points: PointSet) -> PointSet:
        return crop_points(points, self.crop, self.stride)

    def _pairs(self, field: Field):
        out = self.output_points(check_field(field, type(self).__name__).points)
        return out, neighbors(field.points, out, self.support)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, spacing={self.spacing}, stride={self.stride}, crop={self.crop}"


class CroppedMaxPool(_CroppedWindow):
    """The maximum over each window (no unbiasing), outputs cropped to a box (see `crop_points`).

    Points outside the domain do not exist, which is torch's ``-inf`` padding, so a window
    that hangs over the edge (padding, or ``ceil_mode``'s last window) takes the maximum of
    its part inside, as torch does.

    Args:
        kernel_size: window pixels per axis.
        spacing: the pixel size per axis in domain units.
        stride: per axis.
        crop: per axis ``(lo, hi)`` bounds of the outputs, ``None`` to keep the domain's.

    Shapes:
        ``Field[B, N, C] -> Field[B, M, C]``.
    """

    def forward(self, field: Field) -> Field:
        out, nbrs = self._pairs(field)
        return Field(segment_max(gather(field.values, nbrs), nbrs), out)  # (B, M, C)


class CroppedAvgPool(_CroppedWindow):
    """Window means, outputs cropped to a box (see `crop_points`), with torch's divisor.

    ``count_include_pad=True`` (``pad`` given): ``sum_j w_j f_j`` over the window divided by
    the measure of the part of the window inside the box the input tiles grown by ``pad``
    pixels per side, the padded input; this is ``prod(kernel_size)`` pixels except for
    ``ceil_mode``'s last window, which hangs over the padding and whose divisor torch counts
    up to the padding's end. ``pad=None`` (``count_include_pad=False``): the weighted mean
    over the points in the window.

    Args:
        kernel_size: window pixels per axis.
        spacing: the pixel size per axis in domain units.
        stride: per axis.
        crop: per axis ``(lo, hi)`` bounds of the outputs, ``None`` to keep the domain's.
        pad: per axis ``(before, after)``, torch's padding in pixels; ``None`` for
            ``count_include_pad=False``.

    Shapes:
        ``Field[B, N, C] -> Field[B, M, C]``.
    """

    def __init__(self, kernel_size: Sequence[int], spacing: Sequence[float], stride: Sequence[int], crop: Crop,
                 pad: Sequence[tuple[int, int]] | None):
        super().__init__(kernel_size, spacing, stride, crop)
        if pad is not None and len(pad) != len(crop):
            raise ValueError(f"pad needs {len(crop)} (before, after) pairs, got {pad!r}")
        self.pad = None if pad is None else tuple((int(b), int(a)) for b, a in pad)

    def forward(self, field: Field) -> Field:
        out, nbrs = self._pairs(field)
        pairs = gather(field.values, nbrs)  # (B, E, C)
        w = field.points.weights[nbrs.col]  # (E,)
        if self.pad is None:
            return Field(segment_mean(pairs, nbrs, w), out)
        padded = [(lo - pb * h, hi + pa * h)
                  for (lo, hi), h, (pb, pa) in zip(tiled_box(field.points), self.spacing, self.pad)]
        measure = self.support.volume * support_fraction(out, padded, self.support)  # (M,)
        return Field(segment_sum(pairs, nbrs, w) / measure.to(pairs.dtype)[None, :, None], out)  # (B, M, C)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", count_include_pad=False" if self.pad is None else f", pad={self.pad}")
