"""Window geometry shared by convolutions, pooling and the converter: supports and output points.

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

from collections.abc import Callable, Sequence

from inrnet.field import PointSet
from inrnet.neighbors import Support, tiled_box

__all__ = ["PADDING_MODES", "as_tuple", "window_support", "output_points"]

PADDING_MODES = ("zeros", "reflect", "symmetric", "none")


def as_tuple(value, dim: int, name: str = "value", kind: Callable | None = None) -> tuple:
    """One entry per dimension: ``value`` repeated ``dim`` times, or a sequence of ``dim`` entries.

    Args:
        value: one entry for every dimension, or a sequence of ``dim`` entries.
        dim: ``d``.
        name: what ``value`` is, named in the errors.
        kind: ``int`` or ``float``: convert every entry and require it positive (a kernel
            size, stride or spacing); ``None`` keeps the entries as they are (a padding, an
            offset, an output size with ``None`` entries).

    Returns:
        A ``dim``-tuple.

    Raises:
        ValueError: ``value`` has another number of entries, or (with ``kind``) an entry is
            no positive number.
    """
    items = tuple(value) if isinstance(value, Sequence) else (value,) * dim
    if len(items) != dim:
        raise ValueError(f"{name} needs {dim} entries (one per dimension), got {value!r}")
    if kind is None:
        return items
    try:
        out = tuple(kind(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {value!r}") from None
    if any(v <= 0 for v in out):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return out


def window_support(kernel_size: Sequence[int], spacing: Sequence[float], shape: str = "box") -> Support:
    """The support of a discrete window of ``kernel_size`` taps ``spacing`` apart.

    Args:
        kernel_size: taps ``k`` per axis.
        spacing: the pixel size ``h`` per axis, in domain units.
        shape: ``"box"`` or ``"ball"``.

    Returns:
        Half widths ``k h / 2``, centred ``h / 2`` past the output point along axes of even ``k``.
    """
    half = tuple(k * h / 2 for k, h in zip(kernel_size, spacing))
    center = tuple(h / 2 if k % 2 == 0 else 0.0 for k, h in zip(kernel_size, spacing))
    return Support(half, shape, center)


def output_points(points: PointSet, support: Support, stride: Sequence[int] | int = 1,
                  padding: str = "zeros") -> PointSet:
    """Where a windowed layer with this support, stride and padding has outputs.

    Args:
        points: the layer's ``N`` input points.
        support: the window's support.
        stride: keep one point in ``prod(stride)`` (int or one per axis; see ``PointSet.downsample``).
        padding: one of `PADDING_MODES`; ``"none"`` first keeps the points whose support
            fits inside the box the points tile.

    Returns:
        The ``M`` output points, a point set derived from (and memoised on) ``points``.
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
