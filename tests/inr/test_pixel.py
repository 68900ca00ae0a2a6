"""PixelINR: exact at the grid, nearest / multilinear between, against slow references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inrnet.field import PointSet
from inrnet.inr import PixelFamily, PixelINR, sample
from inrnet.sampling import grid

SHAPES = [(5,), (6,), (1,), (5, 4), (4, 6), (3, 7), (1, 5), (3, 4, 5), (2, 2, 3)]


def _centres(n):
    return np.array([-1.0 + (2 * i + 1) / n for i in range(n)])


def _linear_ref(arr: np.ndarray, x: np.ndarray) -> float:
    """Multilinear interpolation with border clamping: 1-D np.interp along axis 0, recursively."""
    n = arr.shape[0]
    inner = arr if arr.ndim == 1 else np.array([_linear_ref(arr[i], x[1:]) for i in range(n)])
    return float(np.interp(x[0], _centres(n), inner))


def _nearest_ref(arr: np.ndarray, x: np.ndarray) -> float:
    """The value of the cell whose centre is closest along every axis."""
    index = tuple(int(np.argmin(np.abs(_centres(n) - xk))) for n, xk in zip(arr.shape, x))
    return float(arr[index])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_on_grid(shape, mode, dtype):
    x = torch.randn(3, 2, *shape, dtype=dtype)
    f = sample(PixelINR(x, mode), grid(shape, dtype=dtype))
    assert f.values.dtype == dtype
    assert torch.equal(f.values, x.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_on_grid_with_float32_coords_and_float64_values(shape):
    x = torch.randn(2, 1, *shape, dtype=torch.float64)
    f = sample(PixelINR(x, "linear"), PointSet.grid(shape, dtype=torch.float32))
    assert torch.equal(f.values, x.flatten(2).transpose(1, 2))


def test_integer_labels_nearest():
    labels = torch.randint(0, 7, (2, 1, 5, 6))
    f = sample(PixelINR(labels, "nearest"), grid((5, 6)))
    assert f.values.dtype == torch.int64 and torch.equal(f.values, labels.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="floating-point"):
        sample(PixelINR(labels, "linear"), grid((5, 6)))


@pytest.mark.parametrize("shape", [(5,), (6,), (4, 5), (1, 3), (3, 2, 4)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_matches_loop_reference_off_grid(shape, mode):
    x = torch.randn(2, 2, *shape, dtype=torch.float64)
    pts = 2.6 * torch.rand(40, len(shape), dtype=torch.float64) - 1.3  # some outside [-1, 1]: border clamping
    got = sample(PixelINR(x, mode), PointSet(pts, bounds=[(-1.3, 1.3)] * len(shape))).values
    ref_fn = _linear_ref if mode == "linear" else _nearest_ref
    want = torch.tensor([[[ref_fn(x[b, c].numpy(), p.numpy()) for c in range(2)] for p in pts] for b in range(2)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 4), (6, 7), (2, 3, 4)])
def test_linear_matches_grid_sample(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    pts = 2.4 * torch.rand(50, len(shape), dtype=torch.float64) - 1.2
    got = sample(PixelINR(x, "linear"), PointSet(pts, bounds=[(-1.2, 1.2)] * len(shape))).values  # (B, N, C)
    g = pts.flip(-1).reshape(1, *([1] * (len(shape) - 1)), 50, len(shape)).expand(2, *([-1] * len(shape)), -1)
    want = F.grid_sample(x, g, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, 1.., N)
    torch.testing.assert_close(got, want.reshape(2, 3, 50).transpose(1, 2), rtol=1e-12, atol=1e-12)


def test_nearest_boundary_goes_to_upper_cell():
    x = torch.arange(4.0).reshape(1, 1, 4)
    f = sample(PixelINR(x), torch.tensor([[-1.0], [-0.5], [0.0], [0.5], [1.0]]))
    assert f.values.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 3.0]


def test_linear_is_continuous_across_grid_points():
    x = torch.randn(1, 1, 6, dtype=torch.float64)
    centre = -1 + 3 / 6
    pts = torch.tensor([[centre - 1e-9], [centre], [centre + 1e-9]], dtype=torch.float64)
    v = sample(PixelINR(x, "linear"), pts).values.flatten()
    assert (v - v[1]).abs().max() < 1e-7


def test_batch_indexing_and_errors():
    x = torch.randn(4, 2, 3, 5)
    inrs = PixelINR(x, "linear")
    part = inrs[1:3]
    assert isinstance(part, PixelINR) and torch.equal(part.images, x[1:3])
    assert part.family == PixelFamily((3, 5), 2, "linear")
    with pytest.raises(ValueError, match="mode"):
        PixelINR(x, "cubic")
    with pytest.raises(ValueError, match=r"\[B, C, \*shape\]"):
        PixelINR(torch.randn(4, 5))
    with pytest.raises(ValueError, match="d=2"):
        sample(inrs, grid((2, 2, 2)))


def test_upsampling_by_two_is_bilinear_interpolation():
    x = torch.randn(1, 1, 4, 6, dtype=torch.float64)
    fine = sample(PixelINR(x, "linear"), grid((8, 12), dtype=torch.float64)).values.reshape(1, 1, 8, 12)
    want = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fine, want, rtol=1e-12, atol=1e-12)
    assert math.isclose(float(fine.mean()), float(fine.mean()))
