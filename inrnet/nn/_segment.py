"""Segment reductions over CSR neighbour pairs: the one gather and segment sum of pooling and
of the per-pair convolution ([`conv_pairs`][inrnet.nn.conv.conv_pairs]).

A [`Neighbors`][inrnet.neighbors.Neighbors] graph lists pairs ``(query i, point j)`` sorted by
query; the pairs of query ``i`` are ``indptr[i]:indptr[i + 1]``. Layers first
`gather` the value of each pair's point, ``Tensor[B, E, C]``, transform it if they
need to (a kernel, a quadrature weight), then reduce every query's pairs to one value:

* `segment_sum`: ``out[b, i] = sum_{e in i} weight[e] * pairs[b, e]`` (``index_add_``);
* `segment_mean`: the self-normalised mean ``sum_e w_e p_e / sum_e w_e``;
* `segment_max`: the maximum of the pairs (``segment_reduce`` on the CSR offsets),
  with the gradient sent to the first maximal pair as ``torch.nn.MaxPool2d`` does;
* `gather_scale_sum`: ``out[b, i] = sum_{e in i} scale[e] * values[b, col[e]]`` with a weight
  per pair and channel (a depthwise kernel), fused in cache-sized chunks of pairs so that the
  ``[B, E, C]`` products never exist whole (its reference: `gather`, a product, `segment_sum`).

Batch and channels are vectorised: one kernel call per reduction whatever ``B`` and ``C``.
A query with no pairs gets 0 (or ``fill`` for the maximum).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inrnet.neighbors import Neighbors

__all__ = ["gather", "gather_scale_sum", "segment_sum", "segment_mean", "segment_max", "segment_weight_sum"]

CHUNK_BYTES = 4 << 20
"""`gather_scale_sum`'s bound on one chunk's ``[B, chunk, C]`` products (bytes): about a core's
share of the last-level cache here. The products of a depthwise exact ``MLPConv`` (batch 4, 32
channels, 24 pairs per point) then ran forward + backward 2.4x faster than unchunked at 4096
points and 1.8x at 16384 (1 thread; 1 MB and 16 MB chunks were slower at one of the two sizes)."""


def _check_pairs(pairs: Tensor, nbrs: Neighbors, what: str) -> None:
    if pairs.dim() != 3 or pairs.shape[1] != nbrs.num_pairs:
        raise ValueError(f"{what} expects pair values Tensor[B, E={nbrs.num_pairs}, C], "
                         f"got {tuple(pairs.shape)}")


def _check_weight(weight: Tensor, nbrs: Neighbors) -> None:
    if weight.shape != (nbrs.num_pairs,):
        raise ValueError(f"pair weights must be Tensor[E={nbrs.num_pairs}], got {tuple(weight.shape)}")


def gather(values: Tensor, nbrs: Neighbors) -> Tensor:
    """The value of the point of every pair.

    Args:
        values: Tensor[B, N, C], values at the ``N`` points ``nbrs`` indexes.
        nbrs: the pairs.

    Returns:
        Tensor[B, E, C], ``values[:, nbrs.col]``.
    """
    if values.dim() != 3 or values.shape[1] != nbrs.num_points:
        raise ValueError(f"gather expects values Tensor[B, N={nbrs.num_points}, C], got {tuple(values.shape)}")
    return values.index_select(1, nbrs.col)


class _GatherScaleSum(torch.autograd.Function):
    """``out[:, row[e]] += values[:, col[e]] * scale[e]`` chunk by chunk of pairs; the backward walks
    the same chunks (``grad_values[:, col[e]] += grad[:, row[e]] * scale[e]``, ``grad_scale[e] =
    sum_b grad[b, row[e]] * values[b, col[e]]``)."""

    @staticmethod
    def forward(ctx, values: Tensor, scale: Tensor, row: Tensor, col: Tensor, num_queries: int, chunk: int):
        out = values.new_zeros(values.shape[0], num_queries, values.shape[2])  # (B, M, C)
        for s in range(0, row.numel(), chunk):
            out.index_add_(1, row[s:s + chunk], values.index_select(1, col[s:s + chunk]) * scale[s:s + chunk])
        ctx.save_for_backward(values, scale, row, col)
        ctx.chunk = chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        values, scale, row, col = ctx.saved_tensors
        need_values, need_scale = ctx.needs_input_grad[:2]
        grad_values = torch.zeros_like(values) if need_values else None
        grad_scale = torch.empty_like(scale) if need_scale else None
        for s in range(0, row.numel(), ctx.chunk):
            e = slice(s, s + ctx.chunk)
            g = grad.index_select(1, row[e])  # (B, chunk, C)
            if need_values:
                grad_values.index_add_(1, col[e], g * scale[e])
            if need_scale:
                torch.sum(g * values.index_select(1, col[e]), 0, out=grad_scale[e])
        return grad_values, grad_scale, None, None, None, None


def gather_scale_sum(values: Tensor, nbrs: Neighbors, scale: Tensor, chunk_bytes: int | None = None) -> Tensor:
    """``sum_{e: row[e] = i} scale[e] * values[:, col[e]]``: the value of every pair's point times
    a weight per pair and channel, summed per query, fused (module docstring).

    Equals ``segment_sum(gather(values, nbrs) * scale, nbrs)`` (its test reference) without
    the ``[B, E, C]`` products; differentiable in ``values`` and ``scale`` once (no double backward).

    Args:
        values: Tensor[B, N, C], values at the ``N`` points ``nbrs`` indexes.
        nbrs: the pairs.
        scale: Tensor[E, C], the weight of each pair and channel.
        chunk_bytes: bound on one chunk's products (default `CHUNK_BYTES`).

    Returns:
        Tensor[B, M, C]; 0 for a query without pairs.
    """
    if values.dim() != 3 or values.shape[1] != nbrs.num_points:
        raise ValueError(f"gather_scale_sum expects values Tensor[B, N={nbrs.num_points}, C], "
                         f"got {tuple(values.shape)}")
    if scale.shape != (nbrs.num_pairs, values.shape[2]):
        raise ValueError(f"gather_scale_sum expects scale Tensor[E={nbrs.num_pairs}, C={values.shape[2]}], "
                         f"got {tuple(scale.shape)}")
    per_pair = values.shape[0] * values.shape[2] * values.element_size()
    chunk = max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // per_pair)
    return _GatherScaleSum.apply(values, scale.to(values.dtype), nbrs.row, nbrs.col, nbrs.num_queries, chunk)


def segment_sum(pairs: Tensor, nbrs: Neighbors, weight: Tensor | None = None) -> Tensor:
    """Sum the (weighted) pairs of every query.

    Args:
        pairs: Tensor[B, E, C], one value per pair.
        nbrs: the pairs, whose ``row`` says which query each belongs to.
        weight: Tensor[E], optional weight per pair (e.g. quadrature weights).

    Returns:
        Tensor[B, M, C], ``sum_{e: row[e] = i} weight[e] * pairs[:, e]``; 0 for a query
        without pairs.
    """
    _check_pairs(pairs, nbrs, "segment_sum")
    if weight is not None:
        _check_weight(weight, nbrs)
        pairs = pairs * weight.to(pairs.dtype).view(1, -1, 1)  # (B, E, C)
    out = pairs.new_zeros(pairs.shape[0], nbrs.num_queries, pairs.shape[2])  # (B, M, C)
    return out.index_add(1, nbrs.row, pairs)


def segment_weight_sum(nbrs: Neighbors, weight: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """The total weight of every query's pairs.

    Args:
        nbrs: the pairs.
        weight: Tensor[E], the weight of each pair; ``None`` counts the pairs.
        dtype: result dtype (default: that of ``weight``, or float32 for counts).

    Returns:
        Tensor[M].
    """
    if weight is None:
        return nbrs.counts().to(dtype or torch.get_default_dtype())
    _check_weight(weight, nbrs)
    weight = weight.to(dtype or weight.dtype)
    return weight.new_zeros(nbrs.num_queries).index_add(0, nbrs.row, weight)


def segment_mean(pairs: Tensor, nbrs: Neighbors, weight: Tensor | None = None) -> Tensor:
    """The self-normalised (weighted) mean of every query's pairs.

    Args:
        pairs: Tensor[B, E, C].
        nbrs: the pairs.
        weight: Tensor[E], positive weight per pair; ``None`` for the plain mean.

    Returns:
        Tensor[B, M, C], ``sum_e w_e pairs_e / sum_e w_e`` over the pairs of each query;
        0 for a query without pairs.
    """
    total = segment_sum(pairs, nbrs, weight)  # (B, M, C)
    norm = segment_weight_sum(nbrs, weight, pairs.dtype)  # (M,)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return total / safe.view(1, -1, 1)  # (B, M, C) / (1, M, 1)


def segment_max(pairs: Tensor, nbrs: Neighbors, fill: float = 0.0) -> Tensor:
    """The maximum of every query's pairs.

    The gradient goes to the first maximal pair of each query (pairs are sorted by
    point index, so on a grid this is the first maximum in raster order, as in
    ``torch.nn.MaxPool2d``), never split among ties.

    Args:
        pairs: Tensor[B, E, C].
        nbrs: the pairs (CSR, sorted by query).
        fill: the value of a query without pairs.

    Returns:
        Tensor[B, M, C]. A query whose pairs contain NaN gets NaN.
    """
    _check_pairs(pairs, nbrs, "segment_max")
    b, e, c = pairs.shape
    m = nbrs.num_queries
    if e == 0:
        return pairs.new_full((b, m, c), fill)
    offsets = nbrs.indptr.expand(b, m + 1)  # (B, M + 1)
    with torch.no_grad():
        best = torch.segment_reduce(pairs, "max", offsets=offsets, axis=1)  # (B, M, C)
        hit = pairs == best.index_select(1, nbrs.row)  # (B, E, C)
        position = torch.arange(e, device=pairs.device, dtype=torch.float64).view(1, e, 1)  # (1, E, 1)
        candidate = torch.where(hit, position, torch.full_like(position, float("inf")))  # (B, E, C)
        first = torch.segment_reduce(candidate, "min", offsets=offsets, axis=1)  # (B, M, C)
        found = torch.isfinite(first)
        arg = torch.where(found, first, torch.zeros_like(first)).long()  # (B, M, C)
    picked = pairs.gather(1, arg)  # (B, M, C)
    empty = (nbrs.counts() == 0).view(1, m, 1)  # (1, M, 1)
    fallback = torch.where(empty, torch.full_like(best, fill), best)  # NaN where the segment has NaN
    return torch.where(found, picked, fallback)
