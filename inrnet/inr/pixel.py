"""Pixel and voxel arrays seen as INRs.

[`PixelINR`][inrnet.inr.pixel.PixelINR] turns a batch of arrays ``[B, C, *shape]`` into INRs on ``[-1, 1]^d``
under the grid convention of [`inrnet.sampling.points`][inrnet.sampling.points]: coordinate ``k`` belongs to
tensor axis ``k`` and the value of cell ``i`` sits at its centre ``-1 + (2 i + 1) / n``.
So at ``inrnet.sampling.grid(shape)`` a PixelINR returns exactly the array values, in
both modes:

* ``"nearest"``: the value of the cell containing the point (a point on a cell
  boundary takes the cell above it; points outside ``[-1, 1]`` take the border cell);
* ``"linear"``: (bi/tri/multi)linear interpolation between cell centres, clamped to the
  border cells outside them: ``grid_sample(align_corners=False, padding_mode="border")``
  with our axis order. A point within the rounding error of its coordinate dtype of a
  cell centre (``2 * n * eps`` in index units) is snapped onto it, so float32 grid
  coordinates reproduce the array bit-exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from inrnet.inr.base import INRBatch, INRFamily, register_family
from inrnet.inr.smoothness import image_lipschitz

__all__ = ["PixelFamily", "PixelINR", "MODES"]

MODES = ("nearest", "linear")


@register_family
class PixelFamily(INRFamily):
    """Arrays of one spatial ``shape`` and ``channels``, interpolated with ``mode``.

    Args:
        shape: spatial shape ``(n_0, ..., n_{d-1})``.
        channels: C.
        mode: ``"nearest"`` or ``"linear"``.
        value_range: the range of the array values (for fitting other INRs to them).

    Parameter of one INR: ``values`` [C, *shape].
    """

    name = "pixel"

    def __init__(self, shape: Sequence[int], channels: int = 1, mode: str = "nearest",
                 value_range: Sequence[float] = (0.0, 1.0)):
        shape = tuple(shape)
        if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ValueError(f"pixel INR shape must be a non-empty sequence of positive integers, got {shape!r}")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"pixel INR channels must be a positive integer, got {channels!r}")
        if mode not in MODES:
            raise ValueError(f"pixel INR mode must be one of {MODES}, got {mode!r}")
        self.shape, self.channels, self.mode = shape, channels, mode
        self.in_features, self.out_features = len(shape), channels
        self.value_range = (float(value_range[0]), float(value_range[1]))

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "channels": self.channels, "mode": self.mode,
                "value_range": list(self.value_range)}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"values": (self.channels, *self.shape)}

    def init_params(self, n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32, device=None) -> dict[str, Tensor]:
        return {"values": torch.zeros((n, self.channels, *self.shape), dtype=dtype, device=device)}

    def forward(self, params: Mapping[str, Tensor], coords: Tensor) -> Tensor:
        values = params["values"]  # (B, C, *shape)
        if self.mode == "linear" and not values.is_floating_point():
            raise ValueError(f"linear interpolation needs floating-point values, got {values.dtype}; "
                             "use mode='nearest' for labels")
        table = values.flatten(2).transpose(1, 2)  # (B, P, C)
        x = coords.double()  # (B or 1, N, d)
        strides = [math.prod(self.shape[k + 1:]) for k in range(len(self.shape))]
        if self.mode == "nearest":
            flat = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)  # (B or 1, N)
            for k, n in enumerate(self.shape):
                i = torch.floor((x[..., k] + 1.0) * (n / 2.0)).clamp_(0, n - 1).long()
                flat += i * strides[k]
            return _gather(table, flat)
        out_dtype = torch.promote_types(values.dtype, coords.dtype)
        eps = torch.finfo(coords.dtype).eps
        lo, hi, frac = [], [], []
        for k, n in enumerate(self.shape):
            u = (((x[..., k] + 1.0) * n - 1.0) / 2.0).clamp_(0, n - 1)  # continuous index, centre i -> i
            r = u.round()
            u = torch.where((u - r).abs() <= 2.0 * n * eps, r, u)
            i0 = u.floor().clamp_(max=max(n - 2, 0))
            lo.append(i0.long() * strides[k])
            hi.append((i0 + 1).clamp_(max=n - 1).long() * strides[k])
            frac.append(u - i0)  # in [0, 1]
        out = None
        for corner in itertools.product((0, 1), repeat=len(self.shape)):
            flat = sum(hi[k] if c else lo[k] for k, c in enumerate(corner))  # (B or 1, N)
            w = math.prod(frac[k] if c else 1.0 - frac[k] for k, c in enumerate(corner))  # (B or 1, N)
            term = w.to(out_dtype).unsqueeze(-1) * _gather(table, flat).to(out_dtype)  # (B, N, C)
            out = term if out is None else out.add_(term)
        return out

    def lipschitz_bound(self, params: Mapping[str, Tensor]) -> Tensor:
        """Linear mode: the exact constant of the interpolation
        ([`image_lipschitz`][inrnet.inr.smoothness.image_lipschitz]); nearest: ``inf`` (0 for a constant array).

        Args:
            params: ``{"values": Tensor[B, C, *shape]}``.

        Returns:
            float64 Tensor[B].
        """
        self.check_params(params)
        values = params["values"].detach()  # (B, C, *shape)
        if self.mode == "linear":
            return image_lipschitz(values)
        flat = values.flatten(1)  # (B, C P)
        constant = (flat == flat[:, :1]).all(1)  # (B,)
        return torch.where(constant, 0.0, math.inf).to(dtype=torch.float64, device=values.device)


def _gather(table: Tensor, flat: Tensor) -> Tensor:
    """``table[b, flat[b or 0, n]]``: Tensor[B, P, C], Tensor[B or 1, N] -> Tensor[B, N, C]."""
    if flat.shape[0] == 1:
        return table.index_select(1, flat[0])
    return torch.gather(table, 1, flat.unsqueeze(-1).expand(-1, -1, table.shape[2]))  # (B, N, C)


class PixelINR(INRBatch):
    """A batch of pixel or voxel arrays as INRs (see the module docstring for the rules).

    Args:
        images: Tensor[B, C, *shape] with ``d = len(shape) >= 1``; integer arrays (e.g.
            label maps) are allowed in ``"nearest"`` mode.
        mode: ``"nearest"`` or ``"linear"``.
        value_range: the range of the values (for fitting other INRs to them).

    Example:
        >>> from inrnet.inr import sample
        >>> from inrnet.sampling import grid
        >>> x = torch.rand(2, 3, 5, 4)
        >>> f = sample(PixelINR(x, "linear"), grid((5, 4)))
        >>> torch.equal(f.values, x.flatten(2).transpose(1, 2))  # (B, P, C)
        True
    """

    def __init__(self, images: Tensor, mode: str = "nearest", value_range: Sequence[float] = (0.0, 1.0)):
        if not isinstance(images, Tensor) or images.dim() < 3:
            raise ValueError(f"PixelINR takes arrays [B, C, *shape] with at least one spatial dim, got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        family = PixelFamily(tuple(images.shape[2:]), images.shape[1], mode, value_range)
        super().__init__(family, {"values": images})

    def _with_params(self, params: Mapping[str, Tensor]) -> PixelINR:
        return PixelINR(params["values"], self.family.mode, self.family.value_range)

    @property
    def images(self) -> Tensor:
        """The arrays, Tensor[B, C, *shape]."""
        return self.params["values"]
