"""Continuous twins of discrete layers that [`inrnet.nn`][inrnet.nn] has no layer for.

Each is a small variant of an `inrnet.nn` layer, exact on the grid like its discrete layer,
built by the converter's rules (pooling over fixed boxes is `inrnet.convert.box_pool`):

* [`CroppedBSplineConv`][inrnet.convert.CroppedBSplineConv]: a zero-padded B-spline convolution whose outputs are cropped
  to a box, for discrete paddings between ``0`` and ``'same'`` (even kernels with
  symmetric padding, TensorFlow's asymmetric ``SAME``).
* [`StridedChannelMixing`][inrnet.convert.StridedChannelMixing]: a strided ``1 x 1`` convolution (downsample, then mix).
* [`BatchNormAct`][inrnet.convert.BatchNormAct]: batch norm followed by dropout and an activation (timm's
  ``BatchNormAct2d``), with torch's parameter names.
* `ChannelDropout`: ``nn.Dropout{1,2,3}d`` on channels-last values.
* `UpsampleToAncestor`: nearest-neighbour upsampling back to the point set a feature
  map was strided from (``nn.Upsample(scale_factor=2)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from inrnet.field import Field, PointSet, check_field
from inrnet.nn import BSplineConv, ChannelMixing
from inrnet.nn.norm import BatchNorm
from inrnet.nn.resample import downsample, upsample

__all__ = ["CroppedBSplineConv", "StridedChannelMixing", "BatchNormAct", "ChannelDropout", "UpsampleToAncestor"]


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

    def __init__(self, *args, crop: Sequence[tuple[float | None, float | None]], **kwargs):
        super().__init__(*args, padding="zeros", **kwargs)
        if len(crop) != self.dim:
            raise ValueError(f"crop needs {self.dim} (lo, hi) pairs, got {crop!r}")
        self.crop = tuple((None if lo is None else float(lo), None if hi is None else float(hi)) for lo, hi in crop)

    def output_points(self, points: PointSet) -> PointSet:
        bounds = [(b[0] if lo is None else lo, b[1] if hi is None else hi)
                  for (lo, hi), b in zip(self.crop, points.bounds)]
        return points.restrict(bounds).downsample(self.stride)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", crop={self.crop}"


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
        target = check_field(field, "UpsampleToAncestor").points
        for _ in range(self.hops):
            if target.parent is None:
                raise ValueError(f"{field.points} is not derived {self.hops} times from a finer point set; "
                                 "upsampling needs the points the feature map was strided from")
            target = target.parent
        return upsample(field, target)

    def extra_repr(self) -> str:
        return f"hops={self.hops}"

