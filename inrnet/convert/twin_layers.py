"""Continuous twins of discrete layers that [`inrnet.nn`][inrnet.nn] has no layer for.

Each is a small variant of an `inrnet.nn` layer, exact on the grid like its discrete layer,
built by the converter's rules (pooling over fixed boxes is `inrnet.convert.box_pool`):

* [`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv]: a zero-padded B-spline convolution whose outputs are cropped
  to a box, for discrete paddings between ``0`` and ``'same'`` (even kernels with
  symmetric padding, TensorFlow's asymmetric ``SAME``).
* `DilatedBSplineConv`: a B-spline convolution whose taps are ``dilation`` pixels apart
  (``nn.Conv2d(dilation=d)``, DeepLab's atrous convolutions), outputs optionally cropped.
* [`StridedChannelMixing`][inrnet.convert.StridedChannelMixing]: a strided ``1 x 1`` convolution (downsample, then mix).
* [`BatchNormAct`][inrnet.convert.BatchNormAct]: batch norm followed by dropout and an activation (timm's
  ``BatchNormAct2d``), with torch's parameter names.
* `ChannelDropout`: ``nn.Dropout{1,2,3}d`` on channels-last values.
* `UpsampleToAncestor`: nearest-neighbour upsampling back to the point set a feature
  map was strided from (``nn.Upsample(scale_factor=2)``).

Pooling with cropped outputs is `inrnet.convert.window_pool`; bilinear resizing and
transposed convolutions, whose outputs live on finer points, `inrnet.convert.resize_layers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inrnet.field import Field, PointSet, check_field
from inrnet.nn import BSplineConv, ChannelMixing
from inrnet.nn.geometry import as_tuple, window_support
from inrnet.nn.kernels import bspline_expansion
from inrnet.nn.norm import BatchNorm
from inrnet.nn.resample import downsample, upsample

__all__ = ["Crop", "crop_points", "check_crop", "window_extent", "dilated_expansion", "ancestor", "CroppedBSplineConv",
           "DilatedBSplineConv", "StridedChannelMixing", "BatchNormAct", "ChannelDropout", "UpsampleToAncestor"]

Crop = tuple[tuple[float | None, float | None], ...]
"""Per axis ``(lo, hi)`` bounds of a layer's output points, ``None`` to keep the domain's."""


def crop_points(points: PointSet, crop: Crop, stride: Sequence[int]) -> PointSet:
    """The output points of a cropped window layer: ``points.restrict(box).downsample(stride)``.

    Args:
        points: the layer's ``N`` input points.
        crop: per axis ``(lo, hi)``, ``None`` keeping the bound of ``points``' domain.
        stride: per axis; see [`inrnet.PointSet.downsample`][inrnet.field.PointSet.downsample].

    Returns:
        The ``M`` output points.
    """
    bounds = [(b[0] if lo is None else lo, b[1] if hi is None else hi) for (lo, hi), b in zip(crop, points.bounds)]
    return points.restrict(bounds).downsample(tuple(stride))


def check_crop(crop, dim: int) -> Crop:
    """``crop`` as a `Crop` of ``dim`` axes (floats or ``None``).

    Raises:
        ValueError: another number of axes.
    """
    if len(crop) != dim:
        raise ValueError(f"crop needs {dim} (lo, hi) pairs, got {crop!r}")
    return tuple((None if lo is None else float(lo), None if hi is None else float(hi)) for lo, hi in crop)


def ancestor(points: PointSet, hops: int) -> PointSet:
    """The point set ``hops`` derivations up from ``points`` (``hops=0``: ``points``), for upsampling back to it.

    Raises:
        ValueError: ``points`` is derived fewer than ``hops`` times.
    """
    target = points
    for _ in range(hops):
        if target.parent is None:
            raise ValueError(f"{points} is not derived {hops} times from a finer point set; upsampling needs the "
                             "points the feature map was strided from")
        target = target.parent
    return target


def window_extent(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Pixels a window of ``kernel_size`` taps ``dilation`` pixels apart spans per axis, ``(k - 1) d + 1``.

    Its padding, support and output points are those of an undilated window of that many taps.
    """
    return tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))


def dilated_expansion(u: Tensor, kernel_size: Sequence[int], dilation: Sequence[int],
                      degree: int) -> tuple[Tensor, Tensor]:
    """The basis of a dilated B-spline kernel at pixel coordinates ``u``.

    The B-spline basis over the window's ``(k - 1) d + 1`` pixels
    ([`bspline_expansion`][inrnet.nn.kernels.bspline_expansion]), keeping only the control
    points at the taps (pixel ``i d`` of an axis is tap ``i``).

    Args:
        u: Tensor[E, d], offsets in pixel units: tap ``i`` of axis ``k`` sits at ``u_k = i dilation_k``.
        kernel_size: taps per axis.
        dilation: pixels between taps per axis.
        degree: spline degree.

    Returns:
        ``index`` Tensor[E, (degree+1)^d] of taps (C order over the ``kernel_size`` grid) and
        ``value`` Tensor[E, (degree+1)^d] (0 at control points between the taps).
    """
    extent = window_extent(kernel_size, dilation)
    index, value = bspline_expansion(u, extent, degree)  # (E, P), C order over the window's pixels
    tap, rest, step = torch.zeros_like(index), index, 1
    keep = torch.ones_like(index, dtype=torch.bool)  # (E, P)
    for n, k, d in zip(reversed(extent), reversed(kernel_size), reversed(dilation)):
        pixel, rest = rest % n, rest // n
        keep &= pixel % d == 0
        tap, step = tap + pixel // d * step, step * k
    return tap.where(keep, 0), value * keep


class CroppedBSplineConv(BSplineConv):
    """A zero-padded [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv] with outputs only inside a box.

    A discrete convolution padded by less than ``'same'`` on a side has no outputs where
    its window would reach past the padding; here the output points are
    ``points.restrict(box).downsample(stride)``.

    Args:
        crop: per axis ``(lo, hi)``, either ``None`` to keep the domain's bound.
        *args: positional arguments of [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv].
        **kwargs: its keyword arguments, except ``padding`` (always ``'zeros'``).
    """

    def __init__(self, *args, crop: Crop, **kwargs):
        super().__init__(*args, padding="zeros", **kwargs)
        self.crop = check_crop(crop, self.dim)

    def output_points(self, points: PointSet) -> PointSet:
        return crop_points(points, self.crop, self.stride)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", crop={self.crop}"


class DilatedBSplineConv(BSplineConv):
    """A [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv] whose taps are ``dilation`` pixels apart.

    A dilated filter of ``k`` taps spans ``(k - 1) d + 1`` pixels (`window_extent`): its
    support, padding and output points are those of an undilated window of that size. Its
    kernel is the spline over that window's pixels through the filter's taps and zeros at
    the pixels between them (`dilated_expansion`): with degree 0 or 1 a bump of one
    pixel's reach around each tap, so on the grid it is torch's dilated convolution, and
    one atom per tap (a 3 x 3 filter dilated 12 times gathers 9 atoms, not 625).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: taps per axis.
        spacing: the pixel size per axis in domain units (taps are ``dilation`` pixels apart).
        dilation: pixels between taps per axis (int or tuple of ``d``).
        degree: 0 or 1 when dilated (default 1): a higher degree would reach the pixels
            between the taps; any (default [`default_degree`][inrnet.nn.bspline_conv.default_degree])
            along with a dilation of 1, when the layer is a plain B-spline convolution.
        crop: per axis ``(lo, hi)`` bounds of the outputs (see `crop_points`); needs
            ``padding="zeros"``. ``None``: the outputs of ``padding``.
        **kwargs: the other keyword arguments of [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]
            (``stride``, ``padding``, ``groups``, ``bias``, ``estimator``; ``support_shape`` and
            ``support_extent`` only undilated: a dilated window is the box of its pixels).

    Raises:
        ValueError: a degree above 1, a ball or ``support_extent='basis'`` with a dilation, or a
            crop without zero padding.

    Attributes:
        weight: Tensor[C_out, C_in / groups, *kernel_size], laid out like ``nn.Conv{d}d.weight``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 spacing: float | Sequence[float], *, dilation: int | Sequence[int], degree: int | None = None,
                 crop: Crop | None = None, **kwargs):
        dilated = any(d != 1 for d in (dilation if isinstance(dilation, Sequence) else (dilation,)))
        if dilated and degree is None:
            degree = 1
        if dilated and degree not in (0, 1):
            raise ValueError(f"a dilated kernel must have degree 0 or 1, got {degree}: a spline of higher degree "
                             "through its taps is non-zero at the pixels between them")
        if dilated and (kwargs.get("support_shape", "box"), kwargs.get("support_extent", "taps")) != ("box", "taps"):
            raise ValueError("a dilated kernel's support is the box of its window's pixels (support_shape='box', "
                             "support_extent='taps')")
        super().__init__(in_channels, out_channels, kernel_size, spacing, degree=degree, **kwargs)
        self.dilation = as_tuple(dilation, self.dim, "dilation", int)
        if dilated:
            self.support = window_support(window_extent(self.kernel_size, self.dilation), self.spacing)
        if crop is not None and self.padding != "zeros":
            raise ValueError(f"crop needs padding='zeros', got padding={self.padding!r}")
        self.crop = None if crop is None else check_crop(crop, self.dim)

    def output_points(self, points: PointSet) -> PointSet:
        if self.crop is None:
            return super().output_points(points)
        return crop_points(points, self.crop, self.stride)

    def expansion_key(self):
        return ("dilated-bspline", self.kernel_size, self.spacing, self.degree, self.dilation)

    def expand(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        # pixel coordinates: pixel j of the window along axis k sits at u_k = j, tap i at j = i * dilation_k
        extent = window_extent(self.kernel_size, self.dilation)
        u = ((offsets - offsets.new_tensor(self.support.center)) / offsets.new_tensor(self.spacing)
             + offsets.new_tensor([(n - 1) / 2 for n in extent]))  # (E, d)
        return dilated_expansion(u, self.kernel_size, self.dilation, self.degree)

    def extra_repr(self) -> str:
        crop = "" if self.crop is None else f", crop={self.crop}"
        return super().extra_repr() + f", dilation={self.dilation}{crop}"


class StridedChannelMixing(ChannelMixing):
    """A strided ``1 x 1`` convolution: keep one point in ``prod(stride)``, then mix channels.

    Args:
        stride: per axis; see [`inrnet.PointSet.downsample`][inrnet.field.PointSet.downsample].
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        bias: learn a bias per output channel.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int], bias: bool = True):
        super().__init__(in_channels, out_channels, bias=bias)
        self.stride = tuple(int(s) for s in stride)

    def forward(self, field: Field) -> Field:
        return super().forward(downsample(check_field(field, "StridedChannelMixing"), self.stride))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", stride={self.stride}"


class BatchNormAct(BatchNorm):
    """Batch norm, then ``drop`` and ``act`` (each a ``Field -> Field`` module), as timm's ``BatchNormAct2d``."""

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, drop: nn.Module, act: nn.Module):
        super().__init__(num_channels, eps, momentum, affine, track_running_stats)
        self.drop, self.act = drop, act

    def forward(self, field: Field) -> Field:
        return self.act(self.drop(super().forward(field)))


class ChannelDropout(nn.Module):
    """``nn.Dropout{1,2,3}d`` for channels-last values: zero whole channels of each sample.

    Shapes:
        ``Tensor[B, N, C] -> Tensor[B, N, C]``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, values: Tensor) -> Tensor:
        return F.dropout1d(values.transpose(1, 2), self.p, self.training).transpose(1, 2)  # (B, N, C)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class UpsampleToAncestor(nn.Module):
    """Nearest-neighbour upsampling onto the point set ``hops`` derivations up the field's points.

    On a lattice downsampled by 2 from its ancestor this is ``nn.Upsample(scale_factor=2)``
    (ties go to the lower index, as torch's ``floor``); on QMC points the ancestor is the
    longer prefix the coarse points were taken from.
    """

    def __init__(self, hops: int):
        super().__init__()
        if hops < 1:
            raise ValueError(f"hops must be positive, got {hops}")
        self.hops = hops

    def forward(self, field: Field) -> Field:
        return upsample(field, ancestor(check_field(field, "UpsampleToAncestor").points, self.hops))

    def extra_repr(self) -> str:
        return f"hops={self.hops}"

