"""Rules for the functions and methods a traced CNN applies to feature maps.

Calls on plain tensors are copied unchanged; a call with a feature-map argument is looked
up here by its target (a function, or ``("method", name)``) and lowered to a call on the
field (`inrnet.convert.ops`), to a module (functional pooling becomes the module's
rule), or to an alias (``permute`` between channels-first and channels-last only changes
how later calls read the values; ``contiguous`` is the identity). A feature map's ``.shape``
and ``.size()`` are the field's batch size and channels with the spatial size at conversion
(`feature_map_shape`), so that ``F.interpolate(x, size=input.shape[-2:])`` converts.
Views of the channels convert too: a ``view`` / ``reshape`` that splits the channel axis
(``[B, g, C // g, *S]``), ``transpose`` / ``permute`` of the split axes and the ``view`` that
merges them (a channel shuffle, `ops.permute_channels`), and ``chunk`` / ``split`` along the
channels (a tuple of fields, indexed by ``getitem``).
Anything else raises a [`ConversionError`][inrnet.convert.ConversionError] naming the function and its path.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from inrnet.convert import ops
from inrnet.convert.box_pool import BoxPool
from inrnet.convert.ops import _traceable
from inrnet.convert.registry import ConversionError, NodeInfo, Site, find_rule
from inrnet.convert.window_rules import check_upsample_mode, flatten_field
from inrnet.field import Field, PointSet, check_same_points

__all__ = ["Lowered", "Call", "FUNCTION_RULES", "CHANNEL_VIEW_TARGETS", "register_function", "feature_map_shape",
           "concat_constants"]


@dataclass
class Lowered:
    """How one traced call runs in the converted graph (arguments are nodes of the traced graph).

    Exactly one of: ``fn`` (a ``call_function`` with ``args``/``kwargs``), ``module`` (called
    on ``args[0]``) or ``alias`` (the output is that node's value). ``points``/``layout``/
    ``channel_axes``/``parts`` describe the output as in [`NodeInfo`][inrnet.convert.NodeInfo]
    (``points=None``: a plain tensor).
    """

    fn: Callable | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    module: nn.Module | None = None
    alias: Any = None
    points: PointSet | None = None
    layout: str = "first"
    channel_axes: int = 1
    parts: int | None = None


@dataclass
class Call:
    """A traced call with at least one feature-map argument."""

    node: fx.Node
    path: str
    infos: dict[fx.Node, NodeInfo]

    @property
    def name(self) -> str:
        t = self.node.target
        return f"Tensor.{t}" if isinstance(t, str) else f"{getattr(t, '__module__', '') or ''}.{t.__name__}".lstrip(".")

    def info(self, arg) -> NodeInfo | None:
        return self.infos.get(arg) if isinstance(arg, fx.Node) else None

    def is_field(self, arg) -> bool:
        info = self.info(arg)
        return info is not None and info.is_field

    def out_shape(self) -> tuple[int, ...] | None:
        meta = self.node.meta.get("tensor_meta")
        return tuple(meta.shape) if hasattr(meta, "shape") else None

    def error(self, message: str) -> ConversionError:
        where = f"in '{self.path}'" if self.path else "in the top-level forward"
        return ConversionError(f"cannot convert {self.name} {where} (node {self.node.name}): {message}")

    def arg(self, index: int, name: str, default=None):
        """Argument ``index`` / keyword ``name``."""
        if len(self.node.args) > index:
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

    def only_field(self, *positions: int):
        """The field argument, checking that no argument other than those at ``positions`` is a field."""
        flat = []
        fx.map_arg((self.node.args, self.node.kwargs), flat.append)
        allowed = {self.node.args[p] for p in positions if p < len(self.node.args)}
        for a in flat:
            if self.is_field(a) and a not in allowed:
                raise self.error(f"a feature map is passed as argument {a.name}, which is not supported")
        return self.node.args[positions[0]]


FunctionRule = Callable[[Call], Lowered]
FUNCTION_RULES: dict[Any, FunctionRule] = {}


def register_function(*targets) -> Callable[[FunctionRule], FunctionRule]:
    """Decorator: lower calls of these targets (functions, or ``("method", name)``) with ``rule(call)``."""
    def register(rule: FunctionRule) -> FunctionRule:
        for t in targets:
            FUNCTION_RULES[t] = rule
        return rule
    return register


def _m(*names: str) -> list[tuple[str, str]]:
    return [("method", n) for n in names]


_BINARY = {operator.add: "add", operator.iadd: "add", torch.add: "add", ("method", "add"): "add",
           ("method", "add_"): "add", operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
           ("method", "sub"): "sub", ("method", "sub_"): "sub", operator.mul: "mul", operator.imul: "mul",
           torch.mul: "mul", ("method", "mul"): "mul", ("method", "mul_"): "mul", operator.truediv: "truediv",
           operator.itruediv: "truediv", torch.div: "truediv", ("method", "div"): "truediv",
           ("method", "div_"): "truediv"}


@register_function(*_BINARY)
def _binary(call: Call) -> Lowered:
    """``+ - * /`` of feature maps on the same points, or of a feature map and a tensor that broadcasts
    over its points (a squeeze-excitation gate, a scalar)."""
    target = call.node.target if callable(call.node.target) else ("method", call.node.target)
    if len(call.node.args) != 2 or call.node.kwargs:
        raise call.error("only the two-operand form is supported (no alpha= / rounding_mode= / out=)")
    a, b = call.node.args
    fields = [call.info(x) for x in (a, b) if call.is_field(x)]
    if len(fields) == 2:
        if fields[0].layout != fields[1].layout:
            raise call.error("the operands are feature maps in different layouts (channels-first and -last)")
        try:
            check_same_points(fields[0].points, fields[1].points, "the operands")
        except ValueError as e:
            raise call.error(str(e)) from None
    ref = fields[0]
    return Lowered(fn=ops.binary, args=(_BINARY[target], a, b, ref.layout, len(ref.shape)), points=ref.points,
                   layout=ref.layout)


@register_function(torch.cat, torch.concat, torch.concatenate)
def _cat(call: Call) -> Lowered:
    """``torch.cat`` of feature maps along the channels; a plain operand may be a tensor resized from
    ``1 x 1`` (DeepLab's ASPP pooling branch, ``F.interpolate(pooled, size=x.shape[-2:])``), constant in
    space, which `concat_constants` broadcasts to the points."""
    items = list(call.arg(0, "tensors"))
    dim = call.arg(1, "dim", 0)
    constants = {x: source for x in items if not call.is_field(x) and (source := _resized_from_1x1(x)) is not None}
    if not all(call.is_field(x) or x in constants for x in items):
        raise call.error("concatenating a feature map with a plain tensor is not supported (only with one resized "
                         "from 1 x 1, constant in space)")
    infos = [call.info(x) for x in items if call.is_field(x)]
    ndim, layout = len(infos[0].shape), infos[0].layout
    if any(i.layout != layout for i in infos) or dim % ndim != (1 if layout == "first" else ndim - 1):
        raise call.error(f"only concatenation along the channels is supported, got dim={dim} of channels-{layout} "
                         f"feature maps")
    try:
        for i in infos[1:]:
            check_same_points(infos[0].points, i.points, "concatenated feature maps")
    except ValueError as e:
        raise call.error(str(e)) from None
    if constants:
        return Lowered(fn=concat_constants, args=([constants.get(x, x) for x in items],), points=infos[0].points,
                       layout=layout)
    return Lowered(fn=ops.concat, args=(items,), points=infos[0].points, layout=layout)


def _resized_from_1x1(node) -> fx.Node | None:
    """The ``[B, C, 1, ..., 1]`` tensor that ``node`` resizes with ``F.interpolate``, if it is one."""
    if not isinstance(node, fx.Node) or node.target is not F.interpolate:
        return None
    source = node.args[0] if node.args else node.kwargs.get("input")
    meta = source.meta.get("tensor_meta") if isinstance(source, fx.Node) else None
    shape = tuple(getattr(meta, "shape", ()))
    return source if len(shape) > 2 and all(s == 1 for s in shape[2:]) else None


@_traceable
def concat_constants(items: Sequence) -> Field:
    """`ops.concat` of fields and tensors constant in space, broadcast to the fields' points.

    Args:
        items: Fields with values Tensor[B, N, C_i] on the same points, and tensors
            Tensor[B, C_i, 1, ..., 1] (or channels-last ``[B, 1, ..., 1, C_i]``).

    Returns:
        Field with values Tensor[B, N, sum C_i].
    """
    ref = next(x for x in items if isinstance(x, Field))
    fields = [x if isinstance(x, Field) else
              Field(x.flatten(1)[:, None, :].expand(-1, ref.points.n, -1), ref.points)  # (B, N, C_i)
              for x in items]
    return ops.concat(fields)


@register_function(torch.flatten, *_m("flatten"))
def _flatten(call: Call) -> Lowered:
    """``torch.flatten(x, 1)`` of a feature map: one box per pixel, then flatten; a plain tensor."""
    x = call.only_field(0)
    site = Site(call.path, call.info(x), call.out_shape())
    return Lowered(module=flatten_field(call.name, site, call.arg(1, "start_dim", 0), call.arg(2, "end_dim", -1)),
                   args=(x,))


@register_function(torch.mean, *_m("mean"))
def _mean(call: Call) -> Lowered:
    """The mean over a feature map's spatial axes as a `BoxPool` (the quadrature mean over the points)."""
    x = call.only_field(0)
    info = call.info(x)
    ndim = len(info.shape)
    dims = call.arg(1, "dim")
    dims = {d % ndim for d in (dims if isinstance(dims, (tuple, list)) else (dims,))} if dims is not None else None
    spatial = set(range(2, ndim)) if info.layout == "first" else set(range(1, ndim - 1))
    if dims != spatial or call.arg(3, "dtype") is not None:
        raise call.error(f"only the mean over the spatial dims {sorted(spatial)} of a feature map is supported, "
                         f"got dim={call.arg(1, 'dim')}")
    keepdim = bool(call.arg(2, "keepdim", False))
    return Lowered(module=BoxPool(None, info.points.dim, flatten=not keepdim, channels_last=info.layout == "last"),
                   args=(x,))


@register_function(torch.permute, *_m("permute"))
def _permute(call: Call) -> Lowered:
    """A permute between channels-first and channels-last (an alias: later calls read the values
    in the other layout), or one of the channel axes of a split feature map (a channel shuffle)."""
    x = call.only_field(0)
    info = _single(call, x)
    rest = call.node.args[1:] or (call.node.kwargs.get("dims"),)
    perm = tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else tuple(rest)
    ndim = len(info.shape)
    perm = tuple(p % ndim for p in perm)
    if info.channel_axes != 1:
        return _permute_channel_axes(call, x, perm)
    to_last, to_first = (0, *range(2, ndim), 1), (0, ndim - 1, *range(1, ndim - 1))
    if perm == tuple(range(ndim)):
        layout = info.layout
    elif info.layout == "first" and perm == to_last:
        layout = "last"
    elif info.layout == "last" and perm == to_first:
        layout = "first"
    else:
        raise call.error(f"only permutes between channels-first and channels-last are supported, got {perm} of a "
                         f"channels-{info.layout} feature map")
    return Lowered(alias=x, points=info.points, layout=layout)


@register_function(*_m("contiguous", "clone"), torch.clone)
def _identity(call: Call) -> Lowered:
    """``contiguous`` and ``clone``: the identity on fields (never modified in place)."""
    x = call.only_field(0)
    info = _single(call, x)
    return Lowered(alias=x, points=info.points, layout=info.layout, channel_axes=info.channel_axes)


def _single(call: Call, x) -> NodeInfo:
    """The info of the feature map ``x``, which must not be a tuple of them (from ``chunk``)."""
    info = call.info(x)
    if info.parts is not None:
        raise call.error(f"applied to the tuple of {info.parts} feature maps that chunk/split returns; index it first")
    return info


def _channel_axes_of(call: Call, info: NodeInfo, shape: tuple[int, ...]) -> int:
    """How many channel axes ``shape`` (the output of a view of the feature map ``info``) has:
    it must keep the batch and the spatial axes and only split or merge the channels."""
    spatial = info.spatial
    ns = len(spatial)
    channels = math.prod(info.shape[1:1 + info.channel_axes])
    k = len(shape) - 1 - ns
    if (info.layout != "first" or k < 1 or shape[0] != info.shape[0] or tuple(shape[1 + k:]) != spatial
            or math.prod(shape[1:1 + k]) != channels):
        raise call.error(f"only views that split or merge the channel axis of a channels-first feature map convert "
                         f"(a channel shuffle), or x.view(x.size(0), -1) before a linear layer; this one takes "
                         f"{info.shape} (channels-{info.layout}) to {shape}")
    return k


@register_function(*_m("view", "reshape"), torch.reshape)
def _view(call: Call) -> Lowered:
    """``x.view`` / ``reshape`` of a feature map: splitting the channels into axes (``[B, g, C // g, *S]``)
    or merging them (an alias: the values stay ``[B, N, C]`` in C order), or flattening everything
    but the batch (as ``torch.flatten(x, 1)``). The target shape is read from the trace, so
    ``x.view(b, g, c // g, h, w)`` with sizes from ``x.size()`` converts."""
    x = call.only_field(0)
    info = _single(call, x)
    out = call.out_shape()
    if info.channel_axes == 1 and out == (info.shape[0], math.prod(info.shape[1:])):
        site = Site(call.path, info, out)
        return Lowered(module=flatten_field(call.name, site, 1, -1), args=(x,))
    k = _channel_axes_of(call, info, out)
    return Lowered(alias=x, points=info.points, layout="first", channel_axes=k)


@register_function(torch.transpose, *_m("transpose"), torch.swapaxes, *_m("swapaxes"))
def _transpose(call: Call) -> Lowered:
    """``transpose`` of two channel axes of a split feature map (the middle step of a channel shuffle)."""
    x = call.only_field(0)
    info = _single(call, x)
    ndim = len(info.shape)
    a, b = (int(call.arg(1, "dim0")) % ndim, int(call.arg(2, "dim1")) % ndim)
    perm = list(range(ndim))
    perm[a], perm[b] = perm[b], perm[a]
    if info.channel_axes == 1:
        raise call.error(f"transposes axes {a} and {b} of a feature map of shape {info.shape}; only channel axes "
                         f"split by a view (a channel shuffle) can be transposed (use permute for channels-last)")
    return _permute_channel_axes(call, x, tuple(perm))


def _permute_channel_axes(call: Call, x, perm: tuple[int, ...]) -> Lowered:
    info = call.info(x)
    k = info.channel_axes
    ndim = len(info.shape)
    if perm[0] != 0 or sorted(perm[1:1 + k]) != list(range(1, 1 + k)) or perm[1 + k:] != tuple(range(1 + k, ndim)):
        raise call.error(f"permutes {perm} of a feature map whose channels are split over axes 1..{k} (shape "
                         f"{info.shape}); only the channel axes may move")
    channel_perm = tuple(p - 1 for p in perm[1:1 + k])
    return Lowered(fn=ops.permute_channels, args=(x, tuple(info.shape[1:1 + k]), channel_perm), points=info.points,
                   layout="first", channel_axes=k)


@register_function(torch.chunk, *_m("chunk"), torch.split, *_m("split"))
def _split(call: Call) -> Lowered:
    """``x.chunk(n, dim=1)`` / ``x.split(sizes, dim=1)`` of a feature map along its channels: a tuple
    of fields (the sizes are read from the trace)."""
    x = call.only_field(0)
    info = _single(call, x)
    if info.channel_axes != 1:
        raise call.error(f"splits a feature map whose channels are split over {info.channel_axes} axes")
    ndim = len(info.shape)
    dim = call.arg(2, "dim", 0)
    if not isinstance(dim, int) or dim % ndim != (1 if info.layout == "first" else ndim - 1):
        raise call.error(f"only splits along the channels convert, got dim={dim} of a channels-{info.layout} "
                         f"feature map of shape {info.shape}")
    channel = 1 if info.layout == "first" else -1
    sizes = tuple(int(m.shape[channel]) for m in call.node.meta["tensor_meta"])
    return Lowered(fn=ops.split_channels, args=(x, sizes), points=info.points, layout=info.layout, parts=len(sizes))


@register_function(operator.getitem)
def _getitem(call: Call) -> Lowered:
    """One feature map of the tuple that ``chunk`` / ``split`` returns (indexing a feature map is an error)."""
    x = call.only_field(0)
    info = call.info(x)
    index = call.node.args[1]
    if info.parts is None:
        raise call.error(f"indexes a feature map of shape {info.shape} with {index!r}; slicing feature maps is not "
                         f"supported (split its channels with chunk / split)")
    if not isinstance(index, int):
        raise call.error(f"indexes the tuple of {info.parts} feature maps with {index!r}; only an int index converts")
    return Lowered(fn=operator.getitem, args=(x, index), points=info.points, layout=info.layout)


CHANNEL_VIEW_TARGETS = frozenset({*_m("view", "reshape", "transpose", "swapaxes", "permute", "contiguous", "clone"),
                                  torch.reshape, torch.transpose, torch.swapaxes, torch.permute, torch.clone,
                                  operator.getitem})
"""The calls that take a feature map with split channels or a tuple of them (their rules check which);
any other call on one is an error (`inrnet.convert.graph` checks)."""


_ELEMENTWISE = {F.relu: "relu", torch.relu: "relu", ("method", "relu"): "relu", ("method", "relu_"): "relu",
                F.relu6: "relu6", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", F.silu: "silu",
                F.gelu: "gelu", F.mish: "mish", F.elu: "elu", F.leaky_relu: "leaky_relu", F.softplus: "softplus",
                F.hardtanh: "hardtanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                ("method", "sigmoid"): "sigmoid", ("method", "sigmoid_"): "sigmoid", torch.tanh: "tanh",
                F.tanh: "tanh", ("method", "tanh"): "tanh", ("method", "tanh_"): "tanh"}


@register_function(*_ELEMENTWISE)
def _elementwise(call: Call) -> Lowered:
    """An elementwise function (``F.relu``, ``x.sigmoid()``, ...) applied to the values, ``inplace`` ignored."""
    x = call.only_field(0)
    target = call.node.target if callable(call.node.target) else ("method", call.node.target)
    fn = _ELEMENTWISE[target]
    args, kwargs = call.node.args[1:], dict(call.node.kwargs)
    if inspect.isfunction(call.node.target):  # F.relu(x, inplace=True) etc.: pass arguments by name, out of place
        bound = inspect.signature(call.node.target).bind(*call.node.args, **call.node.kwargs)
        bound.arguments.pop("inplace", None)
        args, kwargs = (), dict(list(bound.arguments.items())[1:])
    info = call.info(x)
    return Lowered(fn=ops.pointwise, args=(fn, x, *args), kwargs=kwargs, points=info.points, layout=info.layout)


@register_function(F.layer_norm, F.linear)
def _last_axis(call: Call) -> Lowered:
    """``F.layer_norm`` / ``F.linear`` over the channels of a channels-last feature map."""
    x = call.only_field(0)
    info = call.info(x)
    if info.layout != "last":
        raise call.error(f"acts on the last axis, which is a spatial axis of this channels-first feature map "
                         f"(shape {info.shape})")
    if call.node.target is F.layer_norm and tuple(call.arg(1, "normalized_shape")) != (info.shape[-1],):
        raise call.error("only a layer norm over the channels is supported")
    name = "layer_norm" if call.node.target is F.layer_norm else "linear"
    return Lowered(fn=ops.pointwise, args=(name, *call.node.args), kwargs=dict(call.node.kwargs),
                   points=info.points, layout=info.layout)


def _nodes(value) -> list[fx.Node]:
    """The graph nodes in an argument (nested in tuples, lists and dicts)."""
    nodes: list[fx.Node] = []
    fx.map_arg(value, nodes.append)
    return nodes


def _constants(call: Call) -> tuple[tuple, dict]:
    args, kwargs = call.node.args[1:], dict(call.node.kwargs)
    if nodes := _nodes((args, kwargs)):
        raise call.error(f"its arguments must be constants at trace time, got {[n.name for n in nodes]}")
    kwargs.pop("inplace", None)
    kwargs.pop("training", None)
    return args, kwargs


_FUNCTIONAL_MODULES = {
    F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d, F.max_pool3d: nn.MaxPool3d,
    F.avg_pool1d: nn.AvgPool1d, F.avg_pool2d: nn.AvgPool2d, F.avg_pool3d: nn.AvgPool3d,
    F.adaptive_avg_pool1d: nn.AdaptiveAvgPool1d, F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d,
    F.adaptive_avg_pool3d: nn.AdaptiveAvgPool3d, F.dropout: nn.Dropout, F.dropout1d: nn.Dropout1d,
    F.dropout2d: nn.Dropout2d, F.dropout3d: nn.Dropout3d,
}


def _lower_module(call: Call, x: fx.Node, module: nn.Module) -> Lowered:
    """Lower the call as ``module`` applied to the feature map ``x``, by the module's rule."""
    site = Site(call.path, call.info(x), call.out_shape())
    new, points = find_rule(module)(module, site)
    if new is None:
        return Lowered(alias=x, points=points, layout=site.layout)
    return Lowered(module=new, args=(x,), points=points, layout=site.layout)


@register_function(*_FUNCTIONAL_MODULES)
def _functional_module(call: Call) -> Lowered:
    """``F.max_pool2d(x, 2)`` and friends: build the module (``F.dropout`` becomes ``nn.Dropout(p)``,
    which drops in training whatever ``training=`` the traced call had) and apply its rule."""
    x = call.only_field(0)
    args, kwargs = _constants(call)
    cls = _FUNCTIONAL_MODULES[call.node.target]
    if cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d):
        args = args[:1]
    try:
        module = cls(*args, **kwargs)
    except TypeError as e:
        raise call.error(f"cannot rebuild {cls.__name__} from its arguments: {e}") from None
    return _lower_module(call, x, module)


@register_function(F.interpolate)
def _interpolate(call: Call) -> Lowered:
    """``F.interpolate`` (by ``size`` or ``scale_factor``): the rule of ``nn.Upsample`` with its arguments.

    A ``size`` computed in the traced forward (``size=input.shape[-2:]``, torchvision's
    segmentation heads) is the size the CNN resizes to at conversion. ``antialias=True`` is
    an error (it changes linear interpolation only when shrinking, which converts without it).
    """
    x = call.only_field(0)
    bound = inspect.signature(F.interpolate).bind(*call.node.args, **call.node.kwargs)
    bound.apply_defaults()
    arguments = {k: v for k, v in bound.arguments.items() if k != "input"}
    if _nodes(arguments["size"]):
        arguments["size"] = tuple(call.out_shape()[2:])
    if nodes := _nodes(arguments):
        raise call.error(f"its arguments must be constants at trace time, got {[n.name for n in nodes]}")
    if (reason := check_upsample_mode(arguments["mode"])) is not None:
        raise call.error(reason)
    if arguments.pop("antialias"):
        raise call.error("antialias=True is not supported")
    return _lower_module(call, x, nn.Upsample(**arguments))


@_traceable
def feature_map_shape(field: Field, spatial: tuple[int, ...], layout: str, dim: int | None = None):
    """A feature map's ``.shape`` / ``.size(dim)`` in the CNN: the field's batch size and
    channels, and ``spatial``, the CNN's spatial size at conversion.

    Args:
        field: values Tensor[B, N, C].
        spatial: the spatial size.
        layout: ``"first"`` (``[B, C, *spatial]``) or ``"last"`` (``[B, *spatial, C]``).
        dim: one axis (``x.size(dim)``), or ``None`` for all.

    Returns:
        ``torch.Size``, or an ``int`` with ``dim``.
    """
    b, c = field.batch_size, field.channels
    shape = torch.Size((b, c, *spatial) if layout == "first" else (b, *spatial, c))
    return shape if dim is None else shape[dim]


@register_function(getattr, *_m("size"))
def _shape(call: Call) -> Lowered:
    """``x.shape`` and ``x.size(dim)`` of a feature map (see `feature_map_shape`); other attributes are errors."""
    x = call.only_field(0)
    if call.node.target is getattr and call.node.args[1] != "shape":
        raise call.error(f"attribute {call.node.args[1]!r} of a feature map is not supported (only .shape)")
    dim = None if call.node.target is getattr else call.arg(1, "dim")
    info = call.info(x)
    spatial = info.shape[2:] if info.layout == "first" else info.shape[1:-1]
    return Lowered(fn=feature_map_shape, args=(x, tuple(spatial), info.layout, dim))
