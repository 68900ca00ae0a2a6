"""``Sampler``: the point set for each training or evaluation step."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inrnet.field import PointSet
from inrnet.sampling import points as _points

__all__ = ["Sampler", "SCHEMES"]

SCHEMES = ("sobol", "halton", "grid", "shrunk", "mc")
_DRAW = {"sobol": _points.sobol, "halton": _points.halton, "shrunk": _points.shrunk, "mc": _points.uniform}


class Sampler:
    """Draws the :class:`~inrnet.field.PointSet` an INR-Net sees at each step.

    Args:
        scheme: ``"sobol"`` (scrambled Sobol, the default), ``"halton"``, ``"grid"``
            (cell centres of ``shape``), ``"shrunk"`` (Sobol with ``x -> x|x|``) or
            ``"mc"`` (uniform Monte Carlo).
        n: number of points (ignored for ``"grid"``).
        dim: coordinate dimension (ignored for ``"grid"``).
        shape: the grid shape, for ``"grid"``.
        seed: base seed; the same seed gives the same sequence of point sets.
        rescramble: draw a fresh scramble at every call (training); if False every call
            returns the same :class:`PointSet` object, so its neighbour caches are reused
            (evaluation). A grid never changes.
    """

    def __init__(self, scheme: str = "sobol", n: int = 1024, dim: int = 2, *, shape: Sequence[int] | None = None,
                 seed: int = 0, rescramble: bool = True, dtype: torch.dtype = torch.float32, device=None):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown sampling scheme {scheme!r}; choose one of {SCHEMES}")
        if scheme == "grid":
            if shape is None:
                raise ValueError("the 'grid' scheme needs a shape, e.g. shape=(28, 28)")
            shape = _points._check_shape(shape)
            n, dim = int(torch.tensor(shape).prod()), len(shape)
        _points.check_count(n, dim)
        self.scheme, self.n, self.dim, self.shape = scheme, n, dim, shape
        self.seed, self.rescramble, self.dtype, self.device = seed, rescramble, dtype, device
        self._calls = 0
        self._fixed: PointSet | None = None

    def __repr__(self) -> str:
        size = f"shape={self.shape}" if self.scheme == "grid" else f"n={self.n}, dim={self.dim}"
        return f"Sampler({self.scheme!r}, {size}, seed={self.seed}, rescramble={self.rescramble})"

    def draw(self, seed: int) -> PointSet:
        """The point set for one explicit ``seed`` (uncached)."""
        if self.scheme == "grid":
            return PointSet.grid(self.shape, dtype=self.dtype, device=self.device)
        return PointSet(_DRAW[self.scheme](self.n, self.dim, seed=seed, dtype=self.dtype, device=self.device))

    def __call__(self) -> PointSet:
        if self.scheme == "grid" or not self.rescramble:
            if self._fixed is None:
                self._fixed = self.draw(self.seed)
            return self._fixed
        self._calls += 1
        return self.draw(self.seed * 1_000_003 + self._calls)
