import math

import pytest
import torch

from inrnet.field import Field, PointSet
from inrnet.nn.augment import (Compose, PointDropout, RandomAffine, RandomFlip, affine, as_generator, drop_points,
                               jitter, reflect)
from inrnet.sampling.points import sobol


def nearest_pixel(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """A pixel INR by hand: the value of the cell containing each point (cell centres -1 + (2i+1)/n).

    Args:
        image: Tensor[C, H, W]; coords: Tensor[N, 2]. Returns Tensor[N, C].
    """
    h, w = image.shape[1:]
    rows = ((coords[:, 0] + 1) * h / 2 - 0.5).round().long().clamp(0, h - 1)
    cols = ((coords[:, 1] + 1) * w / 2 - 0.5).round().long().clamp(0, w - 1)
    return image[:, rows, cols].T


# point dropout -----------------------------------------------------------------------
def test_drop_points_statistics_and_measure():
    points = PointSet(sobol(20000, 2, seed=0))
    kept = drop_points(points, 0.3, generator=1)
    frac = kept.n / points.n
    assert abs(frac - 0.7) < 4 * math.sqrt(0.7 * 0.3 / points.n)
    assert kept.weights.sum().item() == pytest.approx(points.weights.sum().item(), rel=1e-5)
    assert kept.parent is points and bool((kept.parent_index[1:] > kept.parent_index[:-1]).all())
    torch.testing.assert_close(kept.coords, points.coords[kept.parent_index])
    assert drop_points(points, 0.0) is points


def test_drop_points_is_deterministic_and_keeps_one_point():
    points = PointSet(sobol(256, 2, seed=0))
    a = drop_points(points, 0.5, generator=3)
    b = drop_points(points, 0.5, generator=torch.Generator().manual_seed(3))
    c = drop_points(points, 0.5, generator=4)
    assert torch.equal(a.parent_index, b.parent_index) and not torch.equal(a.parent_index, c.parent_index)
    tiny = drop_points(PointSet(sobol(2, 2, seed=0)), 0.999999, generator=0)
    assert tiny.n >= 1 and tiny.weights.sum().item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="drop probability"):
        drop_points(points, 1.0)
    with pytest.raises(TypeError, match="Generator"):
        drop_points(points, 0.5, generator="seed")


def test_point_dropout_train_and_eval():
    points = PointSet.grid((8, 8))
    field = Field(torch.randn(2, 64, 3), points)
    layer = PointDropout(0.25, generator=0)
    out = layer(field)
    assert out.points.parent is points and out.points.n < 64
    torch.testing.assert_close(out.values, field.values[:, out.points.parent_index])
    assert not torch.equal(layer(field).points.parent_index, out.points.parent_index)  # generator advances
    again = PointDropout(0.25, generator=0)(field)
    assert torch.equal(again.points.parent_index, out.points.parent_index)
    assert layer.eval()(field) is field
    with pytest.raises(TypeError, match="expects a Field"):
        layer(field.values)


def test_point_dropout_gradcheck():
    points = PointSet(torch.rand(8, 2, dtype=torch.float64))
    values = torch.randn(1, 8, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: PointDropout(0.5, generator=2)(Field(v, points)).values, (values,))


# coordinate transforms ---------------------------------------------------------------
@pytest.mark.parametrize("dims", [(0,), (1,), (0, 1)])
def test_flip_of_grid_coordinates_is_torch_flip(dims):
    image = torch.randn(3, 5, 6)
    points = PointSet.grid((5, 6))
    flipped = nearest_pixel(image, RandomFlip(dims, p=1.0, generator=0)(points.coords))  # (N, C)
    torch.testing.assert_close(flipped.T.reshape(3, 5, 6), torch.flip(image, [d + 1 for d in dims]))
    assert torch.equal(RandomFlip(dims, p=0.0)(points.coords), points.coords)
    # the flipped lattice is the lattice, permuted
    c = RandomFlip(dims, p=1.0)(points.coords)
    assert torch.allclose(c.sort(0).values, points.coords.sort(0).values)


def test_random_flip_draws_per_leading_index_and_is_deterministic():
    coords = torch.rand(64, 10, 2) * 2 - 1
    out = RandomFlip((0, 1), p=0.5, generator=5)(coords)
    sign = (out / coords)[:, 0]  # (64, 2), each +-1
    assert set(sign.round().unique().tolist()) == {-1.0, 1.0}
    assert torch.allclose(out / coords, sign[:, None].expand(64, 10, 2))
    assert torch.equal(out, RandomFlip((0, 1), p=0.5, generator=5)(coords))
    with pytest.raises(ValueError, match="cannot flip axes"):
        RandomFlip((2,))(coords)


def test_random_affine_matches_its_sampled_map_and_limits():
    coords = torch.rand(4, 7, 2, dtype=torch.float64) * 2 - 1
    t = RandomAffine(max_rotation=10, max_scale=0.1, max_shear=0.2, max_translation=0.05, generator=3)
    out = t(coords)
    matrix, shift = RandomAffine(10, 0.1, 0.2, 0.05, generator=3).sample((4,), 2, coords)
    for b in range(4):
        for n in range(7):
            for i in range(2):
                expected = sum(matrix[b, i, j] * coords[b, n, j] for j in range(2)) + shift[b, i]
                assert out[b, n, i].item() == pytest.approx(expected.item(), abs=1e-12)
    det = torch.linalg.det(matrix)  # s^2 (rotation and shear have determinant 1)
    assert bool(((det >= 0.9 ** 2 - 1e-12) & (det <= 1.1 ** 2 + 1e-12)).all())
    assert bool((shift.abs() <= 0.05).all())


def test_random_affine_special_cases():
    coords = torch.rand(9, 2, dtype=torch.float64) * 2 - 1
    assert torch.allclose(RandomAffine(generator=0)(coords), coords)
    rotated = RandomAffine(max_rotation=30, generator=1)(coords)
    torch.testing.assert_close(rotated.norm(dim=-1), coords.norm(dim=-1))
    coords3 = torch.rand(9, 3, dtype=torch.float64)
    moved = RandomAffine(max_scale=0.2, max_translation=0.1, generator=2)(coords3)
    matrix, shift = RandomAffine(max_scale=0.2, max_translation=0.1, generator=2).sample((), 3, coords3)
    torch.testing.assert_close(moved, affine(coords3, matrix, shift))
    assert torch.allclose(matrix, matrix[0, 0] * torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="d=2"):
        RandomAffine(max_rotation=5)(coords3)
    with pytest.raises(ValueError, match="max_scale < 1"):
        RandomAffine(max_scale=1.0)
    with pytest.raises(ValueError, match="floating coords"):
        RandomAffine()(torch.zeros(5, dtype=torch.long))


def test_compose_applies_in_order():
    coords = torch.rand(6, 2, dtype=torch.float64) * 2 - 1
    flip, move = RandomFlip((0,), p=1.0), RandomAffine(max_translation=0.5, generator=4)
    expected = RandomAffine(max_translation=0.5, generator=4)(-coords * torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(Compose([flip, move])(coords), expected)


# jitter ------------------------------------------------------------------------------
def test_reflect_folds_into_the_box():
    x = torch.tensor([[1.2, -1.5], [-3.5, 0.3], [0.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor([[0.8, -0.5], [0.5, 0.3], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(reflect(x, ((-1.0, 1.0), (-1.0, 1.0))), expected)
    torch.testing.assert_close(reflect(torch.tensor([[3.5]]), ((0.0, 2.0),)), torch.tensor([[0.5]]))


def test_jitter_moves_points_inside_the_domain_deterministically():
    points = PointSet(sobol(4096, 2, seed=0, dtype=torch.float64))
    moved = jitter(points, 0.01, generator=7)
    assert torch.equal(moved.coords, jitter(points, 0.01, generator=7).coords)
    assert moved.n == points.n and torch.equal(moved.weights, points.weights) and moved.lattice is None
    assert bool((moved.coords.abs() <= 1).all())
    step = moved.coords - points.coords
    interior = (points.coords.abs() < 0.9).all(-1)
    assert step[interior].std().item() == pytest.approx(0.01, rel=0.05)
    wide = jitter(points, (0.0, 0.5), generator=1)
    torch.testing.assert_close(wide.coords[:, 0], points.coords[:, 0], rtol=0, atol=1e-15)
    assert bool((wide.coords.abs() <= 1).all())
    assert jitter(points, 0.0) is points
    with pytest.raises(ValueError, match="sigma"):
        jitter(points, -0.1)
    with pytest.raises(ValueError, match="sigma"):
        jitter(points, float("nan"))


def test_jitter_keeps_what_the_order_means():
    # Jittered Sobol points stay nested; a jittered grid is still in scan order (row by row),
    # so a strided layer must refuse it rather than keep its first rows.
    assert jitter(PointSet(sobol(64, 2, seed=0)), 0.01, generator=0).order == "nested"
    shaken = jitter(PointSet.grid((8, 8)), 0.01, generator=0)
    assert shaken.order == "unordered" and shaken.lattice is None
    with pytest.raises(ValueError, match="unordered"):
        shaken.downsample(2)


def test_as_generator():
    g = torch.Generator()
    assert as_generator(g) is g and as_generator(None) is None
    expected = torch.rand(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.rand(3, generator=as_generator(5)), expected)
