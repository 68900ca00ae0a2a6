"""Smooth INRs: certified Lipschitz bounds of INRs from their weights, and Lipschitz-regularised fitting.

Every bound here is of an INR as a function of its coordinates (in the ``[-1, 1]^d`` units
of [`inrnet.sampling.points`][inrnet.sampling.points]), with the Euclidean norm on the coordinates and on the
channels of the value: a number ``L`` with ``|f(x) - f(y)| <= L |x - y|`` for all ``x, y``
(in the units of ``family.value_range``). It is computed from the weights, never from
samples, as a product of per-stage constants (McGinnis et al., "Beyond Uniformity"):

* the embedding: Fourier features ``gamma(x) = [cos(2 pi B x), sin(2 pi B x)]`` have the
  Jacobian ``2 pi [-diag(sin) B; diag(cos) B]`` whose Gram matrix is ``4 pi^2 B^T B`` at
  every ``x``, so their constant is exactly ``2 pi ||B||_2``
  ([`fourier_embedding_bound`][inrnet.inr.smoothness.fourier_embedding_bound]; stacking the sine and the
  cosine costs no extra ``sqrt(2)``);
* every linear layer: ``factor * ||W||_2``, the exact largest singular value (float64
  SVD, not power iteration, which underestimates), with ``factor = omega`` for a SIREN
  sine layer ``sin(omega (W h + b))``;
* the activations: sine, ReLU: 1.

[`chain_bound`][inrnet.inr.smoothness.chain_bound] multiplies the layers' factors; the families'
``lipschitz_bound(params)`` methods ([`SirenFamily`][inrnet.inr.siren.SirenFamily],
[`FourierFamily`][inrnet.inr.fourier.FourierFamily], also [`FunctaFamily`][inrnet.inr.functa.FunctaFamily] and linear
[`PixelFamily`][inrnet.inr.pixel.PixelFamily]) use it, and [`fit`][inrnet.inr.fitting.fit] reports and stores it for
every INR it fits (``quality["lipschitz_bound"]``). [`empirical_lipschitz`][inrnet.inr.smoothness.empirical_lipschitz] is
the matching lower estimate: the largest Jacobian norm over given points, by autograd.

Two ways to fit smoother INRs, both options of [`fit`][inrnet.inr.fitting.fit] for SIREN and
Fourier-feature families (any family with ``lipschitz_layers()``):

* [`LiuRegularizer`][inrnet.inr.smoothness.LiuRegularizer] (Liu et al., "Learning Smooth Neural Functions via
  Lipschitz Regularization", SIGGRAPH 2022): each layer ``i`` gets a learnable bound
  ``c_i``; its linear map ``factor_i W_i`` is normalised row-wise so that its largest
  absolute row sum is at most ``softplus(c_i)`` (each row scaled by
  ``min(1, softplus(c_i) / (factor_i * row_abs_sum))``, [`liu_weights`][inrnet.inr.smoothness.liu_weights]), and
  the loss adds ``alpha * prod_i softplus(c_i)`` ([`liu_penalty`][inrnet.inr.smoothness.liu_penalty]), an upper
  bound of the MLP's Lipschitz constant in the max norm. The stored INR holds the
  normalised weights, so it is an ordinary INR of its family.
* [`KLipschitz`][inrnet.inr.smoothness.KLipschitz] (McGinnis et al.): a budget ``K`` (given, or estimated
  from each image's finite differences: [`image_lipschitz`][inrnet.inr.smoothness.image_lipschitz] times a
  margin), split across the trainable layers ([`allocate`][inrnet.inr.smoothness.allocate]: uniformly, in
  proportion to the layers' constants at initialisation, or in proportion to their
  constants after each step) and enforced by projecting each layer onto its share at the
  start and after every optimiser step ([`project`][inrnet.inr.smoothness.project],
  [`project_to_budget`][inrnet.inr.smoothness.project_to_budget]; exact spectral norms). The certified
  bound of the result is at most ``K``.

All bounds are those of the exact-arithmetic map with the given weights (float64), not of
float32 rounding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inrnet.inr.base import INRFamily

__all__ = ["LiuRegularizer", "KLipschitz", "ALLOCATIONS", "spectral_norm", "chain_bound",
           "fourier_embedding_bound", "image_lipschitz", "estimate_budget", "empirical_lipschitz",
           "lipschitz_layers", "layered_bound", "sine_layers", "liu_init", "liu_weights", "liu_penalty", "allocate", "project",
           "project_to_budget", "DEFAULT_MARGIN"]

ALLOCATIONS = ("uniform", "nonuniform", "adaptive")
"""How [`KLipschitz`][inrnet.inr.smoothness.KLipschitz] splits its budget across layers (see [`allocate`][inrnet.inr.smoothness.allocate])."""
DEFAULT_MARGIN = 4.0
"""[`KLipschitz`][inrnet.inr.smoothness.KLipschitz]'s default margin over the estimated budget: the best
off-grid PSNR of the Fashion-MNIST SIREN sweep (docs/guide/lipschitz.md), where a certified bound
runs 2-11x above the INR's measured constant."""


@dataclass(frozen=True)
class LiuRegularizer:
    """Liu et al.'s Lipschitz regularisation, as a [`fit`][inrnet.inr.fitting.fit] option.

    Each layer ``i`` has a learnable bound ``c_i`` (one per INR and layer, initialised to
    ``softplus^-1`` of the layer's max-norm ``||factor_i W_i||_inf`` at initialisation, as Liu
    et al. do); the layer's weight is normalised row-wise to ``||factor_i W_i||_inf <=
    softplus(c_i)`` and each INR's loss adds ``alpha * prod_i softplus(c_i)``.

    Args:
        alpha: the strength of the penalty (>= 0; 0 keeps only the normalisation).
        lr: Adam learning rate of the bounds ``c``. Adam moves each ``c_i`` by about ``lr``
            per step whatever ``alpha`` is; Liu et al. train for 10^5 steps at the weights'
            rate, but a fit of a few hundred steps needs a larger one: at the weights' 3e-3
            a Fashion-MNIST SIREN's last layer, initialised at a max-norm of 0.23, cannot
            grow to the amplitude of the image in 100 steps (12 dB on the grid against 43
            for a plain fit), while 0.1 lets it (the default).

    Raises:
        ValueError: ``alpha < 0`` or not finite, or ``lr <= 0``.
    """

    alpha: float
    lr: float = 0.1

    def __post_init__(self):
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"LiuRegularizer alpha must be a finite number >= 0, got {self.alpha!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"LiuRegularizer lr must be a positive finite number, got {self.lr!r}")


@dataclass(frozen=True)
class KLipschitz:
    """A K-Lipschitz fit (McGinnis et al.), as a [`fit`][inrnet.inr.fitting.fit] option.

    Args:
        budget: the certified Lipschitz bound ``K`` every fitted INR keeps, in the units of
            the family's ``value_range`` per unit of the ``[-1, 1]^d`` coordinates; None:
            estimated per image as ``margin`` times the Lipschitz constant of its
            (multi)linear interpolation ([`estimate_budget`][inrnet.inr.smoothness.estimate_budget], in the
            family's value units).
        allocation: how ``K`` is split across the trainable layers ([`allocate`][inrnet.inr.smoothness.allocate]):
            ``"uniform"`` (fixed equal shares ``(K / e)^(1/L)``, ``e`` the fixed embedding's
            constant), ``"nonuniform"`` (fixed shares in proportion to the layers' constants
            at initialisation) or ``"adaptive"`` (the default: shares in proportion to the
            layers' constants after each step, so only the product is held at ``K``:
            [`project_to_budget`][inrnet.inr.smoothness.project_to_budget]). Measured on Fashion-MNIST
            (docs/guide/lipschitz.md): for SIRENs, fixed shares lose 4-11 dB of off-grid PSNR
            to a plain fit at margins 1-8 and the adaptive split gains up to 2.7 dB; for
            Fourier-feature nets the three agree within 0.4 dB.
        margin: multiplies the estimated budget (only with ``budget=None``; default
            [`DEFAULT_MARGIN`][inrnet.inr.smoothness.DEFAULT_MARGIN], 4).

    Raises:
        ValueError: ``budget <= 0`` or not finite, ``margin <= 0``, a margin with a given
            budget (it would be ignored), or an unknown allocation.
    """

    budget: float | None = None
    allocation: str = "adaptive"
    margin: float | None = None

    def __post_init__(self):
        if self.budget is not None and (not isinstance(self.budget, (int, float)) or not math.isfinite(self.budget)
                                        or self.budget <= 0):
            raise ValueError(f"KLipschitz budget must be a positive finite number or None (estimate it from the "
                             f"images), got {self.budget!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"KLipschitz allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.margin is not None and (not isinstance(self.margin, (int, float)) or not math.isfinite(self.margin)
                                        or self.margin <= 0):
            raise ValueError(f"KLipschitz margin must be a positive finite number, got {self.margin!r}")
        if self.budget is not None and self.margin is not None:
            raise ValueError(f"KLipschitz margin multiplies an estimated budget; with budget={self.budget!r} "
                             f"given, margin={self.margin!r} would be ignored")


# --- certified bounds ---


def spectral_norm(weight: Tensor) -> Tensor:
    """The largest singular value of each of a batch of matrices, in float64.

    Args:
        weight: Tensor[B, out, in].

    Returns:
        float64 Tensor[B] (exact SVD, up to float64 rounding).
    """
    return torch.linalg.matrix_norm(weight.detach().double(), ord=2)


def chain_bound(params: Mapping[str, Tensor], layers: Sequence[tuple[str, float]]) -> Tensor:
    """``prod_i factor_i * ||W_i||_2`` over the layers ``(weight name, factor)``.

    Args:
        params: stacked parameters ``{name: Tensor[B, *shape]}`` holding each weight [B, out, in].
        layers: the linear layers of an MLP with 1-Lipschitz activations, in order.

    Returns:
        float64 Tensor[B]: a Lipschitz bound of the chain (the activations and biases cost nothing).
    """
    bound = None
    for name, factor in layers:
        term = factor * spectral_norm(params[name])  # (B,)
        bound = term if bound is None else bound * term
    return bound


def fourier_embedding_bound(freq: Tensor) -> Tensor:
    """The exact Lipschitz constant of ``x -> [cos(2 pi B x), sin(2 pi B x)]``: ``2 pi ||B||_2``.

    Its Jacobian ``J = 2 pi [-diag(sin) B; diag(cos) B]`` has ``J^T J = 4 pi^2 B^T B`` at every
    ``x``, so ``||J(x)||_2 = 2 pi ||B||_2`` everywhere.

    Args:
        freq: the frequencies ``B``, Tensor[B, features, d].

    Returns:
        float64 Tensor[B].
    """
    return 2.0 * math.pi * spectral_norm(freq)


def image_lipschitz(images: Tensor) -> Tensor:
    """The Lipschitz constant of each image's (multi)linear interpolation on ``[-1, 1]^d``.

    The image is the field that takes value ``images[b, :, i]`` at the cell centre
    ``-1 + (2 i + 1) / n`` of [`grid`][inrnet.sampling.points.grid], interpolated (multi)linearly
    between the centres and constant beyond them (a linear
    [`PixelINR`][inrnet.inr.pixel.PixelINR]). Inside a cell, the partial derivative along axis ``k``
    is a convex combination of the cell's differences along ``k``, and the squared norm of
    the gradient (or the spectral norm of the ``C x d`` Jacobian) is convex in each
    coordinate, so its maximum is at a corner: the largest norm over every pixel and every
    choice of forward or backward difference per axis (spacing ``2 / n_k``). For a linear
    ramp ``a . x`` this is ``|a|``.

    Args:
        images: Tensor[B, C, *shape], values in any units.

    Returns:
        float64 Tensor[B], in the images' units per unit of the coordinates.
    """
    x = images.detach().double()  # (B, C, *shape)
    d = x.dim() - 2
    forward, backward = [], []
    for k in range(d):
        axis, n = k + 2, x.shape[k + 2]
        diff = x.diff(dim=axis) * (n / 2.0)  # (B, C, ..., n - 1, ...): per unit of the coordinate
        pad_after = [0, 0] * (d - 1 - k) + [0, 1]  # F.pad lists the last axis first
        pad_before = [0, 0] * (d - 1 - k) + [1, 0]
        forward.append(F.pad(diff, pad_after))  # (B, C, *shape): 0 where no forward neighbour
        backward.append(F.pad(diff, pad_before))  # (B, C, *shape): 0 where no backward neighbour
    best = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for signs in itertools.product((0, 1), repeat=d):
        jac = torch.stack([backward[k] if s else forward[k] for k, s in enumerate(signs)], dim=-1)  # (B, C, *shape, d)
        jac = jac.movedim(1, -2).flatten(1, -3)  # (B, P, C, d)
        norm = jac[..., 0, :].norm(dim=-1) if jac.shape[-2] == 1 else torch.linalg.matrix_norm(jac, ord=2)  # (B, P)
        best = torch.maximum(best, norm.amax(1))
    return best


def estimate_budget(images: Tensor, margin: float = 1.0) -> Tensor:
    """A Lipschitz budget per image: ``margin`` times [`image_lipschitz`][inrnet.inr.smoothness.image_lipschitz].

    A signal-theoretic estimate: an INR that passes through the pixels needs at least the
    largest one-axis difference quotient, and the interpolation's constant is what the
    smoothest continuous fit through the pixels uses. Since a certified bound (a product of
    layer norms) overestimates an INR's true constant, a margin above 1 leaves the fit room.

    Args:
        images: Tensor[B, C, *shape], in the units the INRs output (``family.value_range``).
        margin: the factor (> 0).

    Returns:
        float64 Tensor[B].

    Raises:
        ValueError: ``margin <= 0``.
    """
    if not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"the budget margin must be a positive finite number, got {margin!r}")
    return margin * image_lipschitz(images)


def empirical_lipschitz(family: INRFamily, params: Mapping[str, Tensor], coords: Tensor, *,
                        chunk: int = 4096) -> Tensor:
    """The largest Jacobian norm of each INR over ``coords``: a lower estimate of its constant.

    Args:
        family: the INRs' family.
        params: their stacked parameters ``{name: Tensor[B, *shape]}``.
        coords: Tensor[N, d] or Tensor[B or 1, N, d], where to differentiate (moved to the
            parameters' device and dtype).
        chunk: points per autograd pass.

    Returns:
        float64 Tensor[B]: ``max_x ||J(x)||_2`` (the gradient norm for one channel), in the
        units of ``family.value_range`` per unit of the coordinates.
    """
    params = {k: v.detach() for k, v in params.items()}
    b = family.check_params(params)
    if coords.dim() == 2:
        coords = coords.unsqueeze(0)  # (1, N, d)
    family.check_coords(coords, b)
    ref = next(v for v in params.values() if v.is_floating_point())
    best = torch.zeros(b, dtype=torch.float64, device=ref.device)
    for start in range(0, coords.shape[1], chunk):
        x = coords[:, start:start + chunk].to(device=ref.device, dtype=ref.dtype)
        x = x.expand(b, -1, -1).clone().requires_grad_()  # (B, n, d)
        with torch.enable_grad():
            out = family.forward(params, x)  # (B, n, C)
            c = out.shape[-1]
            cols = [torch.autograd.grad(out[..., j].sum(), x, retain_graph=j < c - 1)[0] for j in range(c)]
        jac = torch.stack(cols, dim=-2).double()  # (B, n, C, d)
        norm = jac[..., 0, :].norm(dim=-1) if c == 1 else torch.linalg.matrix_norm(jac, ord=2)  # (B, n)
        best = torch.maximum(best, norm.amax(1))
    return best


# --- the layers a regularised fit constrains ---


def lipschitz_layers(family: INRFamily) -> list[tuple[str, float]]:
    """The trainable linear layers of ``family`` as ``(weight name, factor)``, in order.

    A layer applies ``factor * W`` to its input (``omega`` for a SIREN sine layer, 1 otherwise),
    followed by a 1-Lipschitz activation; the INR's certified bound is
    ``family.embedding_lipschitz(params) * prod_i factor_i ||W_i||_2``.

    Raises:
        ValueError: the family has no ``lipschitz_layers`` (it cannot be fitted with
            Lipschitz regularisation: SIREN and Fourier-feature families can).
    """
    layers = getattr(family, "lipschitz_layers", None)
    if layers is None:
        raise ValueError(f"Lipschitz-regularised fitting needs a family with lipschitz_layers() (SirenFamily, "
                         f"FourierFamily), not {family!r}")
    return list(layers())


def layered_bound(family: INRFamily, params: Mapping[str, Tensor]) -> Tensor:
    """The certified bound of a family with `lipschitz_layers`: the embedding's constant times the chain's.

    Args:
        family: a family with ``lipschitz_layers()`` and ``embedding_lipschitz(params)``.
        params: its stacked parameters ``{name: Tensor[B, *shape]}``.

    Returns:
        float64 Tensor[B], ``family.embedding_lipschitz(params) * prod_i factor_i ||W_i||_2``.
    """
    return family.embedding_lipschitz(params) * chain_bound(params, lipschitz_layers(family))


def sine_layers(depth: int, first_omega_0: float, omega_0: float) -> list[tuple[str, float]]:
    """A SIREN's linear layers as ``(weight name, factor)``: ``omega`` of each sine layer, 1 for the last."""
    omegas = [first_omega_0] + [omega_0] * (depth - 2) + [1.0]
    return [(f"weight{i}", omega) for i, omega in enumerate(omegas)]


def _softplus_inverse(y: Tensor) -> Tensor:
    """``c`` with ``softplus(c) = y`` (y > 0), stable for large and small ``y``."""
    return y + torch.log(-torch.expm1(-y))


def liu_init(family: INRFamily, params: Mapping[str, Tensor]) -> Tensor:
    """Liu et al.'s initial bounds: ``c_i = softplus^-1(||factor_i W_i||_inf)``, the largest absolute row sum.

    The norm is raised by a relative 1e-4 so that no row starts exactly on its cap, where
    whether the fit's gradient reaches ``c_i`` would depend on rounding.

    Args:
        family: a family with ``lipschitz_layers()``.
        params: stacked parameters ``{name: Tensor[B, *shape]}``.

    Returns:
        Tensor[B, L] in the parameters' dtype (``L`` the number of layers).
    """
    rows = [factor * params[name].detach().abs().sum(-1).amax(-1) for name, factor in lipschitz_layers(family)]
    inf_norm = torch.stack(rows, dim=1) * (1.0 + 1e-4)  # (B, L)
    return _softplus_inverse(inf_norm.clamp_min(torch.finfo(inf_norm.dtype).tiny))


def liu_weights(family: INRFamily, params: Mapping[str, Tensor], bounds: Tensor) -> dict[str, Tensor]:
    """The parameters with each layer normalised to ``||factor_i W_i||_inf <= softplus(c_i)``.

    Each row of ``W_i`` is scaled by ``min(1, softplus(c_i) / (factor_i * row_abs_sum))``
    (differentiable in the weights and the bounds); the other parameters pass through.

    Args:
        family: a family with ``lipschitz_layers()``.
        params: stacked parameters ``{name: Tensor[B, *shape]}``.
        bounds: the raw bounds ``c``, Tensor[B, L].

    Returns:
        ``{name: Tensor[B, *shape]}``: the effective parameters, an ordinary INR of ``family``.
    """
    out = dict(params)
    cap = F.softplus(bounds)  # (B, L)
    for i, (name, factor) in enumerate(lipschitz_layers(family)):
        w = params[name]  # (B, out, in)
        row = factor * w.abs().sum(-1, keepdim=True)  # (B, out, 1)
        scale = torch.clamp(cap[:, i, None, None] / row.clamp_min(torch.finfo(w.dtype).tiny), max=1.0)
        out[name] = w * scale
    return out


def liu_penalty(bounds: Tensor) -> Tensor:
    """``prod_i softplus(c_i)`` of each INR: its MLP's Lipschitz bound in the max norm.

    Args:
        bounds: the raw bounds ``c``, Tensor[B, L].

    Returns:
        Tensor[B].
    """
    return F.softplus(bounds).prod(dim=1)


# --- K-Lipschitz: allocation and projection ---


def _layer_constants(family: INRFamily, params: Mapping[str, Tensor]) -> Tensor:
    """``factor_i * ||W_i||_2`` of every layer, float64 Tensor[B, L]."""
    return _constants(family, params, exact=True)


def allocate(family: INRFamily, params: Mapping[str, Tensor], budget: Tensor | float,
             allocation: str = "adaptive") -> Tensor:
    """Split each INR's budget ``K`` into per-layer caps ``k_i`` on ``factor_i * ||W_i||_2``.

    The fixed embedding takes its constant ``e`` (Fourier features: ``2 pi ||B||_2``; SIREN:
    1) off the top, and the caps multiply to ``K / e``:

    * ``"uniform"``: ``k_i = (K / e)^(1/L)`` for each of the ``L`` layers;
    * ``"nonuniform"`` and ``"adaptive"``: ``k_i = s * n_i``, ``n_i`` the layer's constant in
      ``params`` and ``s = (K / (e prod_j n_j))^(1/L)``: every layer scaled by the same
      factor, keeping the balance between the layers. [`fit`][inrnet.inr.fitting.fit] allocates
      ``"nonuniform"`` once, at the initialisation, and ``"adaptive"`` again after every
      step ([`project_to_budget`][inrnet.inr.smoothness.project_to_budget]). For a SIREN the balance
      at initialisation is the point of its initialisation: the first layer carries the
      frequencies (``omega_0 ||W_0||_2`` of about 50 for ``omega_0 = 30``), the hidden ones
      stay near 1 so the activations keep their arcsine distribution, and the last layer
      scales the output; a uniform split cuts the first layer's frequencies. A fit moves
      that balance (a plain Fashion-MNIST SIREN's hidden layer grows 3x, its last layer
      10x, its first not at all), which fixed shares cannot follow and the adaptive split
      does. McGinnis et al. find non-uniform allocations consistently better than uniform
      ones for the same budget.

    Args:
        family: a family with ``lipschitz_layers()``.
        params: stacked parameters ``{name: Tensor[B, *shape]}``.
        budget: ``K``, a float or Tensor[B] (>= 0).
        allocation: ``"uniform"``, ``"nonuniform"`` or ``"adaptive"``.

    Returns:
        float64 Tensor[B, L]: the caps, with ``e * prod_i k_i = K``.

    Raises:
        ValueError: an unknown allocation, or a negative budget.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if allocation == "uniform":
        log_share = _log_share(family, params, budget)  # (B,)
        n = len(lipschitz_layers(family))
        return (log_share / n).exp()[:, None].expand(-1, n).clone()
    return _proportional_caps(family, params, _layer_constants(family, params), budget)


def _log_share(family: INRFamily, params: Mapping[str, Tensor], budget: Tensor | float) -> Tensor:
    """``log(K / e)`` of each INR, float64 Tensor[B]."""
    weight = params[lipschitz_layers(family)[0][0]]
    budget = torch.as_tensor(budget, dtype=torch.float64, device=weight.device).expand(weight.shape[0])  # (B,)
    if bool((budget < 0).any()) or not bool(torch.isfinite(budget).all()):
        raise ValueError(f"a Lipschitz budget must be finite and >= 0, got {budget.tolist()}")
    tiny = torch.finfo(torch.float64).tiny
    return budget.log() - family.embedding_lipschitz(params).clamp_min(tiny).log()


def _proportional_caps(family: INRFamily, params: Mapping[str, Tensor], constants: Tensor,
                       budget: Tensor | float) -> Tensor:
    """Caps ``s * n_i`` with ``e * prod_i (s n_i) = K``, for the layers' constants ``n`` Tensor[B, L]."""
    log_n = constants.clamp_min(torch.finfo(torch.float64).tiny).log()  # (B, L)
    return (log_n + ((_log_share(family, params, budget) - log_n.sum(1)) / log_n.shape[1])[:, None]).exp()


def _scale_layers(family: INRFamily, params: Mapping[str, Tensor], scale: Tensor) -> None:
    """``W_i *= scale[:, i]`` in place, for Tensor[B, L] ``scale``."""
    with torch.no_grad():
        for i, (name, _) in enumerate(lipschitz_layers(family)):
            w = params[name]  # (B, out, in)
            w.mul_(scale[:, i].to(w.dtype)[:, None, None])


def _constants(family: INRFamily, params: Mapping[str, Tensor], exact: bool) -> Tensor:
    """``factor_i * ||W_i||_2``, Tensor[B, L]: float64 if ``exact``, else in the weights' dtype."""
    return torch.stack([factor * torch.linalg.matrix_norm(params[name].detach().double() if exact
                                                          else params[name].detach(), ord=2)
                        for name, factor in lipschitz_layers(family)], dim=1)


def project(family: INRFamily, params: Mapping[str, Tensor], caps: Tensor, *, exact: bool = False) -> None:
    """Scale each layer's weight in place so that ``factor_i * ||W_i||_2 <= k_i``.

    ``W_i <- W_i * min(1, k_i / (factor_i ||W_i||_2))``: the nearest point of the cap's
    spectral-norm ball along the weight's direction (spectral normalisation).

    Args:
        family: a family with ``lipschitz_layers()``.
        params: stacked parameters ``{name: Tensor[B, *shape]}``, changed in place.
        caps: the caps ``k``, Tensor[B, L] (see [`allocate`][inrnet.inr.smoothness.allocate]).
        exact: compute the norms in float64 (default: in the weights' dtype, faster).
    """
    sigma = _constants(family, params, exact)  # (B, L)
    caps = caps.to(device=sigma.device, dtype=sigma.dtype)
    tiny = torch.finfo(sigma.dtype).tiny
    _scale_layers(family, params, torch.where(sigma > caps, caps / sigma.clamp_min(tiny), torch.ones_like(sigma)))


def project_to_budget(family: INRFamily, params: Mapping[str, Tensor], budget: Tensor | float, *,
                      exact: bool = False) -> None:
    """Scale every layer in place by ``min(1, K / bound)^(1/L)``, so each INR's certified bound is at most ``K``.

    The ``"adaptive"`` allocation: the projection onto caps in proportion to the layers'
    current constants ([`allocate`][inrnet.inr.smoothness.allocate]); an INR within its budget is left
    alone.

    Args:
        family: a family with ``lipschitz_layers()``.
        params: stacked parameters ``{name: Tensor[B, *shape]}``, changed in place.
        budget: ``K``, a float or Tensor[B] (>= 0).
        exact: compute the norms in float64 (default: in the weights' dtype, faster).
    """
    sigma = _constants(family, params, exact)  # (B, L)
    caps = _proportional_caps(family, params, sigma.double(), budget).to(sigma.dtype)  # (B, L)
    _scale_layers(family, params, torch.clamp(caps / sigma.clamp_min(torch.finfo(sigma.dtype).tiny), max=1.0))
