"""Window geometry shared by convolutions and pooling: supports and output points.

A discrete window of ``k`` taps along an axis whose pixels are ``h`` wide becomes a box
support of half width ``k h / 2``; for even ``k`` the support is centred ``h / 2`` past
the output point, so the taps sit at offsets ``-k/2 + 1 .. k/2`` pixels (torch's
convention for even kernels). Output points: unpadded layers (``padding="none"``) first
restrict the points to the domain (for a lattice: the box its cells tile) shrunk by the
support's reach, then strided layers keep
one point in ``stride`` (``PointSet.downsample``). On a grid this reproduces the output
pixels of a torch layer with padding ``k // 2`` (``"zeros"``, and the mirrored paddings
``"reflect"`` and ``"symmetric"``, whose images outside the domain the neighbour search
adds; see [`ContinuousConv`][inrnet.nn.conv.ContinuousConv]) or 0 (``"none"``).
"""

from __future__ import annotations

from collections.abc import Sequence

from inrnet.field import PointSet
from inrnet.neighbors import Support, tiled_box

__all__ = ["PADDING_MODES", "as_tuple", "window_support", "output_points"]

PADDING_MODES = ("zeros", "reflect", "symmetric", "none")


def as_tuple(value, dim: int, name: str, kind=float) -> tuple:
    """``value`` (a number or a sequence of ``dim`` numbers) as a ``dim``-tuple of ``kind``."""
    items = tuple(value) if isinstance(value, Sequence) else (value,) * dim
    if len(items) != dim:
        raise ValueError(f"{name} needs {dim} entries (one per dimension), got {value!r}")
    try:
        out = tuple(kind(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {value!r}") from None
    if any(v <= 0 for v in out):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return out


def window_support(kernel_size: Sequence[int], spacing: Sequence[float], shape: str = "box") -> Support:
    """The support of a discrete window of ``kernel_size`` taps ``spacing`` apart."""
    half = tuple(k * h / 2 for k, h in zip(kernel_size, spacing))
    center = tuple(h / 2 if k % 2 == 0 else 0.0 for k, h in zip(kernel_size, spacing))
    return Support(half, shape, center)


def output_points(points: PointSet, support: Support, stride: Sequence[int] | int = 1,
                  padding: str = "zeros") -> PointSet:
    """Where a windowed layer with this support, stride and padding has outputs.

    Returns:
        A point set derived from (and memoised on) ``points``.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    support = support.for_dim(points.dim)
    if padding == "none":
        bounds = [(lo + h - c, hi - h - c)
                  for (lo, hi), h, c in zip(tiled_box(points), support.half_width, support.center)]
        if any(lo > hi for lo, hi in bounds):
            raise ValueError(f"support {support.half_width} is wider than the domain {points.bounds}: "
                             "no output point remains without padding")
        points = points.restrict(bounds)
    return points.downsample(stride)
