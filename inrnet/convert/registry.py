"""The rule table: how each ``torch.nn`` module becomes a continuous layer.

A rule gets the module and the [`Site`][inrnet.convert.Site] where the traced CNN calls it on a feature
map (its path, and the lattice of points the feature map lives on when the input is
sampled on ``grid(input_shape)``); it returns the continuous layer (weights copied, same
parameter names) and the points of its output field, or ``None`` for a layer that turns the
field into a plain tensor (pooling to a fixed size, flatten). Modules applied to plain
tensors (a squeeze-excitation MLP, the classifier) are not looked up: they run unchanged.

This module is the bottom of the converter: it holds the table, the lookup and the helpers
rules share, and imports no other module of `inrnet.convert`. The rule modules register
into it when ``import inrnet.convert`` imports them (``inrnet/convert/__init__.py``):

* `inrnet.convert.pointwise_rules`: norms, ``Linear``, activations and dropout;
* `inrnet.convert.window_rules`: convolution, pooling, pooling to a size, flatten, upsampling;
* `inrnet.convert.zoo_rules`: torchvision's and timm's own modules, registered by
  [`load_zoo_rules`][inrnet.convert.load_zoo_rules] (which ``from_torch`` and ``trace`` call) so that
  ``import inrnet.convert`` does not import timm.

Rules are found by type; a subclass only inherits its parent's rule if it does not
override ``forward``. [`register_rule`][inrnet.convert.register_rule] adds rules for other modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from inrnet.field import PointSet

__all__ = ["ConversionError", "NodeInfo", "Site", "RULES", "register_rule", "find_rule", "copy_weights", "check_site"]


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
        channel_axes: how many axes of the CNN's tensor hold the channels: 1, or more
            between a ``view`` that splits them (``[B, g, C // g, *S]``, a channel shuffle)
            and the ``view`` that merges them again; the field's values are then
            ``[B, N, g * (C // g)]``, the channel axes flattened in C order.
        parts: for the tuple of feature maps that ``chunk`` / ``split`` returns, how many
            (``shape`` is then ``None``); ``None`` for a single feature map.
    """

    points: PointSet | None
    layout: str = "first"
    shape: tuple[int, ...] | None = None
    channel_axes: int = 1
    parts: int | None = None

    @property
    def is_field(self) -> bool:
        return self.points is not None

    @property
    def is_plain_field(self) -> bool:
        """A single feature map with one channel axis: what module rules and most function rules take."""
        return self.is_field and self.channel_axes == 1 and self.parts is None

    @property
    def spatial(self) -> tuple[int, ...]:
        """The spatial shape of the CNN's tensor (after the channel axes, or before them if channels-last)."""
        s = self.shape
        return tuple(s[1 + self.channel_axes:]) if self.layout == "first" else tuple(s[1:-1])


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
        return self.info.spatial

    def error(self, module, message: str) -> ConversionError:
        name = module if isinstance(module, str) else type(module).__name__
        return ConversionError(f"cannot convert {name} at '{self.path}': {message}")


Rule = Callable[[nn.Module, Site], tuple[nn.Module | None, PointSet | None]]
"""``rule(module, site) -> (layer or None, output points or None)``."""

RULES: dict[type, Rule] = {}
"""The rule of each module type, filled by [`register_rule`][inrnet.convert.register_rule]."""


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
    """The rule for ``module``'s type, or for the nearest registered base whose ``forward`` it keeps.

    It looks only at `RULES`: torchvision's and timm's own modules have their rules once
    [`load_zoo_rules`][inrnet.convert.load_zoo_rules] has run (``from_torch`` and ``trace`` run it).
    """
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
