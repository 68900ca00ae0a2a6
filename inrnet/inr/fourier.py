"""Gaussian Fourier-feature networks (Tancik et al., 2020).

A fixed random embedding ``gamma(x) = [cos(2 pi B x), sin(2 pi B x)]`` with
``B ~ N(0, sigma^2)`` of shape ``[features, d]``, followed by a ReLU MLP of ``depth``
linear layers. ``B`` is a per-INR parameter (``freq``) so every INR is self-contained,
but fitting never changes it. The paper's ImageNet test INRs use ``depth=4, width=256``.
``sigma`` is in cycles per unit of our ``[-1, 1]^d`` coordinates, so the default 5 is
Tancik et al.'s 10 on ``[0, 1]^d``; outputs are fitted to ``[0, 1]`` (the paper's
convention, ``value_range``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from inrnet.inr.base import INRFamily, INRModule, batched_linear, linear_bound, register_family, uniform_init
from inrnet.inr.smoothness import fourier_embedding_bound, layered_bound

__all__ = ["FourierFamily", "FourierFeatures"]


@register_family
class FourierFamily(INRFamily):
    """The Gaussian Fourier-feature MLP.

    Args:
        in_features: coordinate dimension d.
        out_features: channels c.
        features: number of random frequencies (the embedding has ``2 * features`` dims).
        sigma: standard deviation of the frequencies.
        width: hidden features of every layer.
        depth: number of linear layers (>= 1), ReLU between them.
        value_range: the output range its INRs are fitted to.

    Parameters of one INR: ``freq`` [features, d] (frozen), ``weight{i}`` [out_i, in_i]
    and ``bias{i}`` [out_i] for ``i < depth``, initialised as ``nn.Linear``.
    """

    name = "fourier"

    def __init__(self, in_features: int = 2, out_features: int = 3, features: int = 256, sigma: float = 5.0,
                 width: int = 256, depth: int = 4, value_range: Sequence[float] = (0.0, 1.0)):
        for key, v in (("in_features", in_features), ("out_features", out_features), ("features", features),
                       ("width", width), ("depth", depth)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Fourier-feature {key} must be a positive integer, got {v!r}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"Fourier-feature sigma must be positive, got {sigma}")
        self.in_features, self.out_features = in_features, out_features
        self.features, self.sigma = features, float(sigma)
        self.width, self.depth = width, depth
        self.value_range = (float(value_range[0]), float(value_range[1]))

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "features": self.features,
                "sigma": self.sigma, "width": self.width, "depth": self.depth,
                "value_range": list(self.value_range)}

    def _sizes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of each linear layer."""
        dims = [2 * self.features] + [self.width] * (self.depth - 1) + [self.out_features]
        return list(zip(dims[:-1], dims[1:]))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"freq": (self.features, self.in_features)}
        for i, (fan_in, fan_out) in enumerate(self._sizes()):
            shapes[f"weight{i}"] = (fan_out, fan_in)
            shapes[f"bias{i}"] = (fan_out,)
        return shapes

    @property
    def trainable(self) -> frozenset[str]:
        return frozenset(self.param_shapes()) - {"freq"}

    def init_params(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device=None) -> dict[str, Tensor]:
        freq = torch.randn((n, self.features, self.in_features), generator=generator, dtype=torch.float64)
        params = {"freq": (self.sigma * freq).to(dtype=dtype, device=device)}
        for i, (fan_in, fan_out) in enumerate(self._sizes()):
            # nn.Linear's default: kaiming_uniform(a=sqrt(5)) gives the bound 1/sqrt(fan_in) too
            bound = linear_bound(fan_in)
            params[f"weight{i}"] = uniform_init((n, fan_out, fan_in), bound, generator, dtype, device)
            params[f"bias{i}"] = uniform_init((n, fan_out), bound, generator, dtype, device)
        return params

    def forward(self, params: Mapping[str, Tensor], coords: Tensor) -> Tensor:
        freq = params["freq"]  # (B, F, d)
        b = freq.shape[0]
        coords = coords.to(freq.dtype)
        if coords.shape[0] != b:
            coords = coords.expand(b, -1, -1)  # (B, N, d)
        phase = torch.bmm(coords, freq.transpose(1, 2)).mul_(2.0 * math.pi)  # (B, N, F)
        h = torch.cat([phase.cos(), phase.sin()], dim=-1)  # (B, N, 2F)
        for i in range(self.depth - 1):
            h = batched_linear(h, params[f"weight{i}"], params[f"bias{i}"])  # (B, N, width)
            h = h.relu() if h.requires_grad else h.relu_()
        last = self.depth - 1
        return batched_linear(h, params[f"weight{last}"], params[f"bias{last}"])  # (B, N, c)

    def lipschitz_layers(self) -> list[tuple[str, float]]:
        """The trainable linear layers as ``(weight name, factor)``: factor 1 (ReLU MLP)."""
        return [(f"weight{i}", 1.0) for i in range(self.depth)]

    def embedding_lipschitz(self, params: Mapping[str, Tensor]) -> Tensor:
        """The exact constant of the (frozen) embedding, ``2 pi ||B||_2``: float64 Tensor[B].

        Args:
            params: ``{name: Tensor[B, *shape]}`` stacked parameters.
        """
        return fourier_embedding_bound(params["freq"])

    def lipschitz_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        """``2 pi ||B||_2 * prod_i ||W_i||_2`` (ReLU is 1-Lipschitz).

        Args:
            params: ``{name: Tensor[B, *shape]}`` stacked parameters.

        Returns:
            float64 Tensor[B], a certified bound in the Euclidean norms (see
            [`inrnet.inr.smoothness`][inrnet.inr.smoothness]).
        """
        self.check_params(params)
        return layered_bound(self, params)


class FourierFeatures(INRModule):
    """One Gaussian Fourier-feature network as an ``nn.Module``: ``Tensor[N, d] -> Tensor[N, c]``.

    Takes [`FourierFamily`][inrnet.inr.fourier.FourierFamily]'s arguments; ``generator`` seeds the initialisation.
    """

    def __init__(self, in_features: int = 2, out_features: int = 3, features: int = 256, sigma: float = 5.0,
                 width: int = 256, depth: int = 4, value_range: Sequence[float] = (0.0, 1.0), *,
                 generator: torch.Generator | None = None):
        family = FourierFamily(in_features, out_features, features, sigma, width, depth, value_range)
        super().__init__(family, {k: v[0] for k, v in family.init_params(1, generator=generator).items()})
