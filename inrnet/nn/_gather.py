"""The sparse half of a linear-kernel convolution: gathering inputs onto kernel atoms.

For a kernel ``K(delta) = sum_a phi_a(delta) W_a`` the continuous convolution at output
point ``m`` is

    g_m = sum_a ( sum_j w_j phi_a(x_j - q_m) f_j ) W_a = sum_a Z[m, a] W_a,

so it splits into a sparse, parameter-free gather ``Z = S f`` (``S`` has one row per
(output point, atom), one entry per (neighbour pair, non-zero atom), values
``w_j phi_a``) and a dense matmul with the atom weights, which is where the FLOPs are —
the im2col view of a discrete convolution, with ``S`` playing im2col. ``S`` depends only
on the points and the support, so it is built once and cached on the point set.

Both directions of ``S`` run through ``torch.nn.functional.embedding_bag`` (weighted
bag sums over CSR rows), the fastest gather-reduce torch has on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from inrnet.neighbors import stable_argsort

__all__ = ["GatherPlan", "gather_atoms"]


def _csr(keys: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """Stable order of entries by ``keys`` and the CSR row pointer Tensor[n_rows + 1]."""
    order = stable_argsort(keys)
    ptr = torch.zeros(n_rows + 1, dtype=torch.long, device=keys.device)
    ptr[1:] = torch.cumsum(torch.bincount(keys, minlength=n_rows), 0)
    return order, ptr


@dataclass
class GatherPlan:
    """The sparse matrix ``S [M * A, N]`` in both orientations, per batch size.

    Args:
        row: Tensor[nnz], output point ``m`` of each entry.
        atom: Tensor[nnz], atom ``a``.
        col: Tensor[nnz], input point ``j``.
        value: Tensor[nnz], ``w_j phi_a(x_j - q_m)``.
        num_out: M. num_atoms: A. num_in: N.
    """

    row: Tensor
    atom: Tensor
    col: Tensor
    value: Tensor
    num_out: int
    num_atoms: int
    num_in: int
    _batched: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        keep = self.value != 0
        self.row, self.atom, self.col, self.value = self.row[keep], self.atom[keep], self.col[keep], self.value[keep]

    def batched(self, b: int) -> tuple[Tensor, ...]:
        """Bag indices for a batch of ``b``: forward rows ``(b, m, a)`` over inputs ``(b, j)``
        and backward rows ``(b, j)`` over outputs ``(b, m, a)``."""
        if b not in self._batched:
            ma = self.row * self.num_atoms + self.atom  # (nnz,)
            fwd_order, fwd_ptr = _csr(ma, self.num_out * self.num_atoms)
            bwd_order, bwd_ptr = _csr(self.col, self.num_in)
            shift = torch.arange(b, device=self.col.device)[:, None]
            nnz = self.col.numel()

            def stack(idx, ptr, stride):
                idx = (idx[None, :] + shift * stride).reshape(-1)  # (b * nnz,)
                ptr = torch.cat([(ptr[:-1][None, :] + shift * nnz).reshape(-1), ptr.new_tensor([b * nnz])])
                return idx, ptr
            fwd_idx, fwd_ptr_b = stack(self.col[fwd_order], fwd_ptr, self.num_in)
            bwd_idx, bwd_ptr_b = stack(ma[bwd_order], bwd_ptr, self.num_out * self.num_atoms)
            self._batched[b] = (fwd_idx, fwd_ptr_b, self.value[fwd_order].repeat(b),
                                bwd_idx, bwd_ptr_b, self.value[bwd_order].repeat(b))
        return self._batched[b]


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, plan: GatherPlan) -> Tensor:
        b = x.shape[0] // plan.num_in
        fwd_idx, fwd_ptr, fwd_val, *_ = plan.batched(b)
        ctx.plan, ctx.b = plan, b
        return F.embedding_bag(fwd_idx, x, fwd_ptr, mode="sum", per_sample_weights=fwd_val.to(x.dtype),
                               include_last_offset=True)

    @staticmethod
    def backward(ctx, grad: Tensor):
        *_, bwd_idx, bwd_ptr, bwd_val = ctx.plan.batched(ctx.b)
        grad_x = F.embedding_bag(bwd_idx, grad.contiguous(), bwd_ptr, mode="sum",
                                 per_sample_weights=bwd_val.to(grad.dtype), include_last_offset=True)
        return grad_x, None


def gather_atoms(values: Tensor, plan: GatherPlan) -> Tensor:
    """``Z[b, m, a, :] = sum_j S[(m, a), j] values[b, j, :]``.

    Args:
        values: Tensor[B, N, C].

    Returns:
        Tensor[B, M, A, C].
    """
    b, n, c = values.shape
    z = _Gather.apply(values.reshape(b * n, c), plan)  # (B * M * A, C)
    return z.view(b, plan.num_out, plan.num_atoms, c)
