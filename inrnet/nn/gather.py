"""The fast path of a linear-kernel convolution: a sparse gather onto kernel atoms and a
dense matmul, behind one function, [`atom_conv`][inrnet.nn.gather.atom_conv], with pluggable backends.

For a kernel ``K(delta) = sum_a phi_a(delta) W_a`` the continuous convolution at output
point ``m`` is

    g_m = sum_a ( sum_j w_j phi_a(x_j - q_m) f_j ) W_a = sum_a Z[m, a] W_a,

so it splits into a sparse, parameter-free gather ``Z = S f`` (``S [M * A, N]`` has one
row per (output point, atom), one entry per (neighbour pair, non-zero atom), values
``w_j phi_a``) and a dense matmul with the atom weights, which is where the FLOPs are —
the im2col view of a discrete convolution, with ``S`` playing im2col. ``S`` depends only
on the points and the support, so it is built once
([`GatherPlan.from_pairs`][inrnet.nn.gather.GatherPlan.from_pairs]) and cached on the point set.

The backward pass never forms ``dZ``: with ``U = S^T dg`` (for each input point ``j``
and atom ``a``, ``U[j, a] = sum_m S[(m, a), j] dg_m``),

    df_j = sum_a U[j, a] W_a^T,        dW_a = sum_j f_j^T U[j, a],

one more sparse gather (``S`` read the other way round) and two matmuls.

Backends (torchvision's ``roi_align`` is the model): [`atom_conv`][inrnet.nn.gather.atom_conv] hands the inputs
to a registered backend ([`register_backend`][inrnet.nn.gather.register_backend]), a function over the plan's
public CSR arrays. ``"embedding_bag"`` (`inrnet.nn._embedding_bag`, pure PyTorch, any
device, chunked so the gathered atoms stay bounded) is built in; a compiled Triton or
CUDA kernel registers beside it and ``backend="auto"`` takes it where it runs. Every
backend is tested against the slow, obvious reference
[`inrnet.nn.conv.conv_pairs`][inrnet.nn.conv.conv_pairs] (the kernel at every pair).
Between two lattices (a grid, a latent lattice) a plan is usually a discrete convolution:
``"auto"`` runs those as one ``F.conv2d`` (1-d and 3-d alike; `inrnet.nn._stencil`),
tested against the registered backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from inrnet.field import Lattice
from inrnet.neighbors import Neighbors, csr_indptr, stable_argsort
from inrnet.nn._embedding_bag import embedding_bag_conv
from inrnet.nn._stencil import Stencil, stencil_conv, stencil_of

__all__ = ["GatherPlan", "atom_conv", "register_backend", "list_backends", "STENCIL"]

STENCIL = True
"""``backend="auto"`` runs a plan that is a stencil between two lattices (``plan.stencil``) as
one discrete convolution (`inrnet.nn._stencil`); set False to send every plan through the
registered gather backends (the stencil route's reference)."""


def _csr(keys: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """Stable order of entries by ``keys`` and the CSR row pointer Tensor[n_rows + 1]."""
    return stable_argsort(keys), csr_indptr(keys, n_rows)


@dataclass(frozen=True, eq=False)
class GatherPlan:
    """The sparse matrix ``S [M * A, N]`` in CSR form, and its transpose for the backward pass.

    Row ``r = m * A + a`` of ``S`` is output point ``m``, atom ``a``; zero entries are
    dropped. Build one with [`from_pairs`][inrnet.nn.gather.GatherPlan.from_pairs]. A backend reads these arrays
    (and may derive its own from them, cached with [`cached`][inrnet.nn.gather.GatherPlan.cached]).

    Attributes:
        rowptr: Tensor[M * A + 1], the entries of row ``r`` of ``S`` are ``rowptr[r]:rowptr[r + 1]``.
        col: Tensor[nnz], the input point ``j`` of each entry of ``S``, in row order.
        value: Tensor[nnz], ``S[(m, a), j] = w_j phi_a(x_j - q_m)``, in row order (the points' dtype).
        colptr: Tensor[N * A + 1], the same for ``S^T`` read by rows ``j * A + a``: its entries are
            ``colptr[j * A + a]:colptr[j * A + a + 1]``.
        row: Tensor[nnz], the output point ``m`` of each entry of ``S^T``, in its row order.
        value_t: Tensor[nnz], the values of ``S^T``, in its row order.

            ``colptr``, ``row`` and ``value_t`` are built from ``S`` the first time one is
            read (a stable sort of its entries by ``(j, a)``) and kept: only a backward pass
            into the layer's input reads them, and the first layer of a network, whose input
            is data, never has one, so a fresh point set's first plan skips that sort.
        num_out: M, the output points.
        num_atoms: A, the atoms.
        num_in: N, the input points.
        stencil: the plan as a discrete convolution between two lattices
            (`inrnet.nn._stencil.Stencil`), when it is one; None otherwise.
    """

    rowptr: Tensor
    col: Tensor
    value: Tensor
    num_out: int
    num_atoms: int
    num_in: int
    stencil: Stencil | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def colptr(self) -> Tensor:
        return self._transpose()[0]

    @property
    def row(self) -> Tensor:
        return self._transpose()[1]

    @property
    def value_t(self) -> Tensor:
        return self._transpose()[2]

    def _transpose(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(colptr, row, value_t)`` of ``S^T``, built once: the entries of ``S`` (ordered by
        ``(m, a)``, then by pair) stably sorted by ``(j, a)``, so within a row of ``S^T`` they
        stay ordered by ``m``, then by pair, as the pairs were."""
        def build():
            a = self.num_atoms
            r = torch.repeat_interleave(torch.arange(self.num_out * a, device=self.col.device),
                                        self.rowptr.diff())  # (nnz,) the row m * A + a of each entry of S
            by_col, colptr = _csr(self.col * a + r % a, self.num_in * a)
            return colptr, (r // a)[by_col], self.value[by_col]
        return self.cached(("S^T",), build)

    @classmethod
    def from_pairs(cls, nbrs: Neighbors, index: Tensor, value: Tensor, num_atoms: int,
                   dtype: torch.dtype, lattices: tuple[Lattice, Lattice] | None = None) -> GatherPlan:
        """The plan of a convolution from the non-zero atoms of each neighbour pair.

        Entries keep the order of the pairs within each row of ``S`` and of ``S^T`` (a
        stable sort), so every backend sums them in one fixed order.

        Args:
            nbrs: the E pairs (query ``m``, point ``j``) of M queries among N points.
            index: Tensor[E, P], the atoms of each pair.
            value: Tensor[E, P], their values times the pair's quadrature weight,
                ``w_j phi_a(x_j - q_m)``.
            num_atoms: A.
            dtype: dtype of the stored values.
            lattices: ``(points, queries)`` when both point sets are lattices in C order:
                the plan then also records whether it is a stencil between them
                (`inrnet.nn._stencil.stencil_of`).

        Returns:
            The plan of ``S [M * A, N]``.
        """
        p = index.shape[1]
        row = nbrs.row.repeat_interleave(p)  # (E * P,)
        col = nbrs.col.repeat_interleave(p)  # (E * P,)
        atom, exact = index.reshape(-1), value.reshape(-1)  # (E * P,)
        value = exact.to(dtype)
        keep = value != 0
        row, col, atom, value, exact = row[keep], col[keep], atom[keep], value[keep], exact[keep]
        m, n, a = nbrs.num_queries, nbrs.num_points, num_atoms
        stencil = None if lattices is None else stencil_of(row, col, atom, exact, a, *lattices, dtype)
        by_row, rowptr = _csr(row * a + atom, m * a)
        return cls(rowptr, col[by_row], value[by_row], m, a, n, stencil)

    @property
    def nnz(self) -> int:
        """The number of stored entries."""
        return self.col.numel()

    def cached(self, key, build: Callable[[], Any]) -> Any:
        """``build()`` the first time ``key`` is asked for, the stored result afterwards: data a
        backend derives from the plan (a batch-stacked index, a blocked layout), kept as
        long as the plan is."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


AtomConvBackend = Callable[[Tensor, GatherPlan, Tensor, int, int | None], Tensor]
"""``fn(values, plan, atoms, groups, chunk_bytes) -> out``; see
[`register_backend`][inrnet.nn.gather.register_backend]."""


@dataclass(frozen=True)
class _Backend:
    fn: AtomConvBackend
    devices: frozenset[str] | None
    priority: int


_BACKENDS: dict[str, _Backend] = {}


def register_backend(name: str, fn: AtomConvBackend, *, devices: Sequence[str] | None = None,
                     priority: int = 0) -> None:
    """Make ``fn`` a backend of [`atom_conv`][inrnet.nn.gather.atom_conv], ``atom_conv(..., backend=name)``.

    ``fn(values, plan, atoms, groups, chunk_bytes)`` gets

    * ``values``: Tensor[B, N, C_in], contiguous, on the plan's device;
    * ``plan``: the [`GatherPlan`][inrnet.nn.gather.GatherPlan] of ``S [M * A, N]``
      (``rowptr``, ``col``, ``value``; ``colptr``, ``row``, ``value_t`` for ``S^T``);
    * ``atoms``: Tensor[A, C_in / groups, C_out], contiguous, ``values``' dtype;
    * ``groups``: channel groups (input channel block ``k`` meets output block ``k``);
    * ``chunk_bytes``: a bound on its scratch memory in bytes, or None for its own default
      (a backend that needs no scratch ignores it);

    and returns ``g`` Tensor[B, M, C_out], ``g[b, m] = sum_a (S f[b])[m, a] @ W_a`` per group,
    differentiable in ``values`` and ``atoms`` (typically through its own
    ``torch.autograd.Function``, whose backward can walk ``S^T``).

    Args:
        name: the name ``atom_conv`` takes (not ``"auto"``).
        fn: the backend.
        devices: device types it runs on (``("cuda",)``); None for any.
        priority: ``backend="auto"`` takes, among the backends for the device, the one of
            highest priority (the first registered on a tie); the built-in
            ``"embedding_bag"`` has 0.

    Raises:
        ValueError: ``name`` is ``"auto"`` or already names another function.
    """
    if name == "auto":
        raise ValueError('"auto" chooses among the backends; register a backend under another name')
    if name in _BACKENDS and _BACKENDS[name].fn is not fn:
        raise ValueError(f"an atom_conv backend named {name!r} is already registered ({_BACKENDS[name].fn!r})")
    _BACKENDS[name] = _Backend(fn, None if devices is None else frozenset(devices), int(priority))


def list_backends(device: torch.device | str | None = None) -> list[str]:
    """The registered backends of [`atom_conv`][inrnet.nn.gather.atom_conv].

    Args:
        device: list only those that run on it (default: all).

    Returns:
        Their names, in the order ``backend="auto"`` prefers them (highest priority first).
    """
    kind = None if device is None else torch.device(device).type
    found = [(name, b) for name, b in _BACKENDS.items() if kind is None or b.devices is None or kind in b.devices]
    return [name for name, _ in sorted(found, key=lambda nb: -nb[1].priority)]


register_backend("embedding_bag", embedding_bag_conv)


def _backend(name: str, device: torch.device) -> AtomConvBackend:
    if name == "auto":
        return _BACKENDS[list_backends(device)[0]].fn
    if name not in _BACKENDS:
        raise ValueError(f"unknown atom_conv backend {name!r}; registered: {list(_BACKENDS)}, or 'auto'")
    if name not in list_backends(device):
        raise ValueError(f"atom_conv backend {name!r} does not run on {device.type}; "
                         f"those that do: {list_backends(device)}")
    return _BACKENDS[name].fn


def atom_conv(values: Tensor, plan: GatherPlan, atoms: Tensor, groups: int = 1,
              chunk_bytes: int | None = None, backend: str = "auto") -> Tensor:
    """``g[b, m] = sum_a (S f[b])[m, a] @ W_a``: a linear-kernel convolution on its gather plan.

    Args:
        values: Tensor[B, N, C_in].
        plan: the sparse ``S [M * A, N]`` (quadrature weights included).
        atoms: Tensor[A, C_in / groups, C_out].
        groups: channel groups (``C_in`` and ``C_out`` divisible by it).
        chunk_bytes: the backend's scratch budget in bytes (default: the backend's for the
            device, e.g. ``CHUNK_BYTES`` in `inrnet.nn._embedding_bag`).
        backend: a registered backend ([`list_backends`][inrnet.nn.gather.list_backends]), or ``"auto"``: the
            plan's discrete convolution when it is a stencil between two lattices
            (``plan.stencil``, and `STENCIL` on), else the best registered backend for the
            device of ``values``.

    Returns:
        Tensor[B, M, C_out].

    Raises:
        ValueError: ``values`` or ``atoms`` do not fit the plan, or an unknown backend
            (naming the registered ones) or one that does not run on the device.
    """
    if values.shape[1] != plan.num_in:
        raise ValueError(f"values have {values.shape[1]} points, the gather plan expects {plan.num_in}")
    if atoms.shape[0] != plan.num_atoms:
        raise ValueError(f"atoms have {atoms.shape[0]} rows, the gather plan expects {plan.num_atoms} atoms")
    if backend == "auto" and STENCIL and plan.stencil is not None:
        return stencil_conv(values, plan.stencil, atoms.contiguous(), groups)
    fn = _backend(backend, values.device)
    return fn(values.contiguous(), plan, atoms.contiguous(), groups, chunk_bytes)
