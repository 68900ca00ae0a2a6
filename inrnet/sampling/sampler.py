"""``Sampler``: the point set for each training or evaluation step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from inrnet._limits import check_count, check_shape
from inrnet.field import PointSet
from inrnet.sampling import points as _points

__all__ = ["Sampler", "MixedSampler", "SCHEMES"]

SCHEMES = ("sobol", "halton", "grid", "shrunk", "mc")
_DRAW = {"sobol": _points.sobol, "halton": _points.halton, "shrunk": _points.shrunk, "mc": _points.uniform}


class Sampler:
    """Draws the [`PointSet`][inrnet.field.PointSet] an INR-Net sees at each step.

    Args:
        scheme: ``"sobol"`` (scrambled Sobol, the default), ``"halton"``, ``"grid"``
            (cell centres of ``shape``), ``"shrunk"`` (Sobol with ``x -> x|x|``) or
            ``"mc"`` (uniform Monte Carlo).
        n: number of points (ignored for ``"grid"``), or a range ``(lo, hi)``: mixed-density
            sampling, where each rescrambled call draws its own count, log-uniformly in
            ``[lo, hi]`` (a function of ``seed`` and the call, like the scramble), so one
            network is trained across point densities. Needs ``rescramble=True``.
        dim: coordinate dimension (ignored for ``"grid"``).
        shape: the grid shape, for ``"grid"``.
        seed: base seed; the same seed gives the same sequence of point sets.
        rescramble: draw a fresh scramble at every call (training); if False every call
            returns the same [`PointSet`][inrnet.field.PointSet] object, so its neighbour caches are reused
            (evaluation). A grid never changes.
    """

    def __init__(self, scheme: str = "sobol", n: int | Sequence[int] = 1024, dim: int = 2, *,
                 shape: Sequence[int] | None = None, seed: int = 0, rescramble: bool = True,
                 dtype: torch.dtype = torch.float32, device=None):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown sampling scheme {scheme!r}; choose one of {SCHEMES}")
        self.n_range: tuple[int, int] | None = None
        if scheme != "grid" and isinstance(n, Sequence):
            lo, hi = _count_range(n)
            if lo != hi and not rescramble:
                raise ValueError(f"a point-count range {n!r} draws a new count at every call; a fixed "
                                 "(rescramble=False) sampler needs one count")
            self.n_range, n = (lo, hi), hi
        if scheme == "grid":
            if shape is None:
                raise ValueError("the 'grid' scheme needs a shape, e.g. shape=(28, 28)")
            shape = check_shape(shape)
            n, dim = math.prod(shape), len(shape)
        check_count(n, dim, dtype=dtype, device=device)
        self.scheme, self.n, self.dim, self.shape = scheme, n, dim, shape
        self.seed, self.rescramble, self.dtype, self.device = seed, rescramble, dtype, device
        self._calls = 0
        self._fixed: PointSet | None = None

    def __repr__(self) -> str:
        count = self.n if self.n_range is None else self.n_range
        size = f"shape={self.shape}" if self.scheme == "grid" else f"n={count}, dim={self.dim}"
        return f"Sampler({self.scheme!r}, {size}, seed={self.seed}, rescramble={self.rescramble})"

    def count(self, seed: int) -> int:
        """The number of points drawn for ``seed``: ``n``, or for a range ``(lo, hi)`` a
        log-uniform integer in ``[lo, hi]`` that depends only on ``seed``."""
        if self.n_range is None or self.n_range[0] == self.n_range[1]:
            return self.n
        lo, hi = self.n_range
        u = torch.rand((), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).item()
        return min(hi, max(lo, round(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))))

    def draw(self, seed: int) -> PointSet:
        """The point set for one explicit ``seed`` (uncached)."""
        if self.scheme == "grid":
            return PointSet.grid(self.shape, dtype=self.dtype, device=self.device)
        coords = _DRAW[self.scheme](self.count(seed), self.dim, seed=seed, dtype=self.dtype, device=self.device)
        return PointSet(coords, order="nested")

    def __call__(self) -> PointSet:
        if self.scheme == "grid" or not self.rescramble:
            if self._fixed is None:
                self._fixed = self.draw(self.seed)
            return self._fixed
        self._calls += 1
        return self.draw(self.seed * 1_000_003 + self._calls)

    def state_dict(self) -> dict[str, int]:
        """What picks the next point sets: ``{"calls": c}``, the rescrambling calls made so far.

        Call ``c + 1`` draws the scramble of seed ``seed * 1_000_003 + c + 1``; fixed and
        grid samplers never count.
        """
        return {"calls": self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the sequence of point sets where a `state_dict()` left it.

        Args:
            state: ``{"calls": c}``, with ``c`` a non-negative integer.

        Raises:
            ValueError: ``state`` is not such a dict.
        """
        self._calls = _calls_of(state, "Sampler")


class MixedSampler:
    """A training sampler that draws each step's points from one of several samplers.

    Call ``c`` picks one of ``samplers`` with equal probability (a function of ``seed`` and
    ``c`` only, like a scramble) and returns its point set: a fresh draw of a rescrambling
    sampler (for seed ``seed * 1_000_003 + c``), or a grid's one fixed
    [`PointSet`][inrnet.field.PointSet], so the grid's neighbour caches are reused whenever it comes up. A
    network trained on ``grid:64x64|sobol:4096-16384`` (see
    [`parse_sampler`][inrnet.lightning.data.parse_sampler]) sees both the pixel lattice and
    scattered points of mixed density.

    Args:
        samplers: at least two samplers of one coordinate dimension, each a grid or a
            rescrambling sampler (a fixed scramble would be one point set over and over:
            use a grid for that).
        seed: base seed of the choices and the scrambles.

    Raises:
        ValueError: fewer than two samplers, mixed dimensions, or a fixed scattered sampler.
    """

    def __init__(self, samplers: Sequence[Sampler], *, seed: int = 0):
        samplers = tuple(samplers)
        if len(samplers) < 2 or not all(isinstance(s, Sampler) for s in samplers):
            raise ValueError(f"a MixedSampler mixes at least two Samplers, got {samplers!r}")
        dims = {s.dim for s in samplers}
        if len(dims) != 1:
            raise ValueError(f"the mixed samplers must share one coordinate dimension, got {sorted(dims)} "
                             f"({samplers!r})")
        fixed = [s for s in samplers if s.scheme != "grid" and not s.rescramble]
        if fixed:
            raise ValueError(f"a MixedSampler's scattered samplers must rescramble (rescramble=True), got {fixed!r}")
        self.samplers, self.seed, self.dim = samplers, seed, dims.pop()
        self.rescramble = True
        self._calls = 0

    def __repr__(self) -> str:
        return f"MixedSampler({list(self.samplers)!r}, seed={self.seed})"

    def choice(self, seed: int) -> int:
        """Which sampler the call of ``seed`` draws from: an index, uniform, a function of ``seed`` only."""
        gen = torch.Generator().manual_seed(seed + 7_919)  # not the count's stream of the same seed
        return int(torch.randint(len(self.samplers), (), generator=gen))

    def draw(self, seed: int) -> PointSet:
        """The point set for one explicit ``seed``: sampler ``choice(seed)``'s (a grid's fixed one)."""
        sampler = self.samplers[self.choice(seed)]
        return sampler() if sampler.scheme == "grid" else sampler.draw(seed)

    def __call__(self) -> PointSet:
        self._calls += 1
        return self.draw(self.seed * 1_000_003 + self._calls)

    def state_dict(self) -> dict[str, int]:
        """``{"calls": c}``, the calls made so far (see [`Sampler.state_dict`][inrnet.sampling.sampler.Sampler.state_dict])."""
        return {"calls": self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue where a `state_dict()` left off.

        Raises:
            ValueError: ``state`` is not ``{"calls": non-negative int}``.
        """
        self._calls = _calls_of(state, "MixedSampler")


def _calls_of(state: dict[str, int], what: str) -> int:
    """The call count of a sampler state ``{"calls": c}``, checked: a non-negative integer."""
    calls = state.get("calls") if isinstance(state, dict) else None
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
        raise ValueError(f"a {what} state is {{'calls': non-negative int}}, got {state!r}")
    return calls


def _count_range(n: Sequence[int]) -> tuple[int, int]:
    """``(lo, hi)`` from a point-count range, checked: two integers ``1 <= lo <= hi``."""
    values = tuple(n)
    if (len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
            or not 1 <= values[0] <= values[1]):
        raise ValueError(f"a point-count range is two integers (lo, hi) with 1 <= lo <= hi, got {n!r}")
    return values
