"""Convert a CNN by tracing it with ``torch.fx`` and rebuilding its graph on fields.

1. **Trace** ([`trace`][inrnet.convert.trace]): ``torch.fx`` records the CNN's forward as a graph of module
   calls, function calls and method calls. Modules with a conversion rule, ``torch.nn``
   layers and timm's untraceable modules are leaves; everything else (blocks, Sequentials,
   heads) is traced through, so residual additions, concatenations, squeeze-excitation,
   permutes and flattens appear as nodes.
2. **Geometry**: a batch of one zeros at ``input_shape`` runs through the trace
   (``ShapeProp``) to record every node's tensor shape. Walking the graph, each node is
   either a *feature map* (a field; its [`NodeInfo`][inrnet.convert.NodeInfo] holds the
   lattice of points it lives on when the input is sampled on ``grid(input_shape)``, and
   whether the CNN holds it channels-first or -last) or a plain tensor. The input is a
   field on the grid; rules give the output points of every layer, and each is checked
   against the CNN's spatial shape at that node.
3. **Rebuild**: module calls on feature maps are replaced by their continuous layers
   (the rules of `inrnet.convert.registry`), function calls by calls on fields
   (`inrnet.convert.function_rules`); calls on plain tensors are copied with the modules
   they use. Weights are copied; every parameter keeps its name and path.

The result is a ``torch.fx.GraphModule`` with ``forward(field, query=None)``; ``print(model.code)``
shows the converted forward.
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from inrnet.convert import ops
from inrnet.convert.function_rules import CHANNEL_VIEW_TARGETS, FUNCTION_RULES, Call, Lowered, feature_map_shape
from inrnet.convert.registry import ConversionError, NodeInfo, Site, copy_weights, find_rule
from inrnet.convert.token_layers import PatchEmbedOnField
from inrnet.convert.zoo_rules import load_zoo_rules
from inrnet.field import PointSet
from inrnet.nn.bspline_conv import SUPPORT_EXTENTS, BSplineConv
from inrnet.nn.conv import ESTIMATORS, ContinuousConv

__all__ = ["trace", "from_torch", "LATENTS"]

LATENTS = ("points", "lattice", "pixels")
"""Where a converted model's layers put their outputs (``from_torch(latent=...)``)."""

FIRST_CONV_OPTIONS = {"estimator": ESTIMATORS, "support_extent": SUPPORT_EXTENTS}
"""The options ``from_torch(first_conv=...)`` sets on the first window convolution, and their values."""


def _timm_notrace() -> tuple[list[type], list]:
    try:
        from timm.layers._fx import get_notrace_functions, get_notrace_modules
    except ImportError:  # pragma: no cover - timm is a dependency
        return [], []
    return get_notrace_modules(), get_notrace_functions()


class _Tracer(fx.Tracer):
    """Leaves: modules with a rule, ``torch.nn`` layers (not containers), timm's untraceable modules.

    When tracing fails, ``failed_in`` is the path and module of the innermost submodule
    whose call raised (``None`` if the top-level forward itself did).
    """

    def __init__(self, leaf_types: Sequence[type], autowrap_functions: Sequence):
        super().__init__(autowrap_functions=tuple(autowrap_functions))
        self.leaf_types = tuple(leaf_types)
        self.failed_in: tuple[str, nn.Module] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self.leaf_types) or find_rule(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost call unwinds first
                try:
                    self.failed_in = (self.path_of_module(m), m)
                except NameError:  # not a submodule of the root: the enclosing call names the place
                    pass
            raise


def trace(cnn: nn.Module, leaf_modules: Sequence[type] = ()) -> fx.GraphModule:
    """The ``torch.fx`` trace the converter works on (``leaf_modules``: extra types not to trace into).

    Modules with a rule are leaves; torchvision's and timm's rules are registered first
    ([`load_zoo_rules`][inrnet.convert.load_zoo_rules]).
    """
    load_zoo_rules()
    notrace_modules, notrace_functions = _timm_notrace()
    tracer = _Tracer([*notrace_modules, *leaf_modules], notrace_functions)
    try:
        graph = tracer.trace(cnn)
    except Exception as e:  # fx raises TraceError, TypeError, ... from user code
        where, leaf = "", "TheModule"
        if tracer.failed_in is not None:
            path, module = tracer.failed_in
            where, leaf = f" in submodule '{path}' ({type(module).__name__})", type(module).__name__
        raise ConversionError(f"torch.fx cannot trace {type(cnn).__name__}{where}: {type(e).__name__}: {e}. Modules "
                              f"with data-dependent control flow must be leaves: pass leaf_modules=({leaf},) and "
                              "register a rule for it with inrnet.convert.register_rule") from e
    return fx.GraphModule(tracer.root, graph, type(cnn).__name__)


def _infer_in_channels(traced: fx.GraphModule) -> int:
    """The ``in_channels`` of the first called module that has one, or of its first submodule that has
    one (a leaf such as timm's ``PatchEmbed`` holds its convolution as ``proj``)."""
    for node in traced.graph.nodes:
        if node.op == "call_module":
            module = traced.get_submodule(node.target)
            c = next((s.in_channels for s in module.modules() if isinstance(getattr(s, "in_channels", None), int)),
                     None)
            if c is not None:
                return c
    raise ConversionError("cannot infer the number of input channels (no module with in_channels); pass in_channels=")


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


_INPLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv)


def _mutates_first_argument(node: fx.Node) -> bool:
    """Whether a traced call modifies its first argument in place (``x.relu_()``, ``F.relu(x, inplace=True)``)."""
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.target in _INPLACE_OPERATORS:
        return True
    if inspect.isfunction(node.target):
        try:
            bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
        except TypeError:
            return False
        return bound.arguments.get("inplace") is True
    return False


_PURE_WHEN_UNUSED = (feature_map_shape, operator.getitem, F.interpolate)
"""Calls the rebuilt graph drops when nothing uses them: a feature map's ``.shape`` and its items, and
the resizing of a ``1 x 1`` tensor that ``torch.cat`` broadcasts instead (`concat_constants`)."""


def _drop_unused(graph: fx.Graph) -> None:
    """Erase the calls of `_PURE_WHEN_UNUSED` without users, last first (so chains go too)."""
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and node.target in _PURE_WHEN_UNUSED and not node.users:
            graph.erase_node(node)


def _copy_attr(value):
    if isinstance(value, nn.Parameter):
        return nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)


class _Rebuild:
    """One pass over the traced graph that emits the converted graph (see the module docstring)."""

    def __init__(self, traced: fx.GraphModule, input_shape: tuple[int, ...], in_channels: int,
                 latent: str = "points", first_conv: Mapping[str, str] | None = None):
        self.traced, self.input_shape, self.in_channels = traced, input_shape, in_channels
        self.latent, self.first_conv = latent, dict(first_conv or {})
        self.on_input: set[fx.Node] = set()  # feature maps on the input's own points (before any window layer)
        self.graph = fx.Graph()
        self.root: dict[str, object] = {}
        self.env: dict[fx.Node, object] = {}
        self.infos: dict[fx.Node, NodeInfo] = {}
        self.module_kind: dict[str, tuple[str, str]] = {}  # target -> ("field", repr) or ("tensor", "")
        self.taken = {name for name, _ in traced.named_modules()}
        self.query = None

    def run(self) -> fx.GraphModule:
        for node in self.traced.graph.nodes:
            getattr(self, f"_{node.op}")(node)
        _drop_unused(self.graph)
        gm = fx.GraphModule(self.root, self.graph, class_name="INRNet")
        attributes = {"input_shape": self.input_shape, "in_channels": self.in_channels}
        gm.meta["_user_preserved_attributes"] = attributes  # kept by deepcopy
        for name, value in attributes.items():
            setattr(gm, name, value)
        return gm

    # helpers ---------------------------------------------------------------------------
    def _map(self, args):
        return fx.map_arg(args, lambda n: self.env[n])

    def _fields(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.map_arg((node.args, node.kwargs), lambda n: found.append(n) if self.infos[n].is_field else None)
        return found

    def _record(self, node: fx.Node, value, points: PointSet | None, layout: str, what: str,
                channel_axes: int = 1, parts: int | None = None) -> None:
        shape = _shape(node)
        if points is not None:
            meta = node.meta.get("tensor_meta")
            shapes = [tuple(m.shape) for m in meta] if parts is not None else [shape]
            for s in shapes:
                info = NodeInfo(points, layout, s, channel_axes)
                if s is None or tuple(points.lattice.shape) != info.spatial:
                    raise ConversionError(f"{what} (node {node.name}): the continuous layers give a "
                                          f"{points.lattice.shape} feature map, the CNN a {s} tensor")
        self.env[node] = value
        self.infos[node] = NodeInfo(points, layout, None if parts is not None else shape, channel_axes, parts)

    def _check_plain(self, node: fx.Node, fields: list[fx.Node], what: str) -> None:
        """Raise unless each feature map argument of ``node`` is a single one with one channel axis."""
        for f in fields:
            info = self.infos[f]
            if info.parts is not None:
                raise ConversionError(f"{what} (node {node.name}) is applied to the tuple of {info.parts} feature "
                                      f"maps of {f.name}; only indexing it (x.chunk(2, 1)[0]) is supported")
            if info.channel_axes != 1:
                raise ConversionError(f"{what} (node {node.name}) is applied to {f.name}, a feature map whose "
                                      f"channels are split over {info.channel_axes} axes (shape {info.shape}); "
                                      f"only view / reshape / transpose / permute / contiguous act on it, until "
                                      f"a view merges its channels again")

    def _rebind(self, mutated: fx.Node, node: fx.Node) -> None:
        """After an in-place call the CNN's later uses of its input see the result; fields are
        never modified in place, so the input node is rebound to the call's output."""
        self.env[mutated], self.infos[mutated] = self.env[node], self.infos[node]

    def _fresh(self, stem: str) -> str:
        name = stem
        while name in self.taken or name in self.root:
            name += "_"
        self.taken.add(name)
        return name

    @staticmethod
    def _path(node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack")
        return next(reversed(stack)) if stack else ""

    # node kinds ------------------------------------------------------------------------
    def _placeholder(self, node: fx.Node) -> None:
        if self.query is not None:
            if not node.args:
                raise ConversionError(f"the CNN's forward takes a second input '{node.target}'; only single-input "
                                      "models convert")
            self.env[node], self.infos[node] = node.args[0], NodeInfo(None)
            return
        field = self.graph.placeholder("field")
        self.query = self.graph.placeholder("query", default_value=None)
        checked = self.graph.call_function(ops.check_input, (field, self.in_channels, len(self.input_shape)))
        points = PointSet.grid(self.input_shape, dtype=torch.float64)
        if self.latent == "pixels":
            checked = self.graph.call_function(ops.pixel_estimate, (checked, self.input_shape))
        self._record(node, checked, points, "first", "the input")
        if self.latent != "pixels":
            self.on_input.add(node)

    # the first window layer (latent="lattice", first_conv=) ----------------------------------
    def _first_window(self, new: nn.Module | None, module, site: Site) -> nn.Module:
        """The first layer that takes the input's points to others: a continuous convolution, with
        ``first_conv``'s options; under ``latent="lattice"`` it will write onto its grid lattice."""
        what = f"latent={self.latent!r}" if self.latent == "lattice" else f"first_conv={self.first_conv}"
        if not isinstance(new, ContinuousConv):
            raise site.error(module, f"{what} needs the first layer that leaves the input points to be a convolution "
                                     f"with a window (it integrates over the input points and writes its outputs "
                                     f"on a lattice); here it is a {type(new).__name__}")
        if not self.first_conv:
            return new
        if type(new) is not BSplineConv:
            raise site.error(module, f"first_conv={self.first_conv} applies to a plain BSplineConv; the first "
                                     f"convolution converts to a {type(new).__name__}")
        if self.first_conv.get("support_extent") == "basis" and new.degree > 1:
            raise site.error(module, f"support_extent='basis' is the discrete filter on the grid only for "
                                     f"piecewise-linear kernels (at most 3 taps); this one has {new.kernel_size} taps, "
                                     f"degree {new.degree}")
        options = {"estimator": new.estimator, "support_extent": new.support_extent, **self.first_conv}
        variant = BSplineConv(new.in_channels, new.out_channels, new.kernel_size, new.spacing, stride=new.stride,
                              padding=new.padding, groups=new.groups, bias=new.bias is not None, degree=new.degree,
                              **options)
        return copy_weights(variant, new)

    def _reads_input(self, node: fx.Node, fields: list[fx.Node], new, points: PointSet | None, error) -> bool:
        """Track the feature maps still on the input points; True if ``node`` (lowered to the layer
        ``new``) is a first window layer (``error(message)`` makes the ConversionError naming the call).

        A first window layer is a continuous convolution on the input points, or any other
        layer that takes them to other points; layers that keep them (norms, activations,
        ``1 x 1`` convolutions, stride-1 ``'same'`` pooling) leave their output on them."""
        inputs = [f for f in fields if f in self.on_input]
        if not inputs:
            return False
        if self.latent == "lattice" and len(inputs) != len(fields):
            raise error("latent='lattice' cannot combine a feature map on the input points with one on "
                        "the first window layer's lattice (off the grid they are different points)")
        if points is None:  # a plain tensor (e.g. global pooling of the input)
            return False
        if points is self.infos[inputs[0]].points and not isinstance(new, ContinuousConv):  # still on the input points
            self.on_input.add(node)
            return False
        return self.latent == "lattice" or bool(self.first_conv)

    def _get_attr(self, node: fx.Node) -> None:
        value = self.traced
        for atom in node.target.split("."):
            value = getattr(value, atom)
        self.root[node.target] = _copy_attr(value)
        self._record(node, self.graph.get_attr(node.target), None, "first", node.target)

    def _call_module(self, node: fx.Node) -> None:
        target, module = node.target, self.traced.get_submodule(node.target)
        fields = self._fields(node)
        if not fields:
            if self.module_kind.setdefault(target, ("tensor", ""))[0] != "tensor":
                raise ConversionError(f"'{target}' ({type(module).__name__}) is called on feature maps and on plain "
                                      "tensors; a converted model needs one or the other")
            if target not in self.root:
                self.root[target] = copy.deepcopy(module)
            self._record(node, self.graph.node_copy(node, lambda n: self.env[n]), None, "first", target)
            return
        if fields != [node.args[0]] or node.kwargs or len(node.args) != 1:
            raise ConversionError(f"'{target}' ({type(module).__name__}) takes more than one input; only modules "
                                  "called on a single feature map convert")
        self._check_plain(node, fields, f"'{target}' ({type(module).__name__})")
        site = Site(target, self.infos[node.args[0]], _shape(node))
        rule = find_rule(module)
        if rule is None:
            raise site.error(module, "no conversion rule for this module type (register one with "
                                     "inrnet.convert.register_rule, or make it act on plain tensors)")
        new, points = rule(module, site)
        first = self._reads_input(node, fields, new, points, lambda message: site.error(module, message))
        if first:
            new = self._first_window(new, module, site)
        elif isinstance(new, PatchEmbedOnField) and self.first_conv and node.args[0] in self.on_input:
            new.proj = self._first_window(new.proj, module, site)  # tokens: always on the patch lattice
        kind = ("field", repr(new))
        if self.module_kind.setdefault(target, kind) != kind:
            raise site.error(module, "the module is called again on a feature map of another kind or resolution; a "
                                     "shared continuous layer has a single spacing")
        layout = site.layout
        if new is None:
            value = self.env[node.args[0]]
        elif first and self.latent == "lattice":
            self.root.setdefault(target, new)
            field = self.env[node.args[0]]
            query = self.graph.call_function(ops.lattice_query, (self.graph.get_attr(target), field, self.input_shape))
            value = self.graph.call_module(target, (field, query))
        else:
            self.root.setdefault(target, new)
            value = self.graph.call_module(target, (self.env[node.args[0]],))
        self._record(node, value, points, layout, f"'{target}' ({type(module).__name__})")
        if getattr(module, "inplace", False) is True:
            self._rebind(node.args[0], node)

    def _call_function(self, node: fx.Node) -> None:
        if not self._fields(node):
            self._record(node, self.graph.node_copy(node, lambda n: self.env[n]), None, "first", node.name)
            return
        key = node.target if node.op == "call_function" else ("method", node.target)
        call = Call(node, self._path(node), self.infos)
        if key not in CHANNEL_VIEW_TARGETS:
            self._check_plain(node, self._fields(node), call.name)
        rule = FUNCTION_RULES.get(key)
        if rule is None:
            raise call.error("not supported on a feature map")
        low: Lowered = rule(call)
        if self._reads_input(node, self._fields(node), low.module, low.points, call.error):
            raise call.error(f"latent={self.latent!r} / first_conv= need the first layer that leaves the input points "
                             "to be a convolution module (nn.Conv*d), not a function call")
        if low.alias is not None:
            value = self.env[low.alias]
        elif low.module is not None:
            name = self._fresh(f"{call.path}.{node.name}" if call.path else node.name)
            self.root[name] = low.module
            value = self.graph.create_node("call_module", name, (self.env[low.args[0]],), name=node.name)
        else:
            value = self.graph.create_node("call_function", low.fn, self._map(low.args), self._map(low.kwargs),
                                           name=node.name)
        self._record(node, value, low.points, low.layout, call.name, low.channel_axes, low.parts)
        if _mutates_first_argument(node):
            self._rebind(node.args[0], node)

    _call_method = _call_function

    def _output(self, node: fx.Node) -> None:
        fields: list[fx.Node] = []
        fx.map_arg(node.args[0], lambda n: fields.append(n) if self.infos[n].is_field else None)
        self._check_plain(node, fields, "the CNN's output")
        out = self.graph.call_function(ops.finish, (self._map(node.args[0]), self.query))
        self.graph.output(out)


def from_torch(cnn: nn.Module, input_shape: Sequence[int], *, in_channels: int | None = None,
               leaf_modules: Sequence[type] = (), latent: str = "points",
               first_conv: Mapping[str, str] | None = None) -> fx.GraphModule:
    """Convert a CNN into an INR-Net that reproduces it on grid samples (paper §4.1, Property 4).

    Args:
        cnn: the discrete network (torchvision, timm, or any traceable ``nn.Module`` of
            supported layers). It is not modified; the converted model owns copies of its
            weights, under the same names.
        input_shape: the image size ``(H, W)`` (any dimension) the CNN's pixel spacing is
            taken from: a ``k``-tap filter becomes a kernel ``k * 2 / H`` wide.
        in_channels: the input channels (default: the first layer's ``in_channels``).
        leaf_modules: extra module types to keep whole (they then need a rule).
        latent: where the layers put their outputs off the grid (all three are the CNN on
            ``grid(input_shape)``; see docs/conversion.md, "Converted networks on scattered
            points"). ``"points"`` (the paper's): on the points their input gives them (a
            prefix of scattered points), so every layer integrates over the input's own
            points. ``"lattice"``: the first window layer (the first convolution whose window
            reads the input points) writes its outputs on the lattice it has on
            ``grid(input_shape)``, whatever the input points are, so it is the only
            quadrature over the input points and every later layer is the CNN on its pixel
            lattices. ``"pixels"``: the input is first estimated at the pixel centres of
            ``grid(input_shape)`` (a tent-weighted local mean of the samples,
            `inrnet.convert.ops.pixel_estimate`) and the whole CNN runs on the pixels.
        first_conv: options of the first window convolution's
            [`BSplineConv`][inrnet.nn.bspline_conv.BSplineConv] (``latent="points"`` or
            ``"lattice"``): ``{"estimator": "mean"}`` (the ratio estimator) or
            ``{"support_extent": "basis"}`` (a kernel continuous at its support's boundary),
            not both; each keeps the CNN on the grid (``"basis"`` only for filters of at most
            3 taps, whose splines are piecewise linear).

    Returns:
        A ``torch.fx.GraphModule`` with ``forward(field, query=None)``: ``field`` holds
        values Tensor[B, N, in_channels] on any points of ``[-1, 1]^d``; it returns what the
        CNN returns (e.g. logits Tensor[B, classes]), or a [`Field`][inrnet.field.Field] for a
        fully convolutional CNN, then resampled (nearest neighbour) at ``query`` points if
        given. On ``grid(input_shape)`` samples the output equals the CNN's on the image.
        It is in the CNN's train/eval mode.

    Raises:
        ConversionError: naming the unsupported module or function and its path; with
            ``latent="lattice"`` or ``first_conv``, a first layer off the input points that
            is not a convolution module (a pooling, a strided ``1 x 1`` convolution, a
            function call) or an input that is combined with the lattice's features.
        ValueError: an unknown ``latent`` or ``first_conv`` option.
    """
    if latent not in LATENTS:
        raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
    for key, value in (first_conv or {}).items():
        if key not in FIRST_CONV_OPTIONS or value not in FIRST_CONV_OPTIONS[key]:
            raise ValueError(f"first_conv options are {FIRST_CONV_OPTIONS} (name: allowed values), got "
                             f"{key!r}: {value!r}")
    if first_conv and latent == "pixels":
        raise ValueError("first_conv sets the first convolution's quadrature; with latent='pixels' every layer runs "
                         "on the pixels (use latent='lattice' or 'points')")
    if (first_conv or {}).get("estimator") == "mean" and (first_conv or {}).get("support_extent") == "basis":
        raise ValueError("first_conv: estimator='mean' with support_extent='basis' is not the CNN on the grid (the "
                         "ratio estimator's support fraction and the grid's pixels differ at the border); pick one")
    if not isinstance(cnn, nn.Module):
        raise TypeError(f"inrnet.convert.from_torch needs an nn.Module, got {type(cnn).__name__} {cnn!r}; wrap a "
                        "function in an nn.Module whose forward calls it")
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be positive sizes, got {input_shape}")
    was_training = cnn.training
    cnn.eval()
    try:
        traced = trace(cnn, leaf_modules)
        in_channels = _infer_in_channels(traced) if in_channels is None else int(in_channels)
        ref = next((p for p in cnn.parameters() if p.is_floating_point()), None)
        dummy = torch.zeros(1, in_channels, *input_shape, dtype=ref.dtype if ref is not None else torch.float32,
                            device=ref.device if ref is not None else None)
        with torch.no_grad():
            try:
                ShapeProp(traced).propagate(dummy)
            except Exception as e:
                raise ConversionError(f"the CNN fails on a {tuple(dummy.shape)} input: {type(e).__name__}: {e}") from e
        model = _Rebuild(traced, input_shape, in_channels, latent, first_conv).run()
    finally:
        cnn.train(was_training)
    return model.train(was_training)
