"""SIREN: an MLP with sine activations (Sitzmann et al., 2020).

``depth`` counts linear layers: ``depth - 1`` sine layers
``h <- sin(omega * (W h + b))`` (the first with ``first_omega_0``) and a final linear
layer. The paper's ImageNet SIRENs are ``depth=5, width=256``; a Fashion-MNIST SIREN
``2 -> 32 -> 32 -> 1`` is ``depth=3, width=32``. SIRENs map coordinates in ``[-1, 1]^d``
to values in ``[-1, 1]`` (the paper's convention, ``value_range``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from inrnet.inr.base import INRFamily, INRModule, batched_linear, linear_bound, register_family, uniform_init
from inrnet.inr.smoothness import layered_bound, sine_layers

__all__ = ["SirenFamily", "Siren"]


@register_family
class SirenFamily(INRFamily):
    """The SIREN architecture.

    Args:
        in_features: coordinate dimension d.
        out_features: channels c.
        width: hidden features of every layer.
        depth: number of linear layers (>= 2).
        omega_0: frequency factor of the hidden sine layers.
        first_omega_0: frequency factor of the first layer.
        value_range: the output range its INRs are fitted to.

    Parameters of one INR: ``weight{i}`` [out_i, in_i] (``nn.Linear`` layout) and
    ``bias{i}`` [out_i] for ``i < depth``. Initialisation is SIREN's: first layer
    ``U(-1/in, 1/in)``, later layers ``U(-sqrt(6/in)/omega_0, sqrt(6/in)/omega_0)``,
    biases ``U(-1/sqrt(in), 1/sqrt(in))`` as ``nn.Linear``.
    """

    name = "siren"

    def __init__(self, in_features: int = 2, out_features: int = 3, width: int = 256, depth: int = 5,
                 omega_0: float = 30.0, first_omega_0: float = 30.0,
                 value_range: Sequence[float] = (-1.0, 1.0)):
        for key, v in (("in_features", in_features), ("out_features", out_features), ("width", width)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"SIREN {key} must be a positive integer, got {v!r}")
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"SIREN depth (number of linear layers) must be an integer >= 2, got {depth!r}")
        if not (math.isfinite(omega_0) and math.isfinite(first_omega_0) and omega_0 > 0 and first_omega_0 > 0):
            raise ValueError(f"SIREN omega_0 and first_omega_0 must be positive, got {omega_0}, {first_omega_0}")
        self.in_features, self.out_features = in_features, out_features
        self.width, self.depth = width, depth
        self.omega_0, self.first_omega_0 = float(omega_0), float(first_omega_0)
        self.value_range = (float(value_range[0]), float(value_range[1]))

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "width": self.width,
                "depth": self.depth, "omega_0": self.omega_0, "first_omega_0": self.first_omega_0,
                "value_range": list(self.value_range)}

    def _sizes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of each linear layer."""
        dims = [self.in_features] + [self.width] * (self.depth - 1) + [self.out_features]
        return list(zip(dims[:-1], dims[1:]))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(self._sizes()):
            shapes[f"weight{i}"] = (fan_out, fan_in)
            shapes[f"bias{i}"] = (fan_out,)
        return shapes

    def init_params(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device=None) -> dict[str, Tensor]:
        params = {}
        for i, (fan_in, fan_out) in enumerate(self._sizes()):
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.omega_0
            params[f"weight{i}"] = uniform_init((n, fan_out, fan_in), bound, generator, dtype, device)
            params[f"bias{i}"] = uniform_init((n, fan_out), linear_bound(fan_in), generator, dtype, device)
        return params

    def forward(self, params: Mapping[str, Tensor], coords: Tensor) -> Tensor:
        h = coords.to(params["weight0"].dtype)  # (B or 1, N, d)
        for i in range(self.depth - 1):
            omega = self.first_omega_0 if i == 0 else self.omega_0
            h = batched_linear(h, params[f"weight{i}"], params[f"bias{i}"], omega)  # (B, N, width)
            h = h.sin() if h.requires_grad else h.sin_()
        last = self.depth - 1
        return batched_linear(h, params[f"weight{last}"], params[f"bias{last}"])  # (B, N, c)

    def lipschitz_layers(self) -> list[tuple[str, float]]:
        """The linear layers as ``(weight name, factor)``: ``omega`` of each sine layer, 1 for the last."""
        return sine_layers(self.depth, self.first_omega_0, self.omega_0)

    def embedding_lipschitz(self, params: Mapping[str, Tensor]) -> Tensor:
        """1 for every INR (a SIREN has no fixed embedding): float64 Tensor[B].

        Args:
            params: ``{name: Tensor[B, *shape]}`` stacked parameters.
        """
        weight = params["weight0"]
        return torch.ones(weight.shape[0], dtype=torch.float64, device=weight.device)

    def lipschitz_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        """``prod_{i < depth - 1} (omega_i ||W_i||_2) * ||W_last||_2`` (sine is 1-Lipschitz).

        Args:
            params: ``{name: Tensor[B, *shape]}`` stacked parameters.

        Returns:
            float64 Tensor[B], a certified bound in the Euclidean norms (see
            [`inrnet.inr.smoothness`][inrnet.inr.smoothness]).
        """
        self.check_params(params)
        return layered_bound(self, params)


class Siren(INRModule):
    """One SIREN as an ``nn.Module``: ``forward(coords Tensor[N, d]) -> Tensor[N, c]``.

    Takes [`SirenFamily`][inrnet.inr.siren.SirenFamily]'s arguments; ``generator`` seeds the initialisation.
    """

    def __init__(self, in_features: int = 2, out_features: int = 3, width: int = 256, depth: int = 5,
                 omega_0: float = 30.0, first_omega_0: float = 30.0,
                 value_range: Sequence[float] = (-1.0, 1.0), *, generator: torch.Generator | None = None):
        family = SirenFamily(in_features, out_features, width, depth, omega_0, first_omega_0, value_range)
        super().__init__(family, {k: v[0] for k, v in family.init_params(1, generator=generator).items()})
