"""The ``"embedding_bag"`` backend of [`atom_conv`][inrnet.nn.gather.atom_conv]: the pure-PyTorch fused
gather and matmul, chunk by chunk, on any device.

It walks the batch in chunks of output rows, gathers each chunk's ``Z = S f`` with
``embedding_bag`` (weighted bag sums over CSR rows: the fastest gather-reduce torch has
on CPU and GPU) and multiplies it with the atom weights while it is hot; it saves only
the inputs for backward, which walks ``S^T`` the same way (see `inrnet.nn.gather` for
the maths).

Why chunked: ``Z`` has ``A`` times more rows than the output (9x for a 3x3 B-spline).
Materialising it whole for a batch (75 MB for 32 x 1024 points x 9 atoms x 64 channels)
makes the convolution memory-bound: fresh pages for every call and a round trip through
DRAM between the gather and the matmul. The chunk budget, `CHUNK_BYTES`, is per device:

* CPU, 2 MiB: about an L2 cache, so a chunk of ``Z`` is still in cache when the matmul
  reads it;
* CUDA (and other accelerators), 64 MiB: there a chunk has to (a) keep every gather and
  matmul far longer than the few microseconds a launch costs (a 64 MiB chunk of float32
  ``Z`` goes through memory twice and, at 64 output channels, is 2 GFLOP of matmul) and
  (b) bound the scratch memory, which one chunk for the whole batch does not: 2.4 GB at
  once for 64 samples x 4096 points x 9 atoms x 256 channels. The value follows from
  these two bounds; it is not tuned by measurement.

The backward pass has two ways through the same sums, chosen per call by their cost
(`backward_side`):

* ``"input"``: ``U = S^T dg`` (a gather of ``dg`` rows, ``O`` wide, one bag per input point
  and atom), then ``df = U W^T`` and ``dW = f^T U``: GEMMs over the ``N`` input points;
* ``"output"``: ``dW = Z^T dg`` with ``Z = S f`` gathered again (``C`` wide) and
  ``df = S^T (dg W^T)``, the transformed gradient ``Y = dg W^T`` (``[B, M, A, C]``) scattered
  onto the input points (one bag per input point over its ``(m, a)`` entries): GEMMs over
  the ``M`` output points. A stride-2 layer in 2-d has ``M = N / 4``, so its GEMMs cost a
  quarter; a first layer (``C = 1``, no ``df``) gathers ``C / O`` as much.

Its private data, derived from the plan's public CSR arrays and cached on the plan: one
sample's bags as the arrays themselves, and copies stacked over the batch (bag
``k * n_bags + r`` is bag ``r`` over the table rows of sample ``k``) while they take at
most `STACK_BYTES`; beyond, each chunk shifts one sample's bags, so memory stays
``O(nnz)`` at any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:
    from inrnet.nn.gather import GatherPlan

__all__ = ["embedding_bag_conv", "backward_side", "CHUNK_BYTES", "STACK_BYTES", "BACKWARD_SIDES",
           "GATHER_COST"]

CHUNK_BYTES = {"cpu": 2 << 20, "cuda": 64 << 20}
"""Bytes of ``Z`` (or of ``U``) per chunk, by device type (module docstring); other
accelerators use the CUDA budget."""
STACK_BYTES = 256 << 20
"""Largest batch-stacked copy of a plan's bags that is cached (beyond: shifted per chunk)."""
BACKWARD_SIDES = ("auto", "input", "output")
"""The backward pass's ways (module docstring); ``"auto"`` picks the cheaper by `backward_side`."""
BACKWARD = "auto"
"""The side every backward pass takes (one of `BACKWARD_SIDES`; tests force each)."""
GATHER_COST = 4.0
"""The cost of gathering one value (one entry of a bag, one channel) in multiply-adds of a GEMM,
for `backward_side`'s model (``embedding_bag`` moves about 20 G values/s where a GEMM does about
80 G multiply-adds/s on this project's 2-core CPU)."""


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


def _merged_bags(plan: GatherPlan) -> _Bags:
    """``S^T`` with one bag per input point ``j`` over its ``(m, a)`` entries (table row ``m * A + a``
    of a ``[M * A, C]`` table per sample): the scatter of the output-side backward."""
    def build() -> _Bags:
        a = plan.num_atoms
        atom = torch.repeat_interleave(torch.arange(plan.num_in * a, device=plan.row.device) % a,
                                       plan.colptr.diff())  # (nnz,) the atom of each entry of S^T
        return _Bags(plan.row * a + atom, plan.colptr[::a].contiguous(), plan.value_t, plan.num_out * a)
    return plan.cached(("embedding_bag", "merged"), build)


def backward_side(plan: GatherPlan, c: int, o: int, groups: int, need_x: bool, need_w: bool) -> str:
    """The cheaper way through the backward pass (module docstring), by a model of its cost.

    Per sample, in GEMM multiply-adds (a gathered value costs `GATHER_COST`):
    ``"input"``: gather ``nnz * O`` and GEMMs ``N A (C / g) O`` for each gradient asked for;
    ``"output"``: gather ``nnz * C`` for ``dW`` (``Z``) and as much again for ``df`` (the
    scatter), GEMMs ``M A (C / g) O`` each.

    Args:
        plan: the convolution's plan (``M``, ``N``, ``A``, ``nnz``).
        c: input channels ``C``.
        o: output channels ``O``.
        groups: channel groups ``g``.
        need_x: whether ``df`` is asked for.
        need_w: whether ``dW`` is asked for.

    Returns:
        ``"input"`` or ``"output"`` (`BACKWARD` if it is not ``"auto"``).
    """
    if BACKWARD != "auto":
        return BACKWARD
    gemm = plan.num_atoms * (c // groups) * o * (int(need_x) + int(need_w))
    cost_in = GATHER_COST * plan.nnz * o + plan.num_in * gemm
    cost_out = GATHER_COST * plan.nnz * c * (int(need_x) + int(need_w)) + plan.num_out * gemm
    return "output" if cost_out < cost_in else "input"


def _plan_bags(plan: GatherPlan, kind: str) -> _Bags:
    """One sample's bags, views of the plan's arrays: ``"gather"`` (rows ``(m, a)`` of ``S``
    over the input rows, ``Z = S f``) or ``"scatter"`` (rows ``(j, a)`` of ``S^T`` over the
    output-gradient rows, ``U = S^T dg``; only this one reads, and so builds, ``S^T``)."""
    if kind == "gather":
        return _Bags(plan.col, plan.rowptr, plan.value, plan.num_in)
    return _Bags(plan.row, plan.colptr, plan.value_t, plan.num_out)


def _stacked(plan: GatherPlan, kind: str, bags: _Bags, b: int) -> _Bags:
    """``bags`` for a batch of ``b``: stacked and cached on the plan (under ``kind``) while that
    takes at most `STACK_BYTES`, else ``bags`` themselves (shifted per chunk). Each kind is
    stacked only when a pass asks for it (the output-side backward never reads the scatter)."""
    if b * bags.index.numel() * (bags.index.element_size() + bags.value.element_size()) > STACK_BYTES:
        return bags
    return plan.cached(("embedding_bag", kind, b), lambda: bags.stacked(b))


def _batch_bags(plan: GatherPlan, b: int, kind: str) -> _Bags:
    """The plan's ``"gather"`` bags (``Z = S f``) or ``"scatter"`` bags (``U = S^T dg``) for a batch of ``b``."""
    return _stacked(plan, kind, _plan_bags(plan, kind), b)


POINTS_MAJOR_CHANNELS = 1
"""Inputs with at most this many channels gather ``Z = S f`` for the whole batch in one
``embedding_bag`` over a points-major ``[N, B * C]`` table (one bag per row of ``S``, no
batch-stacked bags to build for a fresh plan); wider inputs gather sample-major rows in
cache-sized chunks. 0 turns the points-major gather off (the benchmarks' A/B)."""


def _points_major_z(x: Tensor, plan: GatherPlan) -> Tensor | None:
    """``Z = S f`` of the whole batch as Tensor[B * M, A * C] (rows ``(b, m)``, columns
    ``(a, c)``), from one bag per row of ``S`` over the table ``f`` laid out ``[N, B * C]``;
    None where the input is too wide (`POINTS_MAJOR_CHANNELS`) or ``Z`` too large (`STACK_BYTES`)."""
    b, n, c = x.shape
    m, a = plan.num_out, plan.num_atoms
    if c > POINTS_MAJOR_CHANNELS or b * m * a * c * x.element_size() > STACK_BYTES:
        return None
    table = x.permute(1, 0, 2).reshape(n, b * c)  # (N, B*C)
    bags = _plan_bags(plan, "gather")
    z = F.embedding_bag(bags.index, table, bags.ptr, mode="sum", per_sample_weights=bags.value.to(x.dtype),
                        include_last_offset=True)  # (M*A, B*C)
    return z.view(m, a, b, c).permute(2, 0, 1, 3).reshape(b * m, a * c)


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
        w = atoms.view(a, cg, groups, og).permute(2, 0, 1, 3).reshape(groups, a * cg, og)  # (g, A*Cg, Og)
        ctx.save_for_backward(x, atoms)
        ctx.plan, ctx.groups, ctx.chunk_bytes = plan, groups, chunk_bytes
        z = _points_major_z(x, plan) if groups == 1 else None
        if z is not None:  # narrow input (a network's first conv): one gather for the batch
            return torch.mm(z, w[0]).view(b, m, o)
        gather = _batch_bags(plan, b, "gather")
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
        return out.view(b, m, o)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, atoms = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        if backward_side(ctx.plan, x.shape[2], atoms.shape[2], ctx.groups, need_x, need_w) == "output":
            return _backward_output_side(x, atoms, grad, ctx.plan, ctx.groups, ctx.chunk_bytes, need_x, need_w)
        plan, groups = ctx.plan, ctx.groups
        b, n, c = x.shape
        a, cg, o = atoms.shape
        og = o // groups
        scatter = _batch_bags(plan, b, "scatter")
        table = grad.contiguous().view(b * plan.num_out, o)
        xf = x.reshape(b * n, c)
        w_t = atoms.view(a, cg, groups, og).permute(2, 0, 3, 1).reshape(groups, a * og, cg)  # (g, A*Og, Cg)
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


def _backward_output_side(x: Tensor, atoms: Tensor, grad: Tensor, plan: GatherPlan, groups: int,
                          chunk_bytes: int | None, need_x: bool, need_w: bool):
    """The output-side backward (module docstring): ``dW = Z^T dg`` over chunks of output rows,
    ``df = S^T (dg W^T)`` over chunks of samples.

    Args:
        x: Tensor[B, N, C], the forward's input.
        atoms: Tensor[A, C / g, O].
        grad: Tensor[B, M, O], the output's gradient.
        plan: the plan of ``S``.
        groups: channel groups ``g``.
        chunk_bytes: the scratch budget (None: `CHUNK_BYTES` of the device).
        need_x: compute ``df``.
        need_w: compute ``dW``.

    Returns:
        ``(df Tensor[B, N, C] or None, dW Tensor[A, C / g, O] or None, None, None, None)``.
    """
    b, n, c = x.shape
    a, cg, o = atoms.shape
    m, og = plan.num_out, o // groups
    dg = grad.contiguous().view(b * m, o)
    grad_w = grad_x = None
    z = _points_major_z(x, plan) if need_w and groups == 1 else None
    if z is not None:  # narrow input: dW = Z^T dg from one gather for the batch
        grad_w = torch.mm(z.t(), dg).view(a, cg, o)  # (A*C, O) -> (A, C, O)
    elif need_w:
        gather = _batch_bags(plan, b, "gather")
        table = x.reshape(b * n, c)
        acc = atoms.new_zeros(groups, a * cg, og)  # (g, A*Cg, Og)
        step = _chunk_rows(a * c * x.element_size(), x.device, chunk_bytes)
        for r0 in range(0, b * m, step):
            r1 = min(r0 + step, b * m)
            z = _bag_sum(table, gather, r0 * a, r1 * a).view(r1 - r0, a * c)  # (r, A*C)
            if groups == 1:
                acc[0].addmm_(z.t(), dg[r0:r1])
            else:
                acc.baddbmm_(_by_group(z, groups, a).transpose(1, 2),  # (g, A*Cg, r)
                             dg[r0:r1].view(r1 - r0, groups, og).transpose(0, 1))  # (g, r, Og)
        grad_w = acc.view(groups, a, cg, og).permute(1, 2, 0, 3).reshape(a, cg, o)  # (A, Cg, O)
    if need_x:
        merged = _merged_bags(plan)
        w_t = atoms.view(a, cg, groups, og).permute(2, 3, 0, 1)  # (g, Og, A, Cg)
        grad_x = x.new_empty(b, n, c)
        samples = min(b, max(1, _chunk_rows(m * a * c * x.element_size(), x.device, chunk_bytes)))
        stacked = _stacked(plan, "merged", merged, samples)  # a chunk's bags (the last one's are a prefix)
        for k0 in range(0, b, samples):
            k1 = min(k0 + samples, b)
            d = dg[k0 * m:k1 * m].view(-1, groups, og)  # (r, g, Og)
            if groups == 1:
                y = torch.mm(d[:, 0], w_t[0].reshape(og, a * cg))  # (r, A*C)
            else:
                y = torch.bmm(d.transpose(0, 1), w_t.reshape(groups, og, a * cg))  # (g, r, A*Cg)
                y = y.view(groups, -1, a, cg).permute(1, 2, 0, 3).reshape(-1, a * c)  # (r, A*C), channels g-major
            # (r * A, C): row (b, m, a); the chunk's samples are samples 0.. of its bags
            grad_x[k0:k1] = _bag_sum(y.view(-1, c), stacked, 0, (k1 - k0) * n).view(k1 - k0, n, c)
    return grad_x, grad_w, None, None, None


def embedding_bag_conv(values: Tensor, plan: GatherPlan, atoms: Tensor, groups: int,
                       chunk_bytes: int | None) -> Tensor:
    """``g[b, m] = sum_a (S f[b])[m, a] @ W_a`` with ``embedding_bag``, fused and chunked.

    Args:
        values: Tensor[B, N, C_in], contiguous.
        plan: the sparse ``S [M * A, N]``.
        atoms: Tensor[A, C_in / groups, C_out], contiguous.
        groups: channel groups.
        chunk_bytes: bytes of ``Z`` per chunk (None: `CHUNK_BYTES` of the device).

    Returns:
        Tensor[B, M, C_out].
    """
    return _AtomConv.apply(values, atoms, plan, groups, chunk_bytes)
