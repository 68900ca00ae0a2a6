"""``sample``: evaluate frozen INRs on a point set, the one way INR values enter inrnet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet
from inrnet.inr.base import INRBatch, INRModule

__all__ = ["sample", "INRs"]

INRs = Union[INRBatch, INRModule, nn.Module, Callable[[Tensor], Tensor], Sequence]
"""What `sample` accepts: a batch of one family, one INR module, or a sequence of
INR modules / callables mapping Tensor[N, d] -> Tensor[N, c]."""


def _as_points(points: PointSet | Tensor) -> PointSet:
    if isinstance(points, PointSet):
        return points
    if isinstance(points, Tensor):
        if points.dim() == 2 and points.shape[0] == 0:
            raise ValueError(f"cannot sample INRs on an empty point set, got coords {tuple(points.shape)}")
        return PointSet(points)
    raise TypeError(f"points must be a PointSet or a Tensor[N, d], got {type(points).__name__}")


def _coords(points: PointSet, transform: Callable[[Tensor], Tensor] | None, batch: int) -> Tensor:
    """The coordinates the INRs are evaluated at: Tensor[1 or B, N, d]."""
    x = points.coords
    if transform is None:
        return x.unsqueeze(0)  # (1, N, d)
    y = transform(x)
    if not isinstance(y, Tensor) or y.shape not in (x.shape, (batch, *x.shape)):
        raise ValueError(f"transform must map coords {tuple(x.shape)} to Tensor[N, d] {tuple(x.shape)} or "
                         f"Tensor[B, N, d] {(batch, *x.shape)}, got {tuple(getattr(y, 'shape', ()))}")
    y = y.to(x.device)
    return y if y.dim() == 3 else y.unsqueeze(0)  # (1 or B, N, d)


def _nonfinite(values: Tensor) -> list[int]:
    """Indices of the items of Tensor[b, N, c] with a NaN or infinite value."""
    if not values.is_floating_point():
        return []
    bad = (~torch.isfinite(values)).flatten(1).any(1)  # (b,)
    return bad.nonzero().flatten().tolist()


def _raise_nonfinite(bad: list[int], what: str) -> None:
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"{what} returned NaN or infinite values for INR(s) {bad[:10]}{more}")


def _sample_batch(inrs: INRBatch, points: PointSet, coords: Tensor, chunk_size: int, first: int = 0) -> Tensor:
    """Chunked batched evaluation: Tensor[B, N, c]; ``first`` offsets the INR ids in errors."""
    family = inrs.family
    if points.dim != family.in_features:
        raise ValueError(f"{family!r} takes d={family.in_features} coordinates, got points of dimension "
                         f"{points.dim} ({points})")
    dtype = torch.promote_types(inrs.dtype, coords.dtype) if inrs.dtype.is_floating_point else coords.dtype
    out = None
    for start in range(0, len(inrs), chunk_size):
        stop = min(start + chunk_size, len(inrs))
        params = {k: v[start:stop].to(points.device, dtype if v.is_floating_point() else None)  # (b, *shape)
                  for k, v in inrs.params.items()}
        x = coords if coords.shape[0] == 1 else coords[start:stop]  # (1 or b, N, d)
        values = family.forward(params, x)  # (b, N, c)
        if out is None:
            out = values.new_empty((len(inrs), points.n, values.shape[2]))  # (B, N, c)
        out[start:stop] = values
    _raise_nonfinite([first + i for i in _nonfinite(out)], repr(family))  # one device sync, at the end
    return out


def _sample_callable(fn: Callable[[Tensor], Tensor], points: PointSet, x: Tensor, index: int) -> Tensor:
    """One generic INR at coords Tensor[N, d]: Tensor[N, c]."""
    name = f"INR {index} ({type(fn).__name__})"
    if isinstance(fn, nn.Module):
        devices = {p.device for p in fn.parameters()}
        if devices and devices != {points.device}:
            raise ValueError(f"{name} has parameters on {sorted(map(str, devices))} but the points are on "
                             f"{points.device}; move it with .to({str(points.device)!r})")
    y = fn(x)
    if not isinstance(y, Tensor) or y.dim() != 2 or y.shape[0] != points.n:
        raise ValueError(f"{name} must map coords {tuple(x.shape)} to Tensor[N={points.n}, c], got "
                         f"{type(y).__name__} {tuple(getattr(y, 'shape', ()))}")
    y = y.to(points.device)  # (N, c)
    _raise_nonfinite([index] if _nonfinite(y.unsqueeze(0)) else [], name)  # (1, N, c)
    return y


@torch.no_grad()
def sample(inrs: INRs, points: PointSet | Tensor, *, chunk_size: int = 8,
           transform: Callable[[Tensor], Tensor] | None = None) -> Field:
    """Evaluate frozen INRs at ``points``, under ``no_grad``, on the points' device.

    A batch of one family ([`INRBatch`][inrnet.inr.base.INRBatch], [`PixelINR`][inrnet.inr.pixel.PixelINR], or a sequence of
    [`INRModule`][inrnet.inr.base.INRModule] of one family, which is stacked) is evaluated ``chunk_size`` INRs
    at a time as batched matmuls; chunks of parameters living on another device are
    moved there. Any other ``nn.Module`` or callable mapping coords Tensor[N, d] to
    Tensor[N, c] (or a sequence of them) is evaluated one by one. Floating parameters are
    promoted to the points' dtype (float64 points give a float64 evaluation).

    Args:
        inrs: the B INRs.
        points: a [`PointSet`][inrnet.field.PointSet], or coordinates Tensor[N, d] to wrap in one
            (``PointSet(coords)``, which infers their order: ``grid(shape)`` becomes the
            lattice of ``PointSet.grid(shape)``, a permuted grid ``"unordered"``).
        chunk_size: INRs per batched evaluation (bounds the activation memory).
        transform: evaluate at transformed coordinates, ``f_aug(x) = f(T(x))``: a callable
            mapping coords Tensor[N, d] to Tensor[N, d] (all INRs) or Tensor[B, N, d] (one
            transform per INR), e.g. a coordinate augmentation. The returned field lives
            on the untransformed ``points``.

    Returns:
        A [`Field`][inrnet.field.Field] with values Tensor[B, N, c] on ``points``.

    Raises:
        ValueError: empty point set, wrong coordinate dimension, NaN/inf outputs (naming
            the INRs), mismatched output shapes, or a module on another device.
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    points = _as_points(points)
    if isinstance(inrs, INRModule):
        inrs = inrs.as_batch()
    elif isinstance(inrs, Sequence):
        if len(inrs) == 0:
            raise ValueError("cannot sample an empty sequence of INRs")
        if all(isinstance(m, INRModule) and m.family == inrs[0].family for m in inrs):
            inrs = INRBatch.stack(inrs)
    elif not isinstance(inrs, INRBatch):
        if not callable(inrs):
            raise TypeError(f"inrs must be an INRBatch, an INRModule, a callable or a sequence of them, "
                            f"got {type(inrs).__name__}")
        inrs = [inrs]
    coords = _coords(points, transform, len(inrs))
    if isinstance(inrs, INRBatch):
        return Field(_sample_batch(inrs, points, coords, chunk_size), points)
    values = []
    for i, fn in enumerate(inrs):
        x = coords if coords.shape[0] == 1 else coords[i:i + 1]  # (1, N, d)
        if isinstance(fn, INRModule):
            y = _sample_batch(fn.as_batch(), points, x, 1, first=i)[0]  # (N, c)
        else:
            y = _sample_callable(fn, points, x[0], i)  # (N, c)
        if values and y.shape[1] != values[0].shape[1]:
            raise ValueError(f"INR {i} returns {y.shape[1]} channels but INR 0 returns {values[0].shape[1]}")
        values.append(y)
    return Field(torch.stack(values), points)  # (B, N, c)
