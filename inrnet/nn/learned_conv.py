"""Convolutions with learned continuous kernels: MLP (exact per pair or binned) and Legendre.

Both kernels are functions of the offset scaled to the unit support,
``u = (delta - center) / half_width``, divided by the support's volume ``|S|``, so an
``O(1)`` kernel output averages ``f`` over the support whatever its size or the number
of points.

**Binned mode** (paper §4.3): the support is split into the Voronoi cells of ``n_bins``
fixed seed points and every pair uses the kernel value at its cell's seed, so the MLP
runs ``n_bins`` times per forward, whatever ``N`` is. ``n_bins`` can be changed at any
time (``conv.n_bins = 256``); ``n_bins=None`` evaluates the MLP exactly at every pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inrnet.neighbors import Support
from inrnet.nn.conv import ContinuousConv
from inrnet.nn.kernels import bin_expansion, bin_seeds, legendre_expansion
from inrnet.nn.parametric import multi_indices

__all__ = ["MLPConv", "LegendreConv"]


def _as_support(support: Support | float | Sequence[float], dim: int | None) -> Support:
    s = support if isinstance(support, Support) else Support(support)
    if dim is None:
        dim = len(s.half_width) if len(s.half_width) > 1 else 2
    return s.for_dim(dim)


class _UnitSupportConv(ContinuousConv):
    """Shared by kernels defined on the unit support."""

    def unit_offsets(self, offsets: Tensor) -> Tensor:
        """Tensor[E, d] of offsets scaled so the support is the unit box/ball."""
        return (offsets - offsets.new_tensor(self.support.center)) / offsets.new_tensor(self.support.half_width)


class MLPConv(_UnitSupportConv):
    """Continuous convolution with kernel ``MLP(x' - x)`` (paper §4.1).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        support: a [`Support`][inrnet.neighbors.Support], or the half width(s) of a box support.
        hidden: widths of the kernel MLP's hidden layers.
        n_bins: ``None`` for the exact per-pair kernel, else the number of Voronoi bins.
        dim: coordinate dimension when ``support`` is a single number (default 2).
        stride: output subsampling, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        padding: boundary handling, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        groups: channel groups, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        bias: learn a bias per output channel.
        estimator: ``"sum"`` or ``"mean"`` quadrature, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
    """

    def __init__(self, in_channels: int, out_channels: int, support: Support | float | Sequence[float], *,
                 hidden: Sequence[int] = (32, 32), n_bins: int | None = None, dim: int | None = None,
                 stride: int | Sequence[int] = 1, padding: str = "zeros", groups: int = 1, bias: bool = True,
                 estimator: str = "sum"):
        super().__init__(in_channels, out_channels, _as_support(support, dim), stride=stride, padding=padding,
                         groups=groups, bias=bias, estimator=estimator)
        widths = [self.dim, *hidden, (in_channels // groups) * out_channels]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers[:-1])
        last = self.mlp[-1]
        nn.init.uniform_(last.weight, -1 / math.sqrt(widths[-2] * in_channels // groups),
                         1 / math.sqrt(widths[-2] * in_channels // groups))
        nn.init.zeros_(last.bias)
        self.n_bins = n_bins

    @property
    def has_atoms(self) -> bool:
        """Binned kernels have atoms (the kernel at each bin's seed); the exact one has none."""
        return self.n_bins is not None

    @property
    def num_atoms(self) -> int:
        return self.n_bins

    def kernel(self, u: Tensor) -> Tensor:
        """The kernel at unit offsets u (Tensor[P, d]), Tensor[P, C_in / groups, C_out].

        The ``1 / |S|`` is folded into the last linear layer's weight and bias (``[C_in C_out, h]``)
        rather than applied to the ``[P, C_in C_out]`` output, P pairs being far more than h.
        """
        h = u.to(self.mlp[0].weight.dtype)  # (P, d)
        for layer in self.mlp[:-1]:
            h = layer(h)  # (P, hidden)
        last, inv = self.mlp[-1], 1.0 / self.support.volume
        k = F.linear(h, last.weight * inv, last.bias * inv)  # (P, C_in / groups * C_out)
        return k.view(u.shape[0], self.in_channels // self.groups, self.out_channels)

    def expansion_key(self):
        return ("bins", self.n_bins)

    def seeds(self) -> Tensor:
        """The bin seeds in unit-support coordinates, Tensor[n_bins, d]."""
        return bin_seeds(self.n_bins, self.dim, self.support.shape, dtype=self.mlp[0].weight.dtype,
                         device=self.mlp[0].weight.device)

    def expand(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        return bin_expansion(self.unit_offsets(offsets), self.seeds())

    def atoms(self) -> Tensor:
        return self.kernel(self.seeds())

    def pair_kernel(self, offsets: Tensor) -> Tensor:
        if self.n_bins is not None:
            return super().pair_kernel(offsets)
        return self.kernel(self.unit_offsets(offsets))

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", n_bins={self.n_bins}" if self.n_bins is not None else ", exact")


class LegendreConv(_UnitSupportConv):
    """Continuous convolution with a polynomial kernel (paper eq. 6).

    ``K(delta) = sum_b P_b(u) W_b / |S|`` over products of Legendre polynomials
    (orthonormal for the uniform measure on the unit box) of total degree ``<= degree`` in the unit-support offset ``u``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        support: a [`Support`][inrnet.neighbors.Support], or the half width(s) of a box support.
        degree: total polynomial degree.
        dim: coordinate dimension when ``support`` is a single number (default 2).
        stride: output subsampling, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        padding: boundary handling, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        groups: channel groups, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        bias: learn a bias per output channel.
        estimator: ``"sum"`` or ``"mean"`` quadrature, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].

    Attributes:
        weight: Tensor[n_basis, C_in / groups, C_out].
    """

    def __init__(self, in_channels: int, out_channels: int, support: Support | float | Sequence[float], *,
                 degree: int = 3, dim: int | None = None, stride: int | Sequence[int] = 1, padding: str = "zeros",
                 groups: int = 1, bias: bool = True, estimator: str = "sum"):
        super().__init__(in_channels, out_channels, _as_support(support, dim), stride=stride, padding=padding,
                         groups=groups, bias=bias, estimator=estimator)
        if degree < 0:
            raise ValueError(f"degree must be >= 0, got {degree}")
        self.degree = degree
        n_basis = multi_indices(degree, self.dim).shape[0]
        bound = 1 / math.sqrt(in_channels // groups)
        self.weight = nn.Parameter(torch.empty(n_basis, in_channels // groups, out_channels).uniform_(-bound, bound))

    @property
    def num_atoms(self) -> int:
        return self.weight.shape[0]

    def expansion_key(self):
        return ("legendre", self.degree)

    def expand(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        return legendre_expansion(self.unit_offsets(offsets), self.degree)

    def atoms(self) -> Tensor:
        return self.weight / self.support.volume

    def extra_repr(self) -> str:
        return super().extra_repr() + f", degree={self.degree}"
