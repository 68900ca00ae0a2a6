"""Pixel baselines matched layer for layer to the INR-Nets: CNN-2/4, FCN-3/5 and the U-Net.

Each is the discrete twin of the INR-Net of the same number with ``conv="bspline"``:
3x3 convs with ``padding=1``, the same strides, norms, pooling and heads, and the same
parameter names, so ``inrnet_model.load_state_dict(...)`` of a converted baseline gives
identical outputs on the grid (tests check this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CNNClassifier", "FCNSegmenter", "UNetSegmenter"]


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = nn.BatchNorm2d(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.relu(x) if self.relu else x


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.inner = nn.Sequential(_ConvBlock(channels, channels), _ConvBlock(channels, channels, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.inner(x))


class CNNClassifier(nn.Module):
    """The pixel twin of [`INRNetClassifier`][inrnet.models.inr_nets.INRNetClassifier].

    Shapes:
        ``forward(images [B, in_channels, H, W]) -> logits [B, num_classes]``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64), residual_blocks: int = 0,
                 hidden: int = 128):
        super().__init__()
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers.append(_ConvBlock(c, w, stride=2))
            c = w
        layers += [_Residual(c) for _ in range(residual_blocks)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean((2, 3)))


class FCNSegmenter(nn.Module):
    """The pixel twin of [`INRNetSegmenter`][inrnet.models.inr_nets.INRNetSegmenter] (FCN-3 / FCN-5).

    Shapes:
        ``forward(images [B, in_channels, H, W]) -> logits [B, num_classes, H, W]``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, multiscale: bool = False):
        super().__init__()
        self.in_channels, self.multiscale = in_channels, multiscale
        self.stem = _ConvBlock(in_channels, width)
        if multiscale:
            self.down = _ConvBlock(width, 2 * width, stride=2)
            self.low = _ConvBlock(2 * width, 2 * width)
            self.fuse = _ConvBlock(2 * width, width, relu=False)
        else:
            self.body = _ConvBlock(width, width)
        self.head = nn.Conv2d(width, num_classes, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        if self.multiscale:
            low = self.low(self.down(x))
            up = F.interpolate(low, scale_factor=2, mode="nearest")[..., : x.shape[2], : x.shape[3]]
            x = F.relu(x + self.fuse(up))
        else:
            x = self.body(x)
        return self.head(x)


class UNetSegmenter(nn.Module):
    """The pixel twin of [`INRNetUNet`][inrnet.models.inr_nets.INRNetUNet]: 3x3 conv blocks,
    stride-2 downsampling, nearest-neighbour upsampling, skip merges by concatenation.

    Shapes:
        ``forward(images [B, in_channels, H, W]) -> logits [B, num_classes, H, W]``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64, 64)):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must give at least two levels of positive widths, got {widths}")
        self.in_channels = in_channels
        self.encoder = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            self.encoder.append(nn.Sequential(_ConvBlock(c, w, stride=2 if i else 1), _ConvBlock(w, w)))
            c = w
        self.decoder = nn.ModuleList(_ConvBlock(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips = [self.encoder[0](images)]
        for level in self.encoder[1:]:
            skips.append(level(skips[-1]))
        x = skips.pop()
        for i in reversed(range(len(self.decoder))):
            skip = skips.pop()
            up = F.interpolate(x, scale_factor=2, mode="nearest")[..., : skip.shape[2], : skip.shape[3]]
            x = self.decoder[i](torch.cat([skip, up], 1))
        return self.head(x)
