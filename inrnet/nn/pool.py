"""Pooling on point sets (paper App. C): unbiased max, average, adaptive and global average.

Window layers use a fixed-size box around each output point, measured in domain units: a
discrete window of ``k`` taps along an axis with pixel size ``h`` is the box of half width
``k h / 2``, shifted by ``+h / 2`` when ``k`` is even (taps at ``-k/2 + 1 .. k/2`` cells, the
convention of the convolutions). Outputs live on ``points.downsample(stride)`` (after
``points.restrict`` to the shrunk domain with ``padding='none'``), so on a grid the output
points are exactly the cells a strided ``torch.nn.MaxPool2d`` / ``AvgPool2d`` outputs for
odd ``k`` with padding ``k // 2`` (``'zeros'``) and for any ``k`` with padding 0 (``'none'``).

Max pooling scales the window maximum by ``(n + 1) / (n - 1)``, ``n`` the number of points in
the window, so that it does not grow as points are added (the expected maximum of ``n``
uniform samples on ``[-b, b]`` is ``b (n - 1) / (n + 1)``); the raw maximum is kept when
``n = 1`` or the maximum is negative.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet
from inrnet.neighbors import Neighbors, Support, neighbors
from inrnet.nn.geometry import as_tuple, output_points, window_support
from inrnet.nn._segment import gather, segment_max, segment_mean, segment_sum
from inrnet.nn.tokens import token_moments

__all__ = ["max_pool", "avg_pool", "adaptive_bins", "adaptive_avg_pool", "global_avg_pool",
           "MaxPool", "AvgPool", "AdaptiveAvgPool", "GlobalAvgPool"]

PADDINGS = ("zeros", "none")


def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"pooling padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def _check_window_args(kernel_size, spacing, stride) -> None:
    """Validate a window layer's arguments before the dimension of the points is known."""
    dims = {len(v) for v in (kernel_size, spacing, stride) if isinstance(v, Sequence)}
    if len(dims) > 1:
        raise ValueError(f"kernel_size {kernel_size!r}, spacing {spacing!r} and stride {stride!r} "
                         "give different numbers of dimensions")
    _window(kernel_size, spacing, stride, dims.pop() if dims else 1)


def _window(kernel_size, spacing, stride, dim: int) -> tuple[Support, tuple[int, ...]]:
    """The window's box support and the stride (default ``kernel_size``) for ``dim``-d points."""
    k = as_tuple(kernel_size, dim, "kernel_size", int)
    h = as_tuple(spacing, dim, "spacing", float)
    s = k if stride is None else as_tuple(stride, dim, "stride", int)
    return window_support(k, h), s


def _pool_geometry(field: Field, kernel_size, spacing, stride, padding: str) -> tuple[Support, PointSet, Neighbors]:
    support, stride = _window(kernel_size, spacing, stride, field.points.dim)
    out_points = output_points(field.points, support, stride, _check_padding(padding))
    return support, out_points, neighbors(field.points, out_points, support)


def max_pool(field: Field, kernel_size, spacing, stride=None, padding: str = "zeros",
             unbiased: bool = True, scale: float = 1.0) -> Field:
    """Window maximum, scaled by ``(n + 1) / (n - 1)`` when ``unbiased`` (see module docstring).

    Args:
        field: values Tensor[B, N, C] on ``N`` points.
        kernel_size: window taps per axis (int or tuple of ``d``).
        spacing: the pixel size ``h`` per axis in domain units (the window spans ``kernel_size`` pixels).
        stride: keep one output point in ``prod(stride)`` (default ``kernel_size``).
        padding: ``'zeros'`` or ``'none'`` (see ``inrnet.nn.geometry``).
        unbiased: scale the maximum by ``(n + 1) / (n - 1)``, ``n`` the points in the window
            (not when ``n = 1`` or the maximum is negative); ``False`` gives the raw maximum.
        scale: a constant the result is multiplied by.

    Returns:
        Field with values Tensor[B, M, C] on the ``M`` output points.
    """
    _, out_points, nbrs = _pool_geometry(field, kernel_size, spacing, stride, padding)
    best = segment_max(gather(field.values, nbrs), nbrs)  # (B, M, C)
    if unbiased:
        n = nbrs.counts().to(best.dtype)  # (M,)
        factor = torch.where(n > 1, (n + 1) / (n - 1).clamp_min(1), torch.ones_like(n)).view(1, -1, 1)  # (1, M, 1)
        best = torch.where(best > 0, best * factor, best)
    return Field(best * scale if scale != 1.0 else best, out_points)


def avg_pool(field: Field, kernel_size, spacing, stride=None, padding: str = "zeros",
             count_include_pad: bool = True) -> Field:
    """Box filter, then downsample.

    Args:
        field: values Tensor[B, N, C] on ``N`` points.
        kernel_size: window taps per axis (int or tuple of ``d``).
        spacing: the pixel size ``h`` per axis in domain units (the window spans ``kernel_size`` pixels).
        stride: keep one output point in ``prod(stride)`` (default ``kernel_size``).
        padding: ``'zeros'`` or ``'none'`` (see ``inrnet.nn.geometry``).
        count_include_pad: divide the quadrature sum ``sum_j w_j f_j`` by the window's full
            measure (torch's zero padding on grids); ``False`` takes the weighted mean over
            the points in the window.

    Returns:
        Field with values Tensor[B, M, C].
    """
    support, out_points, nbrs = _pool_geometry(field, kernel_size, spacing, stride, padding)
    pairs = gather(field.values, nbrs)  # (B, E, C)
    w = field.points.weights[nbrs.col]  # (E,)
    if count_include_pad:
        return Field(segment_sum(pairs, nbrs, w) / support.volume, out_points)
    return Field(segment_mean(pairs, nbrs, w), out_points)


def adaptive_bins(n: int, m: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins: output ``i`` of ``m`` averages the inputs
    ``floor(i n / m) <= j < ceil((i + 1) n / m)`` of ``n`` (unequal and overlapping where
    ``m`` does not divide ``n``, repeated inputs where ``m > n``).

    Returns:
        ``m`` pairs ``(start, stop)``.
    """
    if n < 1 or m < 1:
        raise ValueError(f"adaptive pooling needs positive sizes, got {n} inputs to {m} outputs")
    return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]


def _lattice_bins(points: PointSet, size: tuple[int, ...]) -> tuple[Tensor, list[Tensor]]:
    """The points in lattice (C) order and, per axis, the bin-averaging matrix, memoised.

    Returns:
        ``order`` (Tensor[N]: the point at each lattice index) and ``d`` matrices
        Tensor[m_k, n_k] (float64) whose row ``i`` averages bin ``i`` of the axis.
    """

    def build():
        lat = points.lattice
        index = ((points.coords.double() - points.coords.new_tensor(lat.origin, dtype=torch.float64))
                 / points.coords.new_tensor(lat.step, dtype=torch.float64)).round().long()  # (N, d)
        flat = torch.zeros(points.n, dtype=torch.long, device=points.device)
        for k, n in enumerate(lat.shape):
            flat = flat * n + index[:, k].clamp(0, n - 1)
        order = torch.full((points.n,), -1, dtype=torch.long, device=points.device).scatter_(
            0, flat, torch.arange(points.n, device=points.device))
        if bool((order < 0).any()):
            raise ValueError(f"the coordinates of {points} are not the points of its lattice {lat}")
        mats = []
        for n, m in zip(lat.shape, size):
            a = torch.zeros(m, n, dtype=torch.float64, device=points.device)
            for i, (start, stop) in enumerate(adaptive_bins(n, m)):
                a[i, start:stop] = 1.0 / (stop - start)
            mats.append(a)
        return order, mats
    return points.cached(("adaptive-bins", size), build)


def adaptive_avg_pool(field: Field, output_size) -> Tensor:
    """Average pooling to ``output_size`` outputs per axis.

    On a lattice (``points.lattice``, e.g. a grid) this is ``torch.nn.AdaptiveAvgPool{d}d``
    exactly: output ``i`` along an axis of ``n`` pixels is the mean of pixels
    ``floor(i n / m) .. ceil((i + 1) n / m) - 1`` ([`adaptive_bins`][inrnet.nn.pool.adaptive_bins]), bins that
    are unequal and overlap where ``m`` does not divide ``n``. On scattered points, which
    have no pixels to bin, it is the continuous meaning: the weighted (QMC) mean over each of
    ``prod(output_size)`` equal boxes of the domain (degree-0 tokenization,
    [`token_moments`][inrnet.nn.tokens.token_moments]); the two agree on grids whose size ``output_size`` divides.

    Args:
        field: values Tensor[B, N, C].
        output_size: outputs per axis (int or ``d`` ints).

    Raises:
        ValueError: if a box of scattered points holds no point.

    Returns:
        Tensor[B, C, *output_size] (torch layout).
    """
    size = as_tuple(output_size, field.points.dim, "output_size", int)
    if field.points.lattice is not None:
        order, mats = _lattice_bins(field.points, size)
        b, c = field.batch_size, field.channels
        out = field.values[:, order].reshape(b, *field.points.lattice.shape, c)  # (B, *n, C)
        for k, a in enumerate(mats):
            out = torch.tensordot(a.to(out.dtype), out, dims=([1], [k + 1]))  # (m_k, B, .., C)
            out = torch.movedim(out, 0, k + 1)  # (B, m_0, .., m_k, n_{k+1}, .., C)
        return out.movedim(-1, 1)  # (B, C, *output_size)
    means = token_moments(field.values, field.points, size, degree=0)[..., 0]  # (B, T, C)
    return means.transpose(1, 2).reshape(field.batch_size, field.channels, *size)  # (B, C, *output_size)


def global_avg_pool(field: Field) -> Tensor:
    """The QMC mean ``sum_j w_j f(x_j) / sum_j w_j`` of each channel.

    Returns:
        Tensor[B, C].
    """
    w = field.points.weights.to(field.values.dtype)
    return torch.einsum("bnc,n->bc", field.values, w / w.sum())


class MaxPool(nn.Module):
    """Unbiased window max pooling; see [`max_pool`][inrnet.nn.pool.max_pool]."""

    def __init__(self, kernel_size, spacing, stride=None, padding: str = "zeros", unbiased: bool = True,
                 scale: float = 1.0):
        super().__init__()
        _check_window_args(kernel_size, spacing, stride)
        self.kernel_size, self.spacing, self.stride = kernel_size, spacing, stride
        self.padding = _check_padding(padding)
        self.unbiased, self.scale = unbiased, float(scale)

    def forward(self, field: Field) -> Field:
        return max_pool(field, self.kernel_size, self.spacing, self.stride, self.padding, self.unbiased, self.scale)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, spacing={self.spacing}, stride={self.stride}, "
                f"padding={self.padding!r}, unbiased={self.unbiased}, scale={self.scale}")


class AvgPool(nn.Module):
    """Box-filter average pooling; see [`avg_pool`][inrnet.nn.pool.avg_pool]."""

    def __init__(self, kernel_size, spacing, stride=None, padding: str = "zeros", count_include_pad: bool = True):
        super().__init__()
        _check_window_args(kernel_size, spacing, stride)
        self.kernel_size, self.spacing, self.stride = kernel_size, spacing, stride
        self.padding = _check_padding(padding)
        self.count_include_pad = count_include_pad

    def forward(self, field: Field) -> Field:
        return avg_pool(field, self.kernel_size, self.spacing, self.stride, self.padding, self.count_include_pad)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, spacing={self.spacing}, stride={self.stride}, "
                f"padding={self.padding!r}, count_include_pad={self.count_include_pad}")


class AdaptiveAvgPool(nn.Module):
    """torch's adaptive bins on lattices, equal-measure boxes on scattered points:
    ``Field -> Tensor[B, C, *output_size]``; see [`adaptive_avg_pool`][inrnet.nn.pool.adaptive_avg_pool]."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, field: Field) -> Tensor:
        return adaptive_avg_pool(field, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GlobalAvgPool(nn.Module):
    """QMC mean of each channel: ``Field -> Tensor[B, C]``; see [`global_avg_pool`][inrnet.nn.pool.global_avg_pool]."""

    def forward(self, field: Field) -> Tensor:
        return global_avg_pool(field)
