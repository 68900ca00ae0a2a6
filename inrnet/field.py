"""``PointSet`` and ``Field``: the data every INR-Net layer passes along.

A [`PointSet`][inrnet.field.PointSet] is one set of sample points shared by a whole minibatch: coordinates
``[N, d]``, quadrature weights ``[N]`` (the Lebesgue measure each point stands for:
``volume / N`` for scattered points, the cell ``prod(step)`` for a lattice, so a discrete
sum over pixels is exactly a quadrature; they sum to the domain's volume wherever the
points tile the domain), the box ``bounds`` of its domain,
when the points are a regular lattice, that lattice, and what the order of its points
means (``order``: a lattice, nested like a Sobol sequence, or neither). It is data, not
layer state: the point sets derived from it (a prefix for downsampling, a sub-lattice for
a strided layer, a shrunk domain for an unpadded convolution) and the neighbour graphs
layers ask for are memoised on it, so every layer that needs the same thing gets the same
object and every neighbour search runs once per point set, query set and support. Entries
that depend on another point set (the neighbours of a query set) are dropped when that
point set is garbage collected.

A [`Field`][inrnet.field.Field] is a batch of functions sampled on one point set: ``values [B, N, C]``
plus its ``points``. It is a thin typed wrapper (not a Tensor subclass); layers check
points and channels at their boundary ([`check_field`][inrnet.field.check_field]).
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from inrnet._limits import check_count, check_shape

__all__ = ["Lattice", "PointSet", "Field", "check_same_points", "check_field", "ORDERS"]

_uids = itertools.count()

BOUNDARY_TOL = 1e-6
"""Relative slack with which a point on a domain boundary still counts as inside."""

ORDERS = ("lattice", "nested", "unordered")
"""What the order of a point set's points means (``PointSet.order``): ``"lattice"`` (the
points of its ``lattice`` in C order), ``"nested"`` (every prefix is itself a good point
set: Sobol, Halton, Monte Carlo) or ``"unordered"`` (neither: a prefix is no subsample)."""

_MISSING = object()


@dataclass(frozen=True)
class Lattice:
    """A regular lattice of points: ``origin + step * index`` for ``index < shape``.

    ``inrnet.sampling.grid(shape)`` is the lattice with ``step = 2 / shape`` and
    ``origin = -1 + 1 / shape``; strided layers keep sub-lattices of it.
    """

    origin: tuple[float, ...]
    step: tuple[float, ...]
    shape: tuple[int, ...]

    @classmethod
    def grid(cls, shape: Sequence[int]) -> Lattice:
        shape = tuple(int(s) for s in shape)
        return cls(tuple(-1.0 + 1.0 / s for s in shape), tuple(2.0 / s for s in shape), shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def coords(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Tensor[prod(shape), d], in C order, computed in float64.

        Along an axis of ``Lattice.grid`` (origin ``-1 + 1 / n``, step ``2 / n``) the sites
        are the cell centres ``(2 i + 1) / n - 1`` (``origin + step * i`` can differ in the
        last bit; ``inrnet.sampling.grid`` is this lattice's coords); along any other axis
        they are ``origin + step * i``.
        """
        axes = [_lattice_sites(o, s, n) for o, s, n in zip(self.origin, self.step, self.shape)]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], -1).to(dtype=dtype, device=device)

    def sub(self, start: Sequence[int], stride: Sequence[int], stop: Sequence[int]) -> tuple[Lattice, Tensor]:
        """The sub-lattice ``[start:stop:stride]`` along each axis.

        Returns:
            The sub-lattice and the flat indices ``Tensor[M]`` of its points in ``self``.
        """
        ranges = [torch.arange(a, b, s) for a, s, b in zip(start, stride, stop)]
        if any(len(r) == 0 for r in ranges):
            raise ValueError(f"sub-lattice [{start}:{stop}:{stride}] of a lattice of shape {self.shape} is empty")
        flat = torch.zeros((), dtype=torch.long)
        for r, n in zip(ranges, self.shape):
            flat = flat.unsqueeze(-1) * n + r  # (n_0, ..., n_k)
        lattice = Lattice(tuple(o + a * h for o, a, h in zip(self.origin, start, self.step)),
                          tuple(h * s for h, s in zip(self.step, stride)),
                          tuple(len(r) for r in ranges))
        return lattice, flat.reshape(-1)


def _lattice_sites(origin: float, step: float, n: int) -> Tensor:
    """The ``n`` sites of one lattice axis, Tensor[n] in float64 (see `Lattice.coords`)."""
    i = torch.arange(n, dtype=torch.float64)
    if origin == -1.0 + 1.0 / n and step == 2.0 / n:  # a grid axis: its cell centres
        return (2.0 * i + 1.0) / n - 1.0
    return origin + step * i


def _as_bounds(bounds, dim: int) -> tuple[tuple[float, float], ...]:
    if bounds is None:
        return ((-1.0, 1.0),) * dim
    b = torch.as_tensor(bounds, dtype=torch.float64).reshape(-1, 2)
    if b.shape[0] != dim or not bool((b[:, 1] >= b[:, 0]).all()):
        raise ValueError(f"bounds must be {dim} pairs (lo, hi) with lo <= hi, got {bounds!r}")
    return tuple((float(lo), float(hi)) for lo, hi in b.tolist())


def _check_inside(coords: Tensor, bounds, parent_bounds=None) -> None:
    """Raise ``ValueError`` unless every point lies in the box ``bounds``.

    The slack per axis is [`BOUNDARY_TOL`][inrnet.field.BOUNDARY_TOL] times the box's extent
    (or its parent's, the box ``restrict`` tested against), plus the rounding of a
    coordinate to its dtype.
    """
    lo_x, hi_x = coords.detach().amin(0).double().tolist(), coords.detach().amax(0).double().tolist()
    eps = torch.finfo(coords.dtype).eps
    for k, ((lo, hi), a, b) in enumerate(zip(bounds, lo_x, hi_x)):
        extent = hi - lo if parent_bounds is None else max(hi - lo, parent_bounds[k][1] - parent_bounds[k][0])
        tol = BOUNDARY_TOL * extent + 2 * eps * max(abs(lo), abs(hi))
        if a < lo - tol or b > hi + tol:
            box = " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in bounds)
            raise ValueError(f"coordinate {k} of the points spans [{a:g}, {b:g}], outside the domain {box}: "
                             "integrals over the domain would be wrong. Rescale the coordinates (inrnet's "
                             "INRs live on [-1, 1]^d) or pass bounds= covering them")


def _lattice_axis(u: Tensor, lo: float, hi: float, n: int, tol: float) -> tuple[float, float | None, int] | None:
    """``(origin, step, sites)`` of the equally spaced set of at most ``n`` values holding the
    sorted distinct values ``u`` (Tensor[n_k], float64), or ``None`` when there is none.

    A single value has a known step only at the centre of ``(lo, hi)`` (one cell). Sites that
    are the cell centres of ``(lo, hi)`` get exactly ``Lattice.grid``'s origin and step.
    """
    first = u[0].item()
    if u.numel() == 1:
        return first, (hi - lo if hi > lo and abs(first - (lo + hi) / 2) <= tol else None), 1
    gaps = u.diff()  # (n_k - 1,)
    unit = gaps[gaps < 1.5 * gaps.min()]  # one-site gaps; their mean is accurate to a rounding error
    span = (u[-1] - u[0]).item()
    count = round(span / unit.mean().item())  # sites - 1
    if count + 1 > n:
        return None
    step = span / count
    if ((u - first) / step - ((u - first) / step).round()).abs().max().item() * step > tol:
        return None
    cell = (hi - lo) / (count + 1)
    if abs(first - (lo + cell / 2)) <= tol and abs(first + count * step - (hi - cell / 2)) <= tol:
        return lo + cell / 2, cell, count + 1
    return first, step, count + 1


def _infer_order(coords: Tensor, bounds) -> tuple[str, Lattice | None]:
    """The order (one of [`ORDERS`][inrnet.field.ORDERS]) and lattice of plain coordinates.

    ``"lattice"`` if ``coords`` are exactly the points of an equally spaced lattice in C order
    (``grid(shape)`` gets ``Lattice.grid(shape)``); ``"unordered"`` if they are three or more
    distinct points on a lattice of at most ``N`` sites per axis, in another order or with
    holes, that repeat values along some axis (or are 1-d): a scan order (a permuted, masked
    or Fortran-ordered grid); otherwise ``"nested"`` (scattered floating coordinates).
    """
    n, d = coords.shape
    x = coords.detach().double()  # (N, d)
    tol = 16 * torch.finfo(coords.dtype).eps * max(1.0, *(abs(v) for b in bounds for v in b))
    axes, distinct = [], []
    for k in range(d):
        u = torch.unique(x[:, k])  # (n_k,) sorted
        axis = _lattice_axis(u, *bounds[k], n, tol)
        if axis is None:
            return "nested", None
        axes.append(axis)
        distinct.append(u.numel())
    if math.prod(distinct) == n and all(step is not None and sites == k for (_, step, sites), k in zip(axes, distinct)):
        lattice = Lattice(tuple(o for o, _, _ in axes), tuple(s for _, s, _ in axes), tuple(distinct))
        if (lattice.coords(torch.float64, x.device) - x).abs().max().item() <= tol:
            return "lattice", lattice
    repeats = d == 1 or any(k < n for k in distinct)
    if n >= 3 and repeats and torch.unique(x, dim=0).shape[0] == n:
        return "unordered", None
    return "nested", None


def _unlink(owner: weakref.ref, uid: int, _dead: weakref.ref) -> None:
    """Weak-reference callback: point set ``uid`` is gone, drop the entries ``owner`` keyed by it."""
    points = owner()
    if points is not None:
        _, keys = points._links.pop(uid, (None, ()))
        for key in keys:
            points._cache.pop(key, None)


class PointSet:
    """Sample points shared by a minibatch of INRs.

    Every point set knows what the order of its points means (``order``, one of
    [`ORDERS`][inrnet.field.ORDERS]), because strided layers keep a prefix of scattered
    points: ``"nested"`` (the default for scattered points) promises that every prefix is
    itself a good point set, spread over the whole domain (Sobol, Halton, shrunk, Monte
    Carlo); ``"lattice"`` means the points are their ``lattice`` in C order (strided
    layers keep sub-lattices); ``"unordered"`` means neither, and
    [`downsample`][inrnet.field.PointSet.downsample] and
    [`prefix`][inrnet.field.PointSet.prefix] refuse it. Without ``order`` or ``lattice``
    it is inferred from ``coords``: the points of a lattice in C order (``grid(shape)``)
    get that lattice, so ``PointSet(grid(shape))`` is ``PointSet.grid(shape)``; points on
    a lattice in another order or with holes (a permuted, Fortran-ordered or masked grid)
    are ``"unordered"``; anything else is ``"nested"``.

    Args:
        coords: Tensor[N, d], finite floating-point coordinates inside ``bounds``.
        weights: Tensor[N], finite positive quadrature weights; default ``volume / N``.
        bounds: the domain box, ``d`` pairs ``(lo, hi)``; default ``[-1, 1]^d``.
        lattice: the [`Lattice`][inrnet.field.Lattice] the points form, in C order, if any
            (enables exact strided layers and nearest-neighbour upsampling with the
            discrete tie rule).
        order: ``"lattice"`` (needs ``lattice``), ``"nested"`` or ``"unordered"``; default
            inferred as above (``"lattice"`` when ``lattice`` is given).
        parent: the point set this one was derived from, and ``parent_index``
            (Tensor[N]) the positions of these points in it.

    Raises:
        ValueError: malformed or non-finite coordinates, points outside ``bounds`` (beyond
            a relative slack of [`BOUNDARY_TOL`][inrnet.field.BOUNDARY_TOL]), weights that
            are not finite and positive, a lattice of another size, or an unknown order.
    """

    def __init__(self, coords: Tensor, weights: Tensor | None = None, *, bounds=None,
                 lattice: Lattice | None = None, order: str | None = None, parent: PointSet | None = None,
                 parent_index: Tensor | None = None):
        if not isinstance(coords, Tensor) or coords.dim() != 2 or not coords.is_floating_point():
            raise ValueError(f"coords must be a floating Tensor[N, d], got "
                             f"{type(coords).__name__} {tuple(getattr(coords, 'shape', ()))}")
        n, d = coords.shape
        if n == 0 or d == 0:
            raise ValueError(f"a point set needs at least one point and one dimension, got coords {tuple(coords.shape)}")
        if not bool(torch.isfinite(coords).all()):
            raise ValueError("coords contain NaN or infinite values")
        self.coords = coords
        self.bounds = _as_bounds(bounds, d)
        _check_inside(coords, self.bounds, None if parent is None else parent.bounds)
        if weights is None:
            weights = torch.full((n,), self.volume / n, dtype=coords.dtype, device=coords.device)
        elif weights.shape != (n,):
            raise ValueError(f"weights must be a positive Tensor[{n}], one per point, got {tuple(weights.shape)}")
        self.weights = weights.to(coords)
        bad = ~(torch.isfinite(self.weights) & (self.weights > 0))  # (N,)
        if bool(bad.any()):
            raise ValueError(f"weights must be finite and positive (the measure each point stands for), got "
                             f"{int(bad.sum())} of {n} that are not, e.g. {self.weights[bad][:3].tolist()}")
        if lattice is not None and lattice.size != n:
            raise ValueError(f"lattice of shape {lattice.shape} has {lattice.size} points, coords have {n}")
        if order is not None and order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if order == "lattice" and lattice is None:
            raise ValueError("order='lattice' needs the lattice= the points form")
        if order in ("nested", "unordered") and lattice is not None:
            raise ValueError(f"order={order!r} contradicts lattice={lattice} (a lattice's points are in C order); "
                             "pass one of them")
        if order is None:
            order, lattice = ("lattice", lattice) if lattice is not None else _infer_order(coords, self.bounds)
        self.order: str = order
        self.lattice = lattice
        self.parent = parent
        self.parent_index = parent_index
        self.uid = next(_uids)
        self._cache: dict[Any, Any] = {}
        self._links: dict[int, tuple[weakref.ref, list]] = {}

    # construction ------------------------------------------------------------------
    @classmethod
    def grid(cls, shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device=None) -> PointSet:
        """The cell centres of ``inrnet.sampling.grid(shape)`` (bit for bit), as a lattice point set.

        Raises:
            ValueError: a bad shape, or one whose points do not fit in memory (checked before
                allocating, see [`check_count`][inrnet.sampling.points.check_count]).
        """
        shape = check_shape(shape)
        check_count(math.prod(shape), len(shape), dtype=dtype, device=device)
        lattice = Lattice.grid(shape)
        return cls(lattice.coords(dtype, device), lattice=lattice)

    # basic properties --------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.coords.shape[0]

    @property
    def dim(self) -> int:
        return self.coords.shape[1]

    @property
    def device(self) -> torch.device:
        return self.coords.device

    @property
    def dtype(self) -> torch.dtype:
        return self.coords.dtype

    @property
    def volume(self) -> float:
        return math.prod(hi - lo for lo, hi in self.bounds)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        kind = f"lattice {self.lattice.shape}" if self.lattice is not None else self.order
        return f"PointSet(n={self.n}, d={self.dim}, {kind}, device={self.device})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the cache entries tied to other point sets (they are rebuilt on demand)."""
        linked = {key for _, keys in self._links.values() for key in keys}
        return {**self.__dict__, "_cache": {k: v for k, v in self._cache.items() if k not in linked}, "_links": {}}

    def to(self, device=None, dtype: torch.dtype | None = None) -> PointSet:
        """A copy on ``device`` / in ``dtype`` (caches are not carried over)."""
        coords = self.coords.to(device=device, dtype=dtype)
        if coords is self.coords:
            return self
        return PointSet(coords, self.weights.to(device=coords.device, dtype=coords.dtype),
                        bounds=self.bounds, lattice=self.lattice, order=self.order)

    def cached(self, key, build: Callable[[], Any]) -> Any:
        """``build()`` the first time ``key`` is asked for, the stored result afterwards.

        Args:
            key: hashable; a tuple key may hold other point sets (the query set of a
                neighbour graph, the source of a resampling plan). Those are stored by
                ``uid``, not kept alive, and the entry is dropped when any of them is
                garbage collected, so a stream of fresh query sets against one point set
                leaves its cache bounded.
            build: computes the value.
        """
        others = [k for k in key if isinstance(k, PointSet) and k is not self] if isinstance(key, tuple) else []
        if isinstance(key, tuple):
            key = tuple(("PointSet", k.uid) if isinstance(k, PointSet) else k for k in key)
        value = self._cache.get(key, _MISSING)  # one lookup: a link may drop entries at any time
        if value is _MISSING:
            value = self._cache[key] = build()
            for other in others:
                self._link(other, key)
        return value

    def _link(self, other: PointSet, key) -> None:
        """Drop the cache entry ``key`` when ``other`` is garbage collected.

        The weak reference to ``other`` lives in this point set, so it (and its callback)
        dies with it: neither point set keeps the other, nor its cache, alive.
        """
        link = self._links.get(other.uid)
        if link is None:
            link = self._links[other.uid] = (weakref.ref(other, functools.partial(_unlink, weakref.ref(self), other.uid)),
                                             [])
        link[1].append(key)

    # derived point sets (memoised) -------------------------------------------------
    def subset(self, index: Tensor, *, weights: Tensor | None = None, bounds=None,
               lattice: Lattice | None = None, order: str | None = None) -> PointSet:
        """The points ``coords[index]`` as a child point set (not memoised).

        Args:
            index: Tensor[M], positions of the kept points in this point set.
            weights: Tensor[M], their weights (default: their weights here).
            bounds: the child's domain (default: this one's).
            lattice: the lattice the kept points form, in C order, if any.
            order: the child's order (no inference); default ``"lattice"`` with a
                ``lattice``, ``"nested"`` for an ascending ``index`` into a nested point set
                (a subsequence of a nested sequence, like the points ``restrict`` keeps),
                otherwise ``"unordered"``.
        """
        index = index.to(self.device)
        if order is None and lattice is None:
            ascending = index.numel() < 2 or bool((index.diff() > 0).all())
            order = "nested" if self.order == "nested" and ascending else "unordered"
        return PointSet(self.coords[index], self.weights[index] if weights is None else weights,
                        bounds=self.bounds if bounds is None else bounds, lattice=lattice, order=order,
                        parent=self, parent_index=index)

    def _order_error(self, action: str) -> ValueError:
        """Why ``action`` (keeping a prefix) is wrong for this point set's order, and what to do."""
        if self.order == "lattice":
            return ValueError(f"{self} cannot {action}: a prefix of a lattice in C order is its first rows, not a "
                              "subsample; downsample(factor) keeps a sub-lattice")
        return ValueError(f"{self} cannot {action}: its order is 'unordered' (e.g. grid points in another scan "
                          "order than C order, permuted or with holes), so a prefix covers one part of the domain "
                          "(the first rows of an image), not a subsample of all of it. Build grid points with "
                          "PointSet.grid(shape) or pass lattice= (strided layers then keep sub-lattices), or pass "
                          "order='nested' if every prefix of the points is spread over the whole domain (Sobol, "
                          "Halton, random order)")

    def prefix(self, m: int) -> PointSet:
        """The first ``m`` points, a nested point set; weights rescaled so the total measure is unchanged.

        Raises:
            ValueError: ``m`` is not in ``[1, N]``, or the order is not ``"nested"``.
        """
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= self.n:
            raise ValueError(f"prefix length must be in [1, {self.n}], got {m}")
        if self.order != "nested":
            raise self._order_error(f"give a prefix of {m} points")

        def build():
            w = self.weights[:m]
            return self.subset(torch.arange(m, device=self.device), weights=w * (self.weights.sum() / w.sum()),
                               order="nested")
        return self.cached(("prefix", m), build)

    def downsample(self, factor: int | Sequence[int]) -> PointSet:
        """Keep one point in ``prod(factor)``.

        A lattice keeps every ``factor[k]``-th point along axis ``k`` starting from the
        first (the points a strided discrete layer outputs); nested (QMC) points keep
        the prefix of ``ceil(N / prod(factor))`` points, itself low-discrepancy.

        Raises:
            ValueError: a bad ``factor``, or an ``"unordered"`` point set (no prefix and
                no sub-lattice of it is a subsample).
        """
        factor = tuple(factor) if isinstance(factor, Sequence) else (int(factor),) * self.dim
        if len(factor) != self.dim or any(f < 1 for f in factor):
            raise ValueError(f"downsampling factor must be {self.dim} positive integers, got {factor}")
        if all(f == 1 for f in factor):
            return self
        if self.lattice is None:
            if self.order != "nested":
                raise self._order_error(f"be downsampled by {factor}")
            return self.prefix(math.ceil(self.n / math.prod(factor)))

        def build():
            lattice, index = self.lattice.sub((0,) * self.dim, factor, self.lattice.shape)
            return self.subset(index, weights=self.weights[index.to(self.device)] * math.prod(factor),
                               lattice=lattice)
        return self.cached(("downsample", factor), build)

    def restrict(self, bounds) -> PointSet:
        """The points inside a smaller box domain (boundary points included).

        Used by unpadded layers: the domain shrinks and the points outside it drop out.
        """
        bounds = _as_bounds(bounds, self.dim)

        def build():
            lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64, device=self.device)
            hi = torch.tensor([b[1] for b in bounds], dtype=torch.float64, device=self.device)
            extent = torch.tensor([b[1] - b[0] for b in self.bounds], dtype=torch.float64, device=self.device)
            tol = BOUNDARY_TOL * torch.maximum(hi - lo, extent)
            x = self.coords.double()
            inside = ((x >= lo - tol) & (x <= hi + tol)).all(-1)
            if not bool(inside.any()):
                raise ValueError(f"no point of {self} lies in the domain {bounds}")
            if self.lattice is None:
                return self.subset(inside.nonzero().squeeze(-1), bounds=bounds)
            start, stop = [], []
            for k, (o, h, n) in enumerate(zip(self.lattice.origin, self.lattice.step, self.lattice.shape)):
                idx = o + h * torch.arange(n, dtype=torch.float64)
                ok = ((idx >= lo[k].item() - tol[k].item()) & (idx <= hi[k].item() + tol[k].item())).nonzero()
                start.append(int(ok.min()))
                stop.append(int(ok.max()) + 1)
            lattice, index = self.lattice.sub(start, (1,) * self.dim, stop)
            return self.subset(index, bounds=bounds, lattice=lattice)
        return self.cached(("restrict", bounds), build)


def check_same_points(a: PointSet, b: PointSet, what: str = "inputs") -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` are the same points (same object, or equal)."""
    if a is b:
        return
    if a.n != b.n or a.dim != b.dim or a.device != b.device or not torch.equal(a.coords, b.coords.to(a.dtype)):
        raise ValueError(f"{what} live on different point sets: {a} and {b}; resample or "
                         "downsample/upsample one branch so both use the same points")


class Field:
    """A batch of functions sampled on one [`PointSet`][inrnet.field.PointSet].

    Args:
        values: Tensor[B, N, C], the values of ``B`` functions with ``C`` channels.
        points: the ``N`` points they are sampled at.
    """

    __slots__ = ("values", "points")

    def __init__(self, values: Tensor, points: PointSet):
        if not isinstance(points, PointSet):
            raise TypeError(f"points must be a PointSet, got {type(points).__name__}")
        if not isinstance(values, Tensor) or values.dim() != 3 or values.shape[1] != points.n:
            raise ValueError(f"values must be Tensor[B, N={points.n}, C] for {points}, "
                             f"got {tuple(getattr(values, 'shape', ()))}")
        if values.device != points.device:
            raise ValueError(f"values are on {values.device} but points are on {points.device}")
        self.values = values
        self.points = points

    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    @property
    def channels(self) -> int:
        return self.values.shape[2]

    @property
    def coords(self) -> Tensor:
        return self.points.coords

    def __repr__(self) -> str:
        return f"Field(B={self.batch_size}, C={self.channels}, points={self.points})"

    def replace(self, values: Tensor) -> Field:
        """The same points with new ``values`` (Tensor[B, N, C'])."""
        return Field(values, self.points)

    def to(self, device=None, dtype: torch.dtype | None = None) -> Field:
        points = self.points.to(device, dtype)
        return Field(self.values.to(device=points.device, dtype=dtype or self.values.dtype), points)

    def check_channels(self, expected: int, layer: str = "layer") -> None:
        """Raise ``ValueError`` unless the field has ``expected`` channels."""
        if self.channels != expected:
            raise ValueError(f"{layer} expects {expected} input channels, got a field with values "
                             f"{tuple(self.values.shape)} ([B, N, C])")


def check_field(field, layer: str, channels: int | None = None, *, module: torch.nn.Module | None = None,
                match_dtype: bool = False) -> Field:
    """Check a layer's input at its boundary.

    Args:
        field: the input, a [`Field`][inrnet.field.Field] with values Tensor[B, N, C].
        layer: the layer's name, used in the messages.
        channels: the ``C`` it must have (``None``: any).
        module: the layer: its input must then hold floating-point values on the device of
            its parameters and buffers.
        match_dtype: (with ``module``) the values must also have the dtype of its
            floating-point parameters, for layers whose maths does not cast them (not
            checked under ``torch.autocast``, which casts both).

    Returns:
        ``field``, unchanged.

    Raises:
        TypeError: ``field`` is not a Field, or its values have the wrong dtype.
        ValueError: it has other than ``channels`` channels, or lives on another device.
    """
    if not isinstance(field, Field):
        raise TypeError(f"{layer} expects a Field, got {type(field).__name__}")
    if channels is not None:
        field.check_channels(channels, layer)
    if module is None:
        return field
    values = field.values
    if not values.is_floating_point():
        raise TypeError(f"{layer} needs floating-point values, got a field of {values.dtype} values "
                        f"{tuple(values.shape)} ([B, N, C]); convert them with field.to(dtype=torch.float32)")
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    if tensor is not None and tensor.device != values.device:
        raise ValueError(f"{layer} is on {tensor.device} but the field's values are on {values.device}; move the "
                         f"layer with .to({str(values.device)!r}) or the field with .to({str(tensor.device)!r})")
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    if (match_dtype and weight is not None and weight.dtype != values.dtype
            and not torch.is_autocast_enabled(values.device.type)):
        raise TypeError(f"{layer} has {weight.dtype} parameters but the field's values are {values.dtype}; "
                        f"convert the layer with .to({values.dtype}) or the field with .to(dtype={weight.dtype})")
    return field
