"""INR families, batches of frozen INRs, and single INRs as modules.

An [`INRFamily`][inrnet.inr.base.INRFamily] is an architecture (SIREN, Fourier-feature MLP, pixel array, ...)
with a fixed configuration. It knows the shape of every parameter of one INR and
evaluates a whole *batch* of INRs at once with a functional forward on stacked
parameters (``dict[str, Tensor[B, ...]]``), built from batched matmuls: never a Python
loop over INRs. An [`INRBatch`][inrnet.inr.base.INRBatch] pairs a family with such stacked parameters; an
[`INRModule`][inrnet.inr.base.INRModule] is one INR of a family as an ordinary ``nn.Module``.

Families are registered by name ([`register_family`][inrnet.inr.base.register_family]) so an INR dataset rebuilds
its family from the JSON in its manifest, without unpickling anything.
"""

from __future__ import annotations

import inspect
import math
import operator
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["INRFamily", "INRBatch", "INRModule", "FAMILIES", "register_family", "family_from_dict"]

FAMILIES: dict[str, type[INRFamily]] = {}
"""Registered families, by name."""


def register_family(cls: type[INRFamily]) -> type[INRFamily]:
    """Class decorator: make ``cls`` rebuildable from ``{"name": cls.name, "config": ...}``."""
    if cls.name in FAMILIES and FAMILIES[cls.name] is not cls:
        raise ValueError(f"an INR family named {cls.name!r} is already registered ({FAMILIES[cls.name].__name__})")
    FAMILIES[cls.name] = cls
    return cls


def family_from_dict(spec: Mapping[str, Any]) -> INRFamily:
    """Rebuild a family from `INRFamily.to_dict` output (e.g. a dataset manifest).

    Args:
        spec: ``{"name": registered name, "config": {keyword: value}}`` (no config: the defaults).

    Raises:
        ValueError: an unknown family name, or a config with keys the family does not take
            or without the ones it needs (naming them and the keys it takes).
    """
    name = spec.get("name")
    if name not in FAMILIES:
        raise ValueError(f"unknown INR family {name!r}; registered families: {sorted(FAMILIES)}")
    config = spec.get("config", {})
    signature = inspect.signature(FAMILIES[name])
    try:
        signature.bind(**config)
    except TypeError as e:
        raise ValueError(f"config {config!r} does not fit INR family {name!r} ({e}); it takes the keys "
                         f"{list(signature.parameters)}") from None
    return FAMILIES[name](**config)


class INRFamily(ABC):
    """One INR architecture with a fixed configuration.

    Subclasses set ``name``, ``in_features`` (d), ``out_features`` (c) and
    ``value_range`` (the output range its INRs are fitted to), and implement
    [`config`][inrnet.inr.base.INRFamily.config], [`param_shapes`][inrnet.inr.base.INRFamily.param_shapes], [`init_params`][inrnet.inr.base.INRFamily.init_params] and [`forward`][inrnet.inr.base.INRFamily.forward].
    """

    name: ClassVar[str]
    in_features: int
    out_features: int
    value_range: tuple[float, float]

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The JSON-serialisable keyword arguments that rebuild this family."""

    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter of *one* INR, in a fixed order."""

    @abstractmethod
    def init_params(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device=None) -> dict[str, Tensor]:
        """Freshly initialised parameters of ``n`` INRs.

        Returns:
            ``{name: Tensor[n, *param_shapes()[name]]}``.
        """

    @abstractmethod
    def forward(self, params: Mapping[str, Tensor], coords: Tensor) -> Tensor:
        """Evaluate a batch of INRs.

        Args:
            params: ``{name: Tensor[B, *shape]}`` stacked parameters.
            coords: Tensor[B or 1, N, d], shared by all INRs when its first dim is 1, in
                any floating dtype (the family casts it as it needs).

        Returns:
            Tensor[B, N, c].
        """

    @property
    def trainable(self) -> frozenset[str]:
        """Names of the parameters fitting optimises (the others stay at their init)."""
        return frozenset(self.param_shapes())

    def shared_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter *shared by all INRs* of the family (none by default).

        A family with shared parameters (e.g. [`FunctaFamily`][inrnet.inr.functa.FunctaFamily]'s base network)
        holds them itself; a dataset stores them once, in a checksummed ``shared.safetensors``
        beside its shards (see [`inrnet.inr.store`][inrnet.inr.store]).
        """
        return {}

    @property
    def shared(self) -> dict[str, Tensor]:
        """The shared parameters ``{name: Tensor[*shape]}``, as [`shared_shapes`][inrnet.inr.base.INRFamily.shared_shapes] lists (empty if none)."""
        return {}

    def with_shared(self, shared: Mapping[str, Tensor]) -> INRFamily:
        """This family with the shared parameters ``shared`` bound (``{name: Tensor[*shape]}``).

        Raises:
            ValueError: the family has no shared parameters but ``shared`` is not empty.
        """
        if shared:
            raise ValueError(f"{self!r} has no shared parameters, got {sorted(shared)}")
        return self

    def lipschitz_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        """A certified upper bound of each INR's Lipschitz constant w.r.t. its coordinates.

        The Euclidean norm on the coordinates and on the value's channels, computed from the
        parameters (never from samples; see [`inrnet.inr.smoothness`][inrnet.inr.smoothness]). A family
        that can certify nothing returns ``inf`` (this default).

        Args:
            params: ``{name: Tensor[B, *shape]}`` stacked parameters.

        Returns:
            float64 Tensor[B].
        """
        b = self.check_params(params)
        device = next(iter(params.values())).device
        return torch.full((b,), math.inf, dtype=torch.float64, device=device)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config()}

    def __eq__(self, other) -> bool:
        return isinstance(other, INRFamily) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def check_params(self, params: Mapping[str, Tensor]) -> int:
        """Raise ``ValueError`` unless ``params`` are stacked parameters of this family.

        Returns:
            The batch size ``B``.
        """
        shapes = self.param_shapes()
        if set(params) != set(shapes):
            raise ValueError(f"{self!r} has parameters {sorted(shapes)}, got {sorted(params)}")
        sizes = {t.shape[0] if t.dim() > 0 else None for t in params.values()}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"stacked parameters need one common leading batch dim, got shapes "
                             f"{ {k: tuple(v.shape) for k, v in params.items()} }")
        (b,) = sizes
        for k, shape in shapes.items():
            if tuple(params[k].shape[1:]) != shape:
                raise ValueError(f"parameter {k!r} of {self!r} must be [B, {', '.join(map(str, shape))}], "
                                 f"got {tuple(params[k].shape)}")
        return b

    def check_coords(self, coords: Tensor, batch: int) -> None:
        """Raise ``ValueError`` unless ``coords`` is Tensor[batch or 1, N, in_features]."""
        if coords.dim() != 3 or coords.shape[0] not in (1, batch) or coords.shape[2] != self.in_features:
            raise ValueError(f"{self!r} takes coordinates [{batch} or 1, N, d={self.in_features}], "
                             f"got {tuple(coords.shape)}")


class INRBatch:
    """``B`` INRs of one family: the family plus stacked parameters.

    Args:
        family: the architecture.
        params: ``{name: Tensor[B, *shape]}``, as [`INRFamily.param_shapes`][inrnet.inr.base.INRFamily.param_shapes] lists.

    Indexing with an int gives that INR as an [`INRModule`][inrnet.inr.base.INRModule]; with a slice, a list or
    a Tensor of indices, an [`INRBatch`][inrnet.inr.base.INRBatch] of those INRs.

    Raises:
        ValueError: ``B = 0``, or an index that selects no INR (``batch[[]]``, an empty slice,
            an all-false mask): an INR batch needs at least one INR (nothing evaluates, fits
            or stores an empty one; the datasets' ``batch`` refuse empty index lists too).
    """

    def __init__(self, family: INRFamily, params: Mapping[str, Tensor]):
        self._size = family.check_params(params)
        if self._size == 0:
            raise ValueError(f"an INR batch needs at least one INR, got parameters [0, ...] of {family!r}")
        self.family = family
        self.params = {k: params[k] for k in family.param_shapes()}

    def _with_params(self, params: Mapping[str, Tensor]) -> INRBatch:
        return INRBatch(self.family, params)

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"INRBatch({len(self)} x {self.family!r}, device={self.device}, dtype={self.dtype})"

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def __getitem__(self, index) -> INRModule | INRBatch:
        if not isinstance(index, (slice, Sequence)) and getattr(index, "ndim", 0) == 0:
            index = operator.index(index)  # int, NumPy or 0-dim Tensor integer
            if not -len(self) <= index < len(self):
                raise IndexError(f"INR index {index} out of range for a batch of {len(self)}")
            return INRModule(self.family, {k: v[index] for k, v in self.params.items()})
        asked = index
        if not isinstance(index, slice):
            index = torch.as_tensor(index).to(self.device)  # list, array or Tensor of indices, or a mask
            if index.numel() == 0:
                index = index.long()  # [] becomes a float Tensor
        params = {k: v[index] for k, v in self.params.items()}
        if next(iter(params.values())).shape[0] == 0:
            raise ValueError(f"an INR batch needs at least one INR, but the index {reprlib.repr(asked)} selects "
                             f"none of the {len(self)}")
        return self._with_params(params)

    def to(self, device=None, dtype: torch.dtype | None = None) -> INRBatch:
        """The batch on ``device``; floating parameters cast to ``dtype`` if given."""
        return self._with_params({k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                                  for k, v in self.params.items()})

    def __call__(self, coords: Tensor) -> Tensor:
        """``family.forward`` on coordinates Tensor[B or 1, N, d] -> Tensor[B, N, c]."""
        self.family.check_coords(coords, len(self))
        return self.family.forward(self.params, coords)

    @classmethod
    def cat(cls, batches: Sequence[INRBatch]) -> INRBatch:
        """Concatenate batches of one family along the INR dimension."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of INR batches")
        family = batches[0].family
        for b in batches[1:]:
            if b.family != family:
                raise ValueError(f"cannot concatenate INRs of different families: {family!r} and {b.family!r}")
        return batches[0]._with_params({k: torch.cat([b.params[k] for b in batches]) for k in family.param_shapes()})

    @classmethod
    def stack(cls, modules: Sequence[INRModule]) -> INRBatch:
        """Stack single INRs of one family into a batch (parameters are copied)."""
        if not modules or not all(isinstance(m, INRModule) for m in modules):
            raise ValueError("INRBatch.stack needs a non-empty sequence of INRModules (e.g. Siren)")
        return cls.cat([m.as_batch() for m in modules])


class INRModule(nn.Module):
    """One INR of a family as an ``nn.Module``: ``forward(coords Tensor[N, d]) -> Tensor[N, c]``.

    Args:
        family: the architecture.
        params: ``{name: Tensor[*shape]}`` for this one INR; freshly initialised if None.
    """

    def __init__(self, family: INRFamily, params: Mapping[str, Tensor] | None = None):
        super().__init__()
        self.family = family
        if params is None:
            params = {k: v[0] for k, v in family.init_params(1).items()}
        family.check_params({k: v.unsqueeze(0) for k, v in params.items()})  # (1, *shape)
        for k in family.param_shapes():
            self.register_parameter(k, nn.Parameter(params[k].detach().clone(), requires_grad=k in family.trainable))

    def extra_repr(self) -> str:
        return repr(self.family)

    def param_dict(self) -> dict[str, Tensor]:
        """``{name: Tensor[*shape]}``, in the family's order."""
        return {k: getattr(self, k) for k in self.family.param_shapes()}

    def as_batch(self) -> INRBatch:
        """This INR as a detached [`INRBatch`][inrnet.inr.base.INRBatch] of one."""
        return INRBatch(self.family, {k: v.detach().unsqueeze(0)  # (1, *shape)
                                      for k, v in self.param_dict().items()})

    def forward(self, coords: Tensor) -> Tensor:
        if coords.dim() != 2 or coords.shape[1] != self.family.in_features:
            raise ValueError(f"{self.family!r} takes coordinates [N, d={self.family.in_features}], "
                             f"got {tuple(coords.shape)}")
        params = {k: v.unsqueeze(0) for k, v in self.param_dict().items()}  # (1, *shape)
        return self.family.forward(params, coords.unsqueeze(0))[0]  # (N, c)


def uniform_init(shape: Sequence[int], bound: float, generator: torch.Generator | None,
                 dtype: torch.dtype, device) -> Tensor:
    """``U(-bound, bound)`` samples of ``shape``, drawn on the CPU so a seed gives the same INRs anywhere."""
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64)
    return ((2.0 * u - 1.0) * bound).to(dtype=dtype, device=device)


def linear_bound(fan_in: int) -> float:
    """``nn.Linear``'s default bias bound, ``1 / sqrt(fan_in)``."""
    return 1.0 / math.sqrt(fan_in)


def batched_linear(h: Tensor, weight: Tensor, bias: Tensor, scale: float = 1.0) -> Tensor:
    """``scale * (h @ weight^T + bias)`` for a batch of linear layers, as one ``baddbmm``.

    Args:
        h: Tensor[B or 1, N, in] (a batch of one is shared by all ``B`` layers).
        weight: Tensor[B, out, in] (``nn.Linear`` layout).
        bias: Tensor[B, out].

    Returns:
        Tensor[B, N, out].
    """
    b = weight.shape[0]
    if h.shape[0] != b:
        h = h.expand(b, -1, -1)  # (B, N, in)
    if scale != 1.0:  # scale the (small) parameters, not the (large) activations and their gradients
        weight, bias = weight * scale, bias * scale
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))  # (B, N, out)
