"""Parametric functions in L²(Ω) (paper App. C) and the two ways layers use them.

A parametric function ``g: R^d -> R^K`` is a module evaluated at a [`PointSet`][inrnet.field.PointSet]'s
coordinates (``Tensor[N, K]``). Two families:

* [`LegendreFunction`][inrnet.nn.parametric.LegendreFunction]: ``g(x) = sum_a c_a phi_a(x)`` over a separable basis of
  products of rescaled 1D Legendre polynomials, orthonormal in ``L²(box)`` for the
  Lebesgue measure (``int_box phi_a phi_b dx = delta_ab``), so inner products with it are
  well conditioned. The basis is the *total degree* space ``{prod_k P_{n_k}(t_k) :
  sum_k n_k <= degree}`` (``binom(degree + d, d)`` functions) by default, or the tensor
  product space ``max_k n_k <= degree`` (``(degree + 1)^d``) with ``total=False``.
* [`MLPFunction`][inrnet.nn.parametric.MLPFunction]: a small MLP of the coordinates, for any domain.

Uses: [`Modulate`][inrnet.nn.parametric.Modulate] multiplies a field by ``g`` pointwise; [`InnerProduct`][inrnet.nn.parametric.InnerProduct]
aggregates globally, ``out_k = sum_i <g_ik, f_i> = sum_i int f_i g_ik dx``, estimated by the
quadrature sum ``sum_j w_j f_i(x_j) g_ik(x_j)`` with the point weights.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet, _as_bounds, check_field

__all__ = ["legendre_1d", "multi_indices", "legendre_products", "legendre_basis", "inner_product", "modulate",
           "LegendreFunction", "MLPFunction", "Modulate", "InnerProduct"]


def legendre_1d(t: Tensor, degree: int) -> Tensor:
    """``sqrt(2 n + 1) P_n(t)`` for ``n = 0 .. degree``, by the three-term recurrence.

    Orthonormal for the uniform probability measure ``dt / 2`` on ``[-1, 1]``.

    Args:
        t (Tensor[...]): points, normally in ``[-1, 1]``.

    Returns:
        Tensor[..., degree + 1].
    """
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    p = [torch.ones_like(t), t]
    for n in range(1, degree):
        p.append(((2 * n + 1) * t * p[n] - n * p[n - 1]) / (n + 1))
    scale = torch.sqrt(2.0 * torch.arange(degree + 1, dtype=torch.float64) + 1.0).to(t)
    return torch.stack(p[:degree + 1], dim=-1) * scale  # (..., degree + 1)


def multi_indices(degree: int, dim: int, total: bool = True) -> Tensor:
    """The degrees ``(n_1, .., n_d)`` of a separable basis, sorted by total degree, then lexicographically.

    Args:
        total: ``sum_k n_k <= degree`` (total degree) if True, else ``max_k n_k <= degree``.

    Returns:
        Tensor[n_basis, d] (long); row 0 is the constant.
    """
    if degree < 0 or dim < 1:
        raise ValueError(f"need degree >= 0 and dim >= 1, got degree={degree}, dim={dim}")
    idx = [a for a in itertools.product(range(degree + 1), repeat=dim) if not total or sum(a) <= degree]
    return torch.tensor(sorted(idx, key=lambda a: (sum(a), a)), dtype=torch.long)


def legendre_products(t: Tensor, indices: Tensor) -> Tensor:
    """``prod_k sqrt(2 n_k + 1) P_{n_k}(t_k)`` for each multi-index ``n``.

    Orthonormal for the uniform probability measure on ``[-1, 1]^d``.

    Args:
        t (Tensor[N, d]): points in ``[-1, 1]^d``.
        indices (Tensor[n_basis, d]): multi-indices, see [`multi_indices`][inrnet.nn.parametric.multi_indices].

    Returns:
        Tensor[N, n_basis].
    """
    if t.dim() != 2 or indices.dim() != 2 or t.shape[1] != indices.shape[1]:
        raise ValueError(f"points {tuple(t.shape)} ([N, d]) and multi-indices {tuple(indices.shape)} "
                         "([n_basis, d]) must agree in d")
    p = legendre_1d(t, int(indices.max()))  # (N, d, degree + 1)
    out = p[:, 0, indices[:, 0]]  # (N, n_basis)
    for k in range(1, t.shape[1]):
        out = out * p[:, k, indices[:, k]]
    return out


def legendre_basis(coords: Tensor, degree: int, bounds=None, total: bool = True) -> Tensor:
    """The Legendre basis orthonormal in ``L²(box)`` (Lebesgue measure), at ``coords``.

    Args:
        coords (Tensor[N, d]): points.
        bounds: the box, ``d`` pairs ``(lo, hi)``; default ``[-1, 1]^d``.
        total: total degree (True) or tensor-product (False) space.

    Returns:
        Tensor[N, n_basis], columns in the order of [`multi_indices`][inrnet.nn.parametric.multi_indices].
    """
    bounds = _as_bounds(bounds, coords.shape[-1])
    lo = torch.tensor([b[0] for b in bounds], dtype=coords.dtype, device=coords.device)
    hi = torch.tensor([b[1] for b in bounds], dtype=coords.dtype, device=coords.device)
    t = (2.0 * coords - (lo + hi)) / (hi - lo)  # (N, d) in [-1, 1]
    volume = math.prod(b - a for a, b in bounds)
    indices = multi_indices(degree, coords.shape[-1], total).to(coords.device)
    return legendre_products(t, indices) / math.sqrt(volume)


def inner_product(values: Tensor, g: Tensor, weights: Tensor) -> Tensor:
    """``out_k = sum_i <f_i, g_ik>``, each inner product the quadrature sum ``sum_j w_j f_i(x_j) g_ik(x_j)``.

    Args:
        values (Tensor[B, N, C]): ``f``.
        g (Tensor[N, C, K]): the functions ``g_ik`` at the same points.
        weights (Tensor[N]): quadrature weights.

    Returns:
        Tensor[B, K].
    """
    if g.dim() != 3 or values.dim() != 3 or g.shape[:2] != values.shape[1:] or weights.shape != (values.shape[1],):
        raise ValueError(f"inner_product needs values [B, N, C], g [N, C, K] and weights [N]; got "
                         f"{tuple(values.shape)}, {tuple(g.shape)} and {tuple(weights.shape)}")
    return torch.einsum("bnc,nck->bk", values * weights[:, None], g)


def modulate(values: Tensor, g: Tensor) -> Tensor:
    """``f_i(x) g_i(x)`` (``g`` with one channel multiplies every channel).

    Args:
        values (Tensor[B, N, C]): the field ``f`` on ``N`` points.
        g (Tensor[N, C] or Tensor[N, 1]): the modulating function on the same points.

    Returns:
        Tensor[B, N, C].
    """
    if g.dim() != 2 or g.shape[0] != values.shape[1] or g.shape[1] not in (1, values.shape[2]):
        raise ValueError(f"cannot modulate values {tuple(values.shape)} ([B, N, C]) by g {tuple(g.shape)} "
                         "([N, C] or [N, 1])")
    return values * g


def _coords(points: PointSet | Tensor, dim: int, name: str) -> Tensor:
    coords = points.coords if isinstance(points, PointSet) else points
    if not isinstance(coords, Tensor) or coords.dim() != 2 or coords.shape[1] != dim:
        raise ValueError(f"{name} is a function on R^{dim}: expected a PointSet or coords [N, {dim}], got "
                         f"{tuple(getattr(coords, 'shape', ())) or type(coords).__name__}")
    return coords


class LegendreFunction(nn.Module):
    """``g(x) = sum_a c_a phi_a(x)`` in the orthonormal Legendre basis of a box.

    Args:
        out_channels: ``K``, the number of functions.
        degree: polynomial degree (total degree, or per axis with ``total=False``).
        dim: ``d``.
        bounds: the box the basis is orthonormal on; default ``[-1, 1]^d``. Points outside
            it are fine (the polynomials extend).
        total: total degree (default) or tensor-product space, see the module docstring.

    Attributes:
        coefficients (Tensor[n_basis, K]): ``c``, initialised ``N(0, 1 / n_basis)``.
    """

    def __init__(self, out_channels: int, degree: int, dim: int = 2, bounds=None, total: bool = True):
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        self.out_channels, self.degree, self.dim, self.total = out_channels, degree, dim, total
        self.bounds = _as_bounds(bounds, dim)
        self.n_basis = len(multi_indices(degree, dim, total))
        self.coefficients = nn.Parameter(torch.randn(self.n_basis, out_channels) / math.sqrt(self.n_basis))

    def basis(self, points: PointSet | Tensor) -> Tensor:
        """The basis at the points, ``Tensor[N, n_basis]`` (memoised on a PointSet)."""
        coords = _coords(points, self.dim, "LegendreFunction")

        def build() -> Tensor:
            return legendre_basis(coords, self.degree, self.bounds, self.total)
        if not isinstance(points, PointSet) or coords.requires_grad:
            return build()
        return points.cached(("legendre", self.degree, self.total, self.bounds), build)

    def forward(self, points: PointSet | Tensor) -> Tensor:
        """Tensor[N, K]: ``g`` at a PointSet or at coords ``Tensor[N, d]``."""
        basis = self.basis(points)  # (N, n_basis)
        return basis @ self.coefficients.to(basis)

    def moments(self, values: Tensor, points: PointSet) -> Tensor:
        """``<f_i, phi_a>`` by quadrature: Tensor[B, C, n_basis] for values Tensor[B, N, C]."""
        if values.dim() != 3 or values.shape[1] != points.n:
            raise ValueError(f"values {tuple(values.shape)} must be [B, N={points.n}, C] for {points}")
        return torch.einsum("bnc,na->bca", values, (self.basis(points) * points.weights[:, None]).to(values))

    def extra_repr(self) -> str:
        return (f"{self.out_channels}, degree={self.degree}, dim={self.dim}, n_basis={self.n_basis}"
                + ("" if self.total else ", total=False"))


class MLPFunction(nn.Module):
    """``g(x) = MLP(x)``: ``depth`` hidden layers of width ``hidden``, for any domain.

    Args:
        out_channels: ``K``.
        dim: ``d``.
        hidden: hidden width.
        depth: number of hidden layers (0: an affine map).
        activation: module class used between layers.
    """

    def __init__(self, out_channels: int, dim: int = 2, hidden: int = 64, depth: int = 2,
                 activation: type[nn.Module] = nn.SiLU):
        super().__init__()
        if out_channels < 1 or dim < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"need positive out_channels, dim, hidden and depth >= 0, got "
                             f"{out_channels}, {dim}, {hidden}, {depth}")
        self.out_channels, self.dim = out_channels, dim
        widths = [dim] + [hidden] * depth + [out_channels]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), activation()]
        self.mlp = nn.Sequential(*layers[:-1])

    def forward(self, points: PointSet | Tensor) -> Tensor:
        """Tensor[N, K]: ``g`` at a PointSet or at coords ``Tensor[N, d]``."""
        return self.mlp(_coords(points, self.dim, "MLPFunction"))


class Modulate(nn.Module):
    """``g_i(x) = f_i(x) h_i(x)`` with a parametric function ``h`` with ``C`` or 1 channels."""

    def __init__(self, function: nn.Module):
        super().__init__()
        self.function = function

    def forward(self, field: Field) -> Field:
        check_field(field, "Modulate")
        return field.replace(modulate(field.values, self.function(field.points).to(field.values)))


class InnerProduct(nn.Module):
    """Learned global aggregation ``out_k = sum_i <f_i, g_ik>`` (a ``Field -> Tensor`` head).

    Args:
        function: a parametric function with ``in_channels * K`` outputs; output
            ``i * K + k`` is ``g_ik``.
        in_channels: ``C``.

    Shapes:
        ``Field[B, N, C] -> Tensor[B, K]``.
    """

    def __init__(self, function: nn.Module, in_channels: int):
        super().__init__()
        total = getattr(function, "out_channels", None)
        if not isinstance(total, int) or total % in_channels:
            raise ValueError(f"the function's out_channels ({total}) must be a multiple of in_channels "
                             f"({in_channels})")
        self.function, self.in_channels, self.out_channels = function, in_channels, total // in_channels

    def forward(self, field: Field) -> Tensor:
        check_field(field, "InnerProduct", self.in_channels)
        values, points = field.values, field.points
        if isinstance(self.function, LegendreFunction):
            coef = self.function.coefficients.reshape(-1, self.in_channels, self.out_channels)  # (n_basis, C, K)
            return torch.einsum("bca,ack->bk", self.function.moments(values, points), coef.to(values))
        g = self.function(points).to(values).reshape(points.n, self.in_channels, self.out_channels)  # (N, C, K)
        return inner_product(values, g, points.weights.to(values))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"
