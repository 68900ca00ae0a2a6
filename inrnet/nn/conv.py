"""Continuous convolutions (paper eq. 7 and 125): ``g(x) = sum_i int K_i(x' - x) f_i(x') dx' + b``.

One base, [`ContinuousConv`][inrnet.nn.conv.ContinuousConv], owns the data flow: output points (stride keeps a
prefix / sub-lattice, ``padding="none"`` shrinks the domain), the cached CSR neighbours,
quadrature with the point weights, and the reduction. A kernel family overrides only how
the kernel is evaluated on pair offsets ``delta = x' - x`` (the cross-correlation
convention of ``torch.nn.Conv2d``):

* kernels that are linear in a finite set of *atoms*, ``K(delta) = sum_a phi_a(delta) W_a``,
  implement [`ContinuousConv.expand`][inrnet.nn.conv.ContinuousConv.expand] (the non-zero ``phi_a`` of each pair),
  [`ContinuousConv.atoms`][inrnet.nn.conv.ContinuousConv.atoms] (``W [A, C_in / groups, C_out]``),
  [`ContinuousConv.num_atoms`][inrnet.nn.conv.ContinuousConv.num_atoms] (``A``) and
  [`ContinuousConv.expansion_key`][inrnet.nn.conv.ContinuousConv.expansion_key] (what the cached plan depends on):
  B-spline, Legendre and binned MLP kernels. They run the fast path, linear in the number
  of pairs: a sparse gather onto atoms, built once per point set as a
  [`GatherPlan`][inrnet.nn.gather.GatherPlan], then one matmul
  ([`atom_conv`][inrnet.nn.gather.atom_conv], whose backends are pluggable).
* any other kernel implements [`ContinuousConv.pair_kernel`][inrnet.nn.conv.ContinuousConv.pair_kernel] (``K`` at every pair,
  ``Tensor[E, C_in / groups, C_out]``): the exact MLP kernel. This per-pair path
  ([`conv_pairs`][inrnet.nn.conv.conv_pairs]) is also the reference the fast path is tested against.

The path is chosen by what a subclass implements
([`ContinuousConv.has_atoms`][inrnet.nn.conv.ContinuousConv.has_atoms]: it overrides ``expand``), as PyTorch
Geometric's ``MessagePassing`` fuses when ``message_and_aggregate`` is implemented.

Quadrature: ``estimator="sum"`` is ``sum_j w_j K(x_j - x) f(x_j)``; points outside the
domain simply do not exist, which is zero padding, and on a lattice it reproduces a
discrete convolution exactly (also after strides). ``estimator="mean"`` is the paper's
variant: the neighbours' weighted mean of ``K f`` times the measure of the part of the
support inside the domain (lower variance on scattered points; exact on full grids).
``estimator="tap_mean"`` (kernels with taps, [`atom_taps`][inrnet.nn.conv.ContinuousConv.atom_taps]:
B-splines) normalises each atom on its own: the points' ``phi_a``-weighted mean of ``f``, an
estimate of the field at tap ``a``, times the atom's whole integral, so the layer is the
discrete filter applied to the field interpolated at its taps. A tap outside the box the
points tile sees nothing (zero padding), and one whose basis function holds no point gets 0.
On a full grid of the tap spacing it is the discrete filter, as ``"sum"`` is (degree <= 1 at
the border too); on scattered points it has no noise from how many points a tap's basis
function happens to hold, which dominates ``"sum"`` at about one point per pixel. From
scattered points to a lattice, with hat atoms, a support holding each hat whole and zero
padding, it runs as the per-tap means on the tap lattice followed by the discrete filter there
([`tap_lattice`][inrnet.nn.conv.ContinuousConv.tap_lattice], ``TAP_LATTICE``).
``estimator="tap_linear"`` / ``"tap_quadratic"`` estimate the field at each tap from the same
points by a weighted least-squares plane / quadratic (with a small ridge on the monomials,
``TAP_FIT_RIDGE``) instead of their mean, which is the field near the points' centroid rather
than at the tap: the plane is exact for linear fields wherever a tap holds 3 points not on a
line. Both are the discrete filter wherever ``"tap_mean"`` is for degree <= 1 (a tap holding
one point, at the tap; the plane also where the points are symmetric about it), and on
scattered points about one per pixel their estimates of the field at the taps are 8-15% /
14-24% closer to the truth than the mean's (docs/results.md, ``experiments/tap_interpolation.py``).
``estimator="tap_spline"`` reads each tap's value off the local polyharmonic cubic spline (with a
linear term) that interpolates the tap's ``TAP_SPLINE_NEIGHBORS`` nearest points, which may lie
beyond the layer's support: exact for linear fields, the point's own value where a point sits
on the tap (so the discrete filter on its grid, at every degree), and on the scenes' 4096 Sobol
points 28% closer to the field at the taps than the quadratic (45% closer than the mean).

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

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inrnet.field import Field, Lattice, PointSet, check_field
from inrnet.neighbors import Neighbors, Support, csr_indptr, k_nearest, neighbors, stable_argsort, tiled_box
from inrnet.nn.gather import GatherPlan, atom_conv
from inrnet.nn._segment import gather, gather_scale_sum, segment_sum, segment_weight_sum
from inrnet.nn.geometry import PADDING_MODES, as_tuple, output_points
from inrnet.nn.kernels import bin_seeds
from inrnet.nn.parametric import multi_indices

__all__ = ["ContinuousConv", "conv_pairs", "support_fraction"]

ESTIMATORS = ("sum", "mean", "tap_mean", "tap_linear", "tap_quadratic", "tap_spline")
TAP_ESTIMATORS = {"tap_mean": 0, "tap_linear": 1, "tap_quadratic": 2}
"""The per-tap estimators that fit a tap's own points, and the degree of the local polynomial each fits."""
PER_TAP = (*TAP_ESTIMATORS, "tap_spline")
"""Every estimator that reads the field off at the kernel's taps (kernels with taps only)."""
TAP_LATTICE = True
"""Run a ``"tap_mean"`` conv with hat atoms from scattered points to a lattice as two steps
(see [`tap_lattice`][inrnet.nn.conv.ContinuousConv.tap_lattice]): the field's per-tap means on
the lattice of its taps, by index arithmetic, then the discrete filter on that lattice. False:
the layer's direct plan, the reference the tests compare the two steps with."""
TAP_SPLINE_NEIGHBORS = 16
"""Points per tap of ``estimator="tap_spline"``: its local spline interpolates the tap's
``TAP_SPLINE_NEIGHBORS`` nearest points (16 and 24 were within 2% of each other in
``experiments/tap_interpolation.py``, docs/results.md; the cost grows as its cube)."""
TAP_FIT_RIDGE = {1: 0.03, 2: 0.01}
"""The ridge on the fitted monomials per degree, in units of the tap's total weight times the
monomial's squared length scale (``h_k^2``, ``h_k^2 h_l^2``): chosen by the label-free
interpolation error of ``experiments/tap_interpolation.py`` on the embedded training SIRENs
(docs/results.md)."""


def _powers_product(powers: list[list[Tensor]], alpha: Sequence[int]) -> Tensor:
    """``prod_i r_i^alpha_i`` from the precomputed ``powers[i][p] = r_i^p`` (Tensor[n] each)."""
    out = None
    for i, p in enumerate(alpha):
        if p:
            out = powers[i][p] if out is None else out * powers[i][p]
    return out

def _tap_fit(v: Tensor, r: Tensor, group: Tensor, total: Tensor, spacing: Sequence[float], degree: int
             ) -> tuple[Tensor, Tensor]:
    """The weighted least-squares polynomial of ``degree`` per (query, tap) group, as weights:
    see ``ContinuousConv._tap_estimate``.

    The moments are one segment sum of ``v r^alpha`` for every ``alpha`` the normal equations
    use (``|alpha| <= 2 degree``), not of ``[n, k, k]`` outer products.

    Args:
        v: Tensor[n], the entries' weights ``w_j phi_a`` (float64).
        r: Tensor[n, d], each entry's point minus its tap.
        group: Tensor[n], each entry's (query, tap) group in ``[0, G)``.
        total: Tensor[G], each group's total weight ``s0``.
        spacing: the tap spacing per axis (the ridge's length scale).
        degree: 1 (a plane) or 2 (a quadratic).

    Returns:
        The entries' weights ``v_j (1 - m_j . P s1)``, Tensor[n], and each group's
        ``s0 - s1 . P s1``, Tensor[G] (> 0 wherever ``s0 > 0``), whose ratio is the fit's value at the tap.
    """
    d = r.shape[1]
    powers = [[None, r[:, i].contiguous()] for i in range(d)]  # powers[i][p] = r_i^p
    for i in range(d):
        for _ in range(2, 2 * degree + 1):
            powers[i].append(powers[i][-1] * powers[i][1])
    feats = [tuple(e) for e in multi_indices(degree, d).tolist()[1:]]  # k exponents, the constant dropped
    plus = lambda p, q: tuple(x + y for x, y in zip(p, q))  # noqa: E731
    needed = sorted({plus(p, q) for p in feats for q in feats} | set(feats))
    column = {alpha: c for c, alpha in enumerate(needed)}
    weighted = torch.empty(len(needed), len(v), dtype=v.dtype, device=v.device)  # one row per moment
    for c, alpha in enumerate(needed):
        torch.mul(v, _powers_product(powers, alpha), out=weighted[c])
    mom = total.new_zeros(len(needed), total.numel()).index_add_(1, group, weighted).T  # (G, n_m)
    s1 = mom[:, [column[p] for p in feats]]  # (G, k)
    s2 = mom[:, [[column[plus(p, q)] for q in feats] for p in feats]]  # (G, k, k)
    scale = total.new_tensor([math.prod(h ** (2 * e) for h, e in zip(spacing, p)) for p in feats])  # (k,)
    ridge = TAP_FIT_RIDGE[degree] * total[:, None] * scale  # (G, k)
    u = torch.linalg.solve(s2 + torch.diag_embed(ridge.clamp_min(torch.finfo(torch.float64).tiny)), s1)  # (G, k): P s1
    denom = total - (s1 * u).sum(-1)  # (G,)
    u = u[group]  # (n, k)
    fit = sum(_powers_product(powers, p) * u[:, c] for c, p in enumerate(feats))  # (n,): m_j . P s1
    return v * (1 - fit), denom


def _tap_spline_weights(r: Tensor) -> Tensor:
    """The weights of the local polyharmonic cubic spline with a linear term, at the origin.

    For each of U taps with k points at offsets ``r_j`` (point minus tap, in tap spacings),
    the interpolant ``s(x) = sum_j lambda_j |x - r_j|^3 + c + g . x`` with ``s(r_j) = f_j`` and
    ``sum_j lambda_j (1, r_j) = 0`` has ``s(0) = sum_j w_j f_j``: ``w`` is the first k entries
    of ``A^-1 (|r|^3, 1, 0)`` for the symmetric system matrix ``A = [[Phi, P], [P^T, 0]]``,
    ``Phi_ij = |r_i - r_j|^3``, ``P_j = (1, r_j)``. The weights sum to one, reproduce linear
    fields exactly, and are one-hot where a point lies on its tap (within ``1e-9`` spacings).

    Args:
        r: Tensor[U, k, d] of float64 offsets, ``k >= d + 1`` distinct points per tap not all on
            one hyperplane.

    Returns:
        Tensor[U, k], float64.

    Raises:
        ValueError: some tap's points coincide or lie on one hyperplane (the system is singular).
    """
    u, k, d = r.shape
    hit = r.norm(dim=-1) < 1e-9  # (U, k): points on their tap
    w = (hit & (hit.cumsum(1) == 1)).to(r.dtype)  # the first of them gives its value, exactly
    solve = torch.nonzero(~hit.any(1)).squeeze(1)  # the taps without a point on them
    if solve.numel():
        rs = r[solve]  # (S, k, d)
        system = r.new_zeros(len(solve), k + d + 1, k + d + 1)
        system[:, :k, :k] = (rs[:, :, None, :] - rs[:, None, :, :]).norm(dim=-1).pow(3)  # (S, k, k)
        poly = torch.cat([r.new_ones(len(solve), k, 1), rs], -1)  # (S, k, d + 1)
        system[:, :k, k:], system[:, k:, :k] = poly, poly.transpose(1, 2)
        rhs = torch.cat([rs.norm(dim=-1).pow(3), r.new_ones(len(solve), 1), r.new_zeros(len(solve), d)], -1)
        sol, info = torch.linalg.solve_ex(system, rhs)  # (S, k + d + 1)
        if bool((info != 0).any()) or not bool(torch.isfinite(sol).all()):
            raise ValueError(f"estimator='tap_spline': the {k} nearest points of some tap coincide or lie on one "
                             "hyperplane, so its spline is undetermined (repeated points, or a lattice one point "
                             "thick?); use 'tap_mean'")
        w[solve] = sol[:, :k]
    return w


def _hat_mean_plan(points: PointSet, lattice: PointSet) -> GatherPlan:
    """The plan (one atom) of the hat-weighted mean at every lattice site: each point's
    ``2^d`` surrounding sites and its multilinear (hat) weights there by index arithmetic, times
    its quadrature weight, divided by each site's total; sites without points get no entries.
    The same estimate as ``"tap_mean"``'s for a hat atom (``ContinuousConv._tap_estimate``)
    without a neighbour search.

    Args:
        points: the N scattered input points (``weights`` Tensor[N]).
        lattice: the M sites, a point set with a ``lattice`` (C order).

    Returns:
        The plan of ``S [prod(lattice.shape), N]``.
    """
    lat = lattice.lattice
    x = points.coords.double()  # (N, d)
    n, d = x.shape
    origin = x.new_tensor(lat.origin)
    step = x.new_tensor(lat.step)
    shape = x.new_tensor(lat.shape, dtype=torch.long)
    u = (x - origin) / step  # (N, d): the position in sites
    base = torch.floor(u).long()
    frac = u - base  # (N, d) in [0, 1)
    corners = torch.tensor(list(itertools.product((0, 1), repeat=d)), device=x.device)  # (2^d, d)
    site = base[:, None, :] + corners  # (N, 2^d, d)
    weight = torch.where(corners.bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)  # (N, 2^d)
    weight = weight * points.weights.double()[:, None]
    keep = ((site >= 0) & (site < shape)).all(-1) & (weight > 0)  # (N, 2^d)
    strides = torch.ones(d, dtype=torch.long, device=x.device)
    for k in range(d - 2, -1, -1):
        strides[k] = strides[k + 1] * lat.shape[k + 1]
    row = (site * strides).sum(-1)[keep]  # (E,) the site, in C order
    col = torch.arange(n, device=x.device)[:, None].expand(n, 2 ** d)[keep]  # (E,)
    value = weight[keep]
    total = value.new_zeros(lattice.n).index_add_(0, row, value)  # (M,)
    value = value / total[row]
    order = stable_argsort(row)
    return GatherPlan(csr_indptr(row, lattice.n), col[order], value[order].to(points.dtype), lattice.n, 1, n)


def _box_of(points: PointSet) -> Tensor:
    """The box the points tile ([`tiled_box`][inrnet.neighbors.tiled_box]) as float64 Tensor[d, 2] of (lo, hi)."""
    return torch.tensor(tiled_box(points), dtype=torch.float64, device=points.device)


def _inside_box(taps: Tensor, box: Tensor) -> Tensor:
    """Whether each tap (Tensor[..., d], float64) lies in ``box`` (Tensor[d, 2]), faces included up
    to a slack of ``1e-9`` of the box's largest coordinate: Tensor[...] of bool."""
    slack = 1e-9 * box.abs().max()
    return ((taps >= box[:, 0] - slack) & (taps <= box[:, 1] + slack)).all(-1)


def _lattice_pair(points: PointSet, queries: PointSet):
    """``(points.lattice, queries.lattice)`` when both are lattices (a plan may then be a stencil), else None."""
    return None if points.lattice is None or queries.lattice is None else (points.lattice, queries.lattice)


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
    probe = bin_seeds(n_probe, queries.dim, "ball", device=q.device) * h  # (P, d)
    inside = [((p := qc[:, None, :] + probe) >= lo).all(-1).logical_and((p <= hi).all(-1)).double().mean(-1)
              for qc in q.split(max(1, (1 << 22) // n_probe))]
    return torch.cat(inside)


def conv_pairs(values: Tensor, nbrs: Neighbors, pair_weight: Tensor, kernel: Tensor, groups: int = 1) -> Tensor:
    """Per-pair convolution: ``g_m = sum_{e in row m} w_e K_e^T f_{col e}``.

    The gather and the segment sum are those of `inrnet.nn._segment`; a depthwise kernel
    (``C_in = C_out = groups``) runs them fused, `inrnet.nn._segment.gather_scale_sum`.

    Args:
        values: Tensor[B, N, C_in].
        pair_weight: Tensor[E], quadrature weight of each pair.
        kernel: Tensor[E, C_in / groups, C_out], the kernel at each pair.

    Returns:
        Tensor[B, M, C_out].
    """
    b, c_in, c_out = values.shape[0], values.shape[2], kernel.shape[2]
    cg, og = c_in // groups, c_out // groups
    kernel = kernel * pair_weight.to(kernel.dtype).view(-1, 1, 1)  # (E, Cg, C_out): the weight on the small side
    if cg == 1 and og == 1:  # depthwise: one weight per pair and channel, fused in chunks of pairs
        return gather_scale_sum(values, nbrs, kernel.view(-1, c_out))  # (B, M, C)
    f = gather(values, nbrs).view(b, -1, groups, cg)  # (B, E, g, Cg)
    k = kernel.view(-1, cg, groups, og)  # (E, Cg, g, Og)
    msg = torch.einsum("begc,ecgo->bego", f, k).reshape(b, -1, c_out)  # (B, E, C_out)
    return segment_sum(msg, nbrs)  # (B, M, C_out)


class ContinuousConv(nn.Module):
    """Base of all continuous convolutions; subclasses define the kernel.

    A subclass implements one of two kernel contracts (module docstring; the user guide's
    "Writing a new kernel" walks through one): atoms for the fused path
    ([`num_atoms`][inrnet.nn.conv.ContinuousConv.num_atoms], [`expand`][inrnet.nn.conv.ContinuousConv.expand],
    [`atoms`][inrnet.nn.conv.ContinuousConv.atoms],
    [`expansion_key`][inrnet.nn.conv.ContinuousConv.expansion_key]) or the kernel at every pair
    ([`pair_kernel`][inrnet.nn.conv.ContinuousConv.pair_kernel]), and, for kernels with taps,
    [`reflect_inset`][inrnet.nn.conv.ContinuousConv.reflect_inset].

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
        estimator: ``"sum"``, ``"mean"``, ``"tap_mean"``, ``"tap_linear"``, ``"tap_quadratic"`` or
            ``"tap_spline"`` quadrature (module docstring; the ``"tap_*"`` ones for kernels with taps only).
    """

    def __init__(self, in_channels: int, out_channels: int, support: Support, *,
                 stride: int | Sequence[int] = 1, padding: str = "zeros", groups: int = 1,
                 bias: bool = True, estimator: str = "sum"):
        super().__init__()
        cls = type(self)
        if cls.expand is ContinuousConv.expand and cls.pair_kernel is ContinuousConv.pair_kernel:
            raise TypeError(f"{cls.__name__} defines no kernel: implement expand, atoms, num_atoms and "
                            "expansion_key (a kernel linear in atoms) or pair_kernel (the kernel at every pair)")
        if in_channels < 1 or out_channels < 1 or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be positive "
                             f"multiples of groups={groups}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if estimator in PER_TAP and cls.atom_taps is ContinuousConv.atom_taps:
            raise ValueError(f"estimator={estimator!r} normalises each atom at its tap; {cls.__name__} has no taps "
                             "(use a B-spline kernel, or estimator='sum' / 'mean')")
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
    @property
    def has_atoms(self) -> bool:
        """Whether the layer runs the fused atom path: True when the subclass implements
        [`expand`][inrnet.nn.conv.ContinuousConv.expand]. A kernel with a mode without atoms overrides this
        (``MLPConv`` with ``n_bins=None``)."""
        return type(self).expand is not ContinuousConv.expand

    @property
    def num_atoms(self) -> int:
        """``A``, the number of atoms ``phi_a`` (kernels linear in atoms)."""
        raise NotImplementedError(f"{type(self).__name__} has atoms but does not define num_atoms")

    def expansion_key(self):
        """A hashable description of the basis [`expand`][inrnet.nn.conv.ContinuousConv.expand] evaluates
        (kernels linear in atoms).

        The gather plan is cached on the point set under this key (with the queries,
        support, padding and estimator), so layers with equal keys share it: the key must
        fix ``expand`` completely (include a name for the kernel family and every setting
        ``expand`` reads, never a learned parameter).
        """
        raise NotImplementedError(f"{type(self).__name__} has atoms but does not define expansion_key")

    def expand(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """The non-zero atoms at each offset (kernels linear in atoms; defining it selects the
        fused path).

        Args:
            offsets: Tensor[E, d], ``x_j - q_m`` of every pair (float64 when the plan is built).

        Returns:
            ``index`` Tensor[E, P] of atoms in ``[0, A)`` and ``value`` Tensor[E, P] of
            ``phi_a(delta)`` (entries of value 0 are dropped; ``P`` is any fixed width).
        """
        raise NotImplementedError(f"{type(self).__name__} evaluates its kernel per pair and has no atoms")

    def atoms(self) -> Tensor:
        """Atom weights ``W``, Tensor[A, C_in / groups, C_out] (kernels linear in atoms)."""
        raise NotImplementedError(f"{type(self).__name__} evaluates its kernel per pair and has no atoms")

    def atom_taps(self) -> tuple[Tensor, Tensor]:
        """Where each atom sits and what it integrates to, for the ``estimator="tap_*"`` quadratures (kernels
        with taps): ``(offsets Tensor[A, d], mass Tensor[A])`` in float64, atom ``a``'s tap
        ``q + offsets[a]`` for a query ``q`` and ``mass[a] = int phi_a``."""
        raise NotImplementedError(f"{type(self).__name__} has no taps")

    def tap_spacing(self) -> tuple[float, ...]:
        """The distance between neighbouring taps per axis (kernels with taps), the length scale
        of the ridge of ``estimator="tap_linear"`` / ``"tap_quadratic"``."""
        raise NotImplementedError(f"{type(self).__name__} has no taps")

    def tap_hat_atoms(self) -> bool:
        """Whether every atom is the tensor-product hat (degree-1 cardinal B-spline) of the tap
        spacing centred at its tap: then [`tap_lattice`][inrnet.nn.conv.ContinuousConv.tap_lattice]
        can split the layer in two. False by default."""
        return False

    def reflect_inset(self) -> tuple[float, ...] | None:
        """How far inside the domain's faces ``padding="reflect"`` mirrors, per axis: half
        the tap spacing for kernels with taps (the outermost pixel centres of their grid);
        None (no ``"reflect"``) for kernels without."""
        return None

    def pair_kernel(self, offsets: Tensor) -> Tensor:
        """The kernel at each offset (Tensor[E, d]), Tensor[E, C_in / groups, C_out]: what a
        kernel without atoms implements; by default ``sum_a phi_a W_a`` from the atoms."""
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
        if self.estimator != "mean":  # the "tap_*" estimators normalise per atom, in the plan
            return w
        mirrored = self.mirror_inset() is not None  # the mirror images fill the support
        frac = 1.0 if mirrored else support_fraction(queries, points.bounds, self.support).to(w)
        row_mass = segment_weight_sum(nbrs, w)  # (M,)
        scale = frac * self.support.volume / row_mass.clamp_min(torch.finfo(w.dtype).tiny)  # (M,)
        return w * scale[nbrs.row]

    def _neighbors(self, points: PointSet, queries: PointSet) -> Neighbors:
        """The (cached) pairs of the support around ``queries`` among ``points``, mirrors included."""
        mirror = self.mirror_inset()
        return neighbors(points, queries, self.support, reflect=mirror is not None, inset=mirror or 0.0)

    def gather_plan(self, points: PointSet, queries: PointSet) -> GatherPlan:
        """The sparse gather ``S [M * A, N]`` of this layer's atoms from ``points`` to ``queries``
        (quadrature weights included), built once per point set and cached on it (kernels
        linear in atoms).

        Args:
            points: the N input points.
            queries: the M output points.

        Returns:
            The plan that [`atom_conv`][inrnet.nn.gather.atom_conv] contracts with
            [`atoms`][inrnet.nn.conv.ContinuousConv.atoms].
        """
        key = ("conv-plan", queries, self.support, self.mirror_inset(), self.estimator, self.expansion_key())
        if self.estimator == "tap_spline":  # from each tap's nearest points, not the support's pairs
            return points.cached(key, lambda: self._spline_plan(points, queries))
        nbrs = self._neighbors(points, queries)
        return points.cached(key, lambda: self._build_plan(points, queries, nbrs))

    def _build_plan(self, points: PointSet, queries: PointSet, nbrs: Neighbors) -> GatherPlan:
        """The uncached [`gather_plan`][inrnet.nn.conv.ContinuousConv.gather_plan]: every pair's atoms, in float64."""
        index, value = self.expand(nbrs.offset.double())  # (E, P) each
        weight = self._pair_weight(points, queries, nbrs).double()  # (E,)
        value = value * weight[:, None]
        if self.estimator in TAP_ESTIMATORS:
            value = self._tap_estimate(points, queries, nbrs, index, value)
        return GatherPlan.from_pairs(nbrs, index, value, self.num_atoms, points.dtype, _lattice_pair(points, queries))

    def _spline_plan(self, points: PointSet, queries: PointSet) -> GatherPlan:
        """The plan of ``estimator="tap_spline"``: each (query ``m``, atom ``a``) reads the field
        at its tap ``t = q_m + offsets[a]`` off the local cubic spline through the
        ``TAP_SPLINE_NEIGHBORS`` nearest points of ``t`` (`_tap_spline_weights`), times ``mass[a]``.

        With zero padding a tap outside the points' box reads 0; with mirrors it reads the field
        at its mirror image (reflected once about the plane of each face it is beyond). Taps
        shared by several queries (a lattice's) are solved once. Points beyond the layer's
        support can be among a tap's nearest: the support bounds which taps a query has, not
        which points estimate the field there.
        """
        offsets, mass = self.atom_taps()  # (A, d), (A,)
        a, d, m = self.num_atoms, self.dim, queries.n
        x = points.coords.double()  # (N, d)
        device = x.device
        offsets, mass = offsets.to(device), mass.to(device)
        taps = (queries.coords.double()[:, None, :] + offsets).reshape(-1, d)  # (M * A, d)
        box = _box_of(points)  # (d, 2)
        inside = _inside_box(taps, box)  # (M * A,)
        mirror = self.mirror_inset()
        if mirror is not None:  # the mirrored field: a tap beyond a face reads its image inside
            plane_lo = box[:, 0] + taps.new_tensor(mirror)
            plane_hi = box[:, 1] - taps.new_tensor(mirror)
            taps = torch.where(taps < box[:, 0], 2 * plane_lo - taps, taps)
            taps = torch.where(taps > box[:, 1], 2 * plane_hi - taps, taps)
            inside = torch.ones_like(inside)
        spacing = taps.new_tensor(self.tap_spacing())  # (d,)
        # taps equal to a micro-spacing share one solve
        cell = torch.round((taps - box[:, 0]) / (spacing * 1e-6)).long()
        unique, which = torch.unique(cell, dim=0, return_inverse=True)  # (U, d), (M * A,)
        first = torch.full((unique.shape[0],), taps.shape[0], dtype=torch.long, device=device)
        first = first.scatter_reduce(0, which, torch.arange(taps.shape[0], device=device), "amin")
        at = taps[first]  # (U, d): one representative per shared tap
        k = min(TAP_SPLINE_NEIGHBORS, points.n)
        near = k_nearest(x, at, k)  # (U, k)
        w = _tap_spline_weights((x[near] - at[:, None, :]) / spacing)  # (U, k)
        scale = torch.where(inside, mass.repeat(m), 0.0)  # (M * A,)
        value = (w[which] * scale[:, None]).reshape(-1)  # (M * A * k,)
        col = near[which].reshape(-1)  # (M * A * k,)
        row = torch.arange(m, device=device).repeat_interleave(a * k)  # (M * A * k,), rows ascending
        atom = torch.arange(a, device=device).repeat_interleave(k).repeat(m)  # (M * A * k,)
        pairs = Neighbors(csr_indptr(row, m), row, col, (x[col] - queries.coords.double()[row]).to(points.dtype),
                          points.n)
        return GatherPlan.from_pairs(pairs, atom[:, None], value[:, None], a, points.dtype,
                                     _lattice_pair(points, queries))

    def _tap_estimate(self, points: PointSet, queries: PointSet, nbrs: Neighbors, index: Tensor, value: Tensor
                      ) -> Tensor:
        """The ``"tap_*"`` estimators: each pair's ``w_j phi_a`` (``value`` Tensor[E, P], atoms
        ``index``) turned into its weight in the (query, atom)'s estimate of the field at the
        tap, times ``mass[a]``; 0 for atoms without points and, with zero padding, for taps
        outside the points' box.

        ``"tap_mean"``: the weights divided by their (query, atom)'s total ``s0``.
        ``"tap_linear"`` / ``"tap_quadratic"``: the weights of a weighted least-squares fit
        ``f(x) ~ alpha + g . m(x - tap)`` evaluated at the tap (``alpha``), ``m`` the monomials of
        degree 1 (to 2) of the offset, with a ridge ``TAP_FIT_RIDGE[degree] * s0 * scale`` on each
        coefficient (``scale = prod_k spacing_k^(2 alpha_k)`` for the monomial ``r^alpha``). With the moments
        ``s1 = sum v m``, ``S2 = sum v m m^T`` and ``P = (S2 + ridge)^-1``, pair ``j`` weighs
        ``v_j (1 - m_j . P s1) / (s0 - s1 . P s1)``: the weights sum to one, a single point keeps
        its value, and a polynomial of the fit's degree is reproduced up to the ridge's shrinkage
        where the points determine it."""
        a = self.num_atoms
        key = nbrs.row[:, None] * a + index  # (E, P): row m * A + a of S
        flat = key.reshape(-1)
        total = value.new_zeros(queries.n * a).index_add_(0, flat, value.reshape(-1))  # (M * A,) s0
        offsets, mass = self.atom_taps()  # (A, d), (A,)
        offsets = offsets.to(total.device)
        degree = TAP_ESTIMATORS[self.estimator]
        if degree > 0:
            v = value.reshape(-1)
            nz = torch.nonzero(v).squeeze(1)  # entries with weight (about half: hats vanish in the corners)
            r = nbrs.offset.double()[nz // index.shape[1]] - offsets[index.reshape(-1)[nz]]  # (n, d): point - tap
            fitted, denom = _tap_fit(v[nz], r, flat[nz], total, self.tap_spacing(), degree)
            value = v.index_put((nz,), fitted).view_as(value)  # (E, P)
        else:
            denom = total
        scale = torch.where(total > 0, mass.to(total).repeat(queries.n) / denom, 0.0)  # 0 where no point
        if self.mirror_inset() is None and self.padding != "none":  # zero padding: nothing outside the box
            inside = _inside_box(queries.coords.double()[:, None, :] + offsets, _box_of(points))  # (M, A)
            scale = scale * inside.reshape(-1)
        return value * scale[key]

    def tap_lattice(self, points: PointSet, queries: PointSet) -> PointSet | None:
        """The lattice of the taps, when this layer from ``points`` to ``queries`` is the discrete
        filter applied to the field's per-tap means there; None otherwise.

        With ``estimator="tap_mean"``, atoms that are hats of the tap spacing
        ([`tap_hat_atoms`][inrnet.nn.conv.ContinuousConv.tap_hat_atoms]), a box support holding every
        atom's whole hat and zero padding, each tap's value is the hat-weighted mean of the points
        around it, whichever query the tap belongs to. When the queries are a lattice whose taps
        all fall on the cell centres of the tap spacing's grid of the points' box, the layer is
        then the per-tap means at those cell centres
        ([`tap_means`][inrnet.nn.conv.ContinuousConv.tap_means]) followed by the same layer on
        that grid, where it is the discrete filter (a stencil, run as a discrete convolution).
        Taps outside the box read 0 either way. The grid is cached on ``queries``, so it and
        the second step's plan are built once for a fixed output lattice. Only scattered
        ``points`` take this route (on a lattice the direct plan is already a stencil or not).
        """
        if (not TAP_LATTICE or self.estimator != "tap_mean" or self.padding != "zeros" or not self.has_atoms
                or points.lattice is not None or queries.lattice is None or self.support.shape != "box"
                or not self.tap_hat_atoms()):
            return None
        key = ("tap-lattice", tuple(points.bounds), self.tap_spacing(), self.support, self.expansion_key())
        return queries.cached(key, lambda: self._tap_lattice(points.bounds, queries))

    def _tap_lattice(self, bounds, queries: PointSet) -> PointSet | None:
        """The uncached [`tap_lattice`][inrnet.nn.conv.ContinuousConv.tap_lattice]."""
        offsets, _ = self.atom_taps()  # (A, d)
        h = self.tap_spacing()
        tol = 1e-9
        reach = (offsets - torch.tensor(self.support.center, dtype=torch.float64)).abs().amax(0)  # (d,)
        if any(r + hk > w * (1 + tol) for r, hk, w in zip(reach.tolist(), h, self.support.half_width)):
            return None  # some hat is cut by the support: its mean depends on the query
        lat = queries.lattice
        shape = []
        for k, ((lo, hi), hk) in enumerate(zip(bounds, h)):
            n = (hi - lo) / hk
            if abs(n - round(n)) > tol * max(1.0, n) or round(n) < 1:
                return None
            # every tap coordinate origin + i * step + offset is a cell centre lo + (j + 1/2) h
            sites = [(lat.origin[k] + float(o) - lo) / hk - 0.5 for o in offsets[:, k].unique().tolist()]
            if abs(lat.step[k] / hk - round(lat.step[k] / hk)) > tol or any(abs(j - round(j)) > 1e-6 for j in sites):
                return None
            shape.append(round(n))
        if all(lo == -1.0 and hi == 1.0 for lo, hi in bounds):
            return PointSet.grid(shape, dtype=queries.dtype, device=queries.device)  # bit for bit the grid
        lattice = Lattice(tuple(lo + hk / 2 for (lo, _), hk in zip(bounds, h)), tuple(h), tuple(shape))
        return PointSet(lattice.coords(queries.dtype, queries.device), lattice=lattice, bounds=bounds)

    def tap_means(self, field: Field, lattice: PointSet) -> Field:
        """The field's hat-weighted mean at every site of ``lattice`` (spacing the tap spacing),
        ``sum_j w_j phi(x_j - t) f_j / sum_j w_j phi(x_j - t)`` with ``phi`` the hat of the tap
        spacing, 0 where no point is near: the first step of the
        [`tap_lattice`][inrnet.nn.conv.ContinuousConv.tap_lattice] route.

        Args:
            field: values Tensor[B, N, C] on scattered points.
            lattice: the tap lattice.

        Returns:
            Field with values Tensor[B, prod(lattice.shape), C] on ``lattice``.
        """
        points = field.points
        plan = points.cached(("tap-means", lattice), lambda: _hat_mean_plan(points, lattice))
        c = field.values.shape[-1]
        ones = field.values.new_ones(1, 1, c)  # one atom, depthwise: the plan's weights, channel by channel
        return Field(atom_conv(field.values, plan, ones, groups=c), lattice)

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
        lattice = self.tap_lattice(points, queries)
        if lattice is not None:  # the per-tap means on the tap lattice, then the discrete filter there
            field = self.tap_means(field, lattice)
            points = lattice
        if self.has_atoms:
            plan = self.gather_plan(points, queries)
            out = atom_conv(field.values, plan, self.atoms().to(field.values.dtype), self.groups)
        else:
            nbrs = self._neighbors(points, queries)
            mirror = self.mirror_inset()
            pair_w = points.cached(("conv-weights", queries, self.support, mirror, self.estimator),
                                   lambda: self._pair_weight(points, queries, nbrs))
            kernel = self.pair_kernel(nbrs.offset.to(field.values.dtype)).to(field.values.dtype)  # as atoms above
            out = conv_pairs(field.values, nbrs, pair_w.to(field.values.dtype), kernel, self.groups)
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
