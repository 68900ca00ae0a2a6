"""Lipschitz-normalised layers: a continuous conv and a linear layer rescaled to a certified factor.

[`atom_schur_bound`][inrnet.nn.constrained.atom_schur_bound] bounds a conv's operator norm in
quadrature L2 on a point set from its atoms' norms (cheap and differentiable: the ``"atoms"``
candidate of [`inrnet.lipschitz.lipschitz_bound`][inrnet.lipschitz.lipschitz_bound]);
[`LipschitzConv`][inrnet.nn.constrained.LipschitzConv] divides the conv by it on every point set
it runs on, [`LipschitzLinear`][inrnet.nn.constrained.LipschitzLinear] divides a linear layer by
its exact spectral norm. The Lipschitz-constrained INR-Nets
(``INRNetClassifier(lipschitz_target=L)``) are built from them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from inrnet.field import Field, PointSet
from inrnet.nn.conv import ContinuousConv

__all__ = ["atom_schur_bound", "LipschitzConv", "LipschitzLinear", "LIPSCHITZ_MARGIN"]

LIPSCHITZ_MARGIN = 1e-4
"""A constrained layer is normalised to ``budget * (1 - LIPSCHITZ_MARGIN)``: room for float32 rounding."""


def _atom_masses(plan, v: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-atom masses of a gather plan: ``R[m, a] = sum_j |c_mja|`` Tensor[M, A] and
    ``C[j, a] = sum_m v_m |c_mja| / w_j`` Tensor[N, A] (``c`` the plan's entries ``S[(m, a), j]``)."""
    a = plan.num_atoms
    r = torch.repeat_interleave(torch.arange(plan.num_out * a, device=plan.col.device), plan.rowptr.diff())  # (nnz,)
    mag = plan.value.abs()
    rows = mag.new_zeros(plan.num_out * a).index_add_(0, r, mag).view(plan.num_out, a)
    vw = v.to(mag)[torch.div(r, a, rounding_mode="floor")]
    cols = mag.new_zeros(plan.num_in * a).index_add_(0, plan.col.long() * a + r % a, mag * vw).view(plan.num_in, a)
    w = w.to(mag)[:, None]
    return rows, torch.where(w > 0, cols / w.clamp_min(torch.finfo(mag.dtype).tiny), torch.zeros_like(cols))


def _atom_norms(atoms: Tensor, groups: int) -> Tensor:
    """Spectral norm of each atom's block-diagonal ``C_out x C_in`` matrix, Tensor[A] (the largest over groups)."""
    a, cg, c_out = atoms.shape
    blocks = atoms.reshape(a, cg, groups, c_out // groups).transpose(1, 2)  # (A, g, Cg, C_out / g)
    if min(blocks.shape[2:]) == 1:
        norms = blocks.flatten(2).norm(dim=2)
    else:
        norms = torch.linalg.matrix_norm(blocks, ord=2)
    return norms.amax(1)


def atom_schur_bound(conv: ContinuousConv, points: PointSet, queries: PointSet | None = None,
                     atoms: Tensor | None = None) -> Tensor:
    """An upper bound of a conv's operator norm in quadrature L2 on these points, from its atoms' norms.

    The conv's linear part is ``g_m = sum_j Y_mj f_j`` with ``Y_mj = sum_a c_mja W_a^T`` (``c`` the
    gather plan's entries, quadrature weights included; ``W_a`` the atoms). So
    ``||Y_mj|| <= b_mj = sum_a |c_mja| ||W_a||``, and the Schur test with the weights
    ``sqrt(v_m)``, ``sqrt(w_j)`` of the output and input points gives
    ``||g||_v <= sqrt(max_m sum_j b_mj * max_j sum_m v_m b_mj / w_j) ||f||_w``; both maxima are
    computed from per-atom masses of the plan (cached on it), so the bound is a cheap,
    differentiable function of the atoms on any point set: the factor
    [`LipschitzConv`][inrnet.nn.constrained.LipschitzConv] normalises, and one of the
    candidates of [`inrnet.lipschitz.lipschitz_bound`][inrnet.lipschitz.lipschitz_bound] (``"atoms"``).

    Args:
        conv: a conv with atoms (B-spline, Legendre, binned MLP kernels), bias left out.
        points: the N input points.
        queries: the M output points (default the conv's own).
        atoms: atom weights Tensor[A, C_in / groups, C_out] to bound instead of ``conv.atoms()``.

    Returns:
        A scalar Tensor (differentiable in the atoms).

    Raises:
        ValueError: the conv has no atoms.
    """
    if not conv.has_atoms:
        raise ValueError(f"{type(conv).__name__} evaluates its kernel per pair and has no atoms to bound")
    queries = conv.output_points(points) if queries is None else queries
    plan = conv.gather_plan(points, queries)
    rows, cols = plan.cached("atom-masses", lambda: _atom_masses(plan, queries.weights, points.weights))
    atoms = conv.atoms() if atoms is None else atoms
    s = _atom_norms(atoms, conv.groups).to(rows.dtype)  # (A,)
    return torch.sqrt((rows @ s).amax() * (cols @ s).amax())


class LipschitzConv(nn.Module):
    """A continuous conv rescaled, on every point set it runs on, to the L2 factor ``budget``.

    ``out = s * conv(f) + bias`` with ``s = budget * (1 - LIPSCHITZ_MARGIN) / B`` and ``B`` the
    conv's [`atom_schur_bound`][inrnet.nn.constrained.atom_schur_bound] on these input and
    output points: ``B`` bounds the conv's operator norm there, so the layer's (which
    [`inrnet.lipschitz.lipschitz_bound`][inrnet.lipschitz.lipschitz_bound] certifies, its
    ``"atoms"`` candidate being ``s * B``) is at most ``budget``. Gradients flow through ``B``,
    as in spectral normalisation.

    Args:
        conv: the conv (with atoms); its bias moves to this module.
        budget: the factor to normalise to (> 0).

    Shapes:
        ``forward(field [B, N, C_in], query=None) -> Field [B, M, C_out]``, as the conv.
    """

    def __init__(self, conv: ContinuousConv, budget: float):
        super().__init__()
        if not conv.has_atoms:
            raise ValueError(f"LipschitzConv needs a conv with atoms (B-spline or binned MLP kernels); "
                             f"{type(conv).__name__} evaluates its kernel per pair")
        if not budget > 0:
            raise ValueError(f"budget must be positive, got {budget!r}")
        self.conv, self.budget = conv, float(budget)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        conv.bias = None
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride, self.dim = conv.stride, conv.dim

    def output_points(self, points: PointSet) -> PointSet:
        """The conv's output points for inputs on ``points``."""
        return self.conv.output_points(points)

    def scale(self, points: PointSet, queries: PointSet | None = None) -> Tensor:
        """``s``, the scalar the conv's output is multiplied by on these points (a Tensor)."""
        bound = atom_schur_bound(self.conv, points, queries)
        return self.budget * (1 - LIPSCHITZ_MARGIN) / bound.clamp_min(torch.finfo(bound.dtype).tiny)

    def forward(self, field: Field, query: PointSet | None = None) -> Field:
        """``field`` values Tensor[B, N, C_in] -> Tensor[B, M, C_out] on ``query`` (default the conv's points)."""
        queries = self.conv.output_points(field.points) if query is None else query
        out = self.conv(field, query=queries).values  # (B, M, C_out)
        out = out * self.scale(field.points, queries).to(out.dtype)
        return Field(out + self.bias if self.bias is not None else out, queries)

    def extra_repr(self) -> str:
        return f"budget={self.budget:.6g}"


class LipschitzLinear(nn.Linear):
    """``nn.Linear`` with its weight divided by its exact spectral norm (float SVD), times ``budget``.

    Args:
        in_features: inputs.
        out_features: outputs.
        budget: the spectral norm of the weight used (> 0), up to ``1 - LIPSCHITZ_MARGIN``.
    """

    def __init__(self, in_features: int, out_features: int, budget: float):
        if not budget > 0:
            raise ValueError(f"budget must be positive, got {budget!r}")
        super().__init__(in_features, out_features)
        self.budget = float(budget)

    def normalized_weight(self) -> Tensor:
        """The weight the layer applies, Tensor[out_features, in_features], of spectral norm
        ``budget * (1 - LIPSCHITZ_MARGIN)``."""
        sigma = torch.linalg.matrix_norm(self.weight, ord=2)
        return self.weight * (self.budget * (1 - LIPSCHITZ_MARGIN) / sigma.clamp_min(torch.finfo(sigma.dtype).tiny))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", budget={self.budget:.6g}"
