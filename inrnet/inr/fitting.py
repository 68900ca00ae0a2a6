"""Batched fitting: many INRs of one family to many images at once.

The parameters of ``batch_size`` INRs are stacked (``Tensor[b, ...]``) and optimised by
one Adam over the stacked tensors. The loss is the *sum* over INRs of each INR's mean
squared error, so each INR's gradient, and hence (Adam being elementwise) its whole
trajectory, is independent of the others in its group.

Values: images are given in ``data_range`` (default ``[0, 1]``) and mapped linearly to
the family's ``value_range`` (SIREN ``[-1, 1]``, Fourier features ``[0, 1]``), so the
fitted INRs output values in ``family.value_range``. PSNRs are reported on the scale of
``data_range`` (peak = its width).

Smoothness: every fit also reports each INR's certified Lipschitz bound
(``quality["lipschitz_bound"]``, from the weights: ``family.lipschitz_bound``), and
``lipschitz=`` fits smoother SIRENs and Fourier-feature nets, with Liu et al.'s
regulariser ([`LiuRegularizer`][inrnet.inr.smoothness.LiuRegularizer]) or a certified budget
([`KLipschitz`][inrnet.inr.smoothness.KLipschitz]); see [`inrnet.inr.smoothness`][inrnet.inr.smoothness].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inrnet.inr.base import INRBatch, INRFamily, INRModule
from inrnet.inr.pixel import PixelFamily
from inrnet.inr.smoothness import (DEFAULT_MARGIN, KLipschitz, LiuRegularizer, allocate, estimate_budget,
                                   lipschitz_layers, liu_init, liu_penalty, liu_weights, project, project_to_budget)
from inrnet.sampling.points import grid

__all__ = ["fit", "psnr", "fit_quality"]


def psnr(pred: Tensor, target: Tensor, peak: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio of each item, in dB.

    Args:
        pred: Tensor[B, ...], the reconstruction.
        target: Tensor[B, ...], the reference.
        peak: the width of the value range.

    Returns:
        Tensor[B] (``inf`` where ``pred == target``).
    """
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)  # (B,)
    return (10.0 * torch.log10(peak ** 2 / mse)).float()


def _shared_init(init, family: INRFamily) -> dict[str, Tensor]:
    """``init`` (INRModule, INRBatch of one, or a dict of [*shape] / [1, *shape]) as {name: Tensor[*shape]}."""
    if isinstance(init, INRModule):
        init = init.as_batch()
    if isinstance(init, INRBatch):
        if init.family != family or len(init) != 1:
            raise ValueError(f"init must be one INR of {family!r}, got {init!r}")
        init = init.params
    if not isinstance(init, Mapping):
        raise ValueError(f"init must be an INRModule, an INRBatch of one, or a parameter dict, got {type(init).__name__}")
    shapes = family.param_shapes()
    params = {k: (v[0] if k in shapes and v.dim() == len(shapes[k]) + 1 else v).detach() for k, v in init.items()}
    family.check_params({k: v.unsqueeze(0) for k, v in params.items()})  # (1, *shape)
    return params


def fit_quality(family: INRFamily, params: Mapping[str, Tensor], images: Tensor,
                data_range: Sequence[float] = (0.0, 1.0)) -> dict[str, Tensor]:
    """How well INRs reproduce their images, on and between the pixels, and how smooth they are.

    Args:
        family: the INRs' family, outputs in ``family.value_range``.
        params: their stacked parameters ``{name: Tensor[B, *shape]}``.
        images: Tensor[B, C, *shape], values in ``data_range``.
        data_range: the range of the image values.

    Returns:
        ``{"psnr_grid": Tensor[B], "psnr_offgrid": Tensor[B], "lipschitz_bound": Tensor[B]}``:
        PSNR at the pixel centres, and at the centres of the 2x finer grid against the
        (bi/tri)linear upsample of the image (``PixelINR(images, "linear")``), which judges
        the INR between pixels; and the certified Lipschitz bound of each INR from its
        weights (``family.lipschitz_bound``, float64, in the units of ``family.value_range``
        per unit of the ``[-1, 1]^d`` coordinates; ``inf`` for a family that certifies none).
    """
    lo, hi = map(float, data_range)
    f_lo, f_hi = family.value_range
    shape = tuple(images.shape[2:])
    fine = tuple(2 * s for s in shape)
    x = grid(shape, dtype=images.dtype, device=images.device).unsqueeze(0)  # (1, P, d)
    x_fine = grid(fine, dtype=images.dtype, device=images.device).unsqueeze(0)  # (1, 2^d P, d)
    ref = PixelFamily(shape, images.shape[1], "linear").forward({"values": images}, x_fine)  # (B, 2^d P, C)
    with torch.no_grad():
        out = [lo + (family.forward(params, xs) - f_lo) * ((hi - lo) / (f_hi - f_lo)) for xs in (x, x_fine)]
    target = images.flatten(2).transpose(1, 2)  # (B, P, C)
    return {"psnr_grid": psnr(out[0], target, hi - lo), "psnr_offgrid": psnr(out[1], ref, hi - lo),
            "lipschitz_bound": family.lipschitz_bound(params)}


def _check_images(images: Tensor, family: INRFamily, data_range: Sequence[float]) -> None:
    d, c = family.in_features, family.out_features
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() != d + 2 \
            or images.shape[1] != c or images.shape[0] == 0:
        raise ValueError(f"{family!r} fits floating images [B, C={c}, *shape with {d} dims], got "
                         f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))} "
                         f"{getattr(images, 'dtype', '')}")
    lo, hi = map(float, data_range)
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    if bool((images < lo).any()) or bool((images > hi).any()):
        raise ValueError(f"image values must lie in data_range {(lo, hi)}, got [{images.min().item():.4g}, "
                         f"{images.max().item():.4g}]; pass data_range= to say what range they use")


def _loss(family: INRFamily, params: Mapping[str, Tensor], coords: Tensor, target: Tensor) -> Tensor:
    """Sum over INRs of each INR's MSE: each INR's gradient is that of its own MSE."""
    err = family.forward(params, coords) - target  # (b, M, C)
    return err.pow(2).mean(dim=(1, 2)).sum()


def _liu_loss(family: INRFamily, params: Mapping[str, Tensor], bounds: Tensor, coords: Tensor, target: Tensor,
              alpha: float) -> tuple[Tensor, Tensor]:
    """Sum over INRs of each INR's MSE with Liu-normalised weights plus ``alpha * prod softplus(c)``, and the
    sum of the MSEs alone."""
    mse = _loss(family, liu_weights(family, params, bounds), coords, target)
    return mse + alpha * liu_penalty(bounds).sum(), mse


def _enforce_budget(family: INRFamily, params: Mapping[str, Tensor], budget: Tensor | float | None,
                    caps: Tensor | None, exact: bool = False) -> None:
    """Project onto fixed per-layer ``caps`` [b, L], or (adaptive: ``caps`` None) onto the ``budget``;
    without a budget, nothing."""
    if budget is None:
        return
    if caps is not None:
        project(family, params, caps, exact=exact)
    else:
        project_to_budget(family, params, budget, exact=exact)


def _check_lipschitz(lipschitz, family: INRFamily) -> None:
    if lipschitz is None:
        return
    if not isinstance(lipschitz, (LiuRegularizer, KLipschitz)):
        raise ValueError(f"lipschitz must be None, a LiuRegularizer or a KLipschitz, got {lipschitz!r}")
    lipschitz_layers(family)  # a ValueError naming the family if it cannot be regularised


def fit(images: Tensor, family: INRFamily, *, steps: int = 500, lr: float = 1e-3, batch_size: int = 256,
        device=None, compile: bool = False, init=None, points_per_step: int | None = None,
        data_range: Sequence[float] = (0.0, 1.0), seed: int = 0, dtype: torch.dtype = torch.float32,
        progress: bool = True, lipschitz: LiuRegularizer | KLipschitz | None = None,
        ) -> tuple[INRBatch, dict[str, Tensor]]:
    """Fit one INR of ``family`` to each image, ``batch_size`` INRs at a time.

    Args:
        images: Tensor[B, C, *shape], values in ``data_range``; ``C`` and ``len(shape)``
            must match the family's ``out_features`` and ``in_features``.
        family: the architecture to fit.
        steps: Adam steps per INR.
        lr: Adam learning rate (the paper: 1e-4 for 5x256 SIRENs, 2000 steps).
        batch_size: INRs optimised together (one stacked set of parameters).
        device: where to fit (default: the images' device).
        compile: ``torch.compile`` the loss (forward and backward); off by default.
        init: a shared initialisation for every INR (an [`INRModule`][inrnet.inr.base.INRModule], an
            [`INRBatch`][inrnet.inr.base.INRBatch] of one, or ``{name: Tensor[*shape]}``), e.g. a meta-learned
            INR; default: the family's random initialisation, seeded by ``seed``.
        points_per_step: fit on this many random pixels per step (default: all).
        data_range: the range of the image values, mapped to ``family.value_range``.
        seed: seeds the initialisation and the pixel subsets.
        dtype: floating dtype of the parameters.
        progress: show a tqdm progress bar.
        lipschitz: fit smoother INRs (SIREN and Fourier-feature families): None (a plain fit,
            the default), a [`LiuRegularizer`][inrnet.inr.smoothness.LiuRegularizer] (each layer's
            weight is normalised to a learnable max-norm bound, and the loss adds ``alpha``
            times their product; the INRs store the normalised weights), or a
            [`KLipschitz`][inrnet.inr.smoothness.KLipschitz] (each INR's certified bound is kept at most
            its budget ``K``, given or estimated from its image, by projecting every layer onto
            its share of ``K`` at the start and after every Adam step).

    Returns:
        The fitted INRs (an [`INRBatch`][inrnet.inr.base.INRBatch] of ``B``, on the images' device) and their
        quality ``{"psnr_grid": Tensor[B], "psnr_offgrid": Tensor[B], "lipschitz_bound": Tensor[B]}``
        (see [`fit_quality`][inrnet.inr.fitting.fit_quality]; the bound is certified from the stored
        weights, in the units of ``family.value_range``).

    Raises:
        ValueError: bad images, steps, batch size, points per step or ``lipschitz`` (naming it),
            or ``lipschitz`` for a family that cannot be regularised.
    """
    _check_images(images, family, data_range)
    _check_lipschitz(lipschitz, family)
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive integers, got {steps!r}, {batch_size!r}")
    device = torch.device(device) if device is not None else images.device
    shared = _shared_init(init, family) if init is not None else None
    shape = tuple(images.shape[2:])
    n_pix = math.prod(shape)
    if points_per_step is not None and not 1 <= points_per_step <= n_pix:
        raise ValueError(f"points_per_step must be in [1, {n_pix}], got {points_per_step}")
    lo, hi = map(float, data_range)
    f_lo, f_hi = family.value_range
    coords = grid(shape, dtype=dtype, device=device).unsqueeze(0)  # (1, P, d)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = _liu_loss if isinstance(lipschitz, LiuRegularizer) else _loss
    loss_fn = torch.compile(loss_fn, dynamic=False) if compile else loss_fn
    fitted, quality = [], []
    bar = tqdm(total=steps * math.ceil(len(images) / batch_size), disable=not progress, unit="step",
               desc=f"fitting {len(images)} x {family.name}")
    for start in range(0, len(images), batch_size):
        imgs = images[start:start + batch_size].to(device=device, dtype=dtype)  # (b, C, *shape)
        b = len(imgs)
        target = f_lo + (imgs - lo) * ((f_hi - f_lo) / (hi - lo))
        target = target.flatten(2).transpose(1, 2).contiguous()  # (b, P, C)
        if shared is None:
            params = family.init_params(b, generator=generator, dtype=dtype, device=device)
        else:
            params = {k: v.to(device=device, dtype=dtype).expand(b, *v.shape).clone()  # (b, *shape)
                      for k, v in shared.items()}
        budget = caps = bounds = None
        if isinstance(lipschitz, KLipschitz):
            budget = lipschitz.budget
            if budget is None:  # in the INRs' units: the mapped image
                margin = DEFAULT_MARGIN if lipschitz.margin is None else lipschitz.margin
                budget = estimate_budget(target.transpose(1, 2).reshape(imgs.shape), margin)  # (b,)
            if lipschitz.allocation != "adaptive":
                caps = allocate(family, params, budget, lipschitz.allocation)  # (b, L), fixed
        _enforce_budget(family, params, budget, caps)  # start inside the budget
        trained = [params[k].requires_grad_() for k in family.param_shapes() if k in family.trainable]
        if isinstance(lipschitz, LiuRegularizer):
            bounds = liu_init(family, params).requires_grad_()  # (b, L)
            opt = torch.optim.Adam([{"params": trained}, {"params": [bounds], "lr": lipschitz.lr}], lr=lr)
        else:
            opt = torch.optim.Adam(trained, lr=lr)
        for step in range(steps):
            x, t = coords, target
            if points_per_step is not None:
                idx = torch.randperm(n_pix, generator=generator)[:points_per_step].to(device)  # (M,)
                x, t = coords[:, idx], target[:, idx]  # (1, M, d), (b, M, C)
            if bounds is None:
                loss = mse_sum = loss_fn(family, params, x, t)
            else:
                loss, mse_sum = loss_fn(family, params, bounds, x, t, lipschitz.alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _enforce_budget(family, params, budget, caps)
            bar.update(1)
            if progress and (step % 50 == 0 or step == steps - 1):
                mse = mse_sum.item() / b * ((hi - lo) / (f_hi - f_lo)) ** 2
                bar.set_postfix(psnr=f"{10 * math.log10((hi - lo) ** 2 / max(mse, 1e-30)):.1f}dB")
        if bounds is not None:  # store the effective weights: an ordinary INR of the family
            with torch.no_grad():
                params = liu_weights(family, params, bounds)
        _enforce_budget(family, params, budget, caps, exact=True)  # float64 norms: the certified bound keeps it
        params = {k: v.detach() for k, v in params.items()}
        quality.append(fit_quality(family, params, imgs, data_range))
        fitted.append(INRBatch(family, {k: v.to(images.device) for k, v in params.items()}))
    bar.close()
    return INRBatch.cat(fitted), {k: torch.cat([q[k] for q in quality]).to(images.device) for k in quality[0]}
