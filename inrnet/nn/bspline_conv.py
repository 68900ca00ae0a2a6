"""B-spline convolution: a discrete filter's taps interpolated by a tensor-product spline.

The kernel is a cardinal B-spline surface over the support whose values at the tap
positions are exactly the filter weights (paper App. C), so on a grid with the filter's
pixel spacing the layer *is* the discrete convolution. Each pair touches only the
``(degree + 1)^d`` control points whose basis functions are non-zero there, so the layer
is exact per pair at linear cost (no ``N_bin`` approximation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.nn.geometry import as_tuple, window_support
from inrnet.nn.conv import ContinuousConv
from inrnet.neighbors import Support
from inrnet.nn.kernels import bspline_expansion, bspline_interpolation_matrix

__all__ = ["BSplineConv", "default_degree", "SUPPORT_EXTENTS"]

SUPPORT_EXTENTS = ("taps", "basis")
"""How far a B-spline kernel's support reaches (see `BSplineConv`'s ``support_extent``)."""


def default_degree(kernel_size: Sequence[int]) -> int:
    """The paper's choice: order 2 for 3x3 filters, order 3 for larger ones.

    We read "order" as de Boor does (order = degree + 1): piecewise-linear (degree 1)
    splines for filters of at most 3 taps per axis, quadratic (degree 2) beyond.
    """
    return 1 if max(kernel_size) <= 3 else 2


def _dim_of(*args) -> int:
    for a in args:
        if isinstance(a, Sequence):
            return len(a)
    return 2


class BSplineConv(ContinuousConv):
    """Continuous convolution whose kernel interpolates a discrete filter.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: taps per axis (int or tuple of ``d``); even sizes shift the support
            half a tap, as torch's even kernels do.
        spacing: distance between taps in domain units (``2 / H`` for a filter made for
            an ``H``-pixel axis on ``[-1, 1]``).
        degree: spline degree (0-3); default [`default_degree`][inrnet.nn.bspline_conv.default_degree].
        support_shape: ``"box"`` or ``"ball"`` (the spline is cut to the ball).
        support_extent: ``"taps"`` (default): the support is the discrete filter's
            footprint, ``kernel_size * spacing`` wide, where the edge taps' basis functions
            are cut (a degree-1 edge tap keeps 0.875 of its integral), so the kernel jumps
            at the support's boundary; ``"basis"``: the support covers every basis
            function whole, ``(kernel_size + degree) * spacing`` wide, and the kernel falls
            continuously to zero at its boundary (less quadrature noise on scattered
            points). For ``degree <= 1`` both are the discrete filter on its grid (the
            extra pixels sit where the splines vanish); for higher degrees only ``"taps"`` is.
        stride: output subsampling, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        padding: boundary handling, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        groups: channel groups, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv].
        bias: learn a bias per output channel.
        estimator: ``"sum"``, ``"mean"``, ``"tap_mean"``, ``"tap_linear"``, ``"tap_quadratic"`` or
            ``"tap_spline"`` quadrature, as in [`ContinuousConv`][inrnet.nn.conv.ContinuousConv] (``"tap_*"``: the
            filter applied to the field interpolated at its taps by the points' mean, a least-squares
            plane or quadratic, or a local cubic spline through each tap's nearest points).

    Attributes:
        weight: Tensor[C_out, C_in / groups, *kernel_size], the tap values (laid out like
            ``nn.Conv{d}d.weight``: copy a discrete filter in, and on the grid the layer
            reproduces it). The kernel is ``spline(weight) / prod(spacing)``, so that the
            quadrature weight of a pixel cancels the ``1 / pixel volume``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 spacing: float | Sequence[float], *, stride: int | Sequence[int] = 1, padding: str = "zeros",
                 groups: int = 1, bias: bool = True, degree: int | None = None, support_shape: str = "box",
                 support_extent: str = "taps", estimator: str = "sum"):
        dim = _dim_of(kernel_size, spacing, stride)
        self.kernel_size = as_tuple(kernel_size, dim, "kernel_size", int)
        self.spacing = as_tuple(spacing, dim, "spacing", float)
        self.degree = default_degree(self.kernel_size) if degree is None else int(degree)
        if self.degree not in (0, 1, 2, 3):
            raise ValueError(f"degree must be 0, 1, 2 or 3, got {degree}")
        if support_extent not in SUPPORT_EXTENTS:
            raise ValueError(f"support_extent must be one of {SUPPORT_EXTENTS}, got {support_extent!r}")
        self.support_extent = support_extent
        footprint = self.kernel_size if support_extent == "taps" else tuple(k + self.degree for k in self.kernel_size)
        support = window_support(footprint, self.spacing, support_shape)
        if support_extent == "basis":  # centred like the taps' footprint (even sizes: half a tap past the point)
            support = Support(support.half_width, support.shape,
                              window_support(self.kernel_size, self.spacing, support_shape).center)
        super().__init__(in_channels, out_channels, support,
                         stride=stride, padding=padding, groups=groups, bias=bias, estimator=estimator)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        for k, n in enumerate(self.kernel_size):
            a = bspline_interpolation_matrix(n, self.degree)
            self.register_buffer(f"_interp_inv{k}", torch.linalg.inv(a), persistent=False)
        self.reset_parameters()

    @property
    def num_atoms(self) -> int:
        return math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def reflect_inset(self) -> tuple[float, ...]:
        return tuple(h / 2 for h in self.spacing)

    def tap_spacing(self) -> tuple[float, ...]:
        return self.spacing

    def tap_hat_atoms(self) -> bool:
        return self.degree == 1

    def atom_taps(self) -> tuple[Tensor, Tensor]:
        # atom a = control point (i_0, ..., i_{d-1}) in C order, at its tap; a cardinal
        # B-spline integrates to one tap cell, prod(spacing)
        axes = [(torch.arange(k, dtype=torch.float64) - (k - 1) / 2) * h + c
                for k, h, c in zip(self.kernel_size, self.spacing, self.support.center)]
        offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dim)  # (A, d)
        return offsets, torch.full((self.num_atoms,), math.prod(self.spacing), dtype=torch.float64)

    def expansion_key(self):
        return ("bspline", self.kernel_size, self.spacing, self.degree)

    def expand(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        # tap coordinates: tap i of axis k sits at u_k = i
        center = offsets.new_tensor(self.support.center)
        u = (offsets - center) / offsets.new_tensor(self.spacing) + offsets.new_tensor(
            [(k - 1) / 2 for k in self.kernel_size])
        return bspline_expansion(u, self.kernel_size, self.degree)

    def control_points(self) -> Tensor:
        """Spline control points that interpolate ``weight`` at the taps.

        Returns:
            Tensor[C_out, C_in / groups, *kernel_size].
        """
        c = self.weight
        if self.degree <= 1:  # hat functions interpolate their control points
            return c
        for k in range(self.dim):
            inv = getattr(self, f"_interp_inv{k}").to(c.dtype)
            c = torch.movedim(torch.movedim(c, 2 + k, -1) @ inv.T, -1, 2 + k)
        return c

    def atoms(self) -> Tensor:
        c = self.control_points() / math.prod(self.spacing)  # (C_out, Cg, *k)
        dims = list(range(2, 2 + self.dim))
        return c.permute(*dims, 1, 0).reshape(self.num_atoms, c.shape[1], c.shape[0])  # (A, Cg, C_out)

    def extra_repr(self) -> str:
        extent = ", support_extent='basis'" if self.support_extent == "basis" else ""
        return (f"kernel_size={self.kernel_size}, spacing={tuple(round(h, 6) for h in self.spacing)}, "
                f"degree={self.degree}{extent}, " + super().extra_repr())
