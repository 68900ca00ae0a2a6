"""Normalization: torch twins on grids (train, eval, running statistics), weighted statistics, convergence."""

import math

import pytest
import torch
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.nn.norm import BatchNorm, ChannelLayerNorm, GroupNorm, InstanceNorm, batch_norm, weighted_moments
from inrnet.sampling.points import sobol
from inrnet.testing.asserts import assert_converges, assert_matches_discrete, gradcheck_field, grid_field


def _randomise_affine(ours: nn.Module, theirs: nn.Module) -> None:
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(theirs, name, None) is not None:
                getattr(theirs, name).normal_()
                getattr(ours, name).copy_(getattr(theirs, name))


class ChannelsLastLayerNorm(nn.Module):
    """torch.nn.LayerNorm over the channels of an image batch [B, C, *shape] (ConvNeXt style)."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


@pytest.mark.parametrize("shape", [(6, 6), (5, 7)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_matches_torch_over_several_steps(shape, momentum):
    ours, theirs = BatchNorm(3, momentum=momentum), nn.BatchNorm2d(3, momentum=momentum)
    _randomise_affine(ours, theirs)
    for step in range(3):
        x = torch.randn(4, 3, *shape) * (step + 1) + step
        assert_matches_discrete(ours, theirs, x, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)
    assert int(ours.num_batches_tracked) == 3
    ours.eval(), theirs.eval()
    assert_matches_discrete(ours, theirs, torch.randn(2, 3, *shape) * 3, atol=1e-5, rtol=1e-5)
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_batch_norm_in_3d_and_without_running_stats():
    ours, theirs = BatchNorm(2, affine=False), nn.BatchNorm3d(2, affine=False)
    assert_matches_discrete(ours, theirs, torch.randn(2, 2, 3, 4, 5))
    ours = BatchNorm(2, track_running_stats=False).eval()
    theirs = nn.BatchNorm2d(2, track_running_stats=False).eval()
    assert_matches_discrete(ours, theirs, torch.randn(3, 2, 4, 4) + 2)  # eval uses batch statistics


def test_batch_norm_gradient_flows_through_batch_statistics():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    ours, theirs = BatchNorm(2).double(), nn.BatchNorm2d(2).double()
    _randomise_affine(ours, theirs)
    out = ours(grid_field(x)).values
    ref = theirs(y).flatten(2).transpose(1, 2)
    g = torch.randn_like(ref)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)


@pytest.mark.parametrize("affine,track", [(False, False), (True, True)])
def test_instance_norm_matches_torch(affine, track):
    ours = InstanceNorm(3, affine=affine, track_running_stats=track)
    theirs = nn.InstanceNorm2d(3, affine=affine, track_running_stats=track)
    _randomise_affine(ours, theirs)
    for step in range(2):
        assert_matches_discrete(ours, theirs, torch.randn(2, 3, 5, 6) * 2 + step, atol=1e-5, rtol=1e-5)
    if track:
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    assert_matches_discrete(ours, theirs, torch.randn(2, 3, 5, 6), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_matches_torch(groups):
    ours, theirs = GroupNorm(groups, 4), nn.GroupNorm(groups, 4)
    _randomise_affine(ours, theirs)
    assert_matches_discrete(ours, theirs, torch.randn(2, 4, 5, 4) * 3 + 1, atol=1e-5, rtol=1e-5)


def test_channel_layer_norm_matches_torch():
    ours, theirs = ChannelLayerNorm(5), nn.LayerNorm(5)
    _randomise_affine(ours, theirs)
    assert_matches_discrete(ours, ChannelsLastLayerNorm(theirs), torch.randn(2, 5, 3, 4) * 2 - 1)


def test_weighted_moments_use_the_quadrature_weights():
    values = torch.tensor([[[1.0], [2.0], [4.0]], [[0.0], [0.0], [3.0]]], dtype=torch.float64)  # (2, 3, 1)
    weights = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    mean, var = weighted_moments(values, weights, over_batch=False)
    torch.testing.assert_close(mean.flatten(), torch.tensor([2.0, 0.75], dtype=torch.float64))
    torch.testing.assert_close(var.flatten(), torch.tensor([1.5, 1.6875], dtype=torch.float64))
    mean, var = weighted_moments(values, weights, over_batch=True)
    torch.testing.assert_close(mean.flatten(), torch.tensor([1.375], dtype=torch.float64))
    # sum_b sum_j w_j (f - 1.375)^2 / (2 * 4)
    expected = sum(w * (v - 1.375) ** 2 for row in ([1, 2, 4], [0, 0, 3]) for w, v in zip([2, 1, 1], row)) / 8
    torch.testing.assert_close(var.flatten(), torch.tensor([expected], dtype=torch.float64))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_with_equal_weights_is_the_weighted_one(training):
    """The fused path (``uniform_weights=True``, torch's kernel) against the weighted statistics:
    outputs, running statistics and both gradients."""
    torch.manual_seed(0)
    values = torch.randn(3, 17, 5, dtype=torch.float64)
    weights = torch.full((17,), 4 / 17, dtype=torch.float64)
    gamma, beta = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    running = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
    outs = []
    for uniform in (True, False):
        x, g = values.clone().requires_grad_(), gamma.clone().requires_grad_()
        mean, var = running[0].clone(), running[1].clone()
        y = batch_norm(x, weights, mean, var, g, beta, training, 0.3, 1e-5, uniform_weights=uniform)
        grads = torch.autograd.grad((y * torch.linspace(-1, 1, 5, dtype=torch.float64)).sum(), (x, g))
        outs.append((y, mean, var, *grads))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)


def test_batch_norm_module_takes_the_fused_path_only_for_equal_weights(monkeypatch):
    seen = []
    original = batch_norm

    def spy(*args, uniform_weights=False, **kwargs):
        seen.append(uniform_weights)
        return original(*args, uniform_weights=uniform_weights, **kwargs)
    monkeypatch.setattr("inrnet.nn.norm.batch_norm", spy)
    coords = sobol(8, 2, seed=0, dtype=torch.float64)
    layer = BatchNorm(2).double()
    layer(Field(torch.randn(2, 8, 2, dtype=torch.float64), PointSet(coords)))
    layer(Field(torch.randn(2, 8, 2, dtype=torch.float64), PointSet(coords, torch.rand(8, dtype=torch.float64) + 0.1)))
    assert seen == [True, False]


def test_statistics_converge_on_sobol_points():
    # f(x, y) = e^x + y^2 on [-1, 1]^2 with normalised measure.
    mean = math.sinh(1.0) + 1.0 / 3.0
    second = math.sinh(2.0) / 2.0 + 2.0 * math.sinh(1.0) / 3.0 + 1.0 / 5.0
    limit = torch.tensor([mean, second - mean ** 2])

    def stats(points: PointSet):
        values = (torch.exp(points.coords[:, :1]) + points.coords[:, 1:] ** 2)[None]  # (1, N, 1)
        m, v = weighted_moments(values, points.weights, over_batch=False)
        return torch.stack([m.flatten()[0], v.flatten()[0]])
    assert_converges(stats, [64, 256, 1024, 4096], limit=limit)


def test_gradcheck():
    points = PointSet(sobol(6, 2, seed=0, dtype=torch.float64))
    field = Field(torch.randn(2, 6, 4, dtype=torch.float64), points)
    assert gradcheck_field(BatchNorm(4), field)
    assert gradcheck_field(BatchNorm(4).eval(), field)
    assert gradcheck_field(InstanceNorm(4, affine=True), field)
    assert gradcheck_field(GroupNorm(2, 4), field)
    assert gradcheck_field(ChannelLayerNorm(4), field)


def test_bad_inputs_raise():
    field = Field(torch.randn(2, 9, 3), PointSet.grid((3, 3)))
    for layer in (BatchNorm(4), InstanceNorm(4), GroupNorm(2, 4), ChannelLayerNorm(4)):
        with pytest.raises(ValueError, match=r"expects 4 input channels.*\(2, 9, 3\)"):
            layer(field)
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(2, 3)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="more than one value"):
        BatchNorm(3)(Field(torch.randn(1, 1, 3), PointSet(torch.zeros(1, 2))))


def test_assert_converges_rejects_a_biased_estimate():
    # the weighted mean plus a bias that does not vanish with n
    with pytest.raises(AssertionError):
        assert_converges(lambda p: p.coords[:, 0].mean() + 0.01, [64, 256, 1024], limit=0.0)
