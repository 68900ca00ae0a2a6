"""Rules for the torchvision and timm modules that are not plain ``torch.nn`` layers.

They are registered by [`load_zoo_rules`][inrnet.convert.load_zoo_rules], the converter's one
deferred step: it imports torchvision and timm, so that ``import inrnet.convert`` does not.
[`from_torch`][inrnet.convert.from_torch] and [`trace`][inrnet.convert.trace] call it first; call it
yourself before looking up the rule of such a module with
`inrnet.convert.registry.find_rule`. Each library registers only the classes it has.

* torchvision: ``LayerNorm2d`` (ConvNeXt, channels-first), ``StochasticDepth``.
* timm: ``LayerNorm`` (channels-last) and ``LayerNorm2d``, ``BatchNormAct2d``, ``DropPath``,
  its activation modules and ``Linear``, ``Conv2dSame`` (TensorFlow ``SAME`` padding,
  fixed by the feature map size at conversion), VGG's ``ConvMlp`` head, and the vision
  transformers' ``PatchEmbed`` (ViT, DeiT): the patch convolution as a B-spline convolution
  whose outputs are the patch tokens on the patch lattice fixed at conversion
  ([`PatchEmbedOnField`][inrnet.convert.token_layers.PatchEmbedOnField]); the class token,
  position embeddings, attention and MLP blocks and the head then run on those tokens as
  plain tensors, unchanged.
"""

from __future__ import annotations

import copy
import functools
import math

from torch import nn

from inrnet.convert.box_pool import BoxPool
from inrnet.convert.pointwise_rules import channel_layer_norm, elementwise
from inrnet.convert.registry import RULES, NodeInfo, Site, copy_weights, find_rule, register_rule
from inrnet.convert.token_layers import PatchEmbedOnField
from inrnet.convert.twin_layers import BatchNormAct
from inrnet.convert.window_rules import adaptive_pool, lower_conv
from inrnet.field import Field
from inrnet.nn.conv import ContinuousConv

__all__ = ["load_zoo_rules", "ConvMlpOnField", "tf_same_pads", "patch_embed"]


def _convert_child(module: nn.Module, site: Site, name: str):
    """Convert a submodule at ``site`` (identity: ``nn.Identity``), with its path in errors."""
    sub = Site(f"{site.path}.{name}", site.info, site.out_shape)
    rule = find_rule(module)
    if rule is None:
        raise sub.error(module, "no conversion rule for this module type")
    new, points = rule(module, sub)
    return (nn.Identity() if new is None else new), points


def tf_same_pads(spatial, kernel, stride, dilation) -> list[tuple[int, int]]:
    """TensorFlow's ``SAME`` padding ``(before, after)`` per axis for a feature map of size ``spatial``."""
    pads = []
    for n, k, s, d in zip(spatial, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


class ConvMlpOnField(nn.Module):
    """timm VGG's ``ConvMlp`` head on a field: ``fc1`` (a ``k x k`` conv), ``act1``, ``drop``, ``fc2``, ``act2``.

    On feature maps smaller than ``k`` timm first average-pools them up to ``k x k``; then
    ``pool`` (a [`BoxPool`][inrnet.convert.BoxPool]) makes that tensor and the rest runs as in timm. Otherwise
    the five layers are converted to continuous ones.
    """

    def __init__(self, pool: BoxPool | None, fc1: nn.Module, act1: nn.Module, drop: nn.Module, fc2: nn.Module,
                 act2: nn.Module):
        super().__init__()
        self.pool, self.fc1, self.act1, self.drop, self.fc2, self.act2 = pool, fc1, act1, drop, fc2, act2

    def forward(self, field: Field):
        x = field if self.pool is None else self.pool(field)
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


def _batch_norm_act(m, site):
    """timm's ``BatchNormAct2d``: its ``drop`` and ``act`` converted by their own rules."""
    if site.layout != "first" or site.dim != 2:
        raise site.error(m, f"expects a 2-d channels-first feature map, got shape {site.info.shape}")
    drop, _ = _convert_child(m.drop, site, "drop")
    act, _ = _convert_child(m.act, site, "act")
    new = BatchNormAct(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, drop=drop, act=act)
    return copy_weights(new, m), site.points


def _conv2d_same(m, site):
    """timm's ``Conv2dSame``: TensorFlow ``SAME`` padding for this feature map's size."""
    return lower_conv(m, site, tf_same_pads(site.spatial, m.kernel_size, m.stride, m.dilation))


def _conv_mlp(m, site):
    """timm VGG's ``ConvMlp`` head as a `ConvMlpOnField`."""
    k = m.input_kernel_size
    if any(n < k for n in site.spatial):
        size = tuple(max(k, n) for n in site.spatial)
        pool = adaptive_pool(m, site, size)
        return ConvMlpOnField(pool, *(copy.deepcopy(c) for c in (m.fc1, m.act1, m.drop, m.fc2, m.act2))), None
    layers, info = [], site.info
    for name in ("fc1", "act1", "drop", "fc2", "act2"):
        child = getattr(m, name)
        new, points = _convert_child(child, Site(site.path, info, None), name)
        layers.append(new)
        channels = getattr(child, "out_channels", info.shape[1])
        info = NodeInfo(points, "first", (1, channels, *points.lattice.shape))
    return ConvMlpOnField(None, *layers), info.points


def patch_embed(m: nn.Module, site: Site):
    """timm's ``PatchEmbed`` (ViT, DeiT) on the input image as a `PatchEmbedOnField`, returning the tokens.

    ``proj`` (kernel = stride = patch) is lowered as the ``nn.Conv2d`` rule lowers a
    convolution (`inrnet.convert.window_rules.lower_conv`), with ``dynamic_img_pad``'s zero
    padding on the far sides (up to half a patch, so that the last patch's centre stays on
    the image). ``flatten`` / ``output_fmt`` give the tokens' layout and ``norm`` is copied;
    ``strict_img_size`` only concerns timm's check of the image size, the converted model's
    patch lattice being fixed by ``input_shape`` either way.

    Returns:
        ``(PatchEmbedOnField, None)``: the layer's output is a plain tensor.

    Raises:
        ConversionError: naming the option: ``PatchEmbed`` applied to a feature map on
            other points than the input's, a ``proj`` that is not a padding-free
            ``nn.Conv2d``, ``1 x 1`` patches (pointwise: no patch lattice), or
            ``dynamic_img_pad=True`` padding an axis by more than half a patch.
    """
    if site.points.parent is not None:
        raise site.error(m, f"PatchEmbed converts on the input's points only (its tokens go on the patch lattice of "
                            f"grid(input_shape)); here it is applied to a feature map of shape {site.info.shape} on "
                            f"other points ({site.points})")
    proj = m.proj
    if type(proj) is not nn.Conv2d:
        raise site.error(m, f"proj is a {type(proj).__name__}; only an nn.Conv2d patch convolution converts")
    if proj.padding == "same" or (proj.padding != "valid" and any(p != 0 for p in proj.padding)):
        raise site.error(m, f"proj.padding={proj.padding!r}: a patch convolution is not padded (only "
                            "dynamic_img_pad pads it, on the far sides)")
    patch, spatial = tuple(proj.kernel_size), tuple(site.spatial)
    pads = [(0, 0)] * len(patch)
    if m.dynamic_img_pad:
        pads = [(0, (p - n % p) % p) for n, p in zip(spatial, patch)]
        for n, p, (_, pad) in zip(spatial, patch, pads):
            if pad > p // 2:
                raise site.error(m, f"dynamic_img_pad=True pads an axis of {n} pixels by {pad} to a multiple of the "
                                    f"patch size {p}, more than half a patch: the last patch would be centred off "
                                    f"the image; use an input size that pads at most {p // 2}")
    new, points = lower_conv(proj, Site(f"{site.path}.proj", site.info, None), pads)
    if not isinstance(new, ContinuousConv):
        raise site.error(m, f"patch_size={patch}: 1 x 1 patches are pointwise, their tokens are the input points "
                            "themselves, with no patch lattice to put them on")
    fmt = "NLC" if m.flatten else m.output_fmt.value
    tokens = PatchEmbedOnField(new, copy.deepcopy(m.norm), spatial, tuple(points.lattice.shape), fmt)
    return copy_weights(tokens, m), None


@functools.cache
def load_zoo_rules() -> None:
    """Register the rules for torchvision's and timm's own modules (once; later calls do nothing).

    Imports torchvision and timm; a library that is not installed registers nothing.
    """
    try:
        from torchvision.models.convnext import LayerNorm2d as TVLayerNorm2d
        from torchvision.ops import StochasticDepth
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    else:
        register_rule(TVLayerNorm2d)(lambda m, site: channel_layer_norm(m, site, "first"))
        register_rule(StochasticDepth)(elementwise)
    try:
        import timm.layers as tl
        from timm.layers.activations import (
            GELU,
            GELUTanh,
            HardMish,
            HardSigmoid,
            HardSwish,
            Mish,
            QuickGELU,
            Sigmoid,
            Swish,
            Tanh,
        )
        from timm.models.vgg import ConvMlp
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    else:
        register_rule(tl.LayerNorm)(lambda m, site: channel_layer_norm(m, site, "last"))
        register_rule(tl.LayerNorm2d)(lambda m, site: channel_layer_norm(m, site, "first"))
        register_rule(tl.DropPath, GELU, GELUTanh, HardMish, HardSigmoid, HardSwish, Mish, QuickGELU, Sigmoid, Swish,
                      Tanh)(elementwise)
        register_rule(tl.Linear)(RULES[nn.Linear])
        register_rule(tl.BatchNormAct2d)(_batch_norm_act)
        register_rule(tl.Conv2dSame)(_conv2d_same)
        register_rule(ConvMlp)(_conv_mlp)
        register_rule(tl.PatchEmbed)(patch_embed)
