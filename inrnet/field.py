"""``PointSet`` and ``Field``: the data every INR-Net layer passes along.

A :class:`PointSet` is one set of sample points shared by a whole minibatch: coordinates
``[N, d]``, quadrature weights ``[N]`` (the Lebesgue measure each point stands for:
``volume / N`` for scattered points, the cell ``prod(step)`` for a lattice, so a discrete
sum over pixels is exactly a quadrature; they sum to the domain's volume wherever the
points tile the domain), the box ``bounds`` of its domain and,
when the points are a regular lattice, that lattice. It is data, not layer state: the
point sets derived from it (a prefix for downsampling, a sub-lattice for a strided layer,
a shrunk domain for an unpadded convolution) and the neighbour graphs layers ask for are
memoised on it, so every layer that needs the same thing gets the same object and every
neighbour search runs once per point set, query set and support.

A :class:`Field` is a batch of functions sampled on one point set: ``values [B, N, C]``
plus its ``points``. It is a thin typed wrapper (not a Tensor subclass); layers check
points and channels at their boundary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Lattice", "PointSet", "Field", "check_same_points"]

_uids = itertools.count()

#: Relative slack with which a point on a domain boundary still counts as inside.
BOUNDARY_TOL = 1e-6


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
        """Tensor[prod(shape), d], in C order."""
        axes = [o + s * torch.arange(n, dtype=torch.float64) for o, s, n in zip(self.origin, self.step, self.shape)]
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


def _as_bounds(bounds, dim: int) -> tuple[tuple[float, float], ...]:
    if bounds is None:
        return ((-1.0, 1.0),) * dim
    b = torch.as_tensor(bounds, dtype=torch.float64).reshape(-1, 2)
    if b.shape[0] != dim or not bool((b[:, 1] >= b[:, 0]).all()):
        raise ValueError(f"bounds must be {dim} pairs (lo, hi) with lo <= hi, got {bounds!r}")
    return tuple((float(lo), float(hi)) for lo, hi in b.tolist())


class PointSet:
    """Sample points shared by a minibatch of INRs.

    Args:
        coords: Tensor[N, d], finite floating-point coordinates.
        weights: Tensor[N], positive quadrature weights; default ``volume / N``.
        bounds: the domain box, ``d`` pairs ``(lo, hi)``; default ``[-1, 1]^d``.
        lattice: the :class:`Lattice` the points form, if any (enables exact strided
            layers and nearest-neighbour upsampling with the discrete tie rule).
        parent: the point set this one was derived from, and ``parent_index``
            (Tensor[N]) the positions of these points in it.
    """

    def __init__(self, coords: Tensor, weights: Tensor | None = None, *, bounds=None,
                 lattice: Lattice | None = None, parent: PointSet | None = None,
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
        if weights is None:
            weights = torch.full((n,), self.volume / n, dtype=coords.dtype, device=coords.device)
        elif weights.shape != (n,) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be a positive Tensor[{n}], got {tuple(weights.shape)}")
        self.weights = weights.to(coords)
        if lattice is not None and lattice.size != n:
            raise ValueError(f"lattice of shape {lattice.shape} has {lattice.size} points, coords have {n}")
        self.lattice = lattice
        self.parent = parent
        self.parent_index = parent_index
        self.uid = next(_uids)
        self._cache: dict[Any, Any] = {}

    # construction ------------------------------------------------------------------
    @classmethod
    def grid(cls, shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device=None) -> PointSet:
        """The cell centres of ``inrnet.sampling.grid(shape)``, as a lattice point set."""
        from inrnet.sampling.points import _check_shape, grid
        shape = _check_shape(shape)
        return cls(grid(shape, dtype=dtype, device=device), lattice=Lattice.grid(shape))

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
        kind = f"lattice {self.lattice.shape}" if self.lattice is not None else "scattered"
        return f"PointSet(n={self.n}, d={self.dim}, {kind}, device={self.device})"

    def to(self, device=None, dtype: torch.dtype | None = None) -> PointSet:
        """A copy on ``device`` / in ``dtype`` (caches are not carried over)."""
        coords = self.coords.to(device=device, dtype=dtype)
        if coords is self.coords:
            return self
        return PointSet(coords, self.weights.to(device=coords.device, dtype=coords.dtype),
                        bounds=self.bounds, lattice=self.lattice)

    def cached(self, key, build: Callable[[], Any]) -> Any:
        """``build()`` the first time ``key`` is asked for, the stored result afterwards."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # derived point sets (memoised) -------------------------------------------------
    def subset(self, index: Tensor, *, weights: Tensor | None = None, bounds=None,
               lattice: Lattice | None = None) -> PointSet:
        """The points ``coords[index]`` as a child point set (not memoised)."""
        index = index.to(self.device)
        return PointSet(self.coords[index], self.weights[index] if weights is None else weights,
                        bounds=self.bounds if bounds is None else bounds, lattice=lattice,
                        parent=self, parent_index=index)

    def prefix(self, m: int) -> PointSet:
        """The first ``m`` points; weights rescaled so the total measure is unchanged."""
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= self.n:
            raise ValueError(f"prefix length must be in [1, {self.n}], got {m}")

        def build():
            w = self.weights[:m]
            return self.subset(torch.arange(m, device=self.device), weights=w * (self.weights.sum() / w.sum()))
        return self.cached(("prefix", m), build)

    def downsample(self, factor: int | Sequence[int]) -> PointSet:
        """Keep one point in ``prod(factor)``.

        A lattice keeps every ``factor[k]``-th point along axis ``k`` starting from the
        first (the points a strided discrete layer outputs); scattered (QMC) points keep
        the prefix of ``ceil(N / prod(factor))`` points, itself low-discrepancy.
        """
        factor = tuple(factor) if isinstance(factor, Sequence) else (int(factor),) * self.dim
        if len(factor) != self.dim or any(f < 1 for f in factor):
            raise ValueError(f"downsampling factor must be {self.dim} positive integers, got {factor}")
        if all(f == 1 for f in factor):
            return self
        if self.lattice is None:
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
    """A batch of functions sampled on one :class:`PointSet`.

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
