"""Normalization with QMC statistics (paper App. C, eqs. 128-130).

Each channel's mean and variance are integrals over the domain, estimated with the point
set's quadrature weights and self-normalised (``dx`` normalised to a probability measure):

    mu = sum_j w_j f(x_j) / sum_j w_j,    sigma^2 = sum_j w_j (f(x_j) - mu)^2 / sum_j w_j,

exact means on grids (where the layers equal their ``torch.nn`` twins), QMC estimates on
Sobol points. The output is ``(f - mu) / sqrt(sigma^2 + eps) * gamma + beta`` as in torch
(the paper writes ``sigma + eps``). Batch norm averages the statistics over the batch too
and keeps running statistics with PyTorch's momentum convention; gradients flow through
the batch statistics in training. Parameter and buffer names match ``torch.nn`` so state
dicts can be copied across.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inrnet.field import Field

__all__ = ["weighted_moments", "batch_norm", "instance_norm", "group_norm", "channel_layer_norm",
           "BatchNorm", "InstanceNorm", "GroupNorm", "ChannelLayerNorm"]


def weighted_moments(values: Tensor, weights: Tensor, *, over_batch: bool) -> tuple[Tensor, Tensor]:
    """Self-normalised weighted mean and biased variance of each channel.

    Args:
        values: Tensor[B, N, C].
        weights: Tensor[N], positive quadrature weights.
        over_batch: pool the statistics over the batch (batch norm) or not (instance norm).

    Returns:
        ``mean`` and ``var``, each Tensor[1, 1, C] if ``over_batch`` else Tensor[B, 1, C].
    """
    p = (weights / weights.sum()).to(values.dtype).view(1, -1, 1)  # (1, N, 1)
    mean = (values * p).sum(1, keepdim=True)  # (B, 1, C)
    if over_batch:
        mean = mean.mean(0, keepdim=True)  # (1, 1, C)
    var = ((values - mean).square() * p).sum(1, keepdim=True)  # (B, 1, C)
    if over_batch:
        var = var.mean(0, keepdim=True)  # (1, 1, C)
    return mean, var


def _affine(values: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is not None:
        values = values * weight
    if bias is not None:
        values = values + bias
    return values


def _update_running(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor,
                    n: int, momentum: float) -> None:
    """``running = (1 - momentum) * running + momentum * batch``, the variance unbiased by ``n / (n - 1)``."""
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_(var.detach().to(running_var.dtype) * (n / (n - 1)), alpha=momentum)


def batch_norm(values: Tensor, weights: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, uniform_weights: bool = False) -> Tensor:
    """Batch normalization with QMC statistics (``torch.nn.functional.batch_norm`` on point sets).

    With equal quadrature weights (Sobol points, grids, lattices) the self-normalised
    statistics are the plain mean and biased variance over the batch and the points, so the
    values go through torch's fused ``F.batch_norm`` as ``[B * N, C]`` (the same sums, in
    another order; forward and backward in one kernel each).

    Args:
        values: Tensor[B, N, C].
        weights: Tensor[N], quadrature weights of the points.
        running_mean: Tensor[C] buffer, updated in place when ``training``; used instead of
            the batch mean when not ``training``.
        running_var: Tensor[C] buffer, likewise for the variance.
        weight: Tensor[C] affine scale, or ``None``.
        bias: Tensor[C] affine shift, or ``None``.
        training: normalise with the batch statistics (and update the running ones).
        momentum: the running-average factor for this step.
        eps: added to the variance.
        uniform_weights: the caller knows that ``weights`` are all equal (``BatchNorm`` checks
            once per point set); then ``F.batch_norm`` computes the result.

    Returns:
        Tensor[B, N, C].
    """
    b, n, c = values.shape
    if training and b * n <= 1:
        raise ValueError(f"batch norm needs more than one value per channel in training, got values {(b, n, c)}")
    if uniform_weights and (training or (running_mean is not None and running_var is not None)):
        out = F.batch_norm(values.reshape(b * n, c), running_mean, running_var, weight, bias, training, momentum, eps)
        return out.view(b, n, c)
    if training:
        mean, var = weighted_moments(values, weights, over_batch=True)  # (1, 1, C)
        if running_mean is not None and running_var is not None:
            _update_running(running_mean, running_var, mean.view(-1), var.view(-1), b * n, momentum)  # (C,)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch norm outside training needs running statistics")
        mean, var = running_mean.to(values.dtype), running_var.to(values.dtype)
    return _affine((values - mean) * torch.rsqrt(var + eps), weight, bias)


def instance_norm(values: Tensor, weights: Tensor, running_mean: Tensor | None = None,
                  running_var: Tensor | None = None, weight: Tensor | None = None, bias: Tensor | None = None,
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Instance normalization: statistics per field and channel.

    Args:
        values: Tensor[B, N, C].
        weights: Tensor[N].
        running_mean: optional Tensor[C] buffer; with ``use_input_stats`` it moves towards
            the batch average of the instance means, otherwise it is used for normalising.
        running_var: optional Tensor[C] buffer, likewise for the variances (unbiased by
            ``N / (N - 1)``).
        weight: Tensor[C] affine scale, or ``None``.
        bias: Tensor[C] affine shift, or ``None``.

    Returns:
        Tensor[B, N, C].
    """
    if use_input_stats:
        n = values.shape[1]
        if n <= 1:
            raise ValueError(f"instance norm needs more than one point per field, got values {tuple(values.shape)}")
        mean, var = weighted_moments(values, weights, over_batch=False)  # (B, 1, C)
        if running_mean is not None and running_var is not None:
            _update_running(running_mean, running_var, mean.mean((0, 1)), var.mean((0, 1)), n, momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("instance norm without input statistics needs running statistics")
        mean, var = running_mean.to(values.dtype), running_var.to(values.dtype)
    return _affine((values - mean) * torch.rsqrt(var + eps), weight, bias)


def group_norm(values: Tensor, weights: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Group normalization: statistics per field over the domain and a group of channels.

    ``num_groups = 1`` is layer norm in the paper's sense (over channels and domain).

    Args:
        values: Tensor[B, N, C], ``C`` divisible by ``num_groups``.
        weights: Tensor[N].
        weight: Tensor[C] affine scale, or ``None``.
        bias: Tensor[C] affine shift, or ``None``.

    Returns:
        Tensor[B, N, C].
    """
    b, n, c = values.shape
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"{c} channels (values {(b, n, c)}) cannot be split into {num_groups} groups")
    grouped = values.reshape(b, n, num_groups, c // num_groups)  # (B, N, G, C/G)
    p = (weights / weights.sum()).to(values.dtype).view(1, n, 1, 1) / (c // num_groups)  # (1, N, 1, 1)
    mean = (grouped * p).sum((1, 3), keepdim=True)  # (B, 1, G, 1)
    var = ((grouped - mean).square() * p).sum((1, 3), keepdim=True)  # (B, 1, G, 1)
    out = ((grouped - mean) * torch.rsqrt(var + eps)).reshape(b, n, c)  # (B, N, C)
    return _affine(out, weight, bias)


def channel_layer_norm(values: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                       eps: float = 1e-5) -> Tensor:
    """Layer norm over the channels at each point (``torch.nn.LayerNorm`` on channels-last).

    Args:
        values: Tensor[B, N, C].
        weight: Tensor[C] affine scale, or ``None``.
        bias: Tensor[C] affine shift, or ``None``.

    Returns:
        Tensor[B, N, C].
    """
    return F.layer_norm(values, values.shape[-1:], weight, bias, eps)


class _RunningNorm(nn.Module):
    """Parameters, running-statistic buffers and momentum handling shared by batch and instance norm."""

    def __init__(self, num_channels: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool):
        super().__init__()
        if num_channels < 1 or eps <= 0 or (momentum is not None and not 0 <= momentum <= 1):
            raise ValueError(f"need num_channels >= 1, eps > 0 and momentum in [0, 1] or None, got "
                             f"{num_channels}, {eps}, {momentum}")
        self.num_channels, self.eps, self.momentum = num_channels, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_channels))
            self.register_buffer("running_var", torch.ones(num_channels))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def _step_momentum(self) -> float:
        """Count a training step; the factor of this step (``1 / steps`` when ``momentum`` is None)."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                return 1.0 / float(self.num_batches_tracked)
        return 0.0 if self.momentum is None else self.momentum

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm(_RunningNorm):
    """Batch normalization over the batch and the domain (``torch.nn.BatchNorm2d`` on point sets).

    ``momentum=None`` keeps a cumulative average. Without running statistics the batch
    statistics are used in eval mode too, as in torch.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(num_channels, eps, momentum, affine, track_running_stats)

    def forward(self, field: Field) -> Field:
        field.check_channels(self.num_channels, type(self).__name__)
        momentum = self._step_momentum()
        use_batch = self.training or not self.track_running_stats
        weights = field.points.weights
        uniform = field.points.cached(("uniform-weights",), lambda: bool((weights == weights[0]).all()))
        return field.replace(batch_norm(field.values, weights, self.running_mean, self.running_var, self.weight,
                                        self.bias, use_batch, momentum, self.eps, uniform_weights=uniform))


class InstanceNorm(_RunningNorm):
    """Instance normalization over the domain of each field (``torch.nn.InstanceNorm2d``).

    With ``track_running_stats`` the batch average of the instance statistics is tracked
    and used in eval mode; ``momentum=None`` keeps a cumulative average (torch's
    InstanceNorm never updates with ``momentum=None``).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False):
        super().__init__(num_channels, eps, momentum, affine, track_running_stats)

    def forward(self, field: Field) -> Field:
        field.check_channels(self.num_channels, type(self).__name__)
        momentum = self._step_momentum()
        use_input = self.training or not self.track_running_stats
        return field.replace(instance_norm(field.values, field.points.weights, self.running_mean, self.running_var,
                                           self.weight, self.bias, use_input, momentum, self.eps))


class GroupNorm(nn.Module):
    """Group normalization (``torch.nn.GroupNorm``); ``GroupNorm(1, C)`` is the paper's layer norm."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, field: Field) -> Field:
        field.check_channels(self.num_channels, type(self).__name__)
        return field.replace(group_norm(field.values, field.points.weights, self.num_groups, self.weight,
                                        self.bias, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels at each point (ConvNeXt's channels-last ``LayerNorm``)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        self.num_channels, self.eps, self.elementwise_affine = num_channels, eps, elementwise_affine
        self.weight = nn.Parameter(torch.ones(num_channels)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if elementwise_affine else None

    def forward(self, field: Field) -> Field:
        field.check_channels(self.num_channels, type(self).__name__)
        return field.replace(channel_layer_norm(field.values, self.weight, self.bias, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
