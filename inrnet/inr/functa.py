"""Functa: one shared SIREN, modulated per item by a latent vector (Dupont et al., 2022).

The standard form of "From data to functa" (shift modulations from a latent through a
linear map): every item is a latent vector ``z`` [latent_dim]; a shared linear map turns
it into one shift per hidden unit of every sine layer,

    s = M z + m                                  (M: [(depth - 1) * width, latent_dim])
    s_i = s[i * width : (i + 1) * width]          (the shift of hidden layer i)
    h <- sin(omega_i * (W_i h + b_i + s_i))       (i < depth - 1; omega_0 = first_omega_0)
    f(x) = W_last h + b_last                      (a linear last layer)

The base network (``W_i``, ``b_i``) and the map (``M``, ``m``) are shared by every item, so
they are *shared parameters* of the family ([`INRFamily.shared_shapes`][inrnet.inr.base.INRFamily.shared_shapes]): the family
holds them, a dataset stores them once in ``shared.safetensors`` beside its shards
(checksummed in the manifest, see [`inrnet.inr.store`][inrnet.inr.store]), and the family's config
records their content checksum ``base_sha256``, so two families with different bases never
compare equal. The per-item parameter is just ``latent`` [latent_dim].

Evaluation of a batch is a shared matmul per layer plus per-item shifts: the first layer
runs once on shared coordinates, later layers are one GEMM of all ``B * N`` activations
with the shared weight, and ``B`` shift vectors are broadcast over the points. Fitting
([`fit`][inrnet.inr.fitting.fit]) optimises only the latents (the base is fixed; meta-learning it is
out of scope), starting from zero latents as functa does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from inrnet.inr.base import INRFamily, linear_bound, register_family, uniform_init
from inrnet.inr.smoothness import chain_bound, sine_layers

__all__ = ["FunctaFamily", "base_checksum"]


def base_checksum(shared: Mapping[str, Tensor]) -> str:
    """The sha256 (hex) of shared parameters ``{name: Tensor[*shape]}``: names, shapes and float32 bytes."""
    h = hashlib.sha256()
    for k in sorted(shared):
        v = shared[k].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{k}:{tuple(v.shape)};".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@register_family
class FunctaFamily(INRFamily):
    """A shared SIREN with per-item latent shift modulations (see the module docstring).

    Args:
        in_features: coordinate dimension d.
        out_features: channels c.
        width: hidden features of every sine layer.
        depth: number of linear layers of the base SIREN (>= 2; ``depth - 1`` are modulated).
        latent_dim: size of each item's latent vector.
        omega_0: frequency factor of the hidden sine layers.
        first_omega_0: frequency factor of the first layer.
        value_range: the output range its INRs are fitted to.
        base_sha256: the checksum ([`base_checksum`][inrnet.inr.functa.base_checksum]) of the shared
            parameters this family evaluates with; set by
            [`with_shared`][inrnet.inr.functa.FunctaFamily.with_shared] (None: no base chosen yet).

    Shared parameters ([`shared_shapes`][inrnet.inr.functa.FunctaFamily.shared_shapes]): ``weight{i}`` [out_i, in_i]
    and ``bias{i}`` [out_i] for ``i < depth`` (``nn.Linear`` layout, as
    [`SirenFamily`][inrnet.inr.siren.SirenFamily]), ``shift_weight`` [(depth - 1) * width, latent_dim] and
    ``shift_bias`` [(depth - 1) * width]. Per-item parameter: ``latent`` [latent_dim].
    A family rebuilt from a config (e.g. a manifest) has no base bound until
    ``with_shared`` gives it one; [`INRDataset`][inrnet.inr.dataset.INRDataset] does so from the dataset's
    ``shared.safetensors``.
    """

    name = "functa"

    def __init__(self, in_features: int = 2, out_features: int = 1, width: int = 64, depth: int = 4,
                 latent_dim: int = 64, omega_0: float = 30.0, first_omega_0: float = 30.0,
                 value_range: Sequence[float] = (-1.0, 1.0), base_sha256: str | None = None):
        for key, v in (("in_features", in_features), ("out_features", out_features), ("width", width),
                       ("latent_dim", latent_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"functa {key} must be a positive integer, got {v!r}")
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"functa depth (number of linear layers) must be an integer >= 2, got {depth!r}")
        if not (math.isfinite(omega_0) and math.isfinite(first_omega_0) and omega_0 > 0 and first_omega_0 > 0):
            raise ValueError(f"functa omega_0 and first_omega_0 must be positive, got {omega_0}, {first_omega_0}")
        if base_sha256 is not None and (not isinstance(base_sha256, str) or len(base_sha256) != 64):
            raise ValueError(f"functa base_sha256 must be 64 hex digits or None, got {base_sha256!r}")
        self.in_features, self.out_features = in_features, out_features
        self.width, self.depth, self.latent_dim = width, depth, latent_dim
        self.omega_0, self.first_omega_0 = float(omega_0), float(first_omega_0)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.base_sha256 = base_sha256
        self._shared: dict[str, Tensor] = {}
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, Tensor]] = {}

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "width": self.width,
                "depth": self.depth, "latent_dim": self.latent_dim, "omega_0": self.omega_0,
                "first_omega_0": self.first_omega_0, "value_range": list(self.value_range),
                "base_sha256": self.base_sha256}

    def _sizes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of each linear layer of the base."""
        dims = [self.in_features] + [self.width] * (self.depth - 1) + [self.out_features]
        return list(zip(dims[:-1], dims[1:]))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"latent": (self.latent_dim,)}

    def shared_shapes(self) -> dict[str, tuple[int, ...]]:
        """The base's parameters and their shapes: ``weight{i}``, ``bias{i}``, ``shift_weight``, ``shift_bias``."""
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(self._sizes()):
            shapes[f"weight{i}"] = (fan_out, fan_in)
            shapes[f"bias{i}"] = (fan_out,)
        shapes["shift_weight"] = ((self.depth - 1) * self.width, self.latent_dim)
        shapes["shift_bias"] = ((self.depth - 1) * self.width,)
        return shapes

    @property
    def shared(self) -> dict[str, Tensor]:
        """The bound base ``{name: float32 Tensor[*shape]}`` (empty if none is bound)."""
        return dict(self._shared)

    def with_shared(self, shared: Mapping[str, Tensor]) -> FunctaFamily:
        """This family with the base ``shared`` bound (copied to float32 on the CPU).

        Args:
            shared: ``{name: Tensor[*shape]}`` for every name of [`shared_shapes`][inrnet.inr.functa.FunctaFamily.shared_shapes].

        Returns:
            A new family whose config's ``base_sha256`` is the base's checksum.

        Raises:
            ValueError: a missing or unexpected parameter, one of the wrong shape (naming
                it), a non-floating or non-finite one, or a base whose checksum is not this
                family's ``base_sha256``.
        """
        shapes = self.shared_shapes()
        missing, unexpected = sorted(set(shapes) - set(shared)), sorted(set(shared) - set(shapes))
        if missing or unexpected:
            raise ValueError(f"the base of {self!r} needs the parameters {list(shapes)}: missing {missing}, "
                             f"unexpected {unexpected}")
        base = {}
        for k, shape in shapes.items():
            v = shared[k]
            if not isinstance(v, Tensor) or not v.is_floating_point():
                raise ValueError(f"base parameter {k!r} must be a floating Tensor, got {type(v).__name__} "
                                 f"{getattr(v, 'dtype', '')}")
            if tuple(v.shape) != shape:
                raise ValueError(f"base parameter {k!r} of {self!r} must be {list(shape)}, got {list(v.shape)}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"base parameter {k!r} holds NaN or infinite values")
            base[k] = v.detach().to("cpu", torch.float32).contiguous().clone()
        digest = base_checksum(base)
        if self.base_sha256 is not None and digest != self.base_sha256:
            raise ValueError(f"these base weights (sha256 {digest[:12]}...) are not the base of {self!r} "
                             f"(base_sha256 {self.base_sha256[:12]}...)")
        family = FunctaFamily(**{**self.config(), "base_sha256": digest})
        family._shared = base
        return family

    def random_base(self, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A freshly initialised base ``{name: Tensor[*shape]}`` (float32): the SIREN layers as
        [`SirenFamily`][inrnet.inr.siren.SirenFamily] initialises them, the shift map as ``nn.Linear`` with zero bias."""
        base = {}
        for i, (fan_in, fan_out) in enumerate(self._sizes()):
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.omega_0
            base[f"weight{i}"] = uniform_init((fan_out, fan_in), bound, generator, torch.float32, None)
            base[f"bias{i}"] = uniform_init((fan_out,), linear_bound(fan_in), generator, torch.float32, None)
        s = (self.depth - 1) * self.width
        base["shift_weight"] = uniform_init((s, self.latent_dim), linear_bound(self.latent_dim), generator,
                                            torch.float32, None)
        base["shift_bias"] = torch.zeros(s)
        return base

    def init_params(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device=None) -> dict[str, Tensor]:
        """Zero latents (functa's starting point), ``{"latent": Tensor[n, latent_dim]}``."""
        return {"latent": torch.zeros((n, self.latent_dim), dtype=dtype, device=device)}

    def _base_on(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """The base on ``device`` in ``dtype``, each sine layer's weight and bias pre-scaled by its omega."""
        if not self._shared:
            raise ValueError(f"{self!r} has no base weights bound: open its dataset with INRDataset (which reads "
                             "shared.safetensors), or call family.with_shared(base)")
        key = (torch.device(device), dtype)
        if key not in self._cache:
            base = {k: v.to(device=device, dtype=dtype) for k, v in self._shared.items()}
            for i in range(self.depth - 1):
                omega = self.first_omega_0 if i == 0 else self.omega_0
                base[f"weight{i}"] = base[f"weight{i}"] * omega
                base[f"bias{i}"] = base[f"bias{i}"] * omega
            base["omega"] = torch.tensor([self.first_omega_0] + [self.omega_0] * (self.depth - 2),
                                         device=device, dtype=dtype)  # (depth - 1,)
            self._cache[key] = base
        return self._cache[key]

    def shifts(self, latent: Tensor) -> Tensor:
        """The per-layer shifts of latents Tensor[B, latent_dim]: Tensor[B, depth - 1, width]."""
        base = self._base_on(latent.device, latent.dtype)
        s = torch.addmm(base["shift_bias"], latent, base["shift_weight"].t())  # (B, (depth - 1) width)
        return s.view(latent.shape[0], self.depth - 1, self.width)

    def forward(self, params: Mapping[str, Tensor], coords: Tensor) -> Tensor:
        latent = params["latent"]  # (B, L)
        base = self._base_on(latent.device, latent.dtype)
        shift = self.shifts(latent) * base["omega"][:, None]  # (B, depth - 1, width), scaled like the biases
        h = coords.to(latent.dtype)  # (B or 1, N, d)
        for i in range(self.depth - 1):
            h = F.linear(h, base[f"weight{i}"], base[f"bias{i}"])  # (B or 1, N, width): one shared GEMM
            h = h + shift[:, i, None, :]  # (B, N, width): the per-item shift, broadcast over the points
            h = h.sin() if h.requires_grad else h.sin_()
        last = self.depth - 1
        return F.linear(h, base[f"weight{last}"], base[f"bias{last}"])  # (B, N, c)

    def lipschitz_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        """The base SIREN's bound ``prod_{i < depth - 1} (omega_i ||W_i||_2) * ||W_last||_2``, for every item.

        A shift moves a sine layer's phase, not its slope, so every latent gives the same
        bound (see [`inrnet.inr.smoothness`][inrnet.inr.smoothness]).

        Args:
            params: ``{"latent": Tensor[B, latent_dim]}``.

        Returns:
            float64 Tensor[B].

        Raises:
            ValueError: no base is bound.
        """
        b = self.check_params(params)
        if not self._shared:
            raise ValueError(f"{self!r} has no base weights bound: open its dataset with INRDataset (which reads "
                             "shared.safetensors), or call family.with_shared(base)")
        weights = {f"weight{i}": self._shared[f"weight{i}"].unsqueeze(0) for i in range(self.depth)}  # (1, out, in)
        bound = chain_bound(weights, sine_layers(self.depth, self.first_omega_0, self.omega_0))  # (1,)
        return bound.to(params["latent"].device).expand(b).clone()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}  # device copies do not travel (e.g. to DataLoader workers)
        return state
