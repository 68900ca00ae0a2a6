"""Fixed-radius neighbour search between a query set and a point set, kept as CSR.

For each query point ``q_i`` the neighbours are the points ``x_j`` whose offset
``x_j - q_i`` lies in a [`Support`][inrnet.neighbors.Support]: a box (orthotope) or ball of given half-widths,
optionally shifted (even-sized discrete filters centre their support half a cell off the
output point). With ``reflect=True`` the mirror images of the points count too, each
mapped back to the point it mirrors: reflection padding. The mirrors are planes ``inset``
inside the faces of the box the points tile ([`tiled_box`][inrnet.neighbors.tiled_box]), and only images
outside that box count (inside it the points speak for themselves): ``inset = 0`` mirrors
across the faces (numpy's ``'symmetric'``: ``a b c`` pads to ``b a | a b c | c b``), half a
pixel mirrors about a lattice's outermost pixel centres (torch's ``'reflect'``:
``c b | a b c | b a``).

The result is computed once per (point set, query set, support, mirrors) and cached on the
point set ([`neighbors`][inrnet.neighbors.neighbors]); every layer with the same geometry reuses it. Three
backends give identical results (candidates are generated differently, then one exact
float64 test decides membership, with a slack of a few ulps of the coordinates' dtype so
that lattice points exactly on the support boundary are kept, and pairs are sorted by
(query, point)):

* ``"kdtree"``: scipy's cKDTree, the CPU default;
* ``"cells"``: a cell list in torch, ``O(N + M + E)`` on any device, the GPU default;
* ``"lattice"``: when the queries are a lattice's points in C order (a latent lattice, a
  grid of outputs), each point's candidate queries by index arithmetic, ``O(N + E)`` in
  torch on any device with no tree or cell list; the default for such queries;
* ``"brute"``: the ``O(N M)`` distance test, the reference the tests use.

Nothing is ever truncated: every pair inside the support is returned.

[`nearest`][inrnet.neighbors.nearest] is the 1-nearest-neighbour search (upsampling, binned
kernels) with the same three kinds of backend, ``"kdtree"``, ``"torch"`` (chunked distances,
any device) and ``"brute"``, and one exact rule: the least float64 squared distance, ties to
the lowest point index. [`csr_indptr`][inrnet.neighbors.csr_indptr] is the CSR row pointer every
pair list here and in the convolutions' gather plans is indexed by.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from inrnet.field import PointSet

__all__ = ["Support", "Neighbors", "neighbors", "find_neighbors", "nearest", "k_nearest", "tiled_box", "csr_indptr",
           "stable_argsort", "BACKENDS", "NEAREST_BACKENDS"]

BACKENDS = ("auto", "kdtree", "cells", "lattice", "brute")
NEAREST_BACKENDS = ("auto", "kdtree", "torch", "brute")

SUPPORT_TOL = 1e-6
"""Relative slack on the support boundary, so lattice points exactly on it are kept."""
NEAREST_SLACK = 1e-9
"""Relative margin within which the k-d tree's second-nearest point may tie with its nearest."""


@dataclass(frozen=True)
class Support:
    """Where a kernel is non-zero, relative to its output point.

    Args:
        half_width: half extents per dimension (box) or radii (ball); one float for all.
        shape: ``"box"`` (orthotope) or ``"ball"`` (ellipsoid when radii differ).
        center: offset of the support's centre from the output point (default 0).
    """

    half_width: tuple[float, ...]
    shape: str = "box"
    center: tuple[float, ...] | None = None

    def __post_init__(self):
        hw = self.half_width
        hw = (float(hw),) if isinstance(hw, (int, float)) else tuple(float(h) for h in hw)
        if not hw or any(not math.isfinite(h) or h <= 0 for h in hw):
            raise ValueError(f"support half widths must be positive and finite, got {self.half_width!r}")
        if self.shape not in ("box", "ball"):
            raise ValueError(f"support shape must be 'box' or 'ball', got {self.shape!r}")
        c = self.center
        center = (0.0,) * len(hw) if c is None else (float(c),) if isinstance(c, (int, float)) else tuple(
            float(v) for v in c)
        if len(center) != len(hw) and 1 not in (len(center), len(hw)):
            raise ValueError(f"support center {c!r} and half widths {self.half_width!r} differ in dimension")
        object.__setattr__(self, "half_width", hw)
        object.__setattr__(self, "center", center)

    def for_dim(self, dim: int) -> Support:
        """This support with one half width / centre entry per dimension."""
        hw, c = self.half_width, self.center
        if len(hw) == dim and len(c) == dim:
            return self
        if len(hw) not in (1, dim) or len(c) not in (1, dim):
            raise ValueError(f"support {self} does not fit dimension {dim}")
        return Support(hw * dim if len(hw) == 1 else hw, self.shape, c * dim if len(c) == 1 else c)

    @property
    def volume(self) -> float:
        """Lebesgue measure of the support."""
        d = len(self.half_width)
        box = math.prod(2 * h for h in self.half_width)
        return box if self.shape == "box" else box * math.pi ** (d / 2) / (2 ** d * math.gamma(d / 2 + 1))

    def contains(self, offsets: Tensor, atol: float = 0.0) -> Tensor:
        """Bool Tensor[...] of whether offsets (Tensor[..., d], ``x_j - q_i``) lie in the support.

        Args:
            atol: absolute slack (the rounding error of the coordinates), on top of the
                relative ``SUPPORT_TOL``.
        """
        h = offsets.new_tensor(self.half_width)
        r = ((offsets - offsets.new_tensor(self.center)).abs() - atol).clamp_min(0) / h
        if self.shape == "box":
            return r.amax(-1) <= 1 + SUPPORT_TOL
        return (r * r).sum(-1) <= (1 + SUPPORT_TOL) ** 2


@dataclass(frozen=True)
class Neighbors:
    """Neighbour pairs in CSR form, rows = queries, sorted by (query, point).

    Attributes:
        indptr: Tensor[M + 1], pairs of query ``i`` are ``indptr[i]:indptr[i + 1]``.
        row: Tensor[E], the query of each pair.
        col: Tensor[E], the point of each pair (for a mirrored point, the point it mirrors).
        offset: Tensor[E, d], ``x_j - q_i`` (``x_j`` mirrored where it was).
        num_points: N, the number of points ``col`` indexes.
    """

    indptr: Tensor
    row: Tensor
    col: Tensor
    offset: Tensor
    num_points: int

    @property
    def num_queries(self) -> int:
        return self.indptr.numel() - 1

    @property
    def num_pairs(self) -> int:
        return self.col.numel()

    def counts(self) -> Tensor:
        """Tensor[M], neighbours per query."""
        return self.indptr.diff()


def neighbors(points: PointSet, queries: PointSet, support: Support, *, reflect: bool = False,
              inset: float | Sequence[float] = 0.0, backend: str = "auto") -> Neighbors:
    """The neighbours of ``queries`` among ``points``, cached on ``points``.

    Every backend returns the same pairs, so ``backend`` is not part of the cache key.

    Args:
        points: the ``N`` points searched.
        queries: the ``M`` query points.
        support: the kernel's support around each query.
        reflect: also count the points' mirror images outside the box they tile
            (reflection padding; see the module docstring).
        inset: with ``reflect``, how far inside the box's faces the mirror planes lie, per
            axis or one number for all (``0``: numpy's ``'symmetric'``; half a pixel:
            torch's ``'reflect'``).
        backend: ``"auto"``, ``"kdtree"``, ``"cells"``, ``"lattice"`` (queries that are a
            lattice in C order only) or ``"brute"``; ``"auto"`` is ``"lattice"`` where it
            applies, else ``"kdtree"`` on the CPU and ``"cells"`` elsewhere.

    Returns:
        The CSR pairs, rows = the ``M`` queries.

    Raises:
        ValueError: mismatched dimensions or devices, an unknown backend, or
            ``backend="lattice"`` for queries that are not a lattice in C order.
    """
    if queries.dim != points.dim:
        raise ValueError(f"query points have dimension {queries.dim}, points have dimension {points.dim}")
    support = support.for_dim(points.dim)
    mirrors = _insets(inset, points.dim) if reflect else None
    key = ("neighbors", queries, support, mirrors)  # dropped once the query set is garbage collected
    return points.cached(key, lambda: find_neighbors(points, queries, support, reflect=reflect, inset=inset,
                                                     backend=backend))


def find_neighbors(points: PointSet, queries: PointSet, support: Support, *, reflect: bool = False,
                   inset: float | Sequence[float] = 0.0, backend: str = "auto") -> Neighbors:
    """Uncached neighbour search; see the module docstring. Prefer [`neighbors`][inrnet.neighbors.neighbors]."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown neighbour backend {backend!r}; choose one of {BACKENDS}")
    if queries.device != points.device:
        raise ValueError(f"queries are on {queries.device}, points on {points.device}")
    support = support.for_dim(points.dim)
    on_lattice = _query_lattice(queries)
    if backend == "lattice" and on_lattice is None:
        raise ValueError("backend='lattice' needs queries that are a lattice's points in C order (PointSet.lattice "
                         f"with order='lattice'); these have order={queries.order!r}")
    if backend == "auto":
        backend = "lattice" if on_lattice is not None else "kdtree" if points.device.type == "cpu" else "cells"
    x = points.coords.double()  # (N, d)
    q = queries.coords.double()  # (M, d)
    # pairs exactly on the support boundary (lattice ties) must survive the rounding of
    # the coordinates to their dtype: allow a few ulps of the largest coordinate
    scale = max(1.0, float(x.abs().max()), float(q.abs().max()))
    atol = 4 * scale * max(torch.finfo(points.dtype).eps, torch.finfo(queries.dtype).eps)
    src = torch.arange(points.n, device=points.device)
    center = q + q.new_tensor(support.center)  # (M, d)
    reach = q.new_tensor(support.half_width) * (1 + 2 * SUPPORT_TOL) + 2 * atol
    if reflect and queries.n:
        x, src = _with_mirrors(x, tiled_box(points), _insets(inset, points.dim),
                               center.amin(0) - reach, center.amax(0) + reach)
    if backend == "brute":
        row, j = _brute_candidates(center, x, reach, support.shape)
    elif backend == "kdtree":
        same = queries is points and not reflect and not any(support.center)
        row, j = _kdtree_candidates(center, x, reach, support.shape, same=same)
    elif backend == "lattice":
        row, j = _lattice_candidates(on_lattice, x - x.new_tensor(support.center), reach)
    else:
        row, j = _cell_candidates(center, x, reach)
    # sort the candidate keys, then gather the offsets once, already in CSR order
    n = x.shape[0]
    key = _sort_keys(row * n + j, rows_sorted=backend not in ("kdtree", "lattice"))  # (C,)
    row, j = key // n, key % n
    offset = x[j] - q[row]  # (C, d), float64
    keep = support.contains(offset, atol)
    row, j, offset = row[keep], j[keep], offset[keep]
    return Neighbors(csr_indptr(row, queries.n), row, src[j], offset.to(points.dtype), points.n)


def nearest(points: Tensor, queries: Tensor, *, backend: str = "auto", chunk: int = 1 << 22) -> Tensor:
    """The nearest point of every query, uncached: [`k_nearest`][inrnet.neighbors.k_nearest]
    with ``k = 1``, the same rule and backends.

    Args:
        points: Tensor[N, d], the ``N >= 1`` points searched.
        queries: Tensor[M, d], on the same device.
        backend: ``"auto"``, ``"kdtree"``, ``"torch"`` or ``"brute"``.
        chunk: with ``"torch"``, how many distances to hold at once (``chunk // N`` queries).

    Returns:
        Tensor[M] of int64 indices into ``points``, on their device.
    """
    return k_nearest(points, queries, 1, backend=backend, chunk=chunk)[:, 0]


def k_nearest(points: Tensor, queries: Tensor, k: int, *, backend: str = "auto", chunk: int = 1 << 22
              ) -> Tensor:
    """The ``k`` nearest points of every query, nearest first, uncached.

    One rule decides on every backend: the order of the float64 squared distance (the axes
    summed in order), ties to the lower point index, so every backend returns the same
    indices:

    * ``"kdtree"``: scipy's cKDTree, the CPU default; where the ``(k+1)``-th nearest point is
      as near as the ``k``-th up to rounding, every point that near is a candidate and the
      rule decides among them;
    * ``"torch"``: all distances, ``chunk`` at a time, on any device (the GPU default);
    * ``"brute"``: a loop over the queries, the reference the tests use.

    Args:
        points: Tensor[N, d], the ``N >= k`` points searched.
        queries: Tensor[M, d], on the same device.
        k: how many, ``1 <= k <= N``.
        backend: ``"auto"``, ``"kdtree"``, ``"torch"`` or ``"brute"``.
        chunk: with ``"torch"``, how many distances to hold at once (``chunk // N`` queries).

    Returns:
        Tensor[M, k] of int64 indices into ``points``, on their device.
    """
    if backend not in NEAREST_BACKENDS:
        raise ValueError(f"unknown nearest-neighbour backend {backend!r}; choose one of {NEAREST_BACKENDS}")
    if points.dim() != 2 or queries.dim() != 2 or points.shape[1] != queries.shape[1] or points.shape[1] < 1:
        raise ValueError(f"nearest expects points Tensor[N, d] and queries Tensor[M, d], got {tuple(points.shape)} "
                         f"and {tuple(queries.shape)}")
    if points.shape[0] == 0:
        raise ValueError(f"no nearest point among none: points {tuple(points.shape)} ([N, d])")
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"k_nearest needs 1 <= k <= N, got k={k} for {points.shape[0]} points")
    if queries.device != points.device:
        raise ValueError(f"queries are on {queries.device}, points on {points.device}")
    if backend == "auto":
        backend = "kdtree" if points.device.type == "cpu" else "torch"
    x, q = points.double(), queries.double()  # (N, d), (M, d)
    if q.shape[0] == 0:
        return torch.zeros(0, k, dtype=torch.long, device=points.device)
    if backend == "brute":
        return _brute_nearest(x, q, k)
    if backend == "kdtree":
        return _kdtree_nearest(x, q, k)
    step = max(1, chunk // x.shape[0])
    return torch.cat([_torch_nearest(x, q[i:i + step], k) for i in range(0, q.shape[0], step)])


def csr_indptr(row: Tensor, num_rows: int) -> Tensor:
    """The CSR row pointer of entries sorted by row: those of row ``i`` are ``indptr[i]:indptr[i + 1]``.

    Args:
        row: Tensor[E] of row indices in ``[0, num_rows)`` (only their counts matter).
        num_rows: ``M``, rows without entries included.

    Returns:
        ``indptr``, Tensor[M + 1] of int64 on ``row``'s device, ``indptr[0] = 0`` and
        ``indptr[M] = E``.
    """
    indptr = torch.zeros(num_rows + 1, dtype=torch.long, device=row.device)
    indptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return indptr


def stable_argsort(keys: Tensor) -> Tensor:
    """Stable argsort of integer keys (Tensor[E]), Tensor[E] of int64.

    On CPU numpy's stable sort, on keys shifted to start at 0: a radix sort where their span
    fits 16 bits (numpy sorts ``uint16`` by radix, 10x faster than its timsort of ``int64``), two
    stable 16-bit passes (low half, then high half) where it fits 32 bits, timsort beyond. Elsewhere
    torch's stable sort.
    """
    if keys.device.type != "cpu":
        return torch.argsort(keys, stable=True)
    k = keys.numpy()
    if k.size == 0:
        return torch.zeros(0, dtype=torch.long)
    lo = int(k.min())
    span = int(k.max()) - lo
    if span < 1 << 16:
        order = np.argsort((k - lo).astype(np.uint16), kind="stable")
    elif span < 1 << 32:
        shifted = (k - lo).astype(np.uint32)
        order = np.argsort((shifted & 0xFFFF).astype(np.uint16), kind="stable")  # low half first (LSD radix)
        order = order[np.argsort((shifted[order] >> 16).astype(np.uint16), kind="stable")]
    else:
        order = np.argsort(k, kind="stable")
    return torch.from_numpy(order.astype(np.int64, copy=False))


def _sort_keys(keys: Tensor, rows_sorted: bool) -> Tensor:
    """Sorted unique integer keys (Tensor[C]). numpy's timsort is fastest on keys that
    come as query-major runs (cell list, brute force); torch's sort on unordered ones."""
    if rows_sorted and keys.device.type == "cpu":
        return torch.from_numpy(np.sort(keys.numpy(), kind="stable"))
    return torch.sort(keys).values


def tiled_box(points: PointSet) -> list[tuple[float, float]]:
    """The box the points tile, ``d`` pairs ``(lo, hi)``: a lattice's cells (after a stride
    they no longer fill the domain symmetrically), otherwise the domain."""
    if points.lattice is None:
        return list(points.bounds)
    lat = points.lattice
    return [(o - h / 2, o + (n - 0.5) * h) for o, h, n in zip(lat.origin, lat.step, lat.shape)]


def _insets(inset: float | Sequence[float], dim: int) -> tuple[float, ...]:
    items = tuple(float(v) for v in inset) if isinstance(inset, Sequence) else (float(inset),) * dim
    if len(items) != dim or any(not 0 <= v < math.inf for v in items):
        raise ValueError(f"mirror inset must be {dim} non-negative finite numbers (one per axis), got {inset!r}")
    return items


def _with_mirrors(x: Tensor, box, inset: Sequence[float], need_lo: Tensor, need_hi: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """Add the mirror images of points about planes ``inset`` inside the faces of ``box``
    that fall outside the box and inside ``[need_lo, need_hi]`` (where the supports reach).

    One reflection per face: a support reaching a point that only a second reflection
    (across the opposite plane too) would produce is an error.

    Returns:
        Coordinates Tensor[N', d] (originals first) and Tensor[N'] of the original index
        of each.
    """
    lo = x.new_tensor([b[0] for b in box])
    hi = x.new_tensor([b[1] for b in box])
    a, b = lo + x.new_tensor(inset), hi - x.new_tensor(inset)  # the mirror planes, (d,) each
    for k in range(x.shape[1]):
        if a[k] >= b[k]:  # the planes cross: nothing to reflect, fine while no support leaves the box
            if need_lo[k] < lo[k] or need_hi[k] > hi[k]:
                raise ValueError(f"reflection padding along axis {k} needs mirror planes inside the box {box[k]}, "
                                 f"got planes {inset[k]:.6g} inside its faces (a lattice of one pixel has no "
                                 "'reflect' padding)")
            continue
        # the nearest twice-mirrored images: reflected about b (kept: beyond hi), then about a; and vice versa
        up, down = x[:, k][2 * b[k] - x[:, k] > hi[k]], x[:, k][2 * a[k] - x[:, k] < lo[k]]
        low = float(up.max() - 2 * (b[k] - a[k])) if up.numel() else -math.inf
        high = float(down.min() + 2 * (b[k] - a[k])) if down.numel() else math.inf
        if low >= float(need_lo[k]) or high <= float(need_hi[k]):
            raise ValueError(f"reflection padding needs a support no wider than the mirrored points: along axis {k} "
                             f"the supports reach [{float(need_lo[k]):.6g}, {float(need_hi[k]):.6g}], but one "
                             f"reflection about {float(a[k]):.6g} and {float(b[k]):.6g} (box {box[k]}) misses the "
                             f"points a second one would add at {low:.6g} and {high:.6g}; use a smaller support")
    n, d = x.shape
    coords, index = [x], [torch.arange(n, device=x.device)]
    for sides in itertools.product((0, -1, 1), repeat=d):
        if not any(sides):
            continue
        y = x.clone()
        keep = torch.ones(n, dtype=torch.bool, device=x.device)  # (N,)
        for k, s in enumerate(sides):
            if s == -1:
                y[:, k] = 2 * a[k] - y[:, k]
                keep &= y[:, k] < lo[k]
            elif s == 1:
                y[:, k] = 2 * b[k] - y[:, k]
                keep &= y[:, k] > hi[k]
        keep &= ((y >= need_lo) & (y <= need_hi)).all(-1)
        coords.append(y[keep])
        index.append(keep.nonzero().squeeze(-1))
    return torch.cat(coords), torch.cat(index)


def _brute_candidates(center: Tensor, x: Tensor, reach: Tensor, shape: str,
                      chunk: int = 1 << 22) -> tuple[Tensor, Tensor]:
    rows, cols = [], []
    step = max(1, chunk // max(1, x.shape[0]))
    for start in range(0, center.shape[0], step):
        u = (x[None, :, :] - center[start:start + step, None, :]) / reach  # (m, N, d)
        inside = u.abs().amax(-1) <= 1 if shape == "box" else (u * u).sum(-1) <= 1
        r, c = inside.nonzero(as_tuple=True)
        rows.append(r + start)
        cols.append(c)
    return torch.cat(rows), torch.cat(cols)


def _kdtree_candidates(center: Tensor, x: Tensor, reach: Tensor, shape: str, *, same: bool = False
                       ) -> tuple[Tensor, Tensor]:
    """``same``: the query centres are the points themselves, so one tree serves both."""
    from scipy.spatial import cKDTree
    scale = reach.cpu().numpy()
    tree_x = cKDTree(x.cpu().numpy() / scale)
    tree_q = tree_x if same else cKDTree(center.cpu().numpy() / scale)
    pairs = tree_q.sparse_distance_matrix(tree_x, 1.0, p=np.inf if shape == "box" else 2.0, output_type="ndarray")
    row = torch.from_numpy(pairs["i"].astype(np.int64)).to(center.device)
    col = torch.from_numpy(pairs["j"].astype(np.int64)).to(center.device)
    return row, col


def _query_lattice(queries: PointSet):
    """The queries' lattice if they are its points in C order with positive finite steps, else None."""
    lat = queries.lattice
    if lat is None or queries.order != "lattice" or queries.n == 0:
        return None
    if not all(math.isfinite(h) and h > 0 for h in lat.step):
        return None
    return lat


def _lattice_candidates(lattice, x: Tensor, reach: Tensor, chunk: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """Candidate pairs of queries on ``lattice`` (its points in C order) and points ``x``
    (Tensor[N, d], float64, already shifted by minus the support's centre): for point ``j``
    and axis ``k``, the lattice indices ``i`` with ``|x_jk - (origin_k + i step_k)| <= reach_k``
    (``reach`` already holds a slack beyond the exact test in
    [`find_neighbors`][inrnet.neighbors.find_neighbors], which decides). ``(rows, cols)``,
    point-major; for a box support they are the pairs."""
    n, d = x.shape
    origin = x.new_tensor(lattice.origin)
    step = x.new_tensor(lattice.step)
    shape = torch.tensor(lattice.shape, dtype=torch.long, device=x.device)
    # candidate sites per axis: every site the support can reach, and no more than an axis has
    # (``lo`` starts at site 0 at the latest, so ``lo .. lo + span - 1`` still covers ``lo .. hi``)
    span = min(int(torch.floor(2 * reach / step).max()) + 2, max(lattice.shape))
    offs = torch.arange(span, device=x.device)
    per_chunk = max(1, chunk // span ** d)  # points per chunk
    rows, cols = [], []
    for start in range(0, n, per_chunk):
        xs = x[start:start + per_chunk]  # (m, d)
        lo = torch.ceil((xs - reach - origin) / step).long().clamp_min(0)  # (m, d): first candidate site
        hi = torch.floor((xs + reach - origin) / step).long()  # (m, d): last
        flat = torch.zeros(xs.shape[0], 1, dtype=torch.long, device=x.device)  # (m, 1)
        valid = torch.ones(xs.shape[0], 1, dtype=torch.bool, device=x.device)
        for k in range(d):  # C order: flat = ((i_0 * n_1 + i_1) * n_2 + i_2) ...
            idx = lo[:, k, None] + offs  # (m, span)
            ok = (idx < shape[k]) & (idx <= hi[:, k, None])  # idx >= lo >= 0
            flat = (flat[:, :, None] * shape[k] + idx[:, None, :]).reshape(xs.shape[0], -1)
            valid = (valid[:, :, None] & ok[:, None, :]).reshape(xs.shape[0], -1)
        point = torch.arange(start, start + xs.shape[0], device=x.device)[:, None].expand_as(flat)
        rows.append(flat[valid])
        cols.append(point[valid])
    return torch.cat(rows), torch.cat(cols)


def _cell_candidates(center: Tensor, x: Tensor, reach: Tensor, max_candidates: int = 1 << 24
                     ) -> tuple[Tensor, Tensor]:
    """Cell list: bin points into cells of side ``reach``, sorted in C order. A query's
    support meets at most 3 cells per axis, and the (up to) 3 cells along the last axis
    are one contiguous run of the sorted points, so a query reads ``3^(d-1)`` runs. The
    candidates are about ``(3/2)^d`` times the pairs, query-major. Linear in N + M + E."""
    d = x.shape[1]
    side = reach
    lo = torch.minimum(x.amin(0), center.amin(0)) - 2 * side
    extent = torch.maximum(x.amax(0), center.amax(0)) + 2 * side - lo
    ncell = torch.floor(extent / side).long() + 1  # (d,)
    if math.prod(ncell.tolist()) >= 2 ** 62:
        raise ValueError("support too small for the cell-list backend in this dimension; use backend='kdtree'")
    strides = torch.ones(d, dtype=torch.long, device=x.device)
    for k in range(d - 2, -1, -1):
        strides[k] = strides[k + 1] * ncell[k + 1]
    cell_x = (torch.floor((x - lo) / side).long() * strides).sum(-1)  # (N,)
    sorted_cells, order = torch.sort(cell_x)
    first = torch.floor((center - reach - lo) / side).long()  # (M, d): lowest cell the support meets
    last = torch.floor((center + reach - lo) / side).long()  # (M, d): highest
    lead = torch.tensor(list(itertools.product(range(3), repeat=d - 1)), dtype=torch.long,
                        device=x.device).reshape(3 ** (d - 1), d - 1)  # (R, d - 1) offsets on axes 0..d-2
    runs = lead.shape[0]
    rows, cols = [], []
    queries_per_chunk = max(1, max_candidates // (runs * 3 * max(1, x.shape[0] // max(1, math.prod(ncell.tolist()))) + 1))
    for start in range(0, center.shape[0], queries_per_chunk):
        f, g = first[start:start + queries_per_chunk], last[start:start + queries_per_chunk]  # (m, d)
        cells = f[:, None, :-1] + lead  # (m, R, d - 1)
        base = (cells * strides[:-1]).sum(-1)  # (m, R)
        a = torch.searchsorted(sorted_cells, (base + f[:, None, -1]).reshape(-1))  # (m * R,)
        b = torch.searchsorted(sorted_cells, (base + g[:, None, -1]).reshape(-1), right=True)
        count = (b - a) * (cells <= g[:, None, :-1]).all(-1).reshape(-1)  # (m * R,)
        total = int(count.sum())
        if total == 0:
            continue
        seg = torch.repeat_interleave(torch.arange(count.numel(), device=x.device), count)  # (C,)
        pos = a[seg] + torch.arange(total, device=x.device) - (torch.cumsum(count, 0) - count)[seg]
        rows.append(seg // runs + start)
        cols.append(order[pos])
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return empty, empty
    return torch.cat(rows), torch.cat(cols)


def _squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """``sum_k (a_k - b_k)^2`` of broadcastable Tensor[..., d]s, the axes added in order
    (every backend of [`nearest`][inrnet.neighbors.nearest] rounds alike)."""
    out = (a[..., 0] - b[..., 0]).square()
    for k in range(1, a.shape[-1]):
        out = out + (a[..., k] - b[..., k]).square()
    return out


def _first_k_by_distance(x: Tensor, q: Tensor, rows: Tensor, cols: Tensor, k: int) -> Tensor:
    """Candidate pairs (``rows`` ascending, every query with at least ``k``) ordered by the rule
    (float64 squared distance, then point index) within each query: the first ``k`` per
    query, Tensor[M, k]."""
    d2 = _squared_distance(x[cols], q[rows])  # (C,)
    order = torch.from_numpy(np.lexsort((cols.cpu().numpy(), d2.cpu().numpy(), rows.cpu().numpy())))
    rows, cols = rows[order.to(rows.device)], cols[order.to(cols.device)]
    start = csr_indptr(rows, q.shape[0])[:-1]  # (M,)
    return cols[start[:, None] + torch.arange(k, device=cols.device)]


def _brute_nearest(x: Tensor, q: Tensor, k: int) -> Tensor:
    """For each query the ``k`` points of least squared distance, ties to the lower index; a
    loop over queries."""
    index = torch.empty(q.shape[0], k, dtype=torch.long, device=x.device)
    for i in range(q.shape[0]):
        dist = _squared_distance(x, q[i])  # (N,)
        index[i] = torch.sort(dist, stable=True).indices[:k]  # a stable sort keeps ties in index order
    return index


def _torch_nearest(x: Tensor, q: Tensor, k: int) -> Tensor:
    """The rule on one chunk of queries from all their distances."""
    d2 = _squared_distance(q[:, None, :], x[None])  # (m, N)
    if k == 1:
        return d2.argmin(1, keepdim=True)  # the first minimum
    kth = d2.topk(k, dim=1, largest=False).values[:, -1:]  # (m, 1)
    rows, cols = torch.nonzero(d2 <= kth, as_tuple=True)  # at least k per query, ties at the k-th included
    return _first_k_by_distance(x, q, rows, cols, k)


def _kdtree_nearest(x: Tensor, q: Tensor, k: int) -> Tensor:
    """The tree's ``k`` nearest points, unless the ``(k+1)``-th is as near as the ``k``-th up to
    rounding: then every point that near is a candidate; the rule orders the candidates (for
    ``k = 1`` only where there are several)."""
    from scipy.spatial import cKDTree
    xs, qs = x.cpu().numpy(), q.cpu().numpy()
    n, m = xs.shape[0], qs.shape[0]
    tree = cKDTree(xs)
    kk = min(k + 1, n)
    dist, index = tree.query(qs, k=kk)
    dist, index = dist.reshape(-1, kk), index.reshape(-1, kk).astype(np.int64)  # (M, kk)
    best = index[:, :k].copy()  # (M, k)
    tied = np.flatnonzero(dist[:, k] <= dist[:, k - 1] * (1 + NEAREST_SLACK)) if kk > k else np.zeros(0, np.int64)
    redo = np.arange(m) if k > 1 else tied  # the queries the rule orders (k > 1: all, within their first k)
    if redo.size:
        local = np.full(m, -1, dtype=np.int64)
        local[redo] = np.arange(redo.size)
        rows, cols = np.repeat(np.arange(redo.size), k), best[redo].reshape(-1)
        if tied.size:
            near = tree.query_ball_point(qs[tied], dist[tied, k - 1] * (1 + NEAREST_SLACK))
            rows = np.concatenate([rows, np.repeat(local[tied], [len(c) for c in near])])
            cols = np.concatenate([cols, *(np.asarray(c, dtype=np.int64) for c in near)])
            pair = np.unique(rows * n + cols)  # the tree's own come again in the ball
            rows, cols = pair // n, pair % n
        best[redo] = _first_k_by_distance(x.cpu(), q.cpu()[torch.from_numpy(redo)], torch.from_numpy(rows),
                                          torch.from_numpy(cols), k).numpy()
    return torch.from_numpy(best).to(x.device)
