"""The rule table: how each ``torch.nn`` module becomes a continuous layer.

A rule gets the module and the [`Site`][inrnet.convert.Site] where the traced CNN calls it on a feature
map (its path, and the lattice of points the feature map lives on when the input is
sampled on ``grid(input_shape)``); it returns the continuous layer (weights copied, same
parameter names) and the points of its output field, or ``None`` for a layer that turns the
field into a plain tensor (pooling to a fixed size, flatten). Modules applied to plain
tensors (a squeeze-excitation MLP, the classifier) are not looked up: they run unchanged.

This module holds the table and the rules for norms and pointwise layers; window layers
(convolution, pooling, pooling to a size, flatten) are in `inrnet.convert.windows`,
torchvision's and timm's own modules in `inrnet.convert.zoo`.

Rules are found by type; a subclass only inherits its parent's rule if it does not
override ``forward``. [`register_rule`][inrnet.convert.register_rule] adds rules for other modules.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from inrnet.convert.layers import ChannelDropout
from inrnet.field import PointSet
from inrnet.nn import BatchNorm, ChannelLayerNorm, ChannelMixing, GroupNorm, InstanceNorm, Pointwise

__all__ = ["ConversionError", "NodeInfo", "Site", "RULES", "register_rule", "find_rule", "copy_weights",
           "check_site", "channel_layer_norm", "elementwise", "ELEMENTWISE"]


class ConversionError(ValueError):
    """A module or function of the CNN cannot be converted (the message names it and its path)."""


@dataclass(frozen=True)
class NodeInfo:
    """What a node of the traced CNN holds: a feature map (a field on ``points``) or a plain value.

    Attributes:
        points: the field's points when the input is sampled on ``grid(input_shape)``;
            ``None`` for tensors and other values.
        layout: ``"first"`` (the CNN's tensor is ``[B, C, *S]``) or ``"last"`` (``[B, *S, C]``).
        shape: the CNN's tensor shape at this node for a batch of one, if a tensor.
    """

    points: PointSet | None
    layout: str = "first"
    shape: tuple[int, ...] | None = None

    @property
    def is_field(self) -> bool:
        return self.points is not None


@dataclass(frozen=True)
class Site:
    """Where a module is called on a feature map."""

    path: str
    info: NodeInfo
    out_shape: tuple[int, ...] | None

    @property
    def points(self) -> PointSet:
        return self.info.points

    @property
    def layout(self) -> str:
        return self.info.layout

    @property
    def dim(self) -> int:
        return self.info.points.dim

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.info.points.lattice.step

    @property
    def spatial(self) -> tuple[int, ...]:
        """The feature map's spatial shape in the CNN."""
        s = self.info.shape
        return tuple(s[2:]) if self.layout == "first" else tuple(s[1:-1])

    def error(self, module, message: str) -> ConversionError:
        name = module if isinstance(module, str) else type(module).__name__
        return ConversionError(f"cannot convert {name} at '{self.path}': {message}")


Rule = Callable[[nn.Module, Site], tuple[nn.Module | None, PointSet | None]]
RULES: dict[type, Rule] = {}


def register_rule(*types: type) -> Callable[[Rule], Rule]:
    """Decorator: use ``rule(module, site) -> (layer or None, output points or None)`` for these types.

    The layer (``None``: the module is the identity) is called on the input field; output
    points ``None`` mean it returns a plain tensor.
    """
    def register(rule: Rule) -> Rule:
        for t in types:
            RULES[t] = rule
        return rule
    return register


def find_rule(module: nn.Module) -> Rule | None:
    """The rule for ``module``'s type, or for the nearest registered base whose ``forward`` it keeps."""
    from inrnet.convert import windows, zoo  # noqa: F401  (register their rules)
    for cls in type(module).__mro__:
        rule = RULES.get(cls)
        if rule is not None:
            return rule if cls is type(module) or type(module).forward is cls.forward else None
    return None


def copy_weights(new: nn.Module, old: nn.Module, reshape: bool = False) -> nn.Module:
    """Move ``new`` to ``old``'s dtype and device and load ``old``'s state dict into it (strictly).

    Args:
        reshape: reshape each entry to ``new``'s shape (e.g. a 1x1 conv weight into a
            channel-mixing matrix).
    """
    ref = next(iter(old.state_dict().values()), None)
    if ref is not None:
        new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    state = old.state_dict()
    if reshape:
        target = new.state_dict()
        state = {k: v.reshape(target[k].shape) if k in target else v for k, v in state.items()}
    new.load_state_dict(state, strict=True)
    return new

def check_site(module: nn.Module, site: Site, dim: int | None = None, layout: str = "first") -> None:
    """Raise unless the feature map at ``site`` is ``dim``-d (if given) and in ``layout``."""
    if dim is not None and dim != site.dim:
        raise site.error(module, f"a {dim}-d layer applied to a {site.dim}-d feature map")
    if site.layout != layout:
        raise site.error(module, f"expects a channels-{layout} feature map, the CNN has it channels-{site.layout} "
                                 f"(shape {site.info.shape})")

@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(m, site):
    check_site(m, site, {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}[type(m)])
    return copy_weights(BatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), m), site.points


@register_rule(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _instance_norm(m, site):
    check_site(m, site, {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}[type(m)])
    new = InstanceNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    return copy_weights(new, m), site.points


@register_rule(nn.GroupNorm)
def _group_norm(m, site):
    check_site(m, site)
    return copy_weights(GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine), m), site.points


def channel_layer_norm(m: nn.LayerNorm, site: Site, layout: str):
    """A LayerNorm over the channels (``normalized_shape == (C,)``) of a ``layout`` feature map."""
    check_site(m, site, layout=layout)
    channels = site.info.shape[1] if layout == "first" else site.info.shape[-1]
    if tuple(m.normalized_shape) != (channels,):
        raise site.error(m, f"normalizes over {tuple(m.normalized_shape)}, only the {channels} channels of a feature "
                            "map can be normalized pointwise")
    new = ChannelLayerNorm(channels, m.eps, m.elementwise_affine)
    if m.elementwise_affine and m.bias is None:
        new.bias = None
    return copy_weights(new, m), site.points


@register_rule(nn.LayerNorm)
def _layer_norm(m, site):
    return channel_layer_norm(m, site, "last")


@register_rule(nn.Linear)
def _linear(m, site):
    check_site(m, site, layout="last")
    return copy_weights(ChannelMixing(m.in_features, m.out_features, bias=m.bias is not None), m), site.points


def elementwise(m: nn.Module, site: Site):
    """An elementwise module, copied (with ``inplace`` off) into [`Pointwise`][inrnet.nn.pointwise.Pointwise]."""
    fn = copy.deepcopy(m)
    if getattr(fn, "inplace", False):
        fn.inplace = False
    return Pointwise(fn), site.points


ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
               nn.Hardsigmoid, nn.Hardtanh, nn.Hardshrink, nn.Softshrink, nn.Sigmoid, nn.Tanh, nn.Softplus,
               nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Dropout, nn.AlphaDropout)
register_rule(*ELEMENTWISE)(elementwise)


@register_rule(nn.Identity)
def _identity(m, site):
    return None, site.points


@register_rule(nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
def _channel_dropout(m, site):
    check_site(m, site)
    return Pointwise(ChannelDropout(m.p)), site.points
