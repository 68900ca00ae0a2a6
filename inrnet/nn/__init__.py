"""Continuous INR-Net layers (paper App. C): each a module ``Field -> Field`` (heads: ``Field -> Tensor``).

Stateless forms of every layer are in `inrnet.nn.functional`.
"""

from inrnet.nn import functional
from inrnet.nn.attention import Attention
from inrnet.nn.augment import Compose, PointDropout, RandomAffine, RandomFlip
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import ContinuousConv
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.nn.norm import BatchNorm, ChannelLayerNorm, GroupNorm, InstanceNorm
from inrnet.nn.parametric import InnerProduct, LegendreFunction, MLPFunction, Modulate
from inrnet.nn.pointwise import ChannelMixing, Pointwise, PositionalEncoding
from inrnet.nn.pool import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool
from inrnet.nn.recalibrate import recalibrate_norms
from inrnet.nn.resample import Add, Concat, Downsample, Upsample
from inrnet.nn.tokens import Tokenize

__all__ = [
    "functional", "ContinuousConv", "BSplineConv", "MLPConv", "LegendreConv", "ChannelMixing", "Pointwise",
    "PositionalEncoding", "BatchNorm", "InstanceNorm", "GroupNorm", "ChannelLayerNorm", "MaxPool", "AvgPool",
    "AdaptiveAvgPool", "GlobalAvgPool", "Downsample", "Upsample", "Add", "Concat", "Tokenize",
    "LegendreFunction", "MLPFunction", "Modulate", "InnerProduct", "Attention", "PointDropout", "RandomFlip",
    "RandomAffine", "Compose", "recalibrate_norms",
]
