"""[`BoxPool`][inrnet.convert.BoxPool]: the weighted mean of a field over fixed boxes of the domain, one output per box.

The converter's ``AdaptiveAvgPool``, ``Flatten`` and spatial ``mean``. The boxes are computed
once, at conversion, from the feature map's lattice ([`adaptive_boxes`][inrnet.convert.adaptive_boxes]):
on that lattice they hold exactly the pixels ``torch.nn.AdaptiveAvgPool2d`` averages (also
for sizes that do not divide, where torch's windows overlap, and for outputs larger than
the input, where they repeat pixels), and one box per pixel turns ``torch.flatten`` of a
feature map into a lookup. On other point sets each output is the QMC mean of the field
over its box: the region nearest to the pixels torch would average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.field import Field, Lattice, PointSet, check_field
from inrnet.nn.pool import adaptive_bins

__all__ = ["adaptive_boxes", "box_means", "BoxPool"]

Boxes = tuple[tuple[tuple[float, float], ...], ...]


def adaptive_boxes(lattice: Lattice, output_size: Sequence[int]) -> Boxes:
    """The boxes over which ``torch.nn.AdaptiveAvgPool{d}d(output_size)`` averages a lattice.

    Output ``i`` of an axis with ``n`` pixels averages pixels ``floor(i n / m) ..
    ceil((i + 1) n / m) - 1`` ([`adaptive_bins`][inrnet.nn.pool.adaptive_bins]); its box is the union of their cells, a pixel's cell being
    the part of the axis nearer to it than to any other pixel (the outermost cells reach
    to infinity, so that every point of the domain is in a cell even when the strided
    lattice sits off-centre).

    Returns:
        Per axis, ``m`` intervals ``(lo, hi)``.
    """
    if len(output_size) != len(lattice.shape) or any(m < 1 for m in output_size):
        raise ValueError(f"output_size {tuple(output_size)} must be {len(lattice.shape)} positive sizes")
    boxes = []
    for o, h, n, m in zip(lattice.origin, lattice.step, lattice.shape, output_size):
        edges = [-math.inf] + [o + (j - 0.5) * h for j in range(1, n)] + [math.inf]  # cell j is [edges[j], edges[j+1])
        boxes.append(tuple((edges[start], edges[stop]) for start, stop in adaptive_bins(n, m)))
    return tuple(boxes)


def _box_matrix(points: PointSet, boxes: Boxes) -> Tensor:
    """Sparse ``[T, N]`` matrix of normalised weights: row ``t`` averages the points in box ``t``."""
    x = points.coords.double()  # (N, d)
    member = None
    for k, axis in enumerate(boxes):
        lo = x.new_tensor([b[0] for b in axis])
        hi = x.new_tensor([b[1] for b in axis])
        inside = (x[:, k:k + 1] >= lo) & (x[:, k:k + 1] < hi)  # (N, m_k)
        member = inside if member is None else (member[:, :, None] & inside[:, None, :]).flatten(1)  # (N, T)
    weights = member.double() * points.weights.double()[:, None]  # (N, T)
    mass = weights.sum(0)  # (T,)
    if bool((mass == 0).any()):
        empty = int((mass == 0).nonzero()[0])
        index = []
        for axis in reversed(boxes):
            index.append(empty % len(axis))
            empty //= len(axis)
        box = [axis[i] for axis, i in zip(boxes, reversed(index))]
        raise ValueError(f"box {tuple(reversed(index))} = {box} holds none of the {points.n} points of {points}; "
                         "sample more points or pool to fewer boxes")
    return (weights / mass).t().to(points.dtype).to_sparse().coalesce()  # (T, N)


def box_means(field: Field, boxes: Boxes) -> Tensor:
    """Weighted mean of the field over each box: ``sum_j w_j f(x_j) / sum_j w_j`` over ``x_j`` in the box.

    Args:
        field: values Tensor[B, N, C].
        boxes: per axis, ``m_k`` intervals ``(lo, hi)`` (points with ``lo <= x < hi``);
            the output boxes are their products.

    Returns:
        Tensor[B, C, m_0, ..., m_{d-1}].

    Raises:
        ValueError: if a box holds no point.
    """
    if len(boxes) != field.points.dim:
        raise ValueError(f"boxes are given for {len(boxes)} axes, the points have {field.points.dim}")
    key = ("box-means", boxes)
    matrix = field.points.cached(key, lambda: _box_matrix(field.points, boxes))  # (T, N)
    b, n, c = field.values.shape
    flat = field.values.transpose(0, 1).reshape(n, b * c)  # (N, B * C)
    out = torch.sparse.mm(matrix.to(flat.dtype), flat).reshape(-1, b, c)  # (T, B, C)
    return out.permute(1, 2, 0).reshape(b, c, *(len(axis) for axis in boxes))  # (B, C, *m)


class BoxPool(nn.Module):
    """Field -> Tensor: means over fixed boxes (adaptive average pooling, flatten); see `box_means`.

    Args:
        boxes: per axis, the intervals ``(lo, hi)``; ``None`` is one box covering all points
            (the global weighted mean, [`inrnet.nn.functional.global_avg_pool`][inrnet.nn.pool.global_avg_pool]).
        dim: the number of axes (needed when ``boxes`` is None).
        flatten: return ``torch.flatten(out, 1)``; with ``channels_last`` the features are
            ordered as a flattened ``[B, *m, C]`` tensor.

    Shapes:
        ``Field[B, N, C] -> Tensor[B, C, *m]`` (``Tensor[B, C * prod(m)]`` with ``flatten``).
    """

    def __init__(self, boxes: Boxes | None, dim: int, flatten: bool = False, channels_last: bool = False):
        super().__init__()
        if boxes is not None and len(boxes) != dim:
            raise ValueError(f"boxes are given for {len(boxes)} axes, expected {dim}")
        self.boxes = None if boxes is None else tuple(tuple((float(lo), float(hi)) for lo, hi in a) for a in boxes)
        self.dim, self.flatten, self.channels_last = dim, flatten, channels_last

    def forward(self, field: Field) -> Tensor:
        check_field(field, "BoxPool")
        if self.boxes is None:
            w = field.points.weights.to(field.values.dtype)
            out = torch.einsum("bnc,n->bc", field.values, w / w.sum())  # (B, C)
            out = out.reshape(*out.shape, *(1,) * self.dim)  # (B, C, 1, ..., 1)
        else:
            out = box_means(field, self.boxes)  # (B, C, *m)
        if self.channels_last:
            out = out.movedim(1, -1)  # (B, *m, C)
        return out.flatten(1) if self.flatten else out

    def extra_repr(self) -> str:
        size = "global" if self.boxes is None else "x".join(str(len(a)) for a in self.boxes)
        return f"boxes={size}, flatten={self.flatten}, channels_last={self.channels_last}"
