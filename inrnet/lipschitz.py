"""Certified Lipschitz bounds of INR-Nets: how far the logits can move when the input INR moves.

For an INR-Net ``T`` in eval mode and the point set ``P`` it samples its input on,
[`lipschitz_bound`][inrnet.lipschitz.lipschitz_bound] returns a number ``L`` with

    ||T(f) - T(g)|| <= L ||f - g||     for all fields f, g on P,

in one of two pairs of norms (``norm=``):

* ``"l2"``: the input in the quadrature L2 norm of the point set,
  ``||f|| = sqrt(sum_j w_j |f(x_j)|^2)`` (``w`` = ``PointSet.weights``, ``|.|`` the
  Euclidean norm over channels), which approximates the L2 norm of the INR over the
  domain; every hidden field in the same norm on its own point set; the logits in the
  Euclidean norm.
* ``"linf"``: the input in the sup norm over the points and channels,
  ``max_{j, c} |f_c(x_j)|``; the logits in the max norm ``max_k |T_k|``. (For the
  Euclidean norm of ``K`` logits multiply by ``sqrt(K)``.)

The bound is a product over the network's stages (each one's constant in the norms of
its input and output point sets), so it holds for the exact-arithmetic map with the
model's parameters (it is computed in float64 from a float64 copy), not for float32
rounding. Every factor is a true upper bound; none is an estimate that could fall below
the true constant:

* continuous convolution (any [`ContinuousConv`][inrnet.nn.conv.ContinuousConv], with the frozen batch norm
  that follows it folded in): the linear map is assembled from the layer's own neighbour
  pairs and quadrature weights (its gather plan, or its pair kernel and pair weights),
  ``Y[m, j] = s * sum_e pw_e K_e^T`` over the pairs ``e`` of output ``m`` and input ``j``,
  weighted ``sqrt(v_m / w_j)`` by the output and input quadrature weights. In L2 the
  factor is the smallest of the bounds that apply: ``"exact"``, the matrix 2-norm by SVD
  (maps of at most ``exact_max`` entries); ``"fft"``, the largest singular value of the
  polyphase symbol on a torus that holds the lattice without wrap-around (lattice inputs
  and outputs, translation-invariant blocks: then the map is a restriction of a block
  circulant); ``"gram"``, the Schur (Collatz-Wielandt) bound of the block norms of
  ``Y^T Y`` (or ``Y Y^T``), square-rooted; ``"schur"``, the Schur bound of the block norms
  of ``Y``; ``"atoms"`` (convs with atoms), the Schur test on the atoms' norms,
  [`atom_schur_bound`][inrnet.nn.constrained.atom_schur_bound] (what a
  [`LipschitzConv`][inrnet.nn.constrained.LipschitzConv] normalises, its scale included).
  In L-infinity the factor is exact: the largest absolute row sum.
* frozen batch norm alone: ``max_c |gamma_c| / sqrt(var_c + eps)`` (exact).
* ReLU, ReLU6, Hardtanh, Tanh, Identity, eval Dropout: 1; LeakyReLU ``max(1, |slope|)``;
  Sigmoid 1/4 (exact).
* average pooling (a non-negative linear map): in L2 its weighted matrix's 2-norm
  (exact SVD, or the Collatz-Wielandt bound, which converges to it from above for a
  non-negative matrix), not 1: the output point set has other weights; in L-infinity its
  largest row sum.
* unbiased max pooling: ``scale * sqrt(max_j sum_{m ∋ j} c_m^2 v_m / w_j)`` in L2, with
  ``c_m = (n_m + 1) / (n_m - 1)`` the window's factor (a window maximum moves by at most
  the largest change in the window); ``scale * max_m c_m`` in L-infinity.
* global average pooling to a vector: ``1 / sqrt(sum_j w_j)`` in L2 (Cauchy-Schwarz,
  attained by constants), 1 in L-infinity.
* ``Downsample`` / ``Upsample``: ``sqrt`` of the largest ratio of output measure landing
  on an input point to its weight (exact); 1 in L-infinity.
* ``nn.Linear`` and [`ChannelMixing`][inrnet.nn.pointwise.ChannelMixing]: the exact spectral norm
  (``torch.linalg.matrix_norm(ord=2)`` in float64), or the largest absolute row sum (of the
  normalised weight for a [`LipschitzLinear`][inrnet.nn.constrained.LipschitzLinear]).
* a residual block ``x + F(x)``: ``1 + L(F)``.

Any other module raises ``TypeError`` naming it. Supported models: [`INRNetClassifier`][inrnet.models.inr_nets.INRNetClassifier]
(``latent="points"`` or ``"lattice"``, any ``support_extent``, estimator ``"sum"`` or
``"mean"``: the ratio estimator divides by a sum of *weights*, so it is still linear in
the field and bounded the same way), ``nn.Sequential`` chains of the layers above, and
single layers. [`adversarial_ratio`][inrnet.lipschitz.adversarial_ratio] gives the matching lower estimate
(gradient ascent on the perturbation).

From a bound to certificates about INRs:
[`certified_radius`][inrnet.lipschitz.certified_radius] turns logits and ``L`` into the
radius within which no input can change the predicted class,
[`certified_accuracy`][inrnet.lipschitz.certified_accuracy] the fraction of items correct and
certified at each radius, and [`field_distance`][inrnet.lipschitz.field_distance] measures
two fields (two INRs sampled on the same points, say a SIREN and a Fourier-feature INR of
one image) in the bound's input norm, so that ``distance < radius`` certifies that the
prediction survives replacing one by the other.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field as dataclass_field

import torch
from torch import Tensor, nn

from inrnet.field import Field, PointSet
from inrnet.models.inr_nets import INRNetClassifier, _ConvBlock, _Residual
from inrnet.neighbors import neighbors
from inrnet.nn.constrained import LipschitzConv, LipschitzLinear, atom_schur_bound
from inrnet.nn.conv import ContinuousConv
from inrnet.nn.geometry import as_tuple, output_points, window_support
from inrnet.nn.norm import BatchNorm
from inrnet.nn.pointwise import ChannelMixing, Pointwise
from inrnet.nn.pool import AvgPool, GlobalAvgPool, MaxPool
from inrnet.nn.resample import Downsample, Upsample, nearest_index

__all__ = ["NORMS", "LayerBound", "LipschitzBound", "lipschitz_bound", "conv_matrix", "adversarial_ratio",
           "certified_radius", "certified_accuracy", "field_distance"]

NORMS = ("l2", "linf")
"""The pairs of norms a bound is certified in (see the module docstring)."""

SAFETY = 1e-9
"""Relative amount every computed factor is raised by, to cover float64 rounding in its computation."""

EXACT_MAX = 1 << 23
"""Default largest number of entries of a layer's matrix whose 2-norm is computed exactly by SVD."""

GRAM_MAX = 1 << 24
"""Largest number of scalars of the Gram blocks the ``"gram"`` bound builds (skipped beyond)."""

_ACTIVATIONS: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0, nn.ReLU6: lambda m: 1.0, nn.Hardtanh: lambda m: 1.0, nn.Tanh: lambda m: 1.0,
    nn.Identity: lambda m: 1.0, nn.Dropout: lambda m: 1.0, nn.Sigmoid: lambda m: 0.25,
    nn.LeakyReLU: lambda m: max(1.0, abs(float(m.negative_slope))),
}
_FUNCTIONS: dict[Callable, float] = {torch.relu: 1.0, torch.tanh: 1.0, torch.sigmoid: 0.25,
                                      nn.functional.relu: 1.0}


@dataclass(frozen=True)
class LayerBound:
    """One stage's certified factor.

    Attributes:
        name: the module's path in the model (``"features.0.conv+features.0.norm"`` for a
            conv with its batch norm folded in).
        kind: the module's type.
        factor: its Lipschitz constant bound in the norms of its input and output.
        method: which bound gave ``factor`` (``"exact"``, ``"fft"``, ``"gram"``,
            ``"schur"``, ``"atoms"``, ``"closed-form"``, ``"residual"``).
        candidates: every bound computed for the stage, ``method -> value`` (``factor`` is the least).
        parts: for a residual block, the stages of its inner branch (``factor = 1 + prod``).
    """

    name: str
    kind: str
    factor: float
    method: str
    candidates: dict = dataclass_field(default_factory=dict)
    parts: tuple = ()


@dataclass(frozen=True)
class LipschitzBound:
    """A certified bound ``||T(f) - T(g)|| <= total * ||f - g||`` and where it comes from.

    Attributes:
        total: the bound, the product of the stages' factors.
        norm: ``"l2"`` or ``"linf"`` (see the module docstring).
        layers: the stages in order, [`LayerBound`][inrnet.lipschitz.LayerBound] each.
        points: the number of input points it holds on.
    """

    total: float
    norm: str
    layers: tuple
    points: int

    def __float__(self) -> float:
        return self.total

    def table(self) -> str:
        """The per-stage breakdown as text, one stage a line (residual branches indented)."""
        lines = [f"Lipschitz bound ({self.norm}, {self.points} points): {self.total:.6g}"]

        def add(layers, indent):
            for lb in layers:
                lines.append(f"{'  ' * indent}{lb.name:<44s} {lb.kind:<16s} {lb.factor:10.5g}  {lb.method}")
                add(lb.parts, indent + 1)
        add(self.layers, 1)
        return "\n".join(lines)


# --- sparse block operators ------------------------------------------------------------

@dataclass
class _BlockOp:
    """A linear map ``g_m = sum_u Y_u f_{cols_u}`` over rows ``m = rows_u``: unique pairs,
    blocks Y Tensor[U, C_out, C_in] (float64), unweighted; ``v`` Tensor[M] and ``w`` Tensor[N]
    the output and input quadrature weights."""

    rows: Tensor
    cols: Tensor
    blocks: Tensor
    n_rows: int
    n_cols: int
    v: Tensor
    w: Tensor

    def weighted(self) -> Tensor:
        """Y_u * sqrt(v_m / w_j): the blocks of the map between the weighted L2 spaces, Tensor[U, C_out, C_in]."""
        scale = (self.v[self.rows] / self.w[self.cols]).sqrt()
        return self.blocks * scale[:, None, None]

    def dense(self, weighted: bool = True) -> Tensor:
        """Tensor[M * C_out, N * C_in]."""
        y = self.weighted() if weighted else self.blocks
        co, ci = y.shape[1:]
        d = y.new_zeros(self.n_rows, co, self.n_cols, ci)
        d[self.rows, :, self.cols, :] = y
        return d.reshape(self.n_rows * co, self.n_cols * ci)


def _unique_pairs(rows: Tensor, cols: Tensor, n_cols: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows_u, cols_u, inverse)``: the distinct (row, col) pairs and each input pair's index among them."""
    key, inverse = torch.unique(rows.long() * n_cols + cols.long(), return_inverse=True)
    return key // n_cols, key % n_cols, inverse


def _block_norms(y: Tensor) -> Tensor:
    """Spectral norm of each block of Tensor[U, a, b], Tensor[U]."""
    if y.shape[0] == 0:
        return y.new_zeros(0)
    if min(y.shape[1:]) == 1:
        return y.flatten(1).norm(dim=1)
    return torch.linalg.matrix_norm(y, ord=2)


def _perron(rows: Tensor, cols: Tensor, vals: Tensor, n: int, iters: int, *, gram: bool, n_rows: int = 0) -> float:
    """A Collatz-Wielandt upper bound on the Perron root of the non-negative matrix ``S``:
    ``rho(S) <= max_j (S q)_j / q_j`` for every positive ``q`` (here a power iterate).

    ``S`` is the sparse ``a`` (``rows, cols, vals`` over ``n`` columns) when ``gram`` is
    False and ``a`` is square, else ``a^T a`` (``a`` with ``n_rows`` rows). Columns without an
    entry are left out (they meet no entry of ``S``).
    """
    active = torch.zeros(n, dtype=torch.bool, device=vals.device)
    active[cols] = True
    if not bool(active.any()):
        return 0.0

    def apply(q: Tensor) -> Tensor:
        if gram:
            p = vals.new_zeros(n_rows).index_add_(0, rows, vals * q[cols])
            return vals.new_zeros(n).index_add_(0, cols, vals * p[rows])
        return vals.new_zeros(n).index_add_(0, rows, vals * q[cols])

    q = active.to(vals.dtype)
    for _ in range(iters):
        s = apply(q)
        q = torch.where(active, (s / s.max()).clamp_min(1e-200), q.new_zeros(()))
    s = apply(q)
    return float((s[active] / q[active]).max())


def _pair_products(group: Tensor, left: Tensor, right: Tensor, y: Tensor, side: str):
    """All pairs of entries sharing ``group`` (a row or a column): their other indices and products."""
    order = torch.argsort(group, stable=True)
    g, a, b, yy = group[order], left[order], right[order], y[order]
    counts = torch.bincount(g)
    start = torch.cumsum(counts, 0) - counts
    rep = counts[g]  # partners of each entry
    first = torch.repeat_interleave(torch.arange(g.numel(), device=g.device), rep)
    offset = torch.arange(first.numel(), device=g.device) - torch.repeat_interleave(torch.cumsum(rep, 0) - rep, rep)
    second = start[g[first]] + offset
    if side == "in":  # Y_{m j}^T Y_{m j'}
        prod = torch.einsum("pki,pkl->pil", yy[first], yy[second])
    else:  # Y_{m j} Y_{m' j}^T
        prod = torch.einsum("pki,pli->pkl", yy[first], yy[second])
    return b[first], b[second], prod


def _gram_bound(op: _BlockOp, y: Tensor, iters: int, side: str) -> float | None:
    """``sqrt(rho(|G|))`` with ``G`` the block Gram matrix (``Y^T Y`` for ``side="in"``,
    ``Y Y^T`` for ``"out"``) and ``|G|`` its block spectral norms: ``||Y||^2 = ||G|| <= ||(||G_ab||)||``
    (a block matrix's norm is at most that of its block norms), and ``||.||`` of a symmetric
    non-negative matrix is its Perron root (None where the blocks would not fit ``GRAM_MAX``)."""
    group, other, n = (op.rows, op.cols, op.n_cols) if side == "in" else (op.cols, op.rows, op.n_rows)
    counts = torch.bincount(group)
    c = y.shape[2] if side == "in" else y.shape[1]
    if int((counts.double() ** 2).sum()) * c * c > GRAM_MAX:
        return None
    a, b, prod = _pair_products(group, group, other, y, side)
    ra, rb, inverse = _unique_pairs(a, b, n)
    g = prod.new_zeros(ra.numel(), c, c).index_add_(0, inverse, prod)
    return math.sqrt(_perron(ra, rb, _block_norms(g), n, iters, gram=False))


def _lattice_index(points: PointSet, coords: Tensor) -> Tensor | None:
    """Integer indices Tensor[K, d] of ``coords`` on ``points``'s lattice, None if they are not on it."""
    lat = points.lattice
    origin = coords.new_tensor(lat.origin, dtype=torch.float64)
    step = coords.new_tensor(lat.step, dtype=torch.float64)
    u = (coords.double() - origin) / step
    r = u.round()
    if float((u - r).abs().max()) > 1e-6:
        return None
    return r.long()


def _fft_bound(op: _BlockOp, y: Tensor, points: PointSet, queries: PointSet) -> float | None:
    """The polyphase symbol bound of a translation-invariant map between lattices, or None.

    With input lattice indices ``j`` (shape ``n``), outputs at ``s * i + o`` (a sub-lattice
    of it, ``i`` of shape ``n_out``) and blocks depending only on ``e = j - s i`` (checked,
    every such pair present: zero padding), ``g(i) = sum_e Y_e f(s i + e)`` is a sum
    over the ``prod(s)`` phases ``f_p(k) = f(s k + p)`` of convolutions on the coarse
    lattice. Embedded in a torus of ``L >= max(ceil(n / s) - min(k'), n_out + max(k'))``
    sites per axis (and more than the spread of ``k'``) nothing wraps around, so the map is a restriction of a block circulant
    whose norm is the largest singular value of ``[Y^_p(omega)]_p`` over the torus's
    frequencies. Blocks equal up to rounding (coordinates rounded to float32) are allowed:
    the map is then ``A_ti + R`` with ``A_ti`` translation-invariant, and the Frobenius norm
    of ``R`` (at least its 2-norm) is added; so are pairs missing from the plan (a kernel
    value of zero at the support's edge), each contributing its ``-Y_e`` to ``R``.
    """
    if points.lattice is None or queries.lattice is None or op.rows.numel() == 0:
        return None
    for wt in (op.w, op.v):
        if float(wt.max() / wt.min() - 1) > 1e-12:
            return None
    j_idx = _lattice_index(points, points.coords)
    q_in = _lattice_index(points, queries.coords)  # output sites in input-index units
    i_idx = _lattice_index(queries, queries.coords)
    if j_idx is None or q_in is None or i_idx is None:
        return None
    ratio = torch.tensor(queries.lattice.step, dtype=torch.float64) / torch.tensor(points.lattice.step,
                                                                                   dtype=torch.float64)
    s = ratio.round().long()
    if float((ratio - s).abs().max()) > 1e-9 or bool((s < 1).any()):
        return None
    o = q_in - i_idx * s  # must be one constant vector
    if bool((o != o[0]).any()):
        return None
    n_in = torch.tensor(points.lattice.shape)
    n_out = torch.tensor(queries.lattice.shape)
    e = j_idx[op.cols] - i_idx[op.rows] * s  # (U, d)
    keys, inverse = torch.unique(e, dim=0, return_inverse=True)
    first = torch.full((keys.shape[0],), op.rows.numel(), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(op.rows.numel()), "amin")
    ref = y[first]  # (D, C_out, C_in)
    residual = float((y - ref[inverse]).norm())  # ||A - A_ti||_F >= ||A - A_ti||_2: rounding in the coordinates
    counts = torch.bincount(inverse, minlength=keys.shape[0])
    i_range = torch.arange(int(n_out.max()))
    missing = 0.0  # pairs the plan dropped (a kernel value of 0, or rounded to one): -ref in the residual
    for key, count, block in zip(keys, counts.tolist(), ref):
        expected = 1
        for k in range(keys.shape[1]):
            site = s[k] * i_range[: n_out[k]] + key[k]
            expected *= int(((site >= 0) & (site < n_in[k])).sum())
        if expected < count:
            return None
        missing += (expected - count) * float(block.square().sum())
    residual = math.sqrt(residual ** 2 + missing)
    phase = torch.remainder(keys, s)  # (D, d)
    shift = torch.div(keys - phase, s, rounding_mode="floor")
    lo, hi = shift.amin(0).clamp_max(0), shift.amax(0).clamp_min(0)
    size = torch.maximum(torch.maximum(-(-n_in // s) - lo, n_out + hi), hi - lo + 1)  # no shift wraps onto another
    if int(size.prod()) * ref.shape[1] * ref.shape[2] * int(s.prod()) > GRAM_MAX:
        return None
    p_flat = torch.zeros(keys.shape[0], dtype=torch.long)
    for k in range(keys.shape[1]):
        p_flat = p_flat * s[k] + phase[:, k]
    n_phase = int(s.prod())
    co, ci = ref.shape[1:]
    h = ref.new_zeros(*size.tolist(), n_phase, co, ci)
    index = tuple(torch.remainder(shift[:, k], size[k]) for k in range(keys.shape[1]))
    h.index_put_((*index, p_flat), ref, accumulate=True)
    spec = torch.fft.fftn(h, dim=tuple(range(keys.shape[1])))  # (*L, P, C_out, C_in)
    spec = spec.movedim(-3, -2).reshape(-1, co, n_phase * ci)  # (F, C_out, P * C_in)
    symbol = float(torch.linalg.matrix_norm(spec, ord=2).max())
    return symbol + residual if residual <= 1e-3 * symbol else None


def _l2_factor(op: _BlockOp, iters: int, exact_max: int, points: PointSet | None = None,
               queries: PointSet | None = None, extra: dict | None = None) -> tuple[float, str, dict]:
    """The least of the L2 bounds that apply to ``op`` (module docstring), ``extra`` ones included."""
    y = op.weighted()  # (U, C_out, C_in)
    co, ci = y.shape[1:]
    found: dict[str, float] = dict(extra or {})
    if op.n_rows * co * op.n_cols * ci <= exact_max:
        found["exact"] = float(torch.linalg.matrix_norm(op.dense(), ord=2)) if op.rows.numel() else 0.0
    if points is not None and queries is not None:
        fft = _fft_bound(op, y, points, queries)
        if fft is not None:
            found["fft"] = fft
    for side in ("in", "out"):
        g = _gram_bound(op, y, iters, side)
        if g is not None:
            found["gram"] = min(g, found.get("gram", math.inf))
    b = _block_norms(y)
    found["schur"] = math.sqrt(_perron(op.rows, op.cols, b, op.n_cols, iters, gram=True, n_rows=op.n_rows))
    found = {k: v * (1 + SAFETY) for k, v in found.items()}
    method = min(found, key=found.get)
    return found[method], method, found


def _linf_factor(op: _BlockOp) -> tuple[float, str, dict]:
    """The exact L-infinity operator norm: the largest absolute row sum of the unweighted map."""
    row_sums = op.blocks.abs().sum(2)  # (U, C_out)
    total = row_sums.new_zeros(op.n_rows, row_sums.shape[1]).index_add_(0, op.rows, row_sums)
    value = float(total.max()) * (1 + SAFETY) if total.numel() else 0.0
    return value, "exact", {"exact": value}


# --- layers as block operators --------------------------------------------------------

def _conv_op(conv: ContinuousConv, points: PointSet, queries: PointSet) -> _BlockOp:
    """The conv's linear part from its own pairs: ``Y[m, j] = sum_e pw_e K_e^T`` (Tensor[C_out, C_in] each)."""
    n = points.n
    if conv.has_atoms:
        plan = conv.gather_plan(points, queries)
        a = plan.num_atoms
        r = torch.repeat_interleave(torch.arange(plan.rowptr.numel() - 1, device=plan.col.device), plan.rowptr.diff())
        rows, cols, inverse = _unique_pairs(r // a, plan.col, n)
        coef = plan.value.new_zeros(rows.numel(), a).double().index_put_(
            (inverse, r % a), plan.value.double(), accumulate=True)  # (U, A)
        kern = torch.einsum("ua,aio->uio", coef, conv.atoms().double())  # (U, C_in / g, C_out)
    else:
        nbrs = conv._neighbors(points, queries)
        pw = conv._pair_weight(points, queries, nbrs).double()  # (E,)
        k = conv.pair_kernel(nbrs.offset.double()).double() * pw[:, None, None]  # (E, C_in / g, C_out)
        rows, cols, inverse = _unique_pairs(nbrs.row, nbrs.col, n)
        kern = k.new_zeros(rows.numel(), *k.shape[1:]).index_add_(0, inverse, k)
    g, cg, c_out = conv.groups, kern.shape[1], kern.shape[2]
    og = c_out // g
    full = kern.new_zeros(kern.shape[0], c_out, cg * g)  # (U, C_out, C_in), block diagonal over groups
    for k in range(g):
        full[:, k * og:(k + 1) * og, k * cg:(k + 1) * cg] = kern[:, :, k * og:(k + 1) * og].transpose(1, 2)
    return _BlockOp(rows, cols, full, queries.n, n, queries.weights.double(), points.weights.double())


def conv_matrix(conv: ContinuousConv, points: PointSet, query: PointSet | None = None, *,
                weighted: bool = True) -> Tensor:
    """The dense matrix of a conv's linear part (bias left out), built from its neighbour pairs.

    Row ``m * C_out + o`` and column ``j * C_in + c``: ``g_m[o] = sum_{j, c} A[(m, o), (j, c)] f_j[c]``.

    Args:
        conv: the layer.
        points: the ``N`` input points.
        query: the ``M`` output points (default: the layer's own).
        weighted: scale by ``sqrt(v_m / w_j)`` (output and input quadrature weights), so
            that the matrix 2-norm is the operator norm between the quadrature L2 spaces.

    Returns:
        Tensor[M * C_out, N * C_in], float64.
    """
    conv64 = copy.deepcopy(conv).double().requires_grad_(False)
    points = points.to(dtype=torch.float64)
    queries = conv64.output_points(points) if query is None else query.to(dtype=torch.float64)
    return _conv_op(conv64, points, queries).dense(weighted)


def _bn_scale(bn: BatchNorm, name: str) -> Tensor:
    """Tensor[C]: ``gamma / sqrt(running_var + eps)`` of a frozen batch norm."""
    if bn.training or not bn.track_running_stats or bn.running_var is None:
        raise ValueError(f"{name} (BatchNorm) normalises with batch statistics (training mode or no running "
                         "statistics), which is no fixed map; call model.eval() on a model with running statistics")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    return scale * bn.weight.double() if bn.weight is not None else scale


def _window_nbrs(pool: nn.Module, points: PointSet):
    """The window support, output points and neighbour pairs of a pooling layer."""
    dim = points.dim
    k = as_tuple(pool.kernel_size, dim, "kernel_size", int)
    h = as_tuple(pool.spacing, dim, "spacing", float)
    s = k if pool.stride is None else as_tuple(pool.stride, dim, "stride", int)
    support = window_support(k, h)
    out = output_points(points, support, s, pool.padding)
    return support, out, neighbors(points, out, support)


# --- the walk --------------------------------------------------------------------------

@dataclass
class _State:
    """What flows between stages: a field on ``points`` with ``channels``, or a vector (``points`` None)."""

    points: PointSet | None
    channels: int


def _stage(name: str, kind: str, factor: float, method: str = "closed-form", candidates=None) -> LayerBound:
    return LayerBound(name, kind, float(factor), method, dict(candidates or {method: float(factor)}))


def _need_field(state: _State, name: str, module: nn.Module) -> PointSet:
    if state.points is None:
        raise TypeError(f"{name} ({type(module).__name__}) takes a Field, but the stages before it produce a vector")
    return state.points


def _items(module: nn.Module, prefix: str, query: PointSet | None = None) -> list[tuple[str, nn.Module, object]]:
    """Flatten containers into ``(name, leaf, query)`` stages (a residual block stays one stage)."""
    join = (lambda n: f"{prefix}.{n}" if prefix else n)
    if isinstance(module, nn.Sequential):
        out = []
        for i, (n, child) in enumerate(module.named_children()):
            out += _items(child, join(n), query if i == 0 else None)
        return out
    if isinstance(module, _ConvBlock):
        out = [(join("conv"), module.conv, query), (join("norm"), module.norm, None)]
        return out + ([(join("act"), module.act, None)] if module.act is not None else [])
    return [(prefix, module, query)]


def _chain(items, state: _State, ctx: dict) -> tuple[_State, list[LayerBound]]:
    stages: list[LayerBound] = []
    i = 0
    while i < len(items):
        name, module, query = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(module, (ContinuousConv, LipschitzConv)):
            scale, names = None, name
            if nxt is not None and isinstance(nxt[1], BatchNorm):
                scale, names = _bn_scale(nxt[1], nxt[0]), f"{name}+{nxt[0]}"
                i += 1
            state, lb = _conv_stage(names, module, state, query, scale, ctx)
            stages.append(lb)
        elif isinstance(module, _Residual):
            inner_state, parts = _chain(_items(module.inner, f"{name}.inner"), state, ctx)
            if inner_state.points is None or inner_state.points.n != state.points.n:
                raise TypeError(f"{name} (_Residual): the inner branch changes the point set")
            inner = math.prod(p.factor for p in parts)
            act = _activation(f"{name}.act", module.act)
            stages.append(LayerBound(name, "_Residual", (1 + inner) * act.factor, "residual",
                                     {"residual": (1 + inner) * act.factor}, tuple(parts)))
        else:
            state, lb = _simple_stage(name, module, state, ctx)
            stages.append(lb)
        i += 1
    return state, stages


def _conv_stage(name: str, conv: nn.Module, state: _State, query, scale, ctx) -> tuple[_State, LayerBound]:
    points = _need_field(state, name, conv)
    if state.channels != conv.in_channels:
        raise ValueError(f"{name} expects {conv.in_channels} channels, the stages before it give {state.channels}")
    queries = conv.output_points(points) if query is None else query
    kind = type(conv).__name__ + ("+BatchNorm" if scale is not None else "")
    if isinstance(conv, LipschitzConv):  # s * conv: the scale it computes on these points, before a BN's
        s = conv.scale(points, queries).double()
        scale = s.expand(conv.out_channels) if scale is None else scale * s
        kind = f"LipschitzConv({type(conv.conv).__name__})" + kind[len("LipschitzConv"):]
        conv = conv.conv
    op = _conv_op(conv, points, queries)
    if scale is not None:
        op.blocks = op.blocks * scale[None, :, None]
    if ctx["norm"] == "l2":
        extra = {}
        if conv.has_atoms:
            atoms = conv.atoms().double()  # (A, C_in / g, C_out)
            extra["atoms"] = float(atom_schur_bound(conv, points, queries,
                                                    atoms if scale is None else atoms * scale[None, None, :]))
        factor, method, found = _l2_factor(op, ctx["iters"], ctx["exact_max"], points, queries, extra)
    else:
        factor, method, found = _linf_factor(op)
    return _State(queries, conv.out_channels), LayerBound(name, kind, factor, method, found)


def _activation(name: str, module) -> LayerBound:
    fn = module.fn if isinstance(module, Pointwise) else module
    if isinstance(fn, nn.Module) and type(fn) in _ACTIVATIONS:
        return _stage(name, type(fn).__name__, _ACTIVATIONS[type(fn)](fn))
    if not isinstance(fn, nn.Module) and fn in _FUNCTIONS:
        return _stage(name, getattr(fn, "__name__", "function"), _FUNCTIONS[fn])
    raise TypeError(f"lipschitz_bound has no Lipschitz constant for {name} ({module!r}); supported "
                    f"activations: {sorted(t.__name__ for t in _ACTIVATIONS)}")


def _simple_stage(name: str, module: nn.Module, state: _State, ctx) -> tuple[_State, LayerBound]:
    norm = ctx["norm"]
    kind = type(module).__name__
    if isinstance(module, (Pointwise, *_ACTIVATIONS)):
        return state, _activation(name, module)
    if isinstance(module, BatchNorm):
        _need_field(state, name, module)
        return state, _stage(name, kind, float(_bn_scale(module, name).abs().max()) * (1 + SAFETY), "exact")
    if isinstance(module, nn.Linear):
        if state.points is not None:
            raise TypeError(f"{name} (nn.Linear) applied to a Field is not supported; use ChannelMixing")
        w = (module.normalized_weight() if isinstance(module, LipschitzLinear) else module.weight).double()
        value = float(torch.linalg.matrix_norm(w, ord=2) if norm == "l2" else w.abs().sum(1).max())
        return _State(None, module.out_features), _stage(name, kind, value * (1 + SAFETY), "exact")
    if isinstance(module, nn.Flatten) and state.points is None:
        return state, _stage(name, kind, 1.0)
    if isinstance(module, ChannelMixing):
        _need_field(state, name, module)
        w = module.weight.double()
        if module.normalized:
            w = w / w.sum(dim=1, keepdim=True)
        value = float(torch.linalg.matrix_norm(w, ord=2) if norm == "l2" else w.abs().sum(1).max())
        return _State(state.points, module.out_channels), _stage(name, kind, value * (1 + SAFETY), "exact")
    if isinstance(module, GlobalAvgPool):
        points = _need_field(state, name, module)
        value = 1.0 / math.sqrt(float(points.weights.double().sum())) if norm == "l2" else 1.0
        return _State(None, state.channels), _stage(name, kind, value * (1 + SAFETY))
    if isinstance(module, AvgPool):
        points = _need_field(state, name, module)
        support, out, nbrs = _window_nbrs(module, points)
        w = points.weights.double()[nbrs.col]
        if module.count_include_pad:
            a = w / support.volume
        else:
            mass = w.new_zeros(out.n).index_add_(0, nbrs.row, w)
            a = w / mass[nbrs.row]
        rows, cols, inverse = _unique_pairs(nbrs.row, nbrs.col, points.n)
        vals = a.new_zeros(rows.numel()).index_add_(0, inverse, a)
        op = _BlockOp(rows, cols, vals[:, None, None], out.n, points.n, out.weights.double(), points.weights.double())
        factor, method, found = _l2_factor(op, ctx["iters"], ctx["exact_max"]) if norm == "l2" else _linf_factor(op)
        return _State(out, state.channels), _stage(name, kind, factor, method, found)
    if isinstance(module, MaxPool):
        points = _need_field(state, name, module)
        _, out, nbrs = _window_nbrs(module, points)
        n = nbrs.counts().double()
        c = torch.where(n > 1, (n + 1) / (n - 1).clamp_min(1), torch.ones_like(n)) if module.unbiased else torch.ones_like(n)
        if norm == "l2":
            rows, cols, _ = _unique_pairs(nbrs.row, nbrs.col, points.n)  # a point counts once per window
            mass = (c ** 2 * out.weights.double())[rows]
            per_point = mass.new_zeros(points.n).index_add_(0, cols, mass) / points.weights.double()
            value = math.sqrt(float(per_point.max()))
        else:
            value = float(c.max())
        return _State(out, state.channels), _stage(name, kind, abs(module.scale) * value * (1 + SAFETY))
    if isinstance(module, Downsample):
        points = _need_field(state, name, module)
        out = points.downsample(module.factor)
        if out is points or norm == "linf":
            return _State(out, state.channels), _stage(name, kind, 1.0)
        ratio = out.weights.double() / points.weights.double()[out.parent_index]
        return _State(out, state.channels), _stage(name, kind, math.sqrt(float(ratio.max())) * (1 + SAFETY))
    if isinstance(module, Upsample):
        points = _need_field(state, name, module)
        target = points.parent
        if target is None:
            raise ValueError(f"{name} (Upsample): {points} has no parent point set to upsample to")
        if norm == "linf":
            return _State(target, state.channels), _stage(name, kind, 1.0)
        index = nearest_index(points, target)
        mass = target.weights.double().new_zeros(points.n).index_add_(0, index, target.weights.double())
        value = math.sqrt(float((mass / points.weights.double()).max()))
        return _State(target, state.channels), _stage(name, kind, value * (1 + SAFETY))
    raise TypeError(f"lipschitz_bound does not support {name or 'the model'} ({kind}): no certified Lipschitz "
                    "constant is implemented for it (supported: ContinuousConv, BatchNorm, activations, "
                    "AvgPool, MaxPool, GlobalAvgPool, Downsample, Upsample, ChannelMixing, nn.Linear, "
                    "residual blocks, INRNetClassifier)")


def _check_eval(model: nn.Module) -> None:
    training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"lipschitz_bound needs the model in eval mode (frozen batch norms); these modules are in "
                         f"training mode: {training[:5]}{' ...' if len(training) > 5 else ''}. Call model.eval()")


def lipschitz_bound(model: nn.Module, points: PointSet, norm: str = "l2", *, in_channels: int | None = None,
                    iters: int = 200, exact_max: int = EXACT_MAX) -> LipschitzBound:
    """A certified upper bound of ``model``'s Lipschitz constant on ``points``.

    ``||model(Field(f, points)) - model(Field(g, points))|| <= total * ||f - g||`` for all
    values ``f, g`` Tensor[B, N, C_in] (per batch item), in the norms of ``norm`` (module
    docstring): ``"l2"``, quadrature L2 on the points to Euclidean logits; ``"linf"``, the
    max over points and channels to the max over logits.

    Args:
        model: an [`INRNetClassifier`][inrnet.models.inr_nets.INRNetClassifier], an
            ``nn.Sequential`` of supported layers, or one layer, in eval mode.
        points: the ``N`` input points (any dtype; the bound is computed in float64).
        norm: ``"l2"`` or ``"linf"``.
        in_channels: ``C_in`` of the input field (default: the model's ``in_channels`` or
            its first conv's).
        iters: power iterations that choose the Schur test's weights (any number gives a
            valid bound; more give a tighter one).
        exact_max: largest number of entries of a layer's matrix whose 2-norm is computed
            exactly (SVD); larger ones use the other bounds.

    Returns:
        A [`LipschitzBound`][inrnet.lipschitz.LipschitzBound]: ``total`` and the per-stage factors.

    Raises:
        ValueError: an unknown ``norm``, or a model in training mode.
        TypeError: a module with no certified constant here (the message names it).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not isinstance(points, PointSet):
        raise TypeError(f"points must be a PointSet, got {type(points).__name__}")
    _check_eval(model)
    model64 = copy.deepcopy(model).double().requires_grad_(False)
    points64 = points.to(dtype=torch.float64)
    ctx = {"norm": norm, "iters": int(iters), "exact_max": int(exact_max)}
    if isinstance(model64, INRNetClassifier):
        items = _items(model64.features, "features", model64.latent_points(points64))
        items += _items(model64.pool, "pool") + _items(model64.head, "head")
        channels = model64.in_channels
    else:
        items = _items(model64, "")
        channels = next((m.in_channels for m in model64.modules() if isinstance(m, ContinuousConv)), None)
    channels = in_channels if in_channels is not None else channels
    if channels is None:
        raise ValueError("pass in_channels=: the model has no conv to read it from")
    _, stages = _chain(items, _State(points64, channels), ctx)
    total = math.prod(s.factor for s in stages)
    return LipschitzBound(float(total), norm, tuple(stages), points.n)


# --- certificates ------------------------------------------------------------------------

def _bound_value(bound: float | LipschitzBound, norm: str) -> float:
    """``L`` as a float, checked against ``norm``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if isinstance(bound, LipschitzBound):
        if bound.norm != norm:
            raise ValueError(f"the bound is certified in norm={bound.norm!r}, not norm={norm!r}")
        bound = bound.total
    value = float(bound)
    if not value >= 0:
        raise ValueError(f"a Lipschitz bound is a non-negative number, got {value!r}")
    return value


def certified_radius(logits: Tensor, bound: float | LipschitzBound, norm: str = "l2") -> Tensor:
    """The radius around each input within which no input changes the predicted class.

    With ``m`` the margin between the top logit ``T_y`` and the runner-up and ``L`` the
    bound (``||T(f) - T(g)|| <= L ||f - g||`` in the norms of ``norm``, see the module
    docstring), every ``g`` with ``||f - g|| < r`` gets the class of ``f``, for

    * ``"l2"`` (Euclidean logits), ``r = m / (sqrt(2) L)``. Proof: for every ``k != y``,
      ``(T_y - T_k)(g) >= (T_y - T_k)(f) - ||e_y - e_k||_2 ||T(g) - T(f)||_2 >= m - sqrt(2) L ||f - g|| > 0``.
    * ``"linf"`` (max-norm logits), ``r = m / (2 L)``. Proof: for every ``k != y``,
      ``(T_y - T_k)(g) >= m - |T_y(g) - T_y(f)| - |T_k(g) - T_k(f)| >= m - 2 L ||f - g||_inf > 0``.

    The bound holds for the model's exact-arithmetic map (see
    [`lipschitz_bound`][inrnet.lipschitz.lipschitz_bound]), so the radius certifies that map;
    float32 logits carry rounding of about ``1e-7`` of their size.

    Args:
        logits: Tensor[B, K] of ``f``, ``K >= 2``.
        bound: ``L``: a [`LipschitzBound`][inrnet.lipschitz.LipschitzBound] (its norm must
            be ``norm``) or a number.
        norm: ``"l2"`` or ``"linf"``, the norms ``bound`` holds in.

    Returns:
        Tensor[B], ``r >= 0`` in the input norm of ``norm`` (``inf`` where ``L = 0``).

    Raises:
        ValueError: an unknown norm, a bound of another norm or a negative one, or logits
            that are not ``[B, K]`` with ``K >= 2``.
    """
    value = _bound_value(bound, norm)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be Tensor[B, K] with K >= 2 classes, got shape {tuple(logits.shape)}")
    top2 = logits.detach().topk(2, dim=1).values  # (B, 2)
    margin = top2[:, 0] - top2[:, 1]  # (B,)
    factor = (math.sqrt(2.0) if norm == "l2" else 2.0) * value
    if factor == 0:
        return torch.full_like(margin, math.inf)
    return margin / factor


def certified_accuracy(radii: Tensor, correct: Tensor, eps: Tensor | float) -> Tensor:
    """The certified accuracy curve: per ``eps``, the fraction of items predicted correctly *and*
    with radius ``>= eps`` (every input within ``eps`` of the item gets its class).

    Non-increasing in ``eps``; at ``eps = 0`` the clean accuracy (radii are never negative).

    Args:
        radii: Tensor[B], from [`certified_radius`][inrnet.lipschitz.certified_radius].
        correct: bool Tensor[B], whether each item's prediction is its label.
        eps: Tensor[E] of radii (or one number).

    Returns:
        Tensor[E] (a 0-d Tensor for a number), fractions in ``[0, 1]``.

    Raises:
        ValueError: ``radii`` and ``correct`` of other shapes than one Tensor[B] (B >= 1).
    """
    radii, correct = radii.detach(), torch.as_tensor(correct).to(torch.bool)
    if radii.dim() != 1 or correct.shape != radii.shape or radii.numel() == 0:
        raise ValueError(f"radii and correct must both be Tensor[B] with B >= 1, got {tuple(radii.shape)} and "
                         f"{tuple(correct.shape)}")
    e = torch.as_tensor(eps, dtype=radii.dtype, device=radii.device)
    ok = correct[None, :] & (radii[None, :] >= e.reshape(-1, 1))  # (E, B)
    return ok.to(radii.dtype).mean(1).reshape(e.shape)


def field_distance(f: Field | Tensor, g: Field | Tensor, points: PointSet | None = None, norm: str = "l2") -> Tensor:
    """The distance of two fields on the same points, per item, in the input norm of ``norm``.

    ``"l2"``: ``sqrt(sum_j w_j |f(x_j) - g(x_j)|^2)`` with the quadrature weights
    ``w = points.weights`` (``|.|`` Euclidean over channels), the L2 distance of two INRs over the
    domain as the points estimate it; ``"linf"``: ``max_{j, c} |f_c(x_j) - g_c(x_j)|``. These are the
    input norms of [`lipschitz_bound`][inrnet.lipschitz.lipschitz_bound], so
    ``||T(f) - T(g)|| <= L * field_distance(f, g)`` and ``field_distance(f, g) < certified_radius(T(f), L)``
    certifies that ``g`` gets the class of ``f``. Compare fields in the convention the model
    sees (values after the mapping applied before the model).

    Args:
        f: a Field, or values Tensor[B, N, C].
        g: the same for the other field (same points; ``B`` may be 1 to broadcast).
        points: the N points (default: the points of the Field among ``f`` and ``g``).
        norm: ``"l2"`` or ``"linf"``.

    Returns:
        Tensor[B].

    Raises:
        ValueError: an unknown norm, no points, Fields on other points, or mismatched shapes.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    given = [x.points for x in (f, g) if isinstance(x, Field)]
    if points is None:
        if not given:
            raise ValueError("pass points=: neither f nor g is a Field")
        points = given[0]
    for p in given:
        if p is not points and (p.n != points.n or not torch.equal(p.coords, points.coords.to(p.coords))):
            raise ValueError("f and g must be sampled on the same points")
    a = f.values if isinstance(f, Field) else f
    b = g.values if isinstance(g, Field) else g
    if a.dim() != 3 or b.dim() != 3 or a.shape[1:] != b.shape[1:] or a.shape[1] != points.n:
        raise ValueError(f"values must be Tensor[B, N, C] on the {points.n} points, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return _in_norm(a - b, points, norm)


# --- lower estimates ---------------------------------------------------------------------

def _out_norm(out, points: PointSet | None, norm: str) -> Tensor:
    """Per-item norm of a model output: logits Tensor[B, K] or a Field (values [B, M, C])."""
    if isinstance(out, Field):
        if norm == "linf":
            return out.values.abs().flatten(1).amax(1)
        return (out.values.square().sum(-1) * out.points.weights.to(out.values)).sum(1).sqrt()
    return out.abs().amax(-1) if norm == "linf" else out.norm(dim=-1)


def _in_norm(d: Tensor, points: PointSet, norm: str) -> Tensor:
    if norm == "linf":
        return d.abs().flatten(1).amax(1)
    return (d.square().sum(-1) * points.weights.to(d)).sum(1).sqrt()


def _jacobian_start(model: nn.Module, values: Tensor, points: PointSet, norm: str, iters: int) -> Tensor:
    """A starting direction Tensor[B, N, C]: the top right singular vector of each item's
    Jacobian in the weighted norm (power iteration on ``J^T J``, ``J d`` by a forward
    difference since the fused conv has no double backward) for L2; for L-infinity the
    sign pattern ``sign(J_k^T)`` of the logit ``k`` with the largest ``sum |J_k|``."""
    def fn(x: Tensor) -> Tensor:
        out = model(Field(x, points))
        return out.values if isinstance(out, Field) else out

    root = points.weights.to(values).sqrt().view(1, -1, 1)  # (1, N, 1)
    if norm == "l2":
        z = torch.randn_like(values)
        with torch.no_grad():
            base = fn(values)
        scale = 1e-6 * max(float(values.abs().max()), 1.0)
        for _ in range(iters):  # J d by a forward difference (exact within a linear region), J^T by autograd
            d = z / root
            d = d / d.abs().flatten(1).amax(1).clamp_min(1e-300).view(-1, 1, 1)
            with torch.no_grad():
                jd = (fn(values + scale * d) - base) / scale
            _, jt = torch.autograd.functional.vjp(fn, values, jd)
            z = jt / root
            z = z / z.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, 1, 1)
        return z / root
    out = fn(values)
    best, start = None, torch.zeros_like(values)
    for k in range(out[0].numel()):
        e = torch.zeros_like(out).flatten(1)
        e[:, k] = 1
        _, row = torch.autograd.functional.vjp(fn, values, e.view_as(out))  # (B, N, C)
        size = row.abs().flatten(1).sum(1)  # (B,)
        better = size if best is None else torch.maximum(best, size)
        take = (size >= better).view(-1, 1, 1)
        start = torch.where(take, row.sign(), start)
        best = better
    return 3.0 * start


def adversarial_ratio(model: nn.Module, field: Field, norm: str = "l2", *, steps: int = 200,
                      radius: float = 1e-2, restarts: int = 1, lr: float = 0.05, seed: int = 0,
                      power_iters: int = 20) -> float:
    """A lower estimate of the Lipschitz constant: ``max ||T(f + d) - T(f)|| / ||d||`` by gradient ascent on ``d``.

    ``d`` is kept at norm ``radius`` (relative to ``||f||``, or absolute when ``f = 0``): in
    L2 as ``radius * u / ||u||``, in L-infinity as ``radius * tanh(u)`` (its ratio uses the
    actual ``||d||_inf``). The first restart starts from the Jacobian's worst direction
    (power iteration), the others from random ``u``. Every evaluated ratio is a true lower
    bound of the constant, so the result is a lower estimate; compare it with
    [`lipschitz_bound`][inrnet.lipschitz.lipschitz_bound].

    Args:
        model: the network, in eval mode (``Field -> Tensor[B, K]`` or ``Field -> Field``).
        field: the base point ``f``, values Tensor[B, N, C] (every item is perturbed separately).
        norm: ``"l2"`` or ``"linf"``, as in ``lipschitz_bound``.
        steps: Adam steps per restart.
        radius: the perturbation's size relative to ``||f||``.
        restarts: starts (the first from the Jacobian, the others random).
        lr: Adam's learning rate on ``u``.
        seed: seed of the random starts.
        power_iters: power iterations for the first start (0: a random one).

    Returns:
        The largest ratio seen (over items, restarts and steps).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    values, points = field.values.detach(), field.points
    with torch.no_grad():
        base = model(field)
        size = _in_norm(values, points, norm)
        size = torch.where(size > 0, size * radius, torch.full_like(size, radius)).view(-1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for restart in range(restarts):
        if restart == 0 and power_iters > 0:
            u = _jacobian_start(model, values, points, norm, power_iters).detach()
        else:
            u = torch.randn(values.shape, generator=g, dtype=values.dtype).to(values.device)
        u.requires_grad_(True)
        opt = torch.optim.Adam([u], lr=lr)
        for _ in range(steps + 1):
            if norm == "l2":
                d = size * u / _in_norm(u, points, norm).view(-1, 1, 1)
            else:
                d = size * torch.tanh(u)
            diff = model(Field(values + d, points))
            diff = diff.replace(diff.values - base.values) if isinstance(diff, Field) else diff - base
            ratio = _out_norm(diff, points, norm) / _in_norm(d, points, norm)
            best = max(best, float(ratio.detach().max()))
            opt.zero_grad()
            (-ratio.sum()).backward()
            opt.step()
    return best
