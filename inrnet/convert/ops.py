"""The functions a converted graph calls on fields (the targets of its ``call_function`` nodes).

A traced CNN applies functions to tensors ``[B, C, *S]`` (``layout="first"``) or, between
permutes, ``[B, *S, C]`` (``layout="last"``); in the converted graph the same values are a
[`Field`][inrnet.field.Field] with values ``[B, N, C]``. These functions apply the CNN's operation
to the field's values, with tensors that broadcast against a feature map (``[B, C, 1, 1]``
squeeze-excitation gates, ``[C, 1, 1]`` layer scales, scalars) reshaped to ``[B, 1, C]``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx

from inrnet.field import Field, PointSet, check_same_points
from inrnet.neighbors import Support, neighbors
from inrnet.nn._segment import gather, segment_sum, segment_weight_sum
from inrnet.nn.resample import upsample

__all__ = ["check_input", "binary", "concat", "pointwise", "finish", "lattice_query", "pixel_estimate", "permute_channels", "split_channels", "BINARY",
           "POINTWISE"]

BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv}
"""The binary operations `binary` applies, by name (generated code refers to them by name)."""

POINTWISE = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
             "silu": F.silu, "gelu": F.gelu, "mish": F.mish, "elu": F.elu, "leaky_relu": F.leaky_relu,
             "softplus": F.softplus, "hardtanh": F.hardtanh, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
             "layer_norm": F.layer_norm, "linear": F.linear}
"""The functions `pointwise` applies to values: elementwise ones, and (on channels-last
feature maps) ``layer_norm`` and ``linear`` over the channels."""


def _traceable(fn: Callable) -> Callable:
    """Make ``fn`` a leaf for ``torch.fx``: called with proxies (as when a saved converted model is
    loaded and its code re-traced) it records itself instead of running."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        proxies: list[fx.Proxy] = []
        fx.node.map_aggregate((args, kwargs), lambda a: proxies.append(a) if isinstance(a, fx.Proxy) else None)
        if proxies:
            return proxies[0].tracer.create_proxy("call_function", wrapper, args, kwargs)
        return fn(*args, **kwargs)
    return wrapper


@_traceable
def check_input(field, channels: int, dim: int) -> Field:
    """The converted model's input: a [`Field`][inrnet.field.Field] with ``channels`` channels on ``dim``-d points."""
    if not isinstance(field, Field):
        shape = tuple(field.shape) if isinstance(field, Tensor) else type(field).__name__
        raise TypeError(f"a converted model takes a Field, got {shape}; sample INRs on points, e.g. "
                        "inrnet.inr.sample(PixelINR(images), PointSet.grid(shape)) (or "
                        "inrnet.testing.grid_field(images) for an image batch)")
    if field.points.dim != dim:
        raise ValueError(f"the model was converted for {dim}-d inputs, got a field on {field.points}")
    field.check_channels(channels, "the converted model")
    return field


def _as_operand(value, layout: str, ndim: int, field: Field):
    """A tensor that broadcasts against a feature map, as a Tensor[B or 1, 1, C or 1] for the values."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    if value.dim() > ndim:
        raise ValueError(f"a tensor of shape {tuple(value.shape)} does not broadcast against a {ndim}-d feature map")
    full = value.reshape((1,) * (ndim - value.dim()) + tuple(value.shape))  # (b, C, *S) or (b, *S, C)
    spatial = full.shape[2:] if layout == "first" else full.shape[1:-1]
    if any(s != 1 for s in spatial):
        raise ValueError(f"a tensor of shape {tuple(value.shape)} varies over the spatial axes of a feature map "
                         f"({field}); only tensors constant in space ([B, C, 1, 1], [C, 1, 1], scalars) combine "
                         "with fields")
    channels = full.shape[1] if layout == "first" else full.shape[-1]
    if full.shape[0] not in (1, field.batch_size) or channels not in (1, field.channels):
        raise ValueError(f"a tensor of shape {tuple(value.shape)} does not broadcast against a field with values "
                         f"{tuple(field.values.shape)} ([B, N, C])")
    return full.reshape(full.shape[0], 1, channels)  # (B or 1, 1, C or 1)


@_traceable
def binary(op: str, a, b, layout: str, ndim: int) -> Field:
    """``op(a, b)`` (add, sub, mul, div) where at least one operand is a field.

    Two fields must live on the same points (a residual connection whose branches were
    strided differently is an error, not a silent resampling).

    Args:
        op: a key of `BINARY` (``"add"``, ``"sub"``, ``"mul"``, ``"truediv"``).
        a: a Field, a tensor broadcasting against the CNN's feature map, or a scalar.
        b: likewise.
        layout: ``"first"`` or ``"last"``, the CNN's layout at this node.
        ndim: the CNN's tensor rank at this node (``2 + d``).

    Returns:
        Field with values Tensor[B, N, C].
    """
    fields = [x for x in (a, b) if isinstance(x, Field)]
    if not fields:
        raise TypeError(f"{op} expected a Field operand, got {type(a).__name__} and {type(b).__name__}")
    if len(fields) == 2:
        check_same_points(a.points, b.points, f"the operands of {op}")
    ref = fields[0]
    va = a.values if isinstance(a, Field) else _as_operand(a, layout, ndim, ref)
    vb = b.values if isinstance(b, Field) else _as_operand(b, layout, ndim, ref)
    out = BINARY[op](va, vb)
    if out.dim() != 3 or out.shape[1] != ref.points.n:
        raise ValueError(f"{op} of {tuple(getattr(va, 'shape', ()))} and "
                         f"{tuple(getattr(vb, 'shape', ()))} gave values {tuple(out.shape)}")
    return Field(out, ref.points)


@_traceable
def concat(fields: Sequence[Field]) -> Field:
    """Concatenate fields on the same points along the channels (``torch.cat(dim=1)`` of feature maps).

    Returns:
        Field with values Tensor[B, N, C_1 + ... + C_k].
    """
    if not fields or not all(isinstance(f, Field) for f in fields):
        raise TypeError(f"concat expects Fields, got {[type(f).__name__ for f in fields]}")
    for f in fields[1:]:
        check_same_points(fields[0].points, f.points, "concatenated feature maps")
    return Field(torch.cat([f.values for f in fields], dim=-1), fields[0].points)  # (B, N, sum C)


@_traceable
def permute_channels(field: Field, shape: tuple[int, ...], perm: tuple[int, ...]) -> Field:
    """Permute the channel axes of a feature map whose channels are split into ``shape`` (C order).

    A channel shuffle ``x.view(B, g, C // g, *S).transpose(1, 2)`` is ``shape=(g, C // g)``,
    ``perm=(1, 0)``.

    Args:
        field: values Tensor[B, N, prod(shape)].
        shape: the channel axes' sizes.
        perm: the axes' new order.

    Returns:
        Field with values Tensor[B, N, prod(shape)], the channels of axes ``shape[perm]`` in C order.
    """
    b, n, c = field.values.shape
    values = field.values.reshape(b, n, *shape).permute(0, 1, *(2 + p for p in perm))  # (B, N, *shape[perm])
    return field.replace(values.reshape(b, n, c))


@_traceable
def split_channels(field: Field, sizes: tuple[int, ...]) -> tuple[Field, ...]:
    """``torch.split(x, sizes, dim=channels)`` of a feature map: fields with values Tensor[B, N, sizes[i]]."""
    if sum(sizes) != field.channels:
        raise ValueError(f"cannot split {field.channels} channels into {sizes}")
    return tuple(field.replace(v) for v in field.values.split(list(sizes), dim=-1))


@_traceable
def pointwise(fn: str, field: Field, *args, **kwargs) -> Field:
    """``POINTWISE[fn](values, *args, **kwargs)``, the values Tensor[B, N, C] -> Tensor[B, N, C']."""
    if not isinstance(field, Field):
        raise TypeError(f"{fn} expected a Field, got {type(field).__name__}")
    out = POINTWISE[fn](field.values, *args, **kwargs)
    if not isinstance(out, Tensor) or out.shape[:2] != field.values.shape[:2]:
        raise ValueError(f"{fn} changed the values {tuple(field.values.shape)} into "
                         f"{tuple(getattr(out, 'shape', ()))}")
    return field.replace(out)


_GRIDS: dict[tuple, PointSet] = {}
"""``PointSet.grid(input_shape)`` per ``(input_shape, dtype, device)``, built once, so that the lattices
derived from it (and the gather plans cached on them) are shared by every call of a model."""


def _is_grid(points: PointSet, shape: tuple[int, ...]) -> bool:
    """Whether ``points`` are ``grid(shape)`` (its lattice, in C order)."""
    lat = points.lattice
    if lat is None or tuple(lat.shape) != tuple(shape) or points.bounds != ((-1.0, 1.0),) * len(shape):
        return False
    return all(abs(o - (-1 + 1 / n)) <= 1e-9 and abs(h - 2 / n) <= 1e-9
               for o, h, n in zip(lat.origin, lat.step, shape))


def _unit_grid(points: PointSet, shape: tuple[int, ...], what: str) -> PointSet:
    """``grid(shape)`` on ``points``'s dtype and device (shared, see `_GRIDS`), checking the points' bounds."""
    if points.bounds != ((-1.0, 1.0),) * len(shape):
        raise ValueError(f"{what} on the lattice of grid({shape}) in [-1, 1]^{len(shape)}; the input points' bounds "
                         f"are {points.bounds}")
    key = (shape, points.dtype, points.device)
    if key not in _GRIDS:
        _GRIDS[key] = PointSet.grid(shape, dtype=points.dtype, device=points.device)
    return _GRIDS[key]


@_traceable
def pixel_estimate(field: Field, input_shape: tuple[int, ...]) -> Field:
    """The input of a ``latent="pixels"`` conversion: the field estimated at the pixel centres of ``grid(input_shape)``.

    Each pixel ``p`` (centre ``c``, size ``h``) gets the kernel-regression (Nadaraya-Watson)
    estimate ``sum_j a_j f(x_j) / sum_j a_j`` with ``a_j = w_j prod_k tent((x_j - c)_k / r_k)``,
    ``tent(u) = max(0, 1 - |u|)``: a weighted mean of the samples less than ``r`` away, the
    nearest sample where there is none. The tent's half width is a pixel for ``N <= M``
    samples and shrinks with the samples' spacing beyond, ``r = h min(1, (M / N)^(1 / d))``,
    so it holds a few samples at any density and the estimate sharpens as ``N`` grows. On
    ``grid(input_shape)`` every tent holds exactly its own pixel, so the field is returned
    as is (the converted model is the CNN).

    Args:
        field: values Tensor[B, N, C] on ``N`` points of ``[-1, 1]^d``.
        input_shape: the image size the CNN was converted at (``M`` pixels).

    Returns:
        Field with values Tensor[B, M, C] on ``grid(input_shape)`` (the same point set every call).

    Raises:
        ValueError: the points are not on ``[-1, 1]^d``.
    """
    points, shape = field.points, tuple(input_shape)
    if _is_grid(points, shape):
        return field
    pixels = _unit_grid(points, shape, "latent='pixels' estimates the input")

    def build():
        shrink = min(1.0, (pixels.n / points.n) ** (1 / len(shape)))
        step = tuple(2 / n * shrink for n in shape)  # the tents' half widths
        nbrs = neighbors(points, pixels, Support(step))
        tent = (1 - nbrs.offset.double().abs() / torch.tensor(step, dtype=torch.float64, device=points.device))
        a = tent.clamp_min(0).prod(-1) * points.weights[nbrs.col].double()  # (E,)
        mass = segment_weight_sum(nbrs, a)  # (M,)
        empty = torch.nonzero(mass <= 0).squeeze(1)  # pixels without a sample inside their tent
        nearest = torch.cdist(pixels.coords[empty].double(), points.coords.double()).argmin(1)
        return nbrs, (a / mass.clamp_min(1e-300)[nbrs.row]).to(points.dtype), empty, nearest
    nbrs, weight, empty, nearest = points.cached(("pixel-estimate", shape), build)
    out = segment_sum(gather(field.values, nbrs), nbrs, weight.to(field.values.dtype))  # (B, M, C)
    if empty.numel():
        out[:, empty] = field.values[:, nearest]
    return Field(out, pixels)


@_traceable
def lattice_query(layer, field: Field, input_shape: tuple[int, ...]) -> PointSet | None:
    """Where the first window layer of a ``latent="lattice"`` conversion puts its outputs.

    ``None`` (the layer's own output points) when ``field`` is on ``grid(input_shape)``, so
    the converted model is the CNN there; otherwise ``layer.output_points(grid(input_shape))``,
    the lattice the layer has its outputs on for grid inputs (built once per dtype and device),
    so only ``layer`` integrates over the field's points and every later layer runs on the
    lattices it has on the grid.

    Args:
        layer: the first window layer (a continuous convolution with ``output_points``).
        field: its input, values Tensor[B, N, C] on ``N`` points of ``[-1, 1]^d``.
        input_shape: the image size the CNN was converted at.

    Returns:
        ``None`` or a lattice PointSet of ``M`` points (values of the layer: Tensor[B, M, C_out]).

    Raises:
        ValueError: the points are not on ``[-1, 1]^d``, the box the lattice tiles.
    """
    points = field.points
    shape = tuple(input_shape)
    if _is_grid(points, shape):
        return None
    return layer.output_points(_unit_grid(points, shape, "latent='lattice' puts the first window layer's outputs"))


@_traceable
def finish(output, query: PointSet | None = None):
    """The converted model's output; with ``query``, each field of it is resampled (nearest neighbour) there.

    A dict, list or tuple of fields (torchvision's segmentation models return
    ``{"out": ..., "aux": ...}``) is resampled item by item, keeping its type.
    """
    if query is None:
        return output
    if not isinstance(query, PointSet):
        raise TypeError(f"query must be a PointSet, got {type(query).__name__}")
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (list, tuple)) else [output]
    if not all(isinstance(x, Field) for x in items):
        kinds = f" of {[type(x).__name__ for x in items]}" if isinstance(output, (dict, list, tuple)) else ""
        raise ValueError(f"query points only apply to a model whose outputs are Fields, this one returns "
                         f"{type(output).__name__}{kinds}")
    if isinstance(output, dict):
        return type(output)((k, upsample(v, query)) for k, v in output.items())
    if isinstance(output, (list, tuple)):
        return type(output)(upsample(v, query) for v in output)
    return upsample(output, query)
