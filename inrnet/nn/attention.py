"""Attention that preserves the domain (paper App. C, eqs. 131-134).

For each head ``h`` the queries and keys are vectors in ``R^{d_k}`` per INR, learned
global aggregates of the input (eqs. 131-132), each an inner product estimated by
quadrature with the point weights:

    Q_a = sum_i <q_ia, f_i>,    K_b = sum_i <k_ib, f_i>,

with parametric functions ``q_ia, k_ib`` in L²(Ω) ([`LegendreFunction`][inrnet.nn.parametric.LegendreFunction] by default).
The value ``V[f]`` is a field with ``d_k`` channels per head (eq. 133: a continuous
convolution, or any ``Field -> Field`` module on the same points; channel mixing by
default). The output (eq. 134) mixes the value channels at every point,

    g_a(x) = sum_b softmax_b(Q_a K_b / sqrt(d_k)) V_b[f](x),

the softmax taken over the key index ``b`` of the ``d_k x d_k`` score matrix ``Q K^T``.
Heads are concatenated, head ``h`` owning channels ``h d_k .. (h + 1) d_k - 1``.
Cross-attention takes ``Q`` from a second field (the context), which may live on other
points; ``K`` and ``V`` come from the main field, whose points the output keeps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from inrnet.field import Field, check_field, check_same_points
from inrnet.nn.parametric import InnerProduct, LegendreFunction
from inrnet.nn.pointwise import ChannelMixing

__all__ = ["attention", "Attention"]


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Eq. 134 for every head: ``g_a(x) = sum_b softmax_b(q_a k_b / sqrt(d_k)) v_b(x)``.

    Args:
        q (Tensor[B, H, d_k]): queries.
        k (Tensor[B, H, d_k]): keys.
        v (Tensor[B, N, H * d_k]): the values ``V[f]``, head-major channels.

    Returns:
        Tensor[B, N, H * d_k].
    """
    if q.dim() != 3 or q.shape != k.shape or v.dim() != 3 or v.shape[0] != q.shape[0] \
            or v.shape[2] != q.shape[1] * q.shape[2]:
        raise ValueError(f"attention needs q, k [B, H, d_k] and v [B, N, H * d_k]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    b, h, d_k = q.shape
    scores = q.unsqueeze(-1) * k.unsqueeze(-2) / math.sqrt(d_k)  # (B, H, d_k, d_k)
    heads = v.reshape(b, v.shape[1], h, d_k)  # (B, N, H, d_k)
    out = torch.einsum("zhij,znhj->znhi", scores.softmax(dim=-1), heads)  # (B, N, H, d_k)
    return out.reshape(b, v.shape[1], h * d_k)  # (B, N, H * d_k)


def _default_function(in_channels: int, width: int, degree: int, dim: int, bounds) -> LegendreFunction:
    """Legendre ``q_ia`` (or ``k_ia``) with coefficients ``N(0, 1 / (C n_basis))``, the fan-in scaling
    of a linear layer on the ``C n_basis`` moments, so ``Q`` and ``K`` stay O(1) as ``C`` grows."""
    fn = LegendreFunction(in_channels * width, degree, dim, bounds)
    with torch.no_grad():
        fn.coefficients.div_(math.sqrt(in_channels))
    return fn


class Attention(nn.Module):
    """Self-, cross- and multi-head attention on fields, eqs. 131-134 (see the module docstring).

    Args:
        in_channels: ``C``, channels of the field giving keys and values.
        d_k: query/key size per head, and value channels per head.
        num_heads: ``H``.
        value: ``V``, a module ``Field[B, N, C] -> Field[B, N, H * d_k]`` on the same
            points (e.g. a continuous convolution); default ``ChannelMixing(C, H * d_k)``.
        degree: total degree of the default Legendre query/key functions (their
            coefficients start ``N(0, 1 / (C n_basis))``).
        cross: take the queries from ``context`` (cross-attention).
        context_channels: channels of the context (default ``in_channels``).
        dim: coordinate dimension of the default query/key functions.
        bounds: box of the default query/key functions (default ``[-1, 1]^dim``).
        query_function: a parametric function replacing the Legendre default, with
            ``C_q * H * d_k`` outputs (output ``i * H d_k + h d_k + a`` is ``q_ia`` of head ``h``).
        key_function: likewise for the keys, with ``C * H * d_k`` outputs.

    Shapes:
        ``forward(field[B, N, C], context[B, M, C_q] = None) -> Field[B, N, H * d_k]``,
        on ``field``'s points.
    """

    def __init__(self, in_channels: int, d_k: int, num_heads: int = 1, value: nn.Module | None = None,
                 degree: int = 2, cross: bool = False, context_channels: int | None = None, dim: int = 2,
                 bounds=None, query_function: nn.Module | None = None, key_function: nn.Module | None = None):
        super().__init__()
        if in_channels < 1 or d_k < 1 or num_heads < 1:
            raise ValueError(f"in_channels, d_k and num_heads must be positive, got {in_channels}, {d_k}, {num_heads}")
        if context_channels is not None and not cross:
            raise ValueError("context_channels only applies to cross-attention (cross=True)")
        self.in_channels, self.d_k, self.num_heads, self.cross = in_channels, d_k, num_heads, cross
        self.context_channels = in_channels if context_channels is None else context_channels
        width = num_heads * d_k
        if query_function is None:
            query_function = _default_function(self.context_channels, width, degree, dim, bounds)
        if key_function is None:
            key_function = _default_function(in_channels, width, degree, dim, bounds)
        self.query = InnerProduct(query_function, self.context_channels)
        self.key = InnerProduct(key_function, in_channels)
        for name, product in (("query", self.query), ("key", self.key)):
            if product.out_channels != width:
                raise ValueError(f"the {name} function gives {product.out_channels} values per input channel, "
                                 f"need num_heads * d_k = {width}")
        self.value = value if value is not None else ChannelMixing(in_channels, width)

    def forward(self, field: Field, context: Field | None = None) -> Field:
        check_field(field, "Attention", self.in_channels)
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context field: forward(field, context)")
            check_field(context, "Attention (context)", self.context_channels)
            if context.batch_size != field.batch_size:
                raise ValueError(f"context batch {tuple(context.values.shape)} and field batch "
                                 f"{tuple(field.values.shape)} differ in B")
        elif context is not None:
            raise ValueError("a context was given to self-attention; build Attention(..., cross=True)")
        b, h, d_k = field.batch_size, self.num_heads, self.d_k
        q = self.query(context if self.cross else field).reshape(b, h, d_k)  # (B, H, d_k)
        k = self.key(field).reshape(b, h, d_k)  # (B, H, d_k)
        v = self.value(field)
        if not isinstance(v, Field):
            raise TypeError(f"the value module must return a Field, got {type(v).__name__}")
        check_same_points(field.points, v.points, "attention input and value V[f]")
        if v.channels != h * d_k:
            raise ValueError(f"the value module gives values {tuple(v.values.shape)}, need "
                             f"num_heads * d_k = {h * d_k} channels")
        return field.replace(attention(q, k, v.values))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, d_k={self.d_k}, num_heads={self.num_heads}"
                + (f", cross=True, context_channels={self.context_channels}" if self.cross else ""))
