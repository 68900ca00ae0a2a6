"""Continuous twins of the layers that put a feature map on finer pixels: bilinear resizing and
transposed convolutions.

Their outputs live on a *target* point set fixed at conversion ([`target_points`][inrnet.convert.resize_layers.target_points]):
the point set ``hops`` derivations up the input's points when the CNN resizes to the pixels
the feature map was strided from (a segmentation head upsampling to the input, a decoder
upsampling to its skip connection; on QMC points, the longer prefix the coarse points were
taken from), otherwise a lattice fixed at conversion, memoised on the input points.

* `LinearResample`: ``nn.Upsample`` / ``F.interpolate`` in mode ``'linear'``, ``'bilinear'`` or
  ``'trilinear'``, ``align_corners`` either way: on a lattice, multilinear interpolation at
  the source position torch's index rule gives each output pixel; on other points the
  same hat kernel, normalised (kernel regression).
* `TransposedBSplineConv`: ``nn.ConvTranspose{1,2,3}d``, every input point spreading its
  value through the flipped B-spline kernel onto the target points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.convert.twin_layers import DilatedBSplineConv, ancestor, window_extent
from inrnet.field import Field, Lattice, PointSet, check_field
from inrnet.neighbors import Support, find_neighbors, nearest
from inrnet.nn.geometry import as_tuple

__all__ = ["target_points", "LinearResample", "TransposedBSplineConv"]


def target_points(points: PointSet, hops: int | None, lattice: Lattice | None = None, bounds=None) -> PointSet:
    """Where a resizing layer with inputs on ``points`` has its outputs.

    Args:
        points: the layer's input points.
        hops: the outputs are the point set ``hops`` derivations up from ``points``
            (`inrnet.convert.twin_layers.ancestor`); ``None``: ``lattice``'s points.
        lattice: where ``hops`` is ``None``, the output lattice (its point set memoised on ``points``).
        bounds: its domain, ``d`` pairs ``(lo, hi)``.

    Returns:
        The ``M`` output points.
    """
    if hops is not None:
        return ancestor(points, hops)

    def build() -> PointSet:
        coords = lattice.coords(points.dtype, points.device)  # (M, d)
        weights = torch.full((lattice.size,), math.prod(lattice.step), dtype=points.dtype, device=points.device)
        return PointSet(coords, weights, bounds=bounds, lattice=lattice)
    return points.cached(("resize-target", lattice, tuple(map(tuple, bounds))), build)


def _describe_target(hops: int | None, lattice: Lattice | None) -> str:
    return f"hops={hops}" if hops is not None else f"lattice={lattice.shape}"


class LinearResample(nn.Module):
    """torch's ``'linear'`` / ``'bilinear'`` / ``'trilinear'`` interpolation as a continuous layer.

    The value at an output point ``y`` is the normalised hat-kernel mean of the input around
    the source point ``y' = clamp(scale * y + offset, lo, hi)`` (per axis):

        g(y) = sum_j w_j hat(x_j - y') f_j / sum_j w_j hat(x_j - y'),
        hat(delta) = prod_k max(0, 1 - |delta_k| / step_k).

    On a lattice of spacing ``step`` the hats are the multilinear interpolation weights and
    sum to 1 on its hull, so ``g(y)`` interpolates the lattice at ``y'``; the affine map is
    torch's source index rule (``align_corners``, ``scale_factor``) written in coordinates
    and the clamp box is the lattice's hull, so on the grid this is ``F.interpolate``. On
    other points it is the kernel regression of the input with the same hat (the nearest
    input point where no input point falls in the hat). The resampling matrix is built
    once per input and target point set and cached on the input points.

    Args:
        step: the hat's half width per axis: the input lattice's spacing at conversion.
        scale: per axis, the slope of the source map.
        offset: per axis, its offset.
        lo: per axis, the lower end of the clamp box.
        hi: per axis, its upper end.
        hops: the outputs are on the point set this many derivations up (see
            [`target_points`][inrnet.convert.resize_layers.target_points]); ``None``: on ``lattice``.
        lattice: the output lattice where ``hops`` is ``None``.
        bounds: its domain.

    Shapes:
        ``Field[B, N, C] -> Field[B, M, C]``.
    """

    def __init__(self, step: Sequence[float], scale: Sequence[float], offset: Sequence[float], lo: Sequence[float],
                 hi: Sequence[float], *, hops: int | None = None, lattice: Lattice | None = None, bounds=None):
        super().__init__()
        dim = len(step)
        self.step = as_tuple(step, dim, "step", float)
        self.scale, self.offset, self.lo, self.hi = (tuple(float(v) for v in as_tuple(a, dim, name))
                                                     for a, name in ((scale, "scale"), (offset, "offset"),
                                                                     (lo, "lo"), (hi, "hi")))
        if (hops is None) == (lattice is None):
            raise ValueError("pass either hops (an ancestor) or lattice (and bounds) for the output points")
        self.hops, self.lattice = hops, lattice
        self.bounds = None if bounds is None else tuple((float(a), float(b)) for a, b in bounds)

    def output_points(self, points: PointSet) -> PointSet:
        """Where this layer has outputs for inputs on ``points``."""
        return target_points(points, self.hops, self.lattice, self.bounds)

    def source_points(self, target: PointSet) -> Tensor:
        """The source point ``y'`` of every output point, Tensor[M, d] in float64."""
        y = target.coords.double()  # (M, d)
        scale, offset = y.new_tensor(self.scale), y.new_tensor(self.offset)
        return torch.minimum(torch.maximum(y * scale + offset, y.new_tensor(self.lo)), y.new_tensor(self.hi))

    def matrix(self, points: PointSet, target: PointSet) -> Tensor:
        """The sparse resampling matrix, Tensor[M, N] (rows sum to 1), built uncached."""
        q = self.source_points(target)  # (M, d)
        queries = PointSet(q.to(points.dtype), bounds=points.bounds, order="unordered")
        nbrs = find_neighbors(points, queries, Support(self.step))
        x = points.coords.double()
        hat = (1 - ((x[nbrs.col] - q[nbrs.row]).abs() / q.new_tensor(self.step))).clamp_min(0).prod(-1)  # (E,)
        weight = hat * points.weights.double()[nbrs.col]  # (E,)
        mass = torch.zeros(target.n, dtype=torch.float64, device=q.device).index_add_(0, nbrs.row, weight)  # (M,)
        row, col, value = nbrs.row, nbrs.col, weight / mass.clamp_min(torch.finfo(torch.float64).tiny)[nbrs.row]
        empty = (mass == 0).nonzero().squeeze(-1)  # outputs with no input point in their hat: the nearest one
        if empty.numel():
            row = torch.cat([row, empty])
            col = torch.cat([col, nearest(points.coords, queries.coords[empty])])
            value = torch.cat([value, torch.ones(empty.numel(), dtype=torch.float64, device=q.device)])
        keep = value != 0
        index = torch.stack([row[keep], col[keep]])  # (2, nnz)
        return torch.sparse_coo_tensor(index, value[keep].to(points.dtype), (target.n, points.n),
                                       check_invariants=True).coalesce()

    def forward(self, field: Field) -> Field:
        points = check_field(field, "LinearResample").points
        if points.dim != len(self.step):
            raise ValueError(f"LinearResample was built for {len(self.step)}-d points, got {points}")
        target = self.output_points(points)
        key = ("linear-resample", target, self.step, self.scale, self.offset, self.lo, self.hi)
        matrix = points.cached(key, lambda: self.matrix(points, target))  # (M, N)
        b, n, c = field.values.shape
        flat = field.values.transpose(0, 1).reshape(n, b * c)  # (N, B * C)
        out = torch.sparse.mm(matrix.to(flat.dtype), flat).reshape(target.n, b, c)  # (M, B, C)
        return Field(out.transpose(0, 1), target)  # (B, M, C)

    def extra_repr(self) -> str:
        return (f"step={tuple(round(h, 6) for h in self.step)}, scale={tuple(round(a, 6) for a in self.scale)}, "
                + _describe_target(self.hops, self.lattice))


class TransposedBSplineConv(DilatedBSplineConv):
    """``nn.ConvTranspose{d}d`` as a continuous layer: ``g(y) = sum_j w_j K(x_j - y) f_j + b``.

    A transposed convolution adds ``W[:, :, i] f(x)`` to output pixel ``x s - p + i d``; in
    coordinates, input point ``x`` reaches output point ``y`` through tap ``i`` when
    ``x - y = delta_0 + (p - i d) h`` (``h`` the output pixel, ``delta_0`` the offset
    between the first input and the first output point). So ``K`` is the filter flipped,
    its taps ``dilation`` output pixels apart and centred ``center`` from the output point,
    splined like a [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]'s, and divided by the
    input pixel's volume ``cell``, which the quadrature weight of an input pixel cancels:
    on the grid this is torch's transposed convolution, output pixels without an input in
    reach getting the bias alone.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: taps per axis.
        spacing: the output pixel size per axis (the input's divided by the stride).
        cell: the input pixel's volume, ``prod`` of the input lattice's spacing at conversion.
        center: per axis, the offset of the kernel's support from the output point.
        dilation: output pixels between taps per axis.
        degree: spline degree (as `DilatedBSplineConv`'s).
        groups: channel groups.
        bias: learn a bias per output channel.
        hops: the outputs are on the point set this many derivations up (see
            [`target_points`][inrnet.convert.resize_layers.target_points]); ``None``: on ``lattice``.
        lattice: the output lattice where ``hops`` is ``None``.
        bounds: its domain.

    Attributes:
        weight: Tensor[C_in, C_out / groups, *kernel_size], laid out like ``nn.ConvTranspose{d}d.weight``.

    Shapes:
        ``Field[B, N, C_in] -> Field[B, M, C_out]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int], spacing: Sequence[float], *,
                 cell: float, center: Sequence[float], dilation: Sequence[int], degree: int | None = None,
                 groups: int = 1, bias: bool = True, hops: int | None = None, lattice: Lattice | None = None,
                 bounds=None):
        super().__init__(in_channels, out_channels, kernel_size, spacing, dilation=dilation, degree=degree,
                         groups=groups, bias=bias)
        extent = window_extent(self.kernel_size, self.dilation)
        self.support = Support(tuple(n * h / 2 for n, h in zip(extent, self.spacing)), "box",
                               as_tuple(center, self.dim, "center"))
        self.cell = float(cell)
        if (hops is None) == (lattice is None):
            raise ValueError("pass either hops (an ancestor) or lattice (and bounds) for the output points")
        self.hops, self.lattice = hops, lattice
        self.bounds = None if bounds is None else tuple((float(a), float(b)) for a, b in bounds)
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, *self.kernel_size))
        self.reset_parameters()

    def output_points(self, points: PointSet) -> PointSet:
        """Where this layer has outputs for inputs on ``points`` (see `target_points`)."""
        return target_points(points, self.hops, self.lattice, self.bounds)

    def atoms(self) -> Tensor:
        """The flipped taps' control points over the input pixel's volume, Tensor[A, C_in / groups, C_out]."""
        c = self.control_points().flip(list(range(2, 2 + self.dim))) / self.cell  # (C_in, Og, *k), taps flipped
        cg, og = self.in_channels // self.groups, self.out_channels // self.groups
        c = c.reshape(self.groups, cg, og, self.num_atoms)  # (g, Cg, Og, A)
        return c.permute(3, 1, 0, 2).reshape(self.num_atoms, cg, self.out_channels)  # (A, Cg, C_out)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", transposed, " + _describe_target(self.hops, self.lattice)
