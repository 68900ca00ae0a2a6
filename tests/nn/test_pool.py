"""Pooling: discrete twins on grids, loop references on scattered points, unbiased scaling, convergence."""

import math

import pytest
import torch
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.nn.pool import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool, adaptive_bins, avg_pool, max_pool
from inrnet.nn.resample import downsample
from inrnet.sampling.points import sobol
from inrnet.testing import grid_field
from inrnet.testing.asserts import assert_converges, assert_matches_discrete, gradcheck_field

# (grid shape, kernel, stride, torch padding, our padding): odd and even grids and kernels.
WINDOWS = [
    ((8, 8), 3, 2, 1, "zeros"),
    ((7, 9), 3, 1, 1, "zeros"),
    ((6, 5), 5, 2, 2, "zeros"),
    ((8, 8), 2, 2, 0, "none"),
    ((7, 6), 2, 1, 0, "none"),
    ((9, 8), 4, 3, 0, "none"),
    ((7, 9), 3, 3, 0, "none"),
    ((8, 7), (2, 3), (1, 2), 0, "none"),
]

TORCH_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
TORCH_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _spacing(shape):
    return tuple(2.0 / s for s in shape)


@pytest.mark.parametrize("shape,k,s,p,padding", WINDOWS)
def test_max_pool_matches_torch(shape, k, s, p, padding):
    x = torch.randn(2, 3, *shape)
    assert_matches_discrete(MaxPool(k, _spacing(shape), s, padding, unbiased=False), nn.MaxPool2d(k, s, p), x)


@pytest.mark.parametrize("shape,k,s,p,padding", WINDOWS)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_torch(shape, k, s, p, padding, count_include_pad):
    x = torch.randn(2, 3, *shape)
    layer = AvgPool(k, _spacing(shape), s, padding, count_include_pad=count_include_pad)
    assert_matches_discrete(layer, nn.AvgPool2d(k, s, p, count_include_pad=count_include_pad), x)


@pytest.mark.parametrize("shape,k,s,p,padding", [((11,), 3, 2, 1, "zeros"), ((10,), 4, 2, 0, "none"),
                                                  ((5, 6, 4), 3, 2, 1, "zeros"), ((6, 5, 4), 2, 2, 0, "none")])
def test_pooling_in_1d_and_3d(shape, k, s, p, padding):
    x = torch.randn(2, 2, *shape)
    d = len(shape)
    assert_matches_discrete(MaxPool(k, _spacing(shape), s, padding, unbiased=False), TORCH_MAX[d](k, s, p), x)
    assert_matches_discrete(AvgPool(k, _spacing(shape), s, padding), TORCH_AVG[d](k, s, p), x)


def test_default_stride_is_kernel_size():
    x = torch.randn(1, 2, 8, 6)
    assert_matches_discrete(MaxPool(2, _spacing((8, 6)), padding="none", unbiased=False), nn.MaxPool2d(2), x)


def test_max_pool_gradient_matches_torch_with_ties():
    x = torch.randint(0, 3, (2, 2, 6, 6)).double().requires_grad_()
    y = x.detach().clone().requires_grad_()
    field = Field(x.flatten(2).transpose(1, 2), PointSet.grid((6, 6), dtype=torch.float64))
    out = max_pool(field, 3, 1 / 3, 2, "zeros", unbiased=False).values
    ref = nn.MaxPool2d(3, 2, 1)(y).flatten(2).transpose(1, 2)
    g = torch.randn_like(ref)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("shape", [(8, 8), (6, 9)])
def test_adaptive_and_global_avg_pool_match_torch(shape):
    x = torch.randn(2, 3, *shape)
    out = (shape[0] // 2, shape[1] // 3)
    assert_matches_discrete(AdaptiveAvgPool(out), nn.AdaptiveAvgPool2d(out), x)
    assert_matches_discrete(AdaptiveAvgPool(1), nn.AdaptiveAvgPool2d(1), x)
    assert_matches_discrete(GlobalAvgPool(), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), x)


def _window_loop(points, values, k, h, stride, reduce):
    """Float64 reference on scattered points: loop over output points, test every point."""
    out_n = math.ceil(points.n / stride ** 2)
    x = points.coords.double()
    out = torch.zeros(values.shape[0], out_n, values.shape[2], dtype=torch.float64)
    centre = h / 2 if k % 2 == 0 else 0.0
    for i in range(out_n):
        inside = [j for j in range(points.n)
                  if all(abs(float(x[j, a] - x[i, a]) - centre) <= k * h / 2 for a in range(2))]
        window = values[:, inside].double()  # (B, n, C)
        if reduce == "max":
            best = window.amax(1)
            n = len(inside)
            out[:, i] = torch.where(best > 0, best * (n + 1) / (n - 1), best) if n > 1 else best
        else:
            w = points.weights[inside].double()
            out[:, i] = (window * w[None, :, None]).sum(1) / (k * h) ** 2
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_pooling_on_scattered_points_matches_loops(k):
    points = PointSet(sobol(128, 2, seed=5))
    field = Field(torch.randn(2, 128, 3), points)
    h = 0.2
    for pool, reduce in ((max_pool, "max"), (avg_pool, "avg")):
        expected = _window_loop(points, field.values, k, h, 2, reduce)
        torch.testing.assert_close(pool(field, k, h, 2).values.double(), expected)


def test_unbiased_scaling_rule():
    # 1-d points -0.9, -0.8, -0.7 and 0.9: a 3-point window around -0.8, a lone point at 0.9.
    points = PointSet(torch.tensor([[-0.8], [0.9], [-0.9], [-0.7]]))
    values = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [0.5, -1.0], [2.0, -3.0]]])  # (1, 4, 2)
    out = max_pool(Field(values, points), 3, 0.1, 2).values  # outputs at -0.8 and 0.9
    assert out[0, 0].tolist() == pytest.approx([2.0 * 2.0, -1.0])   # n = 3: 2 * (4/2); negative: raw
    assert out[0, 1].tolist() == pytest.approx([3.0, -4.0])         # n = 1: raw
    scaled = max_pool(Field(values, points), 3, 0.1, 2, scale=0.5).values
    torch.testing.assert_close(scaled, 0.5 * out)


def test_unbiased_max_of_uniform_samples_is_unbiased():
    # The window maximum of n uniform samples on [-1, 1] has mean (n - 1) / (n + 1); scaled, 1.
    points = PointSet(sobol(256, 2, seed=2))
    values = torch.rand(1, 256, 4000, dtype=torch.float64) * 2 - 1
    field = Field(values, points.to(dtype=torch.float64))
    raw = max_pool(field, 1, 0.3, 4, unbiased=False).values  # (1, 16, 4000)
    unbiased = max_pool(field, 1, 0.3, 4).values
    assert abs(unbiased.mean().item() - 1.0) < 0.03
    assert raw.mean().item() < 0.95


def _f(x):
    return torch.exp(x[:, :1]) + x[:, 1:] ** 2  # (N, 1)


def test_global_and_adaptive_pooling_converge_on_sobol_points():
    limit = torch.tensor([math.sinh(1.0) + 1.0 / 3.0])
    assert_converges(lambda p: GlobalAvgPool()(Field(_f(p.coords)[None], p))[0], [64, 256, 1024, 4096], limit=limit)
    # box [-1, 0] x [-1, 0] (index 0) and [0, 1] x [0, 1] (index 3) of the 2 x 2 partition
    box = torch.tensor([(1 - math.exp(-1)) + 1 / 3, (math.e - 1) + 1 / 3])
    assert_converges(lambda p: AdaptiveAvgPool(2)(Field(_f(p.coords)[None], p)).flatten()[[0, 3]],
                     [64, 256, 1024, 4096], limit=box)


def test_gradcheck():
    points = PointSet(sobol(32, 2, seed=1, dtype=torch.float64))
    field = Field(torch.randn(2, 32, 2, dtype=torch.float64), points)
    assert gradcheck_field(MaxPool(3, 0.25, 2), field)
    assert gradcheck_field(AvgPool(2, 0.25, 2, count_include_pad=False), field)
    assert gradcheck_field(AvgPool(3, 0.25, 1, padding="none"), field)
    assert gradcheck_field(AdaptiveAvgPool((2, 1)), field)
    assert gradcheck_field(GlobalAvgPool(), field)


def test_bad_arguments_raise():
    field = Field(torch.randn(1, 16, 2), PointSet.grid((4, 4)))
    with pytest.raises(ValueError, match="padding"):
        MaxPool(3, 0.5, padding="reflect")
    with pytest.raises(ValueError, match="kernel_size"):
        AvgPool(0, 0.5)
    with pytest.raises(ValueError, match="different numbers of dimensions"):
        MaxPool((2, 2), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="kernel_size needs 2 entries"):
        MaxPool((2, 2, 2), 0.5)(field)
    with pytest.raises(ValueError, match="wider than the domain"):
        MaxPool(9, 0.5, padding="none")(field)
    with pytest.raises(ValueError, match="contain no point"):  # scattered points: equal boxes, 64 for 16 points
        AdaptiveAvgPool(8)(Field(torch.randn(1, 16, 2), PointSet(sobol(16, 2, seed=0))))


def test_assert_matches_discrete_catches_misplaced_outputs():
    x = torch.randn(1, 2, 8, 8)
    # padding 1 on the torch side but 'none' here: same kind of layer, other output cells
    with pytest.raises(AssertionError):
        assert_matches_discrete(MaxPool(3, 0.25, 2, "none", unbiased=False), nn.MaxPool2d(3, 2, 1), x)
    with pytest.raises(AssertionError, match="discrete output positions"):
        assert_matches_discrete(AvgPool(1, 0.25, 2), nn.AvgPool2d(1, 2), x, offset=(1, 0))


def test_unpadded_pool_after_a_strided_pool_matches_torch():
    x = torch.randn(1, 2, 8, 8)
    ours = nn.Sequential(MaxPool(3, 0.25, 2, unbiased=False), MaxPool(2, 0.5, padding="none", unbiased=False))
    assert_matches_discrete(ours, nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(2)), x, stride=4, offset=0)


# (lattice shape, output size): divisible, non-divisible (torch's bins overlap), larger than the input, 1-d, 3-d
ADAPTIVE = [((8, 8), (3, 3)), ((7, 5), (2, 4)), ((6, 9), (4, 2)), ((8, 8), (4, 2)), ((4, 3), (8, 5)), ((13,), (4,)),
            ((7,), (1,)), ((5, 6, 7), (2, 4, 3)), ((4, 3, 5), (3, 3, 3))]
TORCH_ADAPTIVE = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


@pytest.mark.parametrize("shape,size", ADAPTIVE)
def test_adaptive_avg_pool_is_torchs_on_lattices(shape, size):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    ref = TORCH_ADAPTIVE[len(shape)](size)(x)
    torch.testing.assert_close(AdaptiveAvgPool(size)(grid_field(x)), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 8), (8, 11)])
def test_adaptive_avg_pool_after_a_stride_bins_the_strided_feature_map(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    field = downsample(grid_field(x), 2)
    ref = nn.AdaptiveAvgPool2d(3)(x[:, :, ::2, ::2])
    torch.testing.assert_close(AdaptiveAvgPool(3)(field), ref, rtol=1e-12, atol=1e-12)


def test_adaptive_bins_are_torchs_formula():
    for n, m in [(8, 3), (7, 2), (5, 4), (3, 8), (6, 6), (1, 3)]:
        bins = adaptive_bins(n, m)
        assert bins == [(math.floor(i * n / m), math.ceil((i + 1) * n / m)) for i in range(m)], (n, m)
    with pytest.raises(ValueError, match="0 inputs to 2 outputs"):
        adaptive_bins(0, 2)


def test_adaptive_avg_pool_on_scattered_points_averages_equal_boxes():
    """No pixels to bin: output (i, j) is the weighted mean over the i-th by j-th third of the domain."""
    points = PointSet(sobol(300, 2, seed=4, dtype=torch.float64), torch.rand(300, dtype=torch.float64) + 0.5)
    values = torch.randn(2, 300, 3, dtype=torch.float64)
    out = AdaptiveAvgPool(3)(Field(values, points))
    x, w = points.coords, points.weights
    for i in range(3):
        for j in range(3):
            inside = ((x[:, 0] >= -1 + 2 * i / 3) & (x[:, 0] < -1 + 2 * (i + 1) / 3)
                      & (x[:, 1] >= -1 + 2 * j / 3) & (x[:, 1] < -1 + 2 * (j + 1) / 3))
            ref = (values[:, inside] * w[inside, None]).sum(1) / w[inside].sum()  # (B, C)
            torch.testing.assert_close(out[:, :, i, j], ref, rtol=1e-12, atol=1e-12)


def test_adaptive_avg_pool_gradcheck_on_a_lattice():
    field = grid_field(torch.randn(1, 2, 5, 4, dtype=torch.float64))
    assert gradcheck_field(AdaptiveAvgPool((3, 3)), field)
