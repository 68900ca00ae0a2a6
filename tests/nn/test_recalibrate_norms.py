"""Norm recalibration: the average of the batch statistics, torch's precise BN, restoring on failure."""

import pytest
import torch
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.nn.norm import BatchNorm, GroupNorm, weighted_moments
from inrnet.nn.recalibrate import recalibrate_norms
from inrnet.sampling.points import sobol


class _NormNet(nn.Module):
    """A pointwise map, one of our batch norms and a dropout: what recalibration must tell apart."""

    def __init__(self):
        super().__init__()
        self.norm, self.drop = BatchNorm(3, momentum=0.3), nn.Dropout(0.5)

    def forward(self, field: Field) -> Field:
        return self.norm(field.replace(self.drop(field.values)))


def _fields(count: int, n: int = 64, seed: int = 0) -> list[Field]:
    gen = torch.Generator().manual_seed(seed)
    points = PointSet(sobol(n, 2, seed=seed))
    return [Field(torch.randn(4, n, 3, generator=gen) * (i + 1) + i, points) for i in range(count)]


def test_recalibrate_norms_gives_the_average_of_the_batch_statistics():
    net = _NormNet()
    net.train()
    net(_fields(1, seed=9)[0])  # running statistics from another distribution
    fields = _fields(3)
    assert recalibrate_norms(net, fields) == 3
    means, variances = [], []
    for f in fields:  # reference: each batch's statistics, unbiased as torch does, averaged
        mean, var = weighted_moments(f.values, f.points.weights, over_batch=True)
        count = f.values.shape[0] * f.values.shape[1]
        means.append(mean.view(-1))
        variances.append(var.view(-1) * count / (count - 1))
    torch.testing.assert_close(net.norm.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(net.norm.running_var, torch.stack(variances).mean(0))
    assert int(net.norm.num_batches_tracked) == 3
    assert net.training and net.norm.momentum == 0.3  # mode and momentum restored
    # dropout stayed off while recalibrating: the statistics are those of the raw values above


def test_recalibrate_norms_matches_torch_precise_batch_norm_and_keeps_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
    images = [torch.randn(5, 1, 8, 8) + i for i in range(4)]
    weight = model[0].weight.detach().clone()
    recalibrate_norms(model, images)
    with torch.no_grad():
        feats = [model[0](x) for x in images]
    torch.testing.assert_close(model[1].running_mean, torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0))
    torch.testing.assert_close(model[1].running_var,
                               torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0))
    assert not model.training and model[1].momentum == 0.1
    torch.testing.assert_close(model[0].weight, weight)


def test_recalibrate_norms_restores_everything_when_a_batch_fails():
    net = _NormNet()
    net.train()
    net(_fields(1, seed=5)[0])
    before = {k: v.clone() for k, v in net.norm.named_buffers()}
    bad = _fields(2) + [Field(torch.randn(4, 64, 5), PointSet(sobol(64, 2)))]  # 5 channels, not 3
    with pytest.raises(ValueError, match="channel"):
        recalibrate_norms(net, bad)
    for k, v in net.norm.named_buffers():
        torch.testing.assert_close(v, before[k])
    assert net.norm.momentum == 0.3 and net.training


def test_recalibrate_norms_rejects_models_without_statistics_and_empty_batches():
    with pytest.raises(ValueError, match="no norm layer with running statistics"):
        recalibrate_norms(nn.Sequential(GroupNorm(1, 3), BatchNorm(3, track_running_stats=False)), [])
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_norms(_NormNet(), [])
