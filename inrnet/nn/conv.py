"""Continuous convolutions (paper eq. 7 and 125): ``g(x) = sum_i int K_i(x' - x) f_i(x') dx' + b``.

One base, [`ContinuousConv`][inrnet.nn.conv.ContinuousConv], owns the data flow: output points (stride keeps a
prefix / sub-lattice, ``padding="none"`` shrinks the domain), the cached CSR neighbours,
quadrature with the point weights, and the reduction. A kernel family overrides only how
the kernel is evaluated on pair offsets ``delta = x' - x`` (the cross-correlation
convention of ``torch.nn.Conv2d``):

* kernels that are linear in a finite set of *atoms*, ``K(delta) = sum_a phi_a(delta) W_a``,
  implement [`ContinuousConv.expand`][inrnet.nn.conv.ContinuousConv.expand] (the non-zero ``phi_a`` of each pair) and
  [`ContinuousConv.atoms`][inrnet.nn.conv.ContinuousConv.atoms] (``W [A, C_in / groups, C_out]``): B-spline, Legendre and
  binned MLP kernels. They run the fast path (sparse gather onto atoms, then one matmul;
  see `inrnet.nn._gather`), linear in the number of pairs.
* any other kernel implements [`ContinuousConv.pair_kernel`][inrnet.nn.conv.ContinuousConv.pair_kernel] (``K`` at every pair,
  ``Tensor[E, C_in / groups, C_out]``): the exact MLP kernel. This per-pair path is also the
  reference the fast path is tested against.

Quadrature: ``estimator="sum"`` is ``sum_j w_j K(x_j - x) f(x_j)``; points outside the
domain simply do not exist, which is zero padding, and on a lattice it reproduces a
discrete convolution exactly (also after strides). ``estimator="mean"`` is the paper's
variant: the neighbours' weighted mean of ``K f`` times the measure of the part of the
support inside the domain (lower variance on scattered points; exact on full grids).

Padding says what the integral sees outside the box the points tile (the domain; for a
lattice, its cells, see [`tiled_box`][inrnet.neighbors.tiled_box]):

* ``"zeros"``: nothing (zero), torch's ``padding_mode="zeros"``;
* ``"symmetric"``: the field mirrored across the box's faces, ``f(lo - t) = f(lo + t)``;
  on a grid numpy's ``np.pad(mode="symmetric")``, the edge pixel repeated
  (``a b c`` pads to ``b a | a b c | c b``);
* ``"reflect"``: the field mirrored about the planes half a tap spacing ``h`` inside the
  faces, ``f(lo - t) = f(lo + h + t)``; on a grid with the layer's spacing those planes are
  the outermost pixel centres, and it is torch's ``padding_mode="reflect"``
  (``c b | a b c | b a``). Only kernels with taps
  ([`reflect_inset`][inrnet.nn.conv.ContinuousConv.reflect_inset], e.g.
  [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv]) have it;
* ``"none"``: no padding: the output points keep away from the faces by the support's reach.

Either mirror reflects once per face, so the support must be narrower than the box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet
from inrnet.neighbors import Neighbors, Support, neighbors
from inrnet.nn._gather import GatherPlan, atom_conv
from inrnet.nn._geometry import PADDING_MODES, as_tuple, output_points
from inrnet.nn.pointwise import check_field

__all__ = ["ContinuousConv", "conv_atoms", "conv_pairs", "support_fraction"]

ESTIMATORS = ("sum", "mean")


def support_fraction(queries: PointSet, bounds, support: Support, n_probe: int = 1024) -> Tensor:
    """Fraction of the support around each query point that lies inside the domain box.

    Exact for box supports; a fixed Sobol estimate with ``n_probe`` points for balls.

    Returns:
        Tensor[M].
    """
    q = queries.coords.double() + queries.coords.new_tensor(support.center, dtype=torch.float64)
    h = q.new_tensor(support.half_width)
    lo = q.new_tensor([b[0] for b in bounds])
    hi = q.new_tensor([b[1] for b in bounds])
    if support.shape == "box":
        overlap = (torch.minimum(q + h, hi) - torch.maximum(q - h, lo)).clamp_min(0) / (2 * h)  # (M, d)
        return overlap.prod(-1)
    from inrnet.nn.kernels import bin_seeds
    probe = bin_seeds(n_probe, queries.dim, "ball", device=q.device) * h  # (P, d)
    inside = [((p := qc[:, None, :] + probe) >= lo).all(-1).logical_and((p <= hi).all(-1)).double().mean(-1)
              for qc in q.split(max(1, (1 << 22) // n_probe))]
    return torch.cat(inside)


def conv_atoms(values: Tensor, plan: GatherPlan, atoms: Tensor, groups: int = 1) -> Tensor:
    """Linear-kernel convolution: gather onto atoms, then contract with their weights
    (fused and chunked so the gathered atoms stay in cache; see `inrnet.nn._gather`).

    Args:
        values: Tensor[B, N, C_in].
        plan: the sparse gather ``S [M * A, N]`` (quadrature weights included).
        atoms: Tensor[A, C_in / groups, C_out].

    Returns:
        Tensor[B, M, C_out].
    """
    return atom_conv(values, plan, atoms, groups)


def conv_pairs(values: Tensor, nbrs: Neighbors, pair_weight: Tensor, kernel: Tensor, groups: int = 1) -> Tensor:
    """Per-pair convolution: ``g_m = sum_{e in row m} w_e K_e^T f_{col e}``.

    Args:
        values: Tensor[B, N, C_in].
        pair_weight: Tensor[E], quadrature weight of each pair.
        kernel: Tensor[E, C_in / groups, C_out], the kernel at each pair.

    Returns:
        Tensor[B, M, C_out].
    """
    b, c_in, c_out = values.shape[0], values.shape[2], kernel.shape[2]
    cg, og = c_in // groups, c_out // groups
    f = values[:, nbrs.col].view(b, -1, groups, cg)  # (B, E, g, Cg)
    k = kernel.view(-1, cg, groups, og)  # (E, Cg, g, Og)
    msg = torch.einsum("begc,ecgo->bego", f, k).reshape(b, -1, c_out) * pair_weight[:, None]  # (B, E, C_out)
    out = values.new_zeros(b, nbrs.num_queries, c_out)
    return out.index_add(1, nbrs.row, msg)


class ContinuousConv(nn.Module):
    """Base of all continuous convolutions; subclasses define the kernel.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        support: where the kernel is non-zero (box or ball, possibly shifted).
        stride: keep one output point in ``prod(stride)`` (a prefix of a Sobol sequence,
            every ``stride``-th point of a lattice).
        padding: ``"zeros"``, ``"symmetric"`` (mirrored across the domain's faces, numpy's
            ``'symmetric'``), ``"reflect"`` (mirrored about the outermost pixel centres,
            torch's ``'reflect'``; kernels with taps only) or ``"none"`` (the domain shrinks by
            the support's reach); see the module docstring.
        groups: split channels into groups (``groups == C_in`` is depthwise).
        bias: learn a bias per output channel.
        estimator: ``"sum"`` or ``"mean"`` quadrature (module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, support: Support, *,
                 stride: int | Sequence[int] = 1, padding: str = "zeros", groups: int = 1,
                 bias: bool = True, estimator: str = "sum"):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be positive "
                             f"multiples of groups={groups}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.support = support
        self.dim = len(support.half_width)
        self.stride = as_tuple(stride, self.dim, "stride", int)
        self.padding, self.estimator = padding, estimator
        if padding == "reflect" and self.reflect_inset() is None:
            raise ValueError(f"{type(self).__name__} has no tap spacing to place torch's 'reflect' mirrors (the "
                             "outermost pixel centres) by; use padding='symmetric' (mirror across the domain faces)")
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    # kernel hooks -------------------------------------------------------------------
    def expansion_key(self):
        """Hashable description of [`expand`][inrnet.nn.conv.ContinuousConv.expand]'s basis, or None for per-pair kernels."""
        return None

    def expand(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """The non-zero atoms at each offset: ``index`` and ``value``, Tensor[E, P] each."""
        raise NotImplementedError

    def atoms(self) -> Tensor:
        """Atom weights, Tensor[A, C_in / groups, C_out]."""
        raise NotImplementedError

    def reflect_inset(self) -> tuple[float, ...] | None:
        """How far inside the domain's faces ``padding="reflect"`` mirrors, per axis: half
        the tap spacing for kernels with taps (the outermost pixel centres of their grid);
        None (no ``"reflect"``) for kernels without."""
        return None

    def pair_kernel(self, offsets: Tensor) -> Tensor:
        """The kernel at each offset (Tensor[E, d]), Tensor[E, C_in / groups, C_out]."""
        index, value = self.expand(offsets)
        return torch.einsum("ep,epio->eio", value.to(self.atoms().dtype), self.atoms()[index])

    # data flow ----------------------------------------------------------------------
    def output_points(self, points: PointSet) -> PointSet:
        """Where this layer has outputs for inputs on ``points``."""
        return output_points(points, self.support, self.stride, self.padding)

    def mirror_inset(self) -> tuple[float, ...] | None:
        """The mirror planes' inset from the faces (see the module docstring), None without mirrors."""
        if self.padding == "symmetric":
            return (0.0,) * self.dim
        return self.reflect_inset() if self.padding == "reflect" else None

    def _pair_weight(self, points: PointSet, queries: PointSet, nbrs: Neighbors) -> Tensor:
        """Quadrature weight of each pair, Tensor[E]."""
        w = points.weights[nbrs.col]
        if self.estimator == "sum":
            return w
        mirrored = self.mirror_inset() is not None  # the mirror images fill the support
        frac = 1.0 if mirrored else support_fraction(queries, points.bounds, self.support).to(w)
        row_mass = torch.zeros(queries.n, dtype=w.dtype, device=w.device).index_add(0, nbrs.row, w)
        scale = frac * self.support.volume / row_mass.clamp_min(torch.finfo(w.dtype).tiny)  # (M,)
        return w * scale[nbrs.row]

    def forward(self, field: Field, query: PointSet | None = None) -> Field:
        """Convolve a field.

        Args:
            field: values Tensor[B, N, C_in] on N points.
            query: output points to evaluate at (default: [`output_points`][inrnet.nn.conv.ContinuousConv.output_points]), e.g.
                arbitrary label coordinates for a dense head.

        Returns:
            Field with values Tensor[B, M, C_out].
        """
        check_field(field, type(self).__name__, self.in_channels, module=self)
        points = field.points
        if points.dim != self.dim:
            raise ValueError(f"{type(self).__name__} has a {self.dim}-d support, got points of dimension {points.dim}")
        queries = self.output_points(points) if query is None else query
        mirror = self.mirror_inset()
        nbrs = neighbors(points, queries, self.support, reflect=mirror is not None, inset=mirror or 0.0)
        key = self.expansion_key()
        if key is None:
            pair_w = points.cached(("conv-weights", queries, self.support, mirror, self.estimator),
                                   lambda: self._pair_weight(points, queries, nbrs))
            kernel = self.pair_kernel(nbrs.offset.to(field.values.dtype)).to(field.values.dtype)  # as atoms below
            out = conv_pairs(field.values, nbrs, pair_w.to(field.values.dtype), kernel, self.groups)
        else:
            def build() -> GatherPlan:
                index, value = self.expand(nbrs.offset.double())
                p = index.shape[1]
                value = value * self._pair_weight(points, queries, nbrs).double()[:, None]
                return GatherPlan(nbrs.row.repeat_interleave(p), index.reshape(-1), nbrs.col.repeat_interleave(p),
                                  value.reshape(-1).to(points.dtype), queries.n, self.num_atoms, points.n)
            plan = points.cached(("conv-plan", queries, self.support, mirror, self.estimator, key), build)
            out = conv_atoms(field.values, plan, self.atoms().to(field.values.dtype), self.groups)
        if self.bias is not None:
            out = out + self.bias
        return Field(out, queries)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, support={self.support.shape}{self.support.half_width}"
        if any(c != 0 for c in self.support.center):
            s += f", center={self.support.center}"
        if any(v != 1 for v in self.stride):
            s += f", stride={self.stride}"
        if self.padding != "zeros":
            s += f", padding={self.padding!r}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.estimator != "sum":
            s += f", estimator={self.estimator!r}"
        return s + ("" if self.bias is not None else ", bias=False")
