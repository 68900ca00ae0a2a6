"""Point sets on the box domain ``[-1, 1]^d``.

Every generator here returns a ``Tensor[n, d]`` of coordinates. Coordinate ``k`` always
belongs to tensor axis ``k`` of a spatial array (``ij`` indexing: for an image ``[H, W]``,
coordinate 0 runs down the rows, coordinate 1 along the columns), and a grid point is
the *centre* of its cell: along an axis of ``n`` cells the centres are
``-1 + (2 i + 1) / n`` for ``i = 0 .. n-1``. [`grid`][inrnet.sampling.points.grid] lists them in the order of
``tensor.flatten()``. Every other part of inrnet (``PixelINR``, the converter, plots)
uses this convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import qmc
from torch import Tensor

from inrnet._limits import check_count, check_shape, total_memory
from inrnet.field import Lattice

__all__ = ["sobol", "halton", "grid", "grid_axes", "shrunk", "uniform", "check_count", "total_memory"]


def _seed(seed: int | None) -> int:
    """``seed`` itself, or fresh OS entropy (the global RNGs are left alone)."""
    return int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**62)


def _generator(seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(seed))


def sobol(n: int, dim: int = 2, *, seed: int | None = None,
          dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The first ``n`` points of a scrambled Sobol sequence in ``[-1, 1]^dim``.

    The sequence depends only on ``seed`` (``None``: a fresh scramble), so
    ``sobol(m, d, seed=s)`` is a prefix of ``sobol(n, d, seed=s)`` for ``m <= n``: the
    property multi-scale INR-Nets rely on. Powers of two give the best balance.

    Returns:
        Tensor[n, dim].
    """
    check_count(n, dim, dtype=dtype, device=device)
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=_seed(seed))
    u = engine.draw(n, dtype=torch.float64)  # (n, dim) in [0, 1)
    return (2.0 * u - 1.0).to(dtype=dtype, device=device)


def halton(n: int, dim: int = 2, *, seed: int | None = None,
           dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The first ``n`` points of a scrambled Halton sequence in ``[-1, 1]^dim``.

    Returns:
        Tensor[n, dim].
    """
    check_count(n, dim, dtype=dtype, device=device)
    rng = np.random.default_rng(None if seed is None else int(seed))
    u = qmc.Halton(d=dim, scramble=True, rng=rng).random(n)  # (n, dim)
    return torch.as_tensor(2.0 * u - 1.0, dtype=dtype, device=device)


def uniform(n: int, dim: int = 2, *, seed: int | None = None,
            dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """``n`` i.i.d. uniform (plain Monte Carlo) points in ``[-1, 1]^dim``.

    Returns:
        Tensor[n, dim].
    """
    check_count(n, dim, dtype=dtype, device=device)
    u = torch.rand(n, dim, generator=_generator(seed), dtype=torch.float64)
    return (2.0 * u - 1.0).to(dtype=dtype, device=device)


def shrunk(n: int, dim: int = 2, *, seed: int | None = None,
           dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Scrambled Sobol points pulled towards the centre, ``x -> x |x|`` per coordinate.

    The "shrunk" high-discrepancy scheme of the paper's App. E.1: denser near the centre
    of the image, where the object usually is.

    Returns:
        Tensor[n, dim].
    """
    check_count(n, dim, dtype=dtype, device=device)
    x = sobol(n, dim, seed=seed, dtype=torch.float64)
    return (x * x.abs()).to(dtype=dtype, device=device)


def grid_axes(shape: Sequence[int] | int, *, dtype: torch.dtype = torch.float32,
              device=None) -> list[Tensor]:
    """The cell-centre coordinates along each axis of [`grid`][inrnet.sampling.points.grid].

    Returns:
        One ``Tensor[shape[k]]`` per axis ``k``: ``-1 + (2 i + 1) / shape[k]``.
    """
    shape = check_shape(shape)
    return [Lattice.grid((s,)).coords(dtype, device)[:, 0] for s in shape]


def grid(shape: Sequence[int] | int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Centres of the cells of a tensor with spatial ``shape``, in ``[-1, 1]^d``.

    Row ``r`` of the result is the centre of the cell that ``tensor.flatten()[r]`` holds
    (C order), and coordinate ``k`` belongs to tensor axis ``k``.

    Example:
        >>> grid((2, 3))[:, 0]   # axis 0 (rows) varies slowest
        tensor([-0.5000, -0.5000, -0.5000,  0.5000,  0.5000,  0.5000])

    Returns:
        Tensor[prod(shape), len(shape)].

    Raises:
        ValueError: a bad shape, or one whose points do not fit in memory (checked before
            allocating, see [`check_count`][inrnet.sampling.points.check_count]).
    """
    shape = check_shape(shape)
    check_count(math.prod(shape), len(shape), dtype=dtype, device=device)
    return Lattice.grid(shape).coords(dtype, device)  # the one home of the cell-centre formula

