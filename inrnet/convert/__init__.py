"""Convert discrete CNNs into INR-Nets (paper §4.1, Property 4; App. E.2).

[`from_torch`][inrnet.convert.from_torch] traces a CNN with ``torch.fx`` and rebuilds it from continuous layers
with the same weights; sampled on ``grid(input_shape)`` it reproduces the CNN.
[`from_pretrained`][inrnet.convert.from_pretrained] does the same for timm and torchvision weights (failing fast
without a network). See ``docs/conversion.md`` for the layer-by-layer rules, what is
exact, and what changes on QMC points.
"""

from inrnet.convert.functions import register_function
from inrnet.convert.graph import from_torch, trace
from inrnet.convert.layers import BatchNormAct, BoxPool, CroppedBSplineConv, StridedChannelMixing, adaptive_boxes
from inrnet.convert.pretrained import from_pretrained, load_timm, load_torchvision
from inrnet.convert.rules import ConversionError, NodeInfo, Site, register_rule

__all__ = ["from_torch", "trace", "from_pretrained", "load_timm", "load_torchvision", "ConversionError",
           "register_rule", "register_function", "Site", "NodeInfo", "BoxPool", "CroppedBSplineConv",
           "StridedChannelMixing", "BatchNormAct", "adaptive_boxes"]
