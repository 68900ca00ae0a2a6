"""Learned-kernel convolutions (MLP exact and binned, Legendre): loop references, binned vs
exact MLP kernels, convergence under QMC (Property 3)."""

import math

import numpy as np
import pytest
import torch
from _conv_helpers import D64, loop_conv

from inrnet.field import Field, PointSet
from inrnet.neighbors import Support
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.sampling import sobol


@pytest.mark.parametrize("make", [
    lambda: MLPConv(3, 4, 0.4, hidden=(8,)),
    lambda: MLPConv(3, 4, Support(0.4, "ball"), hidden=(8,), n_bins=16),
    lambda: LegendreConv(3, 4, (0.4, 0.3), degree=3),
    lambda: MLPConv(3, 3, Support(0.4, "ball"), hidden=(8,), groups=3),  # depthwise: the fused gather_scale_sum
    lambda: MLPConv(3, 3, 0.4, hidden=(8,), groups=3, stride=2),
])
def test_learned_kernels_match_loop_reference(make):
    layer = make().double()
    pts = PointSet(sobol(40, 2, seed=2, dtype=D64))
    vals = torch.randn(2, 40, 3, dtype=D64)
    out = layer(Field(vals, pts))
    ref = loop_conv(layer, vals, pts, out.points,
                    lambda d: layer.pair_kernel(torch.as_tensor(d)[None]).detach()[0])
    torch.testing.assert_close(out.values, ref, rtol=1e-10, atol=1e-10)


def test_binned_mlp_converges_to_exact():
    pts = PointSet(sobol(1024, 2, seed=0, dtype=D64))
    field = Field(torch.randn(2, 1024, 3, dtype=D64), pts)
    layer = MLPConv(3, 4, 0.3, hidden=(16, 16)).double()
    exact = layer(field).values
    errors = []
    for n_bins in [4, 16, 64, 256, 1024]:
        layer.n_bins = n_bins
        errors.append((layer(field).values - exact).norm().item() / exact.norm().item())
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0]


def test_binned_mlp_evaluates_kernel_n_bins_times():
    calls = []
    layer = MLPConv(2, 2, 0.2, n_bins=32)
    layer.mlp[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    for n in [256, 4096]:
        calls.clear()
        layer(Field(torch.randn(1, n, 2), PointSet(sobol(n, 2, seed=0))))
        assert calls == [32]


def analytic_field(n, seed):
    pts = PointSet(sobol(n, 2, seed=seed, dtype=D64))
    x = pts.coords
    vals = torch.stack([torch.sin(math.pi * x[:, 0]) * torch.cos(math.pi * x[:, 1]), torch.exp(-(x * x).sum(-1))], -1)
    return Field(vals[None], pts)


def test_outputs_and_gradients_converge_with_more_points():
    """Paper Property 3: at fixed query points, outputs and parameter gradients converge."""
    torch.manual_seed(0)
    layer = MLPConv(2, 3, 0.5, hidden=(16,)).double()
    query = PointSet(torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.5]], dtype=D64))

    def run(n, seed):
        layer.zero_grad()
        out = layer(analytic_field(n, seed), query=query).values
        out.square().sum().backward()
        return out.detach().clone(), layer.mlp[0].weight.grad.clone()

    limit_out, limit_grad = run(2 ** 16, 99)
    errs = []
    for n in [2 ** 8, 2 ** 10, 2 ** 12, 2 ** 14]:
        o = [run(n, s) for s in range(3)]
        errs.append(((sum((a - limit_out).norm() for a, _ in o) / 3).item(),
                     (sum((g - limit_grad).norm() for _, g in o) / 3).item()))
    for k in range(2):
        assert errs[-1][k] < 0.1 * errs[0][k], errs
        slope = np.polyfit(np.log([2 ** 8, 2 ** 10, 2 ** 12, 2 ** 14]), np.log([e[k] for e in errs]), 1)[0]
        assert slope < -0.6, (slope, errs)
