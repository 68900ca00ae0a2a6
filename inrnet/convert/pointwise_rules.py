"""Rules for the layers that keep their input's points: norms, ``Linear``, activations, dropout.

Each returns a layer of [`inrnet.nn`][inrnet.nn] with the module's weights and the input's
points: batch, instance and group norms become their continuous namesakes (QMC statistics
in training, running statistics in eval), a ``LayerNorm`` over the channels and a
``Linear`` on a channels-last feature map act at each point, and elementwise modules run
unchanged on the values (`elementwise`). The table they register into is
`inrnet.convert.registry`.
"""

from __future__ import annotations

import copy

from torch import nn

from inrnet.convert.registry import Site, check_site, copy_weights, register_rule
from inrnet.convert.twin_layers import ChannelDropout
from inrnet.nn import BatchNorm, ChannelLayerNorm, ChannelMixing, GroupNorm, InstanceNorm, Pointwise

__all__ = ["channel_layer_norm", "elementwise", "ELEMENTWISE"]


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(m, site):
    """Batch norm as a `BatchNorm` with QMC statistics over the points in training (running statistics in eval)."""
    check_site(m, site, {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}[type(m)])
    return copy_weights(BatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), m), site.points


@register_rule(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _instance_norm(m, site):
    """Instance norm as an `InstanceNorm`: statistics per item and channel over the points."""
    check_site(m, site, {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}[type(m)])
    new = InstanceNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    return copy_weights(new, m), site.points


@register_rule(nn.GroupNorm)
def _group_norm(m, site):
    """Group norm as a `GroupNorm`: statistics per item and channel group over the points."""
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
    """A layer norm over the channels of a channels-last feature map (ConvNeXt's blocks)."""
    return channel_layer_norm(m, site, "last")


@register_rule(nn.Linear)
def _linear(m, site):
    """``nn.Linear`` on a channels-last feature map as a `ChannelMixing` (a ``1 x 1`` convolution)."""
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
    """The identity: no layer, the same points."""
    return None, site.points


@register_rule(nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
def _channel_dropout(m, site):
    """Channel dropout (``Dropout2d`` and friends): whole channels of an item dropped in training."""
    check_site(m, site)
    return Pointwise(ChannelDropout(m.p)), site.points
