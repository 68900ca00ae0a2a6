"""Stateless maths of the continuous layers, one import away (like ``torch.nn.functional``).

Each function lives beside its module (``conv.py``, ``norm.py``, ``pool.py``, …); this
file only gathers them.
"""

from inrnet.nn.gather import atom_conv
from inrnet.nn.attention import attention
from inrnet.nn.augment import affine, drop_points, flip, jitter, reflect
from inrnet.nn.conv import conv_pairs, support_fraction
from inrnet.nn.norm import batch_norm, channel_layer_norm, group_norm, instance_norm, weighted_moments
from inrnet.nn.parametric import inner_product, legendre_basis, modulate
from inrnet.nn.pointwise import channel_mixing, positional_encoding, sinusoidal_features
from inrnet.nn.pool import adaptive_avg_pool, avg_pool, global_avg_pool, max_pool
from inrnet.nn.resample import add, concat, downsample, nearest_index, upsample
from inrnet.nn.tokens import box_partition, token_moments

__all__ = [
    "attention", "affine", "drop_points", "flip", "jitter", "reflect", "atom_conv", "conv_pairs",
    "support_fraction", "inner_product", "legendre_basis", "modulate", "batch_norm", "channel_layer_norm",
    "group_norm", "instance_norm", "weighted_moments", "channel_mixing", "positional_encoding",
    "sinusoidal_features", "adaptive_avg_pool", "avg_pool", "global_avg_pool", "max_pool", "add", "concat",
    "downsample", "nearest_index", "upsample", "box_partition", "token_moments",
]
