"""Multi-scale: downsample, nearest-neighbour upsample (discrete twin, loop references), merges."""

import pytest
import torch
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample
from inrnet.nn.resample import Add, Concat, Downsample, Upsample, add, concat, downsample, nearest_index, upsample
from inrnet.sampling.points import grid, sobol
from inrnet.testing.asserts import gradcheck_field, grid_field


def _flat(x):
    return x.flatten(2).transpose(1, 2)  # (B, N, C)


@pytest.mark.parametrize("shape", [(8, 8), (7, 6), (5,), (3, 5, 4)])
def test_grid_down_and_up_by_two_matches_torch(shape):
    x = torch.randn(2, 3, *shape)
    field = grid_field(x)
    slices = (slice(None), slice(None)) + (slice(None, None, 2),) * len(shape)
    low = Downsample(2)(field)
    torch.testing.assert_close(low.values, _flat(x[slices]), rtol=0, atol=0)
    up = Upsample()(low)
    crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in shape)
    ref = nn.Upsample(scale_factor=2, mode="nearest")(x[slices])[crop]  # odd sizes: torch overshoots by one
    assert up.points is field.points
    torch.testing.assert_close(up.values, _flat(ref), rtol=0, atol=0)


def _lattice_reference(target_shape, source_start, source_step, source_shape):
    """Nearest source pixel of every target pixel, per axis, ties to the lower index (loops on ints)."""
    axes = []
    for n, a, s, m in zip(target_shape, source_start, source_step, source_shape):
        best = []
        for i in range(n):
            dist = [abs(i - (a + s * k)) for k in range(m)]
            best.append(dist.index(min(dist)))  # index() returns the first, i.e. lower, minimum
        axes.append(torch.tensor(best))
    mesh = torch.meshgrid(*axes, indexing="ij")
    flat = torch.zeros((), dtype=torch.long)
    for g, m in zip(mesh, source_shape):
        flat = flat * m + g
    return flat.reshape(-1)


def test_upsample_walks_up_several_levels_with_lattice_ties():
    points = PointSet.grid((10, 7))
    x = torch.randn(1, 2, 10, 7)
    field = grid_field(x)
    low = downsample(downsample(field, (2, 3)), 2)  # every 4th row, every 6th column
    up = upsample(low, points)
    index = _lattice_reference((10, 7), (0, 0), (4, 6), low.points.lattice.shape)
    torch.testing.assert_close(up.values, low.values[:, index], rtol=0, atol=0)
    assert upsample(low).points is low.points.parent


def test_upsample_after_restrict_uses_the_offset_sub_lattice():
    points = PointSet.grid((8, 8))
    inner = points.restrict([(-0.7, 0.7), (-0.7, 0.7)]).downsample(2)  # rows/cols 1, 3, 5
    values = torch.randn(1, inner.n, 2)
    up = upsample(Field(values, inner), points)
    assert inner.lattice.shape == (3, 3)
    index = _lattice_reference((8, 8), (1, 1), (2, 2), (3, 3))
    torch.testing.assert_close(up.values, values[:, index], rtol=0, atol=0)


def test_scattered_upsample_copies_shared_points_and_is_nearest_elsewhere():
    points = PointSet(sobol(200, 2, seed=4, dtype=torch.float64))
    field = Field(torch.randn(2, 200, 3, dtype=torch.float64), points)
    low = downsample(field, 2)
    assert low.points.n == 50
    torch.testing.assert_close(low.values, field.values[:, :50], rtol=0, atol=0)
    up = upsample(low)
    torch.testing.assert_close(up.values[:, :50], field.values[:, :50], rtol=0, atol=0)
    for i in range(50, 200):  # loop reference: the closest coarse point
        dist = [float(((points.coords[i] - points.coords[j]) ** 2).sum()) for j in range(50)]
        assert torch.equal(up.values[:, i], low.values[:, dist.index(min(dist))])
    assert nearest_index(low.points, points) is nearest_index(low.points, points)  # cached


def test_add_and_concat_do_not_alias_inputs():
    points = PointSet.grid((3, 3))
    a, b = Field(torch.randn(2, 9, 4), points), Field(torch.randn(2, 9, 4), points)
    a_before, b_before = a.values.clone(), b.values.clone()
    s = Add()(a, b)
    c = Concat()(a, b, a)
    torch.testing.assert_close(s.values, a_before + b_before)
    torch.testing.assert_close(c.values, torch.cat([a_before, b_before, a_before], -1))
    s.values.add_(1.0)
    c.values.mul_(0.0)
    assert torch.equal(a.values, a_before) and torch.equal(b.values, b_before)
    twice = add(a, a)
    assert twice.values.data_ptr() != a.values.data_ptr()
    torch.testing.assert_close(twice.values, 2 * a_before)


def test_merges_on_equal_but_distinct_point_sets():
    a = Field(torch.randn(1, 4, 2), PointSet.grid((2, 2)))
    b = Field(torch.randn(1, 4, 3), PointSet.grid((2, 2)))
    assert concat(a, b).channels == 5


def test_bad_inputs_raise():
    grid = PointSet.grid((4, 4))
    a = Field(torch.randn(2, 16, 3), grid)
    other = Field(torch.randn(2, 16, 3), PointSet(sobol(16, 2, seed=0)))
    with pytest.raises(ValueError, match=r"different point sets: PointSet\(n=16.*lattice.*PointSet\(n=16.*nested"):
        add(a, other)
    with pytest.raises(ValueError, match="different point sets"):
        concat(a, downsample(a, 2))
    with pytest.raises(ValueError, match=r"\(2, 16, 3\) and \(2, 16, 5\)"):
        add(a, Field(torch.randn(2, 16, 5), grid))
    with pytest.raises(ValueError, match=r"\(2, 16, 3\) and \(1, 16, 3\)"):
        concat(a, Field(torch.randn(1, 16, 3), grid))
    with pytest.raises(ValueError, match="at least two"):
        add(a)
    with pytest.raises(ValueError, match="no parent"):
        upsample(a)
    with pytest.raises(ValueError, match="dimensions differ"):
        upsample(a, PointSet.grid((4, 4, 4)))
    with pytest.raises(ValueError, match="downsampling factor"):
        downsample(a, (2, 2, 2))


def test_downsampling_raw_grid_coordinates_keeps_the_strided_pixels():
    # sample(inrs, grid(shape)) wraps raw coordinates: stride 2 on 8x8 must keep rows and
    # columns 0, 2, 4, 6 (it used to keep the first 16 points, the two top rows)
    x = torch.randn(2, 3, 8, 8)
    low = downsample(sample(PixelINR(x), grid((8, 8))), 2)
    torch.testing.assert_close(low.values, _flat(x[:, :, ::2, ::2]), rtol=0, atol=0)
    assert low.points.lattice == PointSet.grid((8, 8)).downsample(2).lattice
    up = upsample(low)
    torch.testing.assert_close(up.values, _flat(nn.Upsample(scale_factor=2)(x[:, :, ::2, ::2])), rtol=0, atol=0)


def test_downsampling_unordered_points_raises():
    permuted = PointSet(grid((8, 8))[torch.randperm(64)])
    field = Field(torch.randn(1, 64, 2), permuted)
    for down in (lambda f: downsample(f, 2), Downsample(2)):
        with pytest.raises(ValueError, match=r"cannot be downsampled by \(2, 2\): its order is 'unordered'.*"
                                             r"PointSet.grid\(shape\).*order='nested'"):
            down(field)
    nested = Field(field.values, PointSet(permuted.coords, order="nested"))
    assert downsample(nested, 2).points is nested.points.prefix(16)


def test_gradcheck():
    points = PointSet(sobol(24, 2, seed=0, dtype=torch.float64))
    field = Field(torch.randn(2, 24, 2, dtype=torch.float64), points)

    class UpDown(nn.Module):
        def forward(self, f):
            low = downsample(f, 2)
            return concat(add(upsample(low), f), f)
    assert gradcheck_field(Downsample(2), field)
    assert gradcheck_field(UpDown(), field)
