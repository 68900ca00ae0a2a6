"""Convert discrete CNNs into INR-Nets (paper §4.1, Property 4; App. E.2).

[`from_torch`][inrnet.convert.from_torch] traces a CNN with ``torch.fx`` and rebuilds it from continuous layers
with the same weights; sampled on ``grid(input_shape)`` it reproduces the CNN.
[`from_pretrained`][inrnet.convert.from_pretrained] does the same for timm and torchvision weights (failing fast
without a network). See ``docs/conversion.md`` for the layer-by-layer rules, what is
exact, and what changes on QMC points.

The modules, bottom up: `registry` (the rule table, `Site`, `ConversionError`); the layers
only the converter builds, `box_pool`, `twin_layers`, `window_pool` (cropped pooling) and
`resize_layers` (bilinear resizing, transposed convolutions); the rules for modules,
`pointwise_rules`, `window_rules` and `zoo_rules` (torchvision's and timm's, registered by
[`load_zoo_rules`][inrnet.convert.load_zoo_rules]); `ops` and `function_rules` (functions and
methods on feature maps); `graph` (tracing and rebuilding); `pretrained`; `catalog` (the table of
supported modules and functions in ``docs/conversion.md``, rendered from the rules). Importing this
package imports every rule module, so the table holds every ``torch.nn`` rule.
"""

from inrnet.convert import pointwise_rules, window_rules  # noqa: F401  (register their rules)
from inrnet.convert.box_pool import BoxPool, adaptive_boxes
from inrnet.convert.function_rules import register_function
from inrnet.convert.graph import from_torch, trace
from inrnet.convert.pretrained import from_pretrained, load_timm, load_torchvision
from inrnet.convert.registry import ConversionError, NodeInfo, Site, register_rule
from inrnet.convert.twin_layers import BatchNormAct, CroppedBSplineConv, StridedChannelMixing
from inrnet.convert.zoo_rules import load_zoo_rules

__all__ = ["from_torch", "trace", "from_pretrained", "load_timm", "load_torchvision", "ConversionError",
           "register_rule", "register_function", "load_zoo_rules", "Site", "NodeInfo", "BoxPool",
           "CroppedBSplineConv", "StridedChannelMixing", "BatchNormAct", "adaptive_boxes"]
