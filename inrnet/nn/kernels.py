"""Kernel bases on a support: cardinal B-splines, Legendre polynomials, Voronoi bins.

A *linear* kernel is a combination of a finite set of basis functions ("atoms") with
learned weights: ``K(delta) = sum_a phi_a(delta) W_a``. Each function here evaluates a
basis at pair offsets and returns only the atoms that are non-zero there, as
``(index Tensor[E, P], value Tensor[E, P])``: what a kernel's
[`ContinuousConv.expand`][inrnet.nn.conv.ContinuousConv.expand] returns, so the convolution touches nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from inrnet.neighbors import nearest
from inrnet.nn.parametric import legendre_products, multi_indices
from inrnet.sampling import sobol

__all__ = ["cardinal_bspline", "bspline_interpolation_matrix", "bspline_expansion", "legendre_expansion",
           "bin_seeds", "bin_expansion"]


def cardinal_bspline(v: Tensor, degree: int) -> Tensor:
    """The centred cardinal B-spline of ``degree`` 0-3 (support ``|v| < (degree + 1) / 2``).

    Uniform-knot closed forms of de Boor's recursion: ``B_0`` the unit box, ``B_1`` the
    hat, ``B_2`` and ``B_3`` the quadratic and cubic bells.

    Returns:
        Tensor like ``v``.
    """
    a = v.abs()
    if degree == 0:
        return ((v >= -0.5) & (v < 0.5)).to(v.dtype)
    if degree == 1:
        return (1 - a).clamp_min(0)
    if degree == 2:
        return torch.where(a <= 0.5, 0.75 - a * a, 0.5 * (1.5 - a).clamp_min(0) ** 2)
    if degree == 3:
        return torch.where(a <= 1, 2 / 3 - a * a + 0.5 * a ** 3, (2 - a).clamp_min(0) ** 3 / 6)
    raise ValueError(f"B-spline degree must be 0, 1, 2 or 3, got {degree}")


def bspline_interpolation_matrix(k: int, degree: int) -> Tensor:
    """``A[s, i] = B(s - i)``: spline values at the ``k`` taps from ``k`` control points.

    The tap weights ``w`` are reproduced by control points ``c = A^{-1} w`` (per axis).

    Returns:
        Tensor[k, k], float64.
    """
    s = torch.arange(k, dtype=torch.float64)
    return cardinal_bspline(s[:, None] - s[None, :], degree)


def bspline_expansion(u: Tensor, kernel_size: Sequence[int], degree: int) -> tuple[Tensor, Tensor]:
    """Tensor-product B-spline basis at tap coordinates ``u``.

    Args:
        u: Tensor[E, d], offsets in tap units: tap ``i`` of axis ``k`` sits at ``u_k = i``.
        kernel_size: taps (= control points) per axis.
        degree: spline degree, each axis touches ``degree + 1`` control points.

    Returns:
        ``index`` Tensor[E, (degree+1)^d] of control points (C order over the tap grid) and
        ``value`` Tensor[E, (degree+1)^d]; control points outside the grid get value 0.
    """
    e, d = u.shape
    r = torch.arange(degree + 1, device=u.device)
    first = torch.floor(u - (degree + 1) / 2).long() + 1  # (E, d)
    idx = first[:, :, None] + r  # (E, d, p+1)
    val = cardinal_bspline(u[:, :, None] - idx.to(u.dtype), degree)  # (E, d, p+1)
    ks = torch.tensor(list(kernel_size), device=u.device)
    inside = (idx >= 0) & (idx < ks[None, :, None])
    val = val * inside
    idx = idx.clamp(min=0).minimum(ks[None, :, None] - 1)
    flat = torch.zeros(e, 1, dtype=torch.long, device=u.device)
    prod = torch.ones(e, 1, dtype=u.dtype, device=u.device)
    for k in range(d):
        flat = (flat[:, :, None] * kernel_size[k] + idx[:, k, None, :]).reshape(e, -1)  # (E, (p+1)^(k+1))
        prod = (prod[:, :, None] * val[:, k, None, :]).reshape(e, -1)
    return flat, prod


def legendre_expansion(u: Tensor, degree: int) -> tuple[Tensor, Tensor]:
    """Products of Legendre polynomials of total degree ``<= degree`` on the unit support.

    Orthonormal for the uniform probability measure on ``[-1, 1]^d`` (see
    [`inrnet.nn.parametric.legendre_products`][inrnet.nn.parametric.legendre_products]).

    Args:
        u: Tensor[E, d], offsets scaled to the support box ``[-1, 1]^d``.

    Returns:
        ``index`` Tensor[E, n_basis] (every basis function, in
        [`inrnet.nn.parametric.multi_indices`][inrnet.nn.parametric.multi_indices] order) and ``value`` Tensor[E, n_basis].
    """
    value = legendre_products(u, multi_indices(degree, u.shape[1]).to(u.device))  # (E, n_basis)
    return torch.arange(value.shape[1], device=u.device).expand(u.shape[0], -1), value


def bin_seeds(n_bins: int, dim: int, shape: str, *, dtype=torch.float64, device=None) -> Tensor:
    """``n_bins`` seed points of the Voronoi partition of the unit support.

    The first points of a fixed (seed 0) scrambled Sobol sequence in ``[-1, 1]^d``; for a
    ball, the first ``n_bins`` of them inside the unit ball.

    Returns:
        Tensor[n_bins, d].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    draw = n_bins if shape == "box" else 2 ** math.ceil(math.log2(n_bins * 2 ** dim + 1))
    while True:
        pts = sobol(draw, dim, seed=0, dtype=torch.float64)
        if shape == "box":
            return pts.to(dtype=dtype, device=device)
        inside = pts[(pts * pts).sum(-1) <= 1]
        if inside.shape[0] >= n_bins:
            return inside[:n_bins].to(dtype=dtype, device=device)
        draw *= 2


def bin_expansion(u: Tensor, seeds: Tensor, chunk: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """Nearest seed of each scaled offset: the Voronoi cell it falls in.

    Args:
        u: Tensor[E, d], offsets scaled to the unit support.
        seeds: Tensor[n_bins, d].
        chunk: distances held at once where the search computes them all (see
            [`inrnet.neighbors.nearest`][inrnet.neighbors.nearest]).

    Returns:
        ``index`` Tensor[E, 1] of the bin (on a Voronoi face, the lowest-index seed) and
        ``value`` Tensor[E, 1] of ones.
    """
    index = nearest(seeds, u, chunk=chunk)  # (E,)
    return index[:, None], torch.ones(u.shape[0], 1, dtype=u.dtype, device=u.device)
