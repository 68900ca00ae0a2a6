import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.nn.parametric import multi_indices
from inrnet.nn.tokens import Tokenize, box_partition, token_moments
from inrnet.sampling.points import sobol


def grid_field(x: torch.Tensor) -> Field:
    return Field(x.flatten(2).transpose(1, 2), PointSet.grid(x.shape[2:], dtype=x.dtype))


def slow_moments(values, coords, weights, bounds, grid, degree):
    """Loop reference: for every box, the self-normalised moments against its local Legendre basis."""
    b, n, c = values.shape
    idx = multi_indices(degree, len(grid)).tolist()
    out = np.zeros((b, math.prod(grid), c, len(idx)))
    mass = np.zeros(math.prod(grid))
    for p in range(n):
        cell, t = [], []
        for k, (lo, hi) in enumerate(bounds):
            u = (coords[p, k] - lo) / (hi - lo) * grid[k]
            j = min(max(math.ceil(u) - 1, 0), grid[k] - 1)
            cell.append(j)
            t.append(2 * (u - j) - 1)
        box = int(np.ravel_multi_index(cell, grid))
        mass[box] += weights[p]
        for a, degs in enumerate(idx):
            phi = math.prod(math.sqrt(2 * m + 1) * npleg.legval(t[k], [0] * m + [1]) for k, m in enumerate(degs))
            out[:, box, :, a] += weights[p] * values[:, p, :] * phi
    return out / mass[None, :, None, None]


def test_box_partition_assigns_faces_to_the_lower_box():
    coords = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [0.0, 0.5], [1.0, 1.0], [-0.5, -0.5], [0.2, -0.9]])
    box, t = box_partition(coords, ((-1.0, 1.0), (-1.0, 1.0)), (2, 4))
    # rows: [-1, 0], (0, 1]; columns: [-1, -0.5], (-0.5, 0], (0, 0.5], (0.5, 1]
    assert box.tolist() == [0, 1, 2, 7, 0, 4]
    torch.testing.assert_close(t[1], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(t[3], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(t[5], torch.tensor([-0.6, -0.6]))
    assert bool((t.abs() <= 1 + 1e-6).all())


@pytest.mark.parametrize("shape,grid", [((8, 12), (2, 3)), ((8, 12), (4, 3)), ((6, 6), (6, 1))])
def test_degree_0_is_a_patch_embedding_conv_with_constant_weights(shape, grid):
    x = torch.randn(2, 3, *shape)
    patch = (shape[0] // grid[0], shape[1] // grid[1])
    tok = Tokenize(3, 5, grid=grid, degree=0)
    conv = nn.Conv2d(3, 5, kernel_size=patch, stride=patch)
    with torch.no_grad():
        conv.weight.copy_((tok.proj.weight / math.prod(patch))[:, :, None, None].expand_as(conv.weight))
        conv.bias.copy_(tok.proj.bias)
    tokens = tok(grid_field(x))
    assert tokens.shape == (2, math.prod(grid), 5)
    torch.testing.assert_close(tokens, conv(x).flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_degree_0_moments_are_the_adaptive_average_pool():
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    field = grid_field(x)
    means = token_moments(field.values, field.points, (4, 3), degree=0)[..., 0]  # (B, T, C)
    pooled = nn.functional.adaptive_avg_pool2d(x, (4, 3)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(means, pooled)


@pytest.mark.parametrize("degree", [1, 2])
def test_moments_match_the_loop_reference_on_sobol_points(degree):
    bounds = ((0.0, 2.0), (-1.0, 1.0))
    coords = sobol(64, 2, seed=2, dtype=torch.float64) + torch.tensor([1.0, 0.0], dtype=torch.float64)
    points = PointSet(coords, bounds=bounds)
    values = torch.randn(2, 64, 3, dtype=torch.float64)
    fast = token_moments(values, points, (2, 2), degree)
    slow = slow_moments(values.numpy(), coords.numpy(), points.weights.numpy(), bounds, (2, 2), degree)
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-12, atol=1e-12)


def test_tokenize_is_the_linear_map_of_the_moments_in_channel_major_order():
    points = PointSet(sobol(128, 2, seed=0, dtype=torch.float64))
    values = torch.randn(2, 128, 3, dtype=torch.float64)
    tok = Tokenize(3, 4, grid=(2, 2), degree=1).double()
    m = token_moments(values, points, (2, 2), 1)  # (B, T, C, 3)
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    for i in range(3):
        for a in range(3):
            expected += m[:, :, i, a, None] * tok.proj.weight[:, i * 3 + a]
    torch.testing.assert_close(tok(Field(values, points)), expected + tok.proj.bias)


def test_linear_fields_are_recovered_from_degree_1_moments_on_a_grid():
    """On a grid whose boxes hold symmetric sub-grids, the mean and slopes of a linear field are exact."""
    points = PointSet.grid((8, 8), dtype=torch.float64)
    x = points.coords
    values = (3.0 + 2.0 * x[:, 0] - 0.5 * x[:, 1])[None, :, None]  # (1, N, 1)
    m = token_moments(values, points, (2, 2), 1)[0, :, 0]  # (T, 3): [1, t1, t0] moments
    centres = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(m[:, 0], 3.0 + 2.0 * centres[:, 0] - 0.5 * centres[:, 1])
    # the slope moment of f = s t (t in [-1, 1] local, 4 symmetric cells) is s * mean(t sqrt(3) t)
    t2 = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64).pow(2).mean()
    torch.testing.assert_close(m[:, 2], torch.full((4,), 2.0 * 0.5 * math.sqrt(3) * t2.item(), dtype=torch.float64))
    torch.testing.assert_close(m[:, 1], torch.full((4,), -0.5 * 0.5 * math.sqrt(3) * t2.item(), dtype=torch.float64))


def test_tokenize_gradcheck():
    points = PointSet(sobol(16, 2, seed=1, dtype=torch.float64))
    tok = Tokenize(2, 3, grid=(2, 2), degree=1).double()
    values = torch.randn(1, 16, 2, dtype=torch.float64, requires_grad=True)

    def f(v, w, b):
        return nn.functional.linear(token_moments(v, points, (2, 2), 1).flatten(2), w, b)
    assert torch.autograd.gradcheck(f, (values, tok.proj.weight, tok.proj.bias))


def test_tokenize_errors():
    tok = Tokenize(2, 3, grid=(4, 4))
    with pytest.raises(ValueError, match="expects 2 input channels"):
        tok(Field(torch.randn(1, 64, 3), PointSet.grid((8, 8))))
    with pytest.raises(TypeError, match="expects a Field"):
        tok(torch.randn(1, 64, 2))
    with pytest.raises(ValueError, match="contain no point"):
        tok(Field(torch.randn(1, 4, 2), PointSet.grid((2, 2))))
    with pytest.raises(ValueError, match="2-d token grid"):
        tok(Field(torch.randn(1, 8, 2), PointSet.grid((2, 2, 2))))
    with pytest.raises(ValueError, match="positive integers"):
        Tokenize(2, 3, grid=(0, 2))
