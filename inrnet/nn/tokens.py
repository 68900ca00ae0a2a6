"""Tokenization (paper App. C): one embedding per box of an equal-measure partition.

The domain box ``Omega = prod_k [lo_k, hi_k]`` (the point set's ``bounds``) is cut into
``grid[0] x .. x grid[d-1]`` equal boxes ``omega_j``, numbered in C order (axis 0
slowest, the order of ``Tensor.flatten()`` on a ``grid``-shaped array). A point exactly
on a face between two boxes belongs to the *lower* box (the one with the smaller index
along that axis; decided in float64), and points on or beyond the domain's faces belong
to the outermost box.

Each channel restricted to a box, ``f_i|omega_j``, is embedded by its moments against
the Legendre basis local to ``omega_j`` (total degree ``<= degree``), orthonormal for
the *normalised* measure ``dx / |omega_j|`` (so the constant is 1 and its moment is the
mean of ``f_i`` over the box):

    m_{j,i,a} = sum_{x_n in omega_j} w_n f_i(x_n) phi_{j,a}(x_n) / sum_{x_n in omega_j} w_n,

a self-normalised QMC estimate of ``(1 / |omega_j|) int_{omega_j} f_i phi_{j,a} dx``
(exact box means on a grid whose shape is a multiple of ``grid``). A learned linear map
from the ``C * n_basis`` moments (feature ``i * n_basis + a``) gives the token.
With ``degree=0`` the token is a linear map of the box means: on such a grid that is
a strided patch-embedding convolution whose weights are constant over each patch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet, check_field
from inrnet.nn.parametric import legendre_products, multi_indices

__all__ = ["box_partition", "token_moments", "Tokenize"]


def _check_grid(grid: Sequence[int] | int, dim: int) -> tuple[int, ...]:
    grid = (int(grid),) * dim if isinstance(grid, int) else tuple(int(g) for g in grid)
    if len(grid) != dim or any(g < 1 for g in grid):
        raise ValueError(f"the token grid must be {dim} positive integers for {dim}-d points, got {grid}")
    return grid


def box_partition(coords: Tensor, bounds, grid: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The box of each point and its local coordinates in that box.

    Args:
        coords (Tensor[N, d]): points.
        bounds: the domain box, ``d`` pairs ``(lo, hi)``.
        grid: boxes per axis.

    Returns:
        ``box`` (Tensor[N], long): the C-order box index (faces go to the lower box).
        ``t`` (Tensor[N, d]): the point's coordinates rescaled so its box is ``[-1, 1]^d``.
    """
    grid = _check_grid(grid, coords.shape[1])
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64, device=coords.device)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float64, device=coords.device)
    n = torch.tensor(grid, dtype=torch.float64, device=coords.device)
    u = (coords.double() - lo) / (hi - lo) * n  # (N, d): box units
    cell = (torch.ceil(u) - 1).clamp(min=torch.zeros_like(n), max=n - 1)  # (N, d): face -> lower box
    box = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
    for k in range(coords.shape[1]):
        box = box * grid[k] + cell[:, k].long()
    return box, (2.0 * (u - cell) - 1.0).to(coords.dtype)


def _token_weights(points: PointSet, grid: tuple[int, ...], degree: int) -> tuple[Tensor, Tensor]:
    """``box [N]`` and ``a [N, n_basis] = w_n phi_{j,a}(x_n) / W_j``, memoised on the point set."""

    def build():
        box, t = box_partition(points.coords, points.bounds, grid)
        n_boxes = math.prod(grid)
        mass = torch.zeros(n_boxes, dtype=points.dtype, device=points.device).index_add_(0, box, points.weights)
        if not bool((mass > 0).all()):
            empty = int((mass == 0).sum())
            raise ValueError(f"{empty} of the {n_boxes} token boxes {grid} contain no point of {points}; "
                             "use more points or a coarser token grid")
        phi = legendre_products(t, multi_indices(degree, points.dim).to(points.device))  # (N, n_basis)
        return box, phi * (points.weights / mass[box])[:, None]
    return points.cached(("tokens", grid, degree), build)


def token_moments(values: Tensor, points: PointSet, grid: Sequence[int], degree: int = 0) -> Tensor:
    """The local Legendre moments ``m_{j,i,a}`` of every channel on every box.

    Args:
        values (Tensor[B, N, C]): the field.
        points: its ``N`` points.
        grid: boxes per axis (``T = prod(grid)`` tokens).
        degree: total degree of the local basis (0: box means, the adaptive average pool).

    Returns:
        Tensor[B, T, C, n_basis], boxes in C order, basis in [`multi_indices`][inrnet.nn.parametric.multi_indices] order.
    """
    if values.dim() != 3 or values.shape[1] != points.n:
        raise ValueError(f"values {tuple(values.shape)} must be [B, N={points.n}, C] for {points}")
    grid = _check_grid(grid, points.dim)
    box, a = _token_weights(points, grid, degree)
    a = a.to(values)
    zeros = values.new_zeros(values.shape[0], math.prod(grid), values.shape[2])  # (B, T, C)
    return torch.stack([zeros.index_add(1, box, values * a[:, k, None]) for k in range(a.shape[1])],
                       dim=-1)  # (B, T, C, n_basis)


class Tokenize(nn.Module):
    """Embed each box ``omega_j`` of a ``grid`` partition into ``R^embed_dim`` (see the module docstring).

    Args:
        in_channels: ``C``.
        embed_dim: ``E``.
        grid: boxes per axis; its length is the coordinate dimension (an int: 1-d).
        degree: total degree of the local Legendre basis (``n_basis = binom(degree + d, d)``).
        bias: learn a bias in the linear map.

    Shapes:
        ``Field[B, N, C] -> Tensor[B, T, E]`` with ``T = prod(grid)`` tokens in C order.
    """

    def __init__(self, in_channels: int, embed_dim: int, grid: Sequence[int] = (4, 4), degree: int = 1,
                 bias: bool = True):
        super().__init__()
        self.grid = _check_grid(grid, len(grid) if not isinstance(grid, int) else 1)
        self.in_channels, self.embed_dim, self.degree = in_channels, embed_dim, degree
        self.n_basis = len(multi_indices(degree, len(self.grid)))
        self.proj = nn.Linear(in_channels * self.n_basis, embed_dim, bias=bias)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def forward(self, field: Field) -> Tensor:
        check_field(field, "Tokenize", self.in_channels)
        if field.points.dim != len(self.grid):
            raise ValueError(f"Tokenize has a {len(self.grid)}-d token grid {self.grid} but the points are "
                             f"{tuple(field.coords.shape)} ([N, d])")
        m = token_moments(field.values, field.points, self.grid, self.degree)  # (B, T, C, n_basis)
        return self.proj(m.flatten(2))  # (B, T, C * n_basis) -> (B, T, E)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.embed_dim}, grid={self.grid}, degree={self.degree}"
