"""The fast path of a linear-kernel convolution: a sparse gather onto kernel atoms, fused
chunk by chunk with the dense matmul.

For a kernel ``K(delta) = sum_a phi_a(delta) W_a`` the continuous convolution at output
point ``m`` is

    g_m = sum_a ( sum_j w_j phi_a(x_j - q_m) f_j ) W_a = sum_a Z[m, a] W_a,

so it splits into a sparse, parameter-free gather ``Z = S f`` (``S`` has one row per
(output point, atom), one entry per (neighbour pair, non-zero atom), values
``w_j phi_a``) and a dense matmul with the atom weights, which is where the FLOPs are —
the im2col view of a discrete convolution, with ``S`` playing im2col. ``S`` depends only
on the points and the support, so it is built once and cached on the point set.

The backward pass never forms ``dZ``: with ``U = S^T dg`` (for each input point ``j``
and atom ``a``, ``U[j, a] = sum_m S[(m, a), j] dg_m``),

    df_j = sum_a U[j, a] W_a^T,        dW_a = sum_j f_j^T U[j, a],

one more sparse gather (``S`` read the other way round) and two matmuls.

Why fused and chunked: ``Z`` has ``A`` times more rows than the output (9x for a 3x3
B-spline). Materialising it whole for a batch (75 MB for 32 x 1024 points x 9 atoms x 64
channels) makes the convolution memory-bound: fresh pages for every call and a round trip
through DRAM between the gather and the matmul. `atom_conv` instead walks the
batch in chunks of rows whose ``Z`` fits in cache, gathers (``embedding_bag``, weighted
bag sums over CSR rows: the fastest gather-reduce torch has on CPU and GPU) and multiplies
each chunk while it is hot, and saves only the inputs for backward. On CUDA, where large
matmuls are cheap and launches are not, the chunk budget is large enough for one chunk.

The slow, obvious reference is [`inrnet.nn.conv.conv_pairs`][inrnet.nn.conv.conv_pairs] (the kernel at every pair).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from inrnet.neighbors import stable_argsort

__all__ = ["GatherPlan", "atom_conv", "gather_atoms", "CHUNK_BYTES", "STACK_BYTES"]

CHUNK_BYTES = {"cpu": 2 << 20, "cuda": 1 << 30}
"""Bytes of ``Z`` (or of ``U``) per chunk: about an L2 cache on CPU; one chunk on CUDA."""
STACK_BYTES = 256 << 20
"""Largest batch-stacked copy of a plan's bags that is cached (beyond: shifted per chunk)."""


def _csr(keys: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """Stable order of entries by ``keys`` and the CSR row pointer Tensor[n_rows + 1]."""
    order = stable_argsort(keys)
    ptr = torch.zeros(n_rows + 1, dtype=torch.long, device=keys.device)
    ptr[1:] = torch.cumsum(torch.bincount(keys, minlength=n_rows), 0)
    return order, ptr


@dataclass
class _Bags:
    """A CSR matrix for ``embedding_bag``: bag ``r`` sums ``value[e] * table[index[e]]``
    over ``e in [ptr[r], ptr[r + 1])``, repeated over a batch without copies: bag
    ``k * n_bags + r`` of a batch is bag ``r`` over the table rows of sample ``k``
    (``index + k * stride``)."""

    index: Tensor
    ptr: Tensor
    value: Tensor
    stride: int

    def rows(self, r0: int, r1: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Batch bags ``[r0, r1)``: their entries (table rows of the batch) and offsets relative to the first."""
        n_bags = self.ptr.numel() - 1
        index, offsets, value, base = [], [], [], 0
        for k in range(r0 // n_bags, (r1 - 1) // n_bags + 1):  # the samples the rows touch
            s0, s1 = max(r0 - k * n_bags, 0), min(r1 - k * n_bags, n_bags)
            e0, e1 = int(self.ptr[s0]), int(self.ptr[s1])
            index.append(self.index[e0:e1] + k * self.stride if k else self.index[e0:e1])
            offsets.append(self.ptr[s0:s1] - (e0 - base))
            value.append(self.value[e0:e1])
            base += e1 - e0
        offsets.append(self.ptr.new_tensor([base]))
        if len(index) == 1:
            return index[0], torch.cat(offsets), value[0].to(dtype)
        return torch.cat(index), torch.cat(offsets), torch.cat(value).to(dtype)

    def stacked(self, b: int) -> _Bags:
        """The same bags for a batch of ``b``, materialised (``b`` times the memory, no
        per-chunk index arithmetic)."""
        shift = torch.arange(b, device=self.index.device)[:, None]
        nnz = self.index.numel()
        ptr = torch.cat([(self.ptr[:-1][None, :] + shift * nnz).reshape(-1), self.ptr.new_tensor([b * nnz])])
        return _Bags((self.index[None, :] + shift * self.stride).reshape(-1), ptr, self.value.repeat(b), 0)


@dataclass
class GatherPlan:
    """The sparse matrix ``S [M * A, N]``, in both orientations, per batch size.

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
    _bags: tuple | None = field(default=None, repr=False)
    _stacked: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        keep = self.value != 0
        self.row, self.atom, self.col, self.value = self.row[keep], self.atom[keep], self.col[keep], self.value[keep]

    @property
    def nnz(self) -> int:
        return self.col.numel()

    def bags(self, b: int) -> tuple[_Bags, _Bags]:
        """The plan as bags for a batch of ``b``.

        Returns:
            ``gather``: bags ``(b, m, a)`` over rows ``(b, j)`` of the inputs (``Z = S f``);
            ``scatter``: bags ``(b, j, a)`` over rows ``(b, m)`` of the output gradient
            (``U = S^T dg``). Materialised for the batch and cached while that takes at
            most `STACK_BYTES`; beyond, one sample's bags are shifted per chunk, so
            memory stays O(nnz) at any batch size and point count.
        """
        if self._bags is None:
            a = self.num_atoms

            def csr(keys: Tensor, n_bags: int, index: Tensor, stride: int) -> _Bags:
                order, ptr = _csr(keys, n_bags)
                return _Bags(index[order], ptr, self.value[order], stride)
            self._bags = (csr(self.row * a + self.atom, self.num_out * a, self.col, self.num_in),
                          csr(self.col * a + self.atom, self.num_in * a, self.row, self.num_out))
        if 2 * b * self.nnz * (self.col.element_size() + self.value.element_size()) > STACK_BYTES:
            return self._bags
        if b not in self._stacked:
            self._stacked[b] = tuple(bags.stacked(b) for bags in self._bags)
        return self._stacked[b]


def _chunk_rows(row_bytes: int, device: torch.device, chunk_bytes: int | None) -> int:
    """Rows per chunk so that a chunk of ``Z`` (or ``U``) takes about ``chunk_bytes``."""
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cuda"]) if chunk_bytes is None else chunk_bytes
    return max(1, budget // max(1, row_bytes))


def _bag_sum(table: Tensor, bags: _Bags, r0: int, r1: int) -> Tensor:
    index, offsets, value = bags.rows(r0, r1, table.dtype)
    return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=value, include_last_offset=True)


def _by_group(t: Tensor, groups: int, a: int) -> Tensor:
    """``(r, A * g * c) -> (g, r, A * c)``."""
    r = t.shape[0]
    return t.view(r, a, groups, -1).permute(2, 0, 1, 3).reshape(groups, r, -1)


class _AtomConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, atoms: Tensor, plan: GatherPlan, groups: int, chunk_bytes: int | None) -> Tensor:
        b, n, c = x.shape
        a, cg, o = atoms.shape
        m, og = plan.num_out, o // groups
        gather, _ = plan.bags(b)
        w = atoms.view(a, cg, groups, og).permute(2, 0, 1, 3).reshape(groups, a * cg, og)  # (g, A*Cg, Og)
        table = x.reshape(b * n, c)
        out = x.new_empty(b * m, o)
        step = _chunk_rows(a * c * x.element_size(), x.device, chunk_bytes)
        for r0 in range(0, b * m, step):
            r1 = min(r0 + step, b * m)
            z = _bag_sum(table, gather, r0 * a, r1 * a).view(r1 - r0, a * c)  # (r, A*C), (m, a, c) order
            if groups == 1:
                torch.mm(z, w[0], out=out[r0:r1])
            else:
                out[r0:r1] = torch.bmm(_by_group(z, groups, a), w).permute(1, 0, 2).reshape(r1 - r0, o)
        ctx.save_for_backward(x, atoms)
        ctx.plan, ctx.groups, ctx.chunk_bytes = plan, groups, chunk_bytes
        return out.view(b, m, o)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, atoms = ctx.saved_tensors
        plan, groups = ctx.plan, ctx.groups
        b, n, c = x.shape
        a, cg, o = atoms.shape
        og = o // groups
        _, scatter = plan.bags(b)
        table = grad.contiguous().view(b * plan.num_out, o)
        xf = x.reshape(b * n, c)
        w_t = atoms.view(a, cg, groups, og).permute(2, 0, 3, 1).reshape(groups, a * og, cg)  # (g, A*Og, Cg)
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = torch.empty_like(xf) if need_x else None
        grad_w = atoms.new_zeros(groups, cg, a * og) if need_w else None
        step = _chunk_rows(a * o * x.element_size(), x.device, ctx.chunk_bytes)
        for r0 in range(0, b * n, step):
            r1 = min(r0 + step, b * n)
            u = _by_group(_bag_sum(table, scatter, r0 * a, r1 * a).view(r1 - r0, a * o), groups, a)  # (g, r, A*Og)
            if need_x and groups == 1:
                torch.mm(u[0], w_t[0], out=grad_x[r0:r1])
            elif need_x:
                grad_x[r0:r1] = torch.bmm(u, w_t).permute(1, 0, 2).reshape(r1 - r0, c)
            if need_w and groups == 1:
                grad_w[0].addmm_(xf[r0:r1].t(), u[0])
            elif need_w:
                grad_w.baddbmm_(xf[r0:r1].view(r1 - r0, groups, cg).permute(1, 2, 0), u)
        if need_w:  # (g, Cg, A, Og) -> (A, Cg, g * Og)
            grad_w = grad_w.view(groups, cg, a, og).permute(2, 1, 0, 3).reshape(a, cg, o)
        return (grad_x.view(b, n, c) if need_x else None), grad_w, None, None, None


def atom_conv(values: Tensor, plan: GatherPlan, atoms: Tensor, groups: int = 1,
              chunk_bytes: int | None = None) -> Tensor:
    """``g[b, m] = sum_a (S f[b])[m, a] @ W_a``, fused and chunked (see the module docstring).

    Args:
        values: Tensor[B, N, C_in].
        plan: the sparse ``S [M * A, N]`` (quadrature weights included).
        atoms: Tensor[A, C_in / groups, C_out].
        groups: channel groups (``C_in`` and ``C_out`` divisible by it).
        chunk_bytes: bytes of ``Z`` per chunk (default `CHUNK_BYTES` of the device).

    Returns:
        Tensor[B, M, C_out].
    """
    if values.shape[1] != plan.num_in:
        raise ValueError(f"values have {values.shape[1]} points, the gather plan expects {plan.num_in}")
    return _AtomConv.apply(values.contiguous(), atoms.contiguous(), plan, groups, chunk_bytes)


def gather_atoms(values: Tensor, plan: GatherPlan) -> Tensor:
    """``Z[b, m, a, :] = sum_j S[(m, a), j] values[b, j, :]``, whole (no autograd shortcut).

    Args:
        values: Tensor[B, N, C].

    Returns:
        Tensor[B, M, A, C].
    """
    b, n, c = values.shape
    gather, _ = plan.bags(b)
    z = _bag_sum(values.reshape(b * n, c), gather, 0, b * plan.num_out * plan.num_atoms)
    return z.view(b, plan.num_out, plan.num_atoms, c)
