"""Multi-scale structure (paper §4.1): downsample, nearest-neighbour upsample, residual and skip merges.

Downsampling keeps a prefix of a low-discrepancy sequence (itself low-discrepancy) or a
sub-lattice of a grid (``PointSet.downsample``), and refuses points whose order is neither
(``PointSet.order == "unordered"``, e.g. a permuted grid), where a prefix is no subsample.
Upsampling goes back to a finer point set the coarse one was derived from (its ``parent``,
or any ancestor), whatever its order: every fine point takes
the value of its nearest coarse point, points present in both sets copy their value
exactly, and on lattices ties break towards the lower index along each axis, so a grid
downsampled by 2 and upsampled back equals ``nn.Upsample(scale_factor=2, mode='nearest')``
of the discrete downsample. The index map is cached on the target point set.

Merges ([`add`][inrnet.nn.resample.add], [`concat`][inrnet.nn.resample.concat]) require both branches on the same points and never
modify or alias an input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from inrnet.field import BOUNDARY_TOL, Field, PointSet, check_same_points
from inrnet.neighbors import nearest

__all__ = ["downsample", "upsample", "nearest_index", "add", "concat", "Downsample", "Upsample", "Add", "Concat"]


def downsample(field: Field, factor) -> Field:
    """The values of the points ``field.points.downsample(factor)`` keeps.

    Args:
        field: values Tensor[B, N, C].
        factor: int or one int per dimension; a lattice keeps every ``factor``-th point per
            axis, nested (QMC) points the prefix of ``ceil(N / prod(factor))``.

    Returns:
        Field with values Tensor[B, M, C].

    Raises:
        ValueError: the points are ``"unordered"`` (see
            [`PointSet.downsample`][inrnet.field.PointSet.downsample]).
    """
    points = field.points.downsample(factor)
    if points is field.points:
        return field
    return Field(field.values.index_select(1, points.parent_index), points)


def _ancestor_index(source: PointSet, target: PointSet) -> Tensor | None:
    """Positions of ``source``'s points in ``target`` if ``target`` is an ancestor, else ``None``."""
    index = torch.arange(source.n, device=source.device)
    node = source
    while node is not target:
        if node.parent is None or node.parent_index is None:
            return None
        index = node.parent_index.to(index.device)[index]
        node = node.parent
    return index


def _lattice_nearest(source: PointSet, target: PointSet) -> Tensor:
    """Per-axis nearest source lattice index of every target lattice point, ties to the lower index."""
    src, tgt = source.lattice, target.lattice
    flat = torch.zeros((), dtype=torch.long)
    for o_s, h_s, n_s, o_t, h_t, n_t in zip(src.origin, src.step, src.shape, tgt.origin, tgt.step, tgt.shape):
        u = o_s + h_s * torch.arange(n_s, dtype=torch.float64)  # (n_s,)
        v = o_t + h_t * torch.arange(n_t, dtype=torch.float64)  # (n_t,)
        hi = torch.searchsorted(u, v).clamp(1, n_s - 1) if n_s > 1 else torch.zeros(n_t, dtype=torch.long)
        lo = (hi - 1).clamp_min(0)
        tol = BOUNDARY_TOL * min(h_s, h_t)
        take_hi = (u[hi] - v).abs() < (v - u[lo]).abs() - tol
        axis = torch.where(take_hi, hi, lo)  # (n_t,)
        flat = flat.unsqueeze(-1) * n_s + axis  # (n_t_0, ..., n_t_k)
    return flat.reshape(-1).to(target.device)  # (N_target,)


def nearest_index(source: PointSet, target: PointSet) -> Tensor:
    """For every target point, the index of its nearest source point (cached on ``target``).

    Two lattices use the per-axis rule with ties to the lower index along each axis;
    otherwise [`inrnet.neighbors.nearest`][inrnet.neighbors.nearest] (ties to the lowest index). Source points
    that ``target`` contains (an ancestor) map exactly to themselves.

    Returns:
        Tensor[N_target] of indices into ``source``.
    """
    if source.dim != target.dim:
        raise ValueError(f"cannot upsample {source} onto {target}: dimensions differ")

    def build() -> Tensor:
        if source.lattice is not None and target.lattice is not None:
            index = _lattice_nearest(source, target)
        else:
            index = nearest(source.coords, target.coords.to(source.device)).to(target.device)
        exact = _ancestor_index(source, target)
        if exact is not None:
            index[exact.to(target.device)] = torch.arange(source.n, device=target.device)
        return index
    return target.cached(("nearest_index", source), build)


def upsample(field: Field, target: PointSet | None = None) -> Field:
    """Nearest-neighbour interpolation of ``field`` onto ``target``.

    Args:
        field: values Tensor[B, M, C] on coarse points.
        target: the fine points (default: ``field.points.parent``, the set the coarse
            points were derived from).

    Returns:
        Field with values Tensor[B, N, C] on ``target``.
    """
    if target is None:
        target = field.points.parent
        if target is None:
            raise ValueError(f"{field.points} has no parent point set to upsample to; pass target=")
    if target is field.points:
        return field
    index = nearest_index(field.points, target)
    return Field(field.values.index_select(1, index.to(field.values.device)), target)


def _check_branches(fields: tuple[Field, ...], what: str, same_channels: bool) -> None:
    if len(fields) < 2:
        raise ValueError(f"{what} needs at least two fields, got {len(fields)}")
    first = fields[0]
    for other in fields[1:]:
        check_same_points(first.points, other.points, f"{what} branches")
        a, b = tuple(first.values.shape), tuple(other.values.shape)
        if a[0] != b[0] or (same_channels and a[2] != b[2]):
            raise ValueError(f"{what} branches have incompatible values {a} and {b} ([B, N, C])")


def add(*fields: Field) -> Field:
    """Residual merge: the sum of fields on the same points.

    Args:
        fields: two or more fields with values Tensor[B, N, C] on the same points.

    Returns:
        A new Field, values Tensor[B, N, C] (no input is modified or aliased).
    """
    _check_branches(fields, "add", same_channels=True)
    values = fields[0].values + fields[1].values
    for f in fields[2:]:
        values = values + f.values
    return Field(values, fields[0].points)


def concat(*fields: Field) -> Field:
    """Skip merge: fields on the same points stacked along channels.

    Args:
        fields: fields with values Tensor[B, N, C_i] on the same points.

    Returns:
        A new Field, values Tensor[B, N, sum C_i].
    """
    _check_branches(fields, "concat", same_channels=False)
    return Field(torch.cat([f.values for f in fields], dim=-1), fields[0].points)


class Downsample(nn.Module):
    """Keep the points ``PointSet.downsample(factor)`` keeps; see [`downsample`][inrnet.nn.resample.downsample]."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, field: Field) -> Field:
        return downsample(field, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the parent (or a given ancestor); see [`upsample`][inrnet.nn.resample.upsample]."""

    def forward(self, field: Field, target: PointSet | None = None) -> Field:
        return upsample(field, target)


class Add(nn.Module):
    """Residual merge ``forward(a, b, ...)``; see [`add`][inrnet.nn.resample.add]."""

    def forward(self, *fields: Field) -> Field:
        return add(*fields)


class Concat(nn.Module):
    """Skip merge along channels ``forward(a, b, ...)``; see [`concat`][inrnet.nn.resample.concat]."""

    def forward(self, *fields: Field) -> Field:
        return concat(*fields)
