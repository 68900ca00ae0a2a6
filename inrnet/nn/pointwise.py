"""Pointwise layers (paper App. C): channel mixing, activations, positional encoding.

Each acts on every sample point independently, so it is exact on any point set: the
output field lives on the input's points.

* [`ChannelMixing`][inrnet.nn.pointwise.ChannelMixing] is eq. 126, ``g_j(x) = sum_i W_ij f_i(x) + b_j``, the twin of a
  1x1 convolution (``weight [C_out, C_in]`` is ``conv.weight[:, :, 0, 0]``); with
  ``normalized=True`` the weights are eq. 127, ``W_ij = w_ij / sum_k w_kj``.
* [`Pointwise`][inrnet.nn.pointwise.Pointwise] applies any elementwise function or module to the values.
* [`PositionalEncoding`][inrnet.nn.pointwise.PositionalEncoding] adds (or concatenates) sinusoids of the coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from inrnet.field import Field, check_field

__all__ = ["channel_mixing", "ChannelMixing", "Pointwise", "sinusoidal_features",
           "positional_encoding", "PositionalEncoding"]


def channel_mixing(values: Tensor, weight: Tensor, bias: Tensor | None = None, normalized: bool = False) -> Tensor:
    """Eq. 126: ``g_j = sum_i W_ij f_i + b_j`` at every point.

    Args:
        values (Tensor[B, N, C_in]): the input field's values.
        weight (Tensor[C_out, C_in]): ``W`` transposed, laid out as ``nn.Linear.weight``.
        bias (Tensor[C_out] | None): ``b``.
        normalized: use eq. 127, ``W_ij = w_ij / sum_k w_kj`` (each output channel's
            weights divided by their sum over the input channels).

    Returns:
        Tensor[B, N, C_out].
    """
    if weight.dim() != 2 or values.shape[-1] != weight.shape[1]:
        raise ValueError(f"weight {tuple(weight.shape)} ([C_out, C_in]) does not fit values "
                         f"{tuple(values.shape)} ([B, N, C_in])")
    if normalized:
        weight = weight / weight.sum(dim=1, keepdim=True)
    return nn.functional.linear(values, weight, bias)


class ChannelMixing(nn.Module):
    """Linear combinations of channels at each point (eq. 126/127), the 1x1-conv twin.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        bias: learn a bias ``b_j`` per output channel.
        normalized: parametrise the weights by eq. 127. Its weights ``w`` start positive
            (uniform in [0.5, 1.5)), so each output starts as a weighted mean of the inputs;
            without it the initialisation is that of ``nn.Conv2d(kernel_size=1)``.

    Shapes:
        ``Field[B, N, C_in] -> Field[B, N, C_out]`` on the same points.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, normalized: bool = False):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be positive, got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels, self.normalized = in_channels, out_channels, normalized
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels)
        with torch.no_grad():
            if self.normalized:
                self.weight.uniform_(0.5, 1.5)
            else:
                self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, field: Field) -> Field:
        check_field(field, type(self).__name__, self.in_channels, module=self, match_dtype=True)
        return field.replace(channel_mixing(field.values, self.weight, self.bias, self.normalized))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"
                + (", normalized=True" if self.normalized else ""))


class Pointwise(nn.Module):
    """An elementwise function of the values (activations: ReLU, GELU, SiLU, Hardswish, ...).

    Args:
        fn: an ``nn.Module`` (registered as a submodule, so its parameters train) or any
            callable ``Tensor -> Tensor`` that keeps the shape, e.g. ``torch.relu``.

    Shapes:
        ``Field[B, N, C] -> Field[B, N, C]`` on the same points.
    """

    def __init__(self, fn: nn.Module | Callable[[Tensor], Tensor]):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"Pointwise needs a module or callable, got {type(fn).__name__}")
        self.fn = fn

    def forward(self, field: Field) -> Field:
        check_field(field, "Pointwise")
        out = self.fn(field.values)
        if not isinstance(out, Tensor) or out.shape != field.values.shape:
            raise ValueError(f"{self!r} must be elementwise: values {tuple(field.values.shape)} became "
                             f"{tuple(getattr(out, 'shape', ())) if isinstance(out, Tensor) else type(out).__name__}")
        return field.replace(out)

    def __repr__(self) -> str:
        if isinstance(self.fn, nn.Module):
            return f"Pointwise({self.fn!r})"
        return f"Pointwise({getattr(self.fn, '__name__', None) or type(self.fn).__name__})"


def sinusoidal_features(coords: Tensor, frequencies: Tensor) -> Tensor:
    """``sin`` and ``cos`` of every frequency times every coordinate.

    Args:
        coords (Tensor[N, d]): the points.
        frequencies (Tensor[L]): angular frequencies ``omega_l``.

    Returns:
        Tensor[N, 2 d L]: feature ``2 (k L + l) + s`` is ``sin(omega_l x_k)`` for ``s = 0``
        and ``cos(omega_l x_k)`` for ``s = 1`` (coordinate slowest, then frequency,
        then sin/cos).
    """
    phase = coords.unsqueeze(-1) * frequencies.to(coords)  # (N, d, L)
    feats = torch.stack([phase.sin(), phase.cos()], dim=-1)  # (N, d, L, 2)
    return feats.reshape(coords.shape[0], -1)  # (N, 2 d L)


def positional_encoding(values: Tensor, coords: Tensor, frequencies: Tensor,
                        projection: Tensor | None = None) -> Tensor:
    """Add projected sinusoids to every channel, or concatenate them.

    Args:
        values (Tensor[B, N, C]): the field's values.
        coords (Tensor[N, d]): its points.
        frequencies (Tensor[L]): angular frequencies.
        projection (Tensor[2 d L, C] | None): ``None`` concatenates the features of
            [`sinusoidal_features`][inrnet.nn.pointwise.sinusoidal_features]; otherwise ``values + features @ projection``.

    Returns:
        Tensor[B, N, C] (add) or Tensor[B, N, C + 2 d L] (concatenate).
    """
    feats = sinusoidal_features(coords, frequencies)  # (N, F)
    if projection is None:
        return torch.cat([values, feats.to(values).expand(values.shape[0], -1, -1)], dim=-1)  # (B, N, C + F)
    if projection.shape != (feats.shape[1], values.shape[-1]):
        raise ValueError(f"projection {tuple(projection.shape)} must be [2 d L={feats.shape[1]}, "
                         f"C={values.shape[-1]}] for values {tuple(values.shape)}")
    return values + (feats @ projection.to(feats)).to(values)


class PositionalEncoding(nn.Module):
    """Sinusoidal positional encoding of the coordinates (paper App. C).

    The angular frequencies are ``omega_l = pi * max_frequency ** (l / (L - 1))`` for
    ``l = 0 .. L-1`` (geometric from ``pi``, one period over ``[-1, 1]``, to
    ``pi * max_frequency``; ``L = 1`` gives ``pi`` only). The default ``max_frequency =
    2 ** (L - 1)`` gives NeRF's ``pi * 2 ** l``. The ``F = 2 d L`` features are those of
    [`sinusoidal_features`][inrnet.nn.pointwise.sinusoidal_features].

    * ``mode='add'``: ``g(x) = f(x) + P^T features(x)`` with ``P [F, C]``. The fixed
      projection sends feature ``c mod F`` to channel ``c`` (``P[f, c] = 1`` iff
      ``f == c mod F``): with ``d = 1`` and ``C = 2 L`` channel ``2 l`` gets ``sin`` and
      ``2 l + 1`` gets ``cos`` of frequency ``l``, as in the Transformer; with ``C < F``
      the last features are unused, with ``C > F`` they repeat. ``learned=True`` makes
      ``P`` a parameter initialised to that matrix.
    * ``mode='concat'``: ``g(x) = [f(x), features(x)]`` with ``C + F`` channels.

    Args:
        channels: ``C``, the input channels.
        num_frequencies: ``L``.
        mode: ``"add"`` or ``"concat"``.
        max_frequency: ratio of the highest to the lowest frequency (``>= 1``).
        dim: ``d``, the coordinate dimension.
        learned: learn the projection (``mode='add'`` only).
    """

    def __init__(self, channels: int, num_frequencies: int, mode: str = "add", max_frequency: float | None = None,
                 dim: int = 2, learned: bool = False):
        super().__init__()
        if mode not in ("add", "concat"):
            raise ValueError(f"mode must be 'add' or 'concat', got {mode!r}")
        if channels < 1 or num_frequencies < 1 or dim < 1:
            raise ValueError(f"channels, num_frequencies and dim must be positive, got "
                             f"{channels}, {num_frequencies}, {dim}")
        if learned and mode == "concat":
            raise ValueError("a learned projection only exists for mode='add'")
        max_frequency = 2.0 ** (num_frequencies - 1) if max_frequency is None else float(max_frequency)
        if not math.isfinite(max_frequency) or max_frequency < 1:
            raise ValueError(f"max_frequency must be a finite number >= 1, got {max_frequency}")
        self.channels, self.mode, self.dim, self.max_frequency = channels, mode, dim, max_frequency
        exponent = torch.arange(num_frequencies, dtype=torch.float64) / max(num_frequencies - 1, 1)
        self.register_buffer("frequencies", math.pi * max_frequency ** exponent, persistent=False)
        self.num_features = 2 * dim * num_frequencies
        self.out_channels = channels + self.num_features if mode == "concat" else channels
        fixed = (torch.arange(channels) % self.num_features == torch.arange(self.num_features)[:, None]).float()
        if learned:
            self.projection = nn.Parameter(fixed)  # (F, C)
        else:
            self.register_buffer("projection", fixed if mode == "add" else None, persistent=False)

    def forward(self, field: Field) -> Field:
        check_field(field, "PositionalEncoding", self.channels)
        if field.points.dim != self.dim:
            raise ValueError(f"PositionalEncoding was built for d={self.dim} coordinates, got points "
                             f"{tuple(field.coords.shape)} ([N, d])")
        return field.replace(positional_encoding(field.values, field.coords, self.frequencies, self.projection))

    def extra_repr(self) -> str:
        learned = isinstance(self.projection, nn.Parameter)
        return (f"{self.channels}, num_frequencies={len(self.frequencies)}, mode={self.mode!r}, "
                f"max_frequency={self.max_frequency:g}, dim={self.dim}" + (", learned=True" if learned else ""))
