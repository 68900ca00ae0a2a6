"""Recalibrating the running statistics of a trained net's norms at another point density.

The running statistics a [`BatchNorm`][inrnet.nn.norm.BatchNorm] keeps are QMC estimates at the density
it was trained at; [`recalibrate_norms`][inrnet.nn.recalibrate.recalibrate_norms] re-estimates them on
other points ("precise BN"), and [`snapshot_norms`][inrnet.nn.recalibrate.snapshot_norms] /
[`restore_norms`][inrnet.nn.recalibrate.restore_norms] put the trained ones back (the Lightning callback
[`RecalibrateNorms`][inrnet.lightning.callbacks.RecalibrateNorms] does both around each evaluation stage).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from inrnet.nn.norm import BatchNorm, InstanceNorm

__all__ = ["NormSnapshot", "snapshot_norms", "restore_norms", "recalibrate_norms"]


def _tracking_norms(model: nn.Module) -> list[nn.Module]:
    """The norm layers of ``model`` that keep running statistics (ours and ``torch.nn``'s)."""
    kinds = (BatchNorm, InstanceNorm, nn.modules.batchnorm._BatchNorm)
    return [m for m in model.modules() if isinstance(m, kinds) and m.track_running_stats]


NormSnapshot = list[tuple[nn.Module, float | None, dict[str, Tensor]]]
"""What [`snapshot_norms`][inrnet.nn.recalibrate.snapshot_norms] returns: ``(norm, momentum, buffers)`` per norm."""


def snapshot_norms(model: nn.Module) -> NormSnapshot:
    """Copies of the running statistics (and momentum) of every norm of ``model`` that keeps
    them, to put back with [`restore_norms`][inrnet.nn.recalibrate.restore_norms]; empty if there is none."""
    return [(m, m.momentum, {k: v.clone() for k, v in m.named_buffers(recurse=False)})
            for m in _tracking_norms(model)]


def restore_norms(snapshot: NormSnapshot, statistics: bool = True) -> None:
    """Put back the momentum and (if ``statistics``) the running statistics of a
    [`snapshot_norms`][inrnet.nn.recalibrate.snapshot_norms]."""
    with torch.no_grad():
        for m, momentum, buffers in snapshot:
            m.momentum = momentum
            if statistics:
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)


def recalibrate_norms(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any] | None = None) -> int:
    """Re-estimate the running statistics of every batch (and tracked instance) norm of ``model``.

    The statistics a continuous net keeps are tied to the point sets it was trained on: QMC
    estimates on fewer points are noisier, so features have another variance at another
    density. This recomputes them at the density of ``batches`` ("precise BN"): each norm's
    statistics are reset and averaged with equal weight over all batches (``momentum=None``),
    with only the norm layers in training mode (dropout and the like stay in eval mode) and
    no gradients. Weights are untouched; the model comes back in the mode it was in. If a
    batch fails, every statistic is restored before the error propagates.

    Args:
        model: any module; its [`BatchNorm`][inrnet.nn.norm.BatchNorm], [`InstanceNorm`][inrnet.nn.norm.InstanceNorm] with
            ``track_running_stats`` and ``torch.nn`` batch norms are recalibrated (not
            ``torch.nn.InstanceNorm*d``, which cannot keep a cumulative average).
        batches: the inputs to run, e.g. Fields [B, N, C] of training INRs sampled on the
            evaluation points (labels are not needed).
        forward: ``forward(batch)`` runs the model on one item of ``batches`` (default
            ``model(batch)``).

    Returns:
        The number of batches used.

    Raises:
        ValueError: the model has no norm with running statistics, or ``batches`` is empty.
    """
    saved = snapshot_norms(model)
    if not saved:
        raise ValueError(f"{type(model).__name__} has no norm layer with running statistics to recalibrate")
    was_training = model.training
    forward = forward or model
    count, ok = 0, False
    try:
        model.eval()
        for m, _, _ in saved:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts alike
            m.train()
        with torch.no_grad():
            for batch in batches:
                forward(batch)
                count += 1
        if count == 0:
            raise ValueError("no batches to recalibrate the norm statistics on")
        ok = True
    finally:
        restore_norms(saved, statistics=not ok)
        model.train(was_training)
    return count
