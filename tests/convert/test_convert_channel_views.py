"""Views of a feature map's channels (issue 16.1): channel shuffle (``view`` -> ``transpose`` ->
``view``), ``chunk`` / ``split`` along the channels, ``x.view(x.size(0), -1)``; exact against
torch on the grid (float64), the field operations against their tensor definitions, and
clear errors for views that mix channels with space."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from _grid_helpers import D64, exact
from torch import nn

from inrnet.convert import ConversionError, from_torch
from inrnet.convert.ops import permute_channels, split_channels
from inrnet.field import Field, PointSet
from inrnet.sampling import sobol

SHAPES = [(9, 9), (10, 8), (11, 12)]


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's channel shuffle, sizes read with ``x.size()``."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleBlock(nn.Module):
    """ShuffleNet-v2's unit in small: split the channels, convolve one half, concatenate, shuffle."""

    def __init__(self, c: int = 8, groups: int = 2):
        super().__init__()
        self.groups = groups
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU(),
                                    nn.Conv2d(c // 2, c // 2, 3, padding=1, groups=c // 2))
        self.head = nn.Conv2d(c, 5, 3, stride=2, padding=1)

    def forward(self, x):
        x = self.stem(x)
        a, b = x.chunk(2, dim=1)
        x = shuffle(torch.cat((a, self.branch(b)), dim=1), self.groups)
        return self.head(x)


@pytest.mark.parametrize("shape", SHAPES)
def test_shuffle_block_converts_exactly(shape):
    inet = exact(ShuffleBlock(), shape)
    assert "permute_channels" in inet.code and "split_channels" in inet.code


@pytest.mark.parametrize("groups", [2, 4])
def test_shuffle_with_reshape_and_permute(groups):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.a(x)
            b, c, h, w = y.shape
            y = y.reshape(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
            return self.b(y)

    exact(Net(), (10, 8))


def test_split_sizes_and_torch_functions():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 9, 3, padding=1), nn.Conv2d(5, 2, 1)

        def forward(self, x):
            p, q, r = torch.split(self.a(x), [2, 3, 4], dim=1)
            s, t = torch.chunk(r, 2, 1)
            return torch.cat((self.b(torch.cat((p, q), 1)), F.relu(s), t), 1)

    exact(Net(), (9, 9))


def test_view_batch_minus_one_is_flatten():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Linear(4 * 5 * 4, 6)

        def forward(self, x):
            y = F.relu(self.conv(x))
            return self.fc(y.view(y.size(0), -1))

    exact(Net(), (10, 8))


def test_torchvision_shufflenet_converts_exactly(h):
    torch.manual_seed(0)
    cnn = h.randomize_norms(torchvision.models.shufflenet_v2_x0_5(weights=None))
    err, inet, out, ref = h.compare(cnn, (33, 35), batch=2)
    assert err < 1e-4 and out.shape == (2, 1000)


def test_permute_channels_is_the_tensor_channel_shuffle():
    """The field operation against its definition on a ``[B, C, H, W]`` tensor, on scattered points."""
    torch.manual_seed(0)
    x = torch.randn(2, 12, 5, 7, dtype=D64)
    ref = shuffle(x, 3).flatten(2).transpose(1, 2)
    points = PointSet(sobol(35, seed=0).to(D64))
    out = permute_channels(Field(x.flatten(2).transpose(1, 2), points), (3, 4), (1, 0))
    assert out.points is points
    torch.testing.assert_close(out.values, ref)
    x3 = torch.randn(1, 24, 4, dtype=D64)
    ref3 = x3.view(1, 2, 3, 4, 4).permute(0, 3, 1, 2, 4).reshape(1, 24, 4).transpose(1, 2)
    out3 = permute_channels(Field(x3.transpose(1, 2), PointSet(sobol(4, dim=1, seed=0).to(D64))), (2, 3, 4),
                            (2, 0, 1))
    torch.testing.assert_close(out3.values, ref3)
    parts = split_channels(out, (5, 7))
    torch.testing.assert_close(torch.cat([p.values for p in parts], -1), out.values)
    with pytest.raises(ValueError, match="cannot split 12 channels"):
        split_channels(out, (5, 5))


class _Bad(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv, self.after, self.fn = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(2, 2, 1), fn

    def forward(self, x):
        return self.fn(self, self.conv(x))


@pytest.mark.parametrize("fn,match", [
    (lambda m, y: y.view(1, 4, 10 * 8), "only views that split or merge the channel axis"),
    (lambda m, y: y.view(1, 2, 2, 10, 8).sum(1), "channels are split over 2 axes"),
    (lambda m, y: m.after(y.view(1, 2, 2, 10, 8)[:, 0]), "slicing feature maps is not supported"),
    (lambda m, y: y.transpose(2, 3), "only channel axes split by a view"),
    (lambda m, y: y.view(1, 2, 2, 10, 8).transpose(1, 3), "only the channel axes may move"),
    (lambda m, y: y.chunk(2, dim=2)[0], "only splits along the channels"),
    (lambda m, y: y[:, :2], "slicing feature maps is not supported"),
    (lambda m, y: torch.cat(y.chunk(2, 1), 1), "only indexing it"),
    (lambda m, y: y.chunk(2, 1)[0].sum(), "not supported on a feature map"),
    (lambda m, y: y.view(1, 2, 2, 10, 8), "the CNN's output"),
])
def test_views_that_mix_channels_and_space_are_errors(fn, match):
    with pytest.raises(ConversionError, match=match):
        from_torch(_Bad(fn), (10, 8))
