"""Layers on the device against float64 CPU references: continuous convolutions (the fused
gather path in one chunk, in many chunks and with per-chunk shifted bags; the per-pair
path), normalisation and pooling, forward and backward."""

import copy

import pytest
import torch
from torch import nn

from inrnet.field import Field, PointSet
from inrnet.neighbors import find_neighbors
from inrnet.nn import _embedding_bag
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import conv_pairs
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.nn.norm import BatchNorm, ChannelLayerNorm, GroupNorm, InstanceNorm
from inrnet.nn.pool import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool
from inrnet.sampling import sobol

pytestmark = pytest.mark.gpu

D64 = torch.float64

# Kernels with atoms (the fused gather path), as (name, builder(c_in, c_out)).
ATOM_CONVS = [
    ("bspline", lambda i, o: BSplineConv(i, o, 3, 0.1)),
    ("bspline-stride2-groups2", lambda i, o: BSplineConv(i, o, 3, 0.1, stride=2, groups=2)),
    ("bspline-even-reflect-quadratic", lambda i, o: BSplineConv(i, o, 4, 0.08, padding="reflect", degree=2)),
    ("bspline-symmetric-mean", lambda i, o: BSplineConv(i, o, 3, 0.1, padding="symmetric", estimator="mean")),
    ("bspline-mean", lambda i, o: BSplineConv(i, o, 3, 0.1, estimator="mean")),
    ("mlp-binned", lambda i, o: MLPConv(i, o, 0.15, n_bins=16, hidden=(8,))),
    ("legendre", lambda i, o: LegendreConv(i, o, 0.15, degree=2, groups=2)),
]


@pytest.fixture(params=["one-chunk", "chunks", "chunks-shifted-bags"])
def gather_mode(request, monkeypatch, device):
    """How `atom_conv` walks the batch: the default budget (at these sizes one chunk on
    either device), chunks of a few rows, or such chunks over one sample's bags shifted
    per chunk (what batches too large to stack use).

    Returns:
        The mode and a list that collects the rows of every gather, forward and backward.
    """
    if request.param != "one-chunk":
        monkeypatch.setitem(_embedding_bag.CHUNK_BYTES, device.type, 4096)
    if request.param == "chunks-shifted-bags":
        monkeypatch.setattr(_embedding_bag, "STACK_BYTES", 0)
    calls = []
    bag_sum = _embedding_bag._bag_sum

    def counting(table, bags, r0, r1):
        calls.append(r1 - r0)
        return bag_sum(table, bags, r0, r1)
    monkeypatch.setattr(_embedding_bag, "_bag_sum", counting)
    return request.param, calls


def _conv_reference(layer: nn.Module, values: torch.Tensor, points: PointSet) -> tuple[torch.Tensor, PointSet]:
    """float64 per-pair convolution on the CPU over brute-force neighbours (``conv_pairs``)."""
    queries = layer.output_points(points)
    inset = layer.mirror_inset()
    nb = find_neighbors(points, queries, layer.support, reflect=inset is not None, inset=inset or 0.0, backend="brute")
    out = conv_pairs(values, nb, layer._pair_weight(points, queries, nb), layer.pair_kernel(nb.offset), layer.groups)
    return out + layer.bias, queries


def _compare_conv(layer: nn.Module, device: torch.device, close, n: int = 400, batch: int = 3) -> None:
    """``layer`` on ``device`` in float32 against its float64 per-pair reference: output, its
    points, and the gradients of the input and of every parameter."""
    coords = sobol(n, 2, seed=3)
    x = torch.randn(batch, n, layer.in_channels)
    on_device = copy.deepcopy(layer).to(device)
    reference = copy.deepcopy(layer).double()
    xd = x.to(device, copy=True).requires_grad_()
    out = on_device(Field(xd, PointSet(coords.to(device))))
    x64 = x.double().requires_grad_()
    ref, queries = _conv_reference(reference, x64, PointSet(coords.double()))
    close(out.values, ref)
    close(out.points.coords, queries.coords)
    g = torch.randn(ref.shape, dtype=D64)
    out.values.backward(g.to(device, torch.float32))
    ref.backward(g)
    close(xd.grad, x64.grad)
    for (name, p), (_, p64) in zip(on_device.named_parameters(), reference.named_parameters()):
        assert p.grad is not None, name
        close(p.grad, p64.grad)


@pytest.mark.parametrize("name,build", ATOM_CONVS, ids=[n for n, _ in ATOM_CONVS])
def test_atom_convs_match_the_per_pair_reference(name, build, gather_mode, device, close):
    mode, rows = gather_mode
    layer = build(8, 12)
    _compare_conv(layer, device, close)
    if mode == "one-chunk":  # one gather forward; backward one (input side) or two (output side: Z, then df)
        points = PointSet(sobol(400, 2, seed=3))
        plan = layer.gather_plan(points, layer.output_points(points))
        side = _embedding_bag.backward_side(plan, 8, 12, layer.groups, True, True)
        assert len(rows) == (2 if side == "input" else 3), f"expected one chunk per pass ({side} side), got {rows}"
    else:
        assert len(rows) > 10, f"{mode}: expected many chunks, got gathers of {rows} rows"


@pytest.mark.parametrize("estimator", ["tap_mean", "tap_spline"])
def test_tap_estimators_to_a_lattice_match_their_float64_cpu_plans(estimator, device, close, monkeypatch):
    """A first conv from scattered points to a lattice on the device, ``tap_mean`` through its
    tap lattice (the per-tap means, then the stencil) and ``tap_spline`` (the device's
    k-nearest search and batched solves), against the same layer's direct plan in float64 on
    the CPU: output and the gradients of the input and the weights."""
    from inrnet.nn import conv as conv_module
    layer = BSplineConv(3, 8, 3, 2 / 20, stride=2, estimator=estimator, support_extent="basis")
    coords = sobol(600, 2, seed=3)
    x = torch.randn(2, 600, 3)
    grid = PointSet.grid((20, 20)).downsample(2)
    on_device = copy.deepcopy(layer).to(device)
    xd = x.to(device, copy=True).requires_grad_()
    points = PointSet(coords.to(device))
    queries = PointSet(grid.coords.to(device), lattice=grid.lattice)
    if estimator == "tap_mean":
        assert on_device.tap_lattice(points, queries) is not None
    out = on_device(Field(xd, points), query=queries).values
    monkeypatch.setattr(conv_module, "TAP_LATTICE", False)
    reference = copy.deepcopy(layer).double()
    x64 = x.double().requires_grad_()
    grid64 = PointSet.grid((20, 20), dtype=D64).downsample(2)
    ref = reference(Field(x64, PointSet(coords.double())), query=grid64).values
    close(out, ref)
    g = torch.randn(ref.shape, dtype=D64)
    out.backward(g.to(device, torch.float32))
    ref.backward(g)
    close(xd.grad, x64.grad)
    close(on_device.weight.grad, reference.weight.grad)


def test_exact_mlp_conv_matches_float64(device, close):
    """The per-pair kernel path (no atoms): einsum and ``index_add`` on the device."""
    _compare_conv(MLPConv(6, 10, (0.15, 0.1), hidden=(16, 16)), device, close)


@pytest.mark.parametrize("stride,groups,padding", [(1, 1, "zeros"), (2, 2, "zeros"), (1, 1, "reflect")])
def test_bspline_conv_on_a_grid_matches_conv2d(stride, groups, padding, gather_mode, device, close):
    """The fused path against an independent reference: ``nn.Conv2d`` in float64 on the CPU."""
    x = torch.randn(4, 8, 16, 16)
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=1, groups=groups, padding_mode=padding).double()
    layer = BSplineConv(8, 16, 3, 2 / 16, stride=stride, groups=groups, padding=padding)
    layer.weight.data.copy_(conv.weight.data)
    layer.bias.data.copy_(conv.bias.data)
    layer.to(device)
    xd = x.to(device, copy=True).flatten(2).transpose(1, 2).requires_grad_()  # (B, N, C) leaf
    out = layer(Field(xd, PointSet.grid((16, 16), device=device))).values
    x64 = x.double().requires_grad_()
    ref = conv(x64)
    close(out, ref.flatten(2).transpose(1, 2))
    g = torch.randn(ref.shape, dtype=D64)
    out.backward(g.flatten(2).transpose(1, 2).to(device, torch.float32))
    ref.backward(g)
    close(xd.grad, x64.grad.flatten(2).transpose(1, 2))
    close(layer.weight.grad, conv.weight.grad)
    close(layer.bias.grad, conv.bias.grad)


class _ChannelsLast(nn.Module):
    """A torch layer over the channels of an image batch [B, C, H, W] (``nn.LayerNorm`` ConvNeXt style)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x.movedim(1, -1)).movedim(-1, 1)


NORMS = [
    ("batch", lambda: BatchNorm(6), lambda: nn.BatchNorm2d(6)),
    ("instance", lambda: InstanceNorm(6, affine=True, track_running_stats=True),
     lambda: nn.InstanceNorm2d(6, affine=True, track_running_stats=True)),
    ("group", lambda: GroupNorm(3, 6), lambda: nn.GroupNorm(3, 6)),
    ("channel-layer", lambda: ChannelLayerNorm(6), lambda: _ChannelsLast(nn.LayerNorm(6))),
]


def _randomise_affine(ours: nn.Module, theirs: nn.Module) -> None:
    with torch.no_grad():
        for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            q.normal_()
            p.copy_(q)


@pytest.mark.parametrize("name,ours,theirs", NORMS, ids=[n for n, *_ in NORMS])
def test_norms_on_a_grid_match_torch(name, ours, theirs, device, close):
    """Two training steps (outputs, input and affine gradients, running statistics), then eval."""
    ours, theirs = ours(), theirs().double()
    _randomise_affine(ours, theirs)
    ours.to(device)
    points = PointSet.grid((5, 7), device=device)
    for step in range(2):
        x = torch.randn(4, 6, 5, 7) * (step + 1) + step
        xd = x.to(device, copy=True).flatten(2).transpose(1, 2).requires_grad_()  # (B, N, C) leaf
        x64 = x.double().requires_grad_()
        out, ref = ours(Field(xd, points)).values, theirs(x64)
        close(out, ref.flatten(2).transpose(1, 2))
        g = torch.randn(ref.shape, dtype=D64)
        out.backward(g.flatten(2).transpose(1, 2).to(device, torch.float32))
        ref.backward(g)
        close(xd.grad, x64.grad.flatten(2).transpose(1, 2))
        for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            close(p.grad, q.grad)
            p.grad = q.grad = None
    for key in ("running_mean", "running_var"):
        if getattr(theirs, key, None) is not None:
            close(getattr(ours, key), getattr(theirs, key))
    ours.eval(), theirs.eval()
    x = torch.randn(2, 6, 5, 7) * 2
    with torch.no_grad():
        close(ours(Field(x.to(device).flatten(2).transpose(1, 2), points)).values,
              theirs(x.double()).flatten(2).transpose(1, 2))


def _weighted_norm(f: torch.Tensor, w: torch.Tensor, groups: int | None, over_batch: bool,
                   eps: float = 1e-5) -> torch.Tensor:
    """Self-normalised weighted statistics written out in float64: Tensor[B, N, C] -> same."""
    b, n, c = f.shape
    g = f.reshape(b, n, groups, c // groups) if groups else f.unsqueeze(-1)  # (B, N, G, C/G)
    p = (w / w.sum()).view(1, n, 1, 1) / g.shape[-1]
    mean = (g * p).sum((1, 3), keepdim=True)  # (B, 1, G, 1)
    if over_batch:
        mean = mean.mean(0, keepdim=True)
    var = ((g - mean) ** 2 * p).sum((1, 3), keepdim=True)
    if over_batch:
        var = var.mean(0, keepdim=True)
    return ((g - mean) / torch.sqrt(var + eps)).reshape(b, n, c)


@pytest.mark.parametrize("name", ["batch", "instance", "group"])
def test_norms_with_unequal_quadrature_weights(name, device, close):
    """Scattered points with unequal weights (what no grid tests): the weighted moments."""
    n = 200
    coords, w = sobol(n, 2, seed=4), 0.5 + torch.rand(n)
    layer = {"batch": BatchNorm(6, affine=False), "instance": InstanceNorm(6),
             "group": GroupNorm(2, 6, affine=False)}[name].to(device)
    x = 3 * torch.randn(4, n, 6) + 1
    xd = x.to(device, copy=True).requires_grad_()
    out = layer(Field(xd, PointSet(coords.to(device), w.to(device)))).values
    x64 = x.double().requires_grad_()
    ref = _weighted_norm(x64, w.double(), 2 if name == "group" else None, over_batch=name == "batch")
    close(out, ref)
    g = torch.randn(ref.shape, dtype=D64)
    out.backward(g.to(device, torch.float32))
    ref.backward(g)
    close(xd.grad, x64.grad)
    if name == "batch":  # running statistics: momentum 0.1 from (0, 1), the variance unbiased
        p = (w / w.sum()).double().view(1, n, 1)
        mean = (x64.detach() * p).sum(1).mean(0)  # (C,)
        var = ((x64.detach() - mean) ** 2 * p).sum(1).mean(0)
        close(layer.running_mean, 0.1 * mean)
        close(layer.running_var, 0.9 + 0.1 * var * (4 * n) / (4 * n - 1))


POOLS = [
    ("max-3-stride2", lambda h: MaxPool(3, h, 2, unbiased=False), nn.MaxPool2d(3, 2, 1)),
    ("max-2-none", lambda h: MaxPool(2, h, padding="none", unbiased=False), nn.MaxPool2d(2)),
    ("avg-3-stride2", lambda h: AvgPool(3, h, 2), nn.AvgPool2d(3, 2, 1)),
    ("avg-3-exclude-pad", lambda h: AvgPool(3, h, 1, count_include_pad=False),
     nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
    ("adaptive-avg", lambda h: AdaptiveAvgPool((3, 2)), nn.AdaptiveAvgPool2d((3, 2))),
    ("global-avg", lambda h: GlobalAvgPool(), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
]


@pytest.mark.parametrize("name,ours,theirs", POOLS, ids=[n for n, *_ in POOLS])
def test_pools_on_a_grid_match_torch(name, ours, theirs, device, close):
    x = torch.randn(3, 4, 12, 10)
    xd = x.to(device, copy=True).flatten(2).transpose(1, 2).requires_grad_()  # (B, N, C) leaf
    out = ours((2 / 12, 2 / 10))(Field(xd, PointSet.grid((12, 10), device=device)))
    x64 = x.double().requires_grad_()
    ref = theirs(x64)
    if isinstance(out, Field):  # window layers; the adaptive and global pools return torch's layout
        out, ref = out.values, ref.flatten(2).transpose(1, 2)
    close(out, ref)
    g = torch.randn(ref.shape, dtype=D64)
    out.backward(g.to(device, torch.float32))
    ref.backward(g)
    close(xd.grad, x64.grad.flatten(2).transpose(1, 2))


def _window_loop(coords: torch.Tensor, w: torch.Tensor, values: torch.Tensor, k: int, h: float,
                 stride: int, reduce: str) -> torch.Tensor:
    """float64 loop over output points (a Sobol prefix) and every point: unbiased max or
    quadrature average of a ``k``-tap window of pixel size ``h``. Returns Tensor[B, M, C]."""
    out_n = -(-coords.shape[0] // stride ** 2)
    centre = h / 2 if k % 2 == 0 else 0.0
    rows = []
    for i in range(out_n):
        inside = [j for j in range(coords.shape[0])
                  if all(abs(float(coords[j, a] - coords[i, a]) - centre) <= k * h / 2 for a in range(2))]
        window = values[:, inside]  # (B, n, C)
        if reduce == "max":
            best, m = window.amax(1), len(inside)
            rows.append(torch.where(best > 0, best * (m + 1) / (m - 1), best) if m > 1 else best)
        else:
            rows.append((window * w[inside][None, :, None]).sum(1) / (k * h) ** 2)
    return torch.stack(rows, 1)


@pytest.mark.parametrize("reduce,k", [("max", 3), ("max", 2), ("avg", 3)])
def test_pools_on_scattered_points_match_loops(reduce, k, device, close):
    n, h = 160, 0.2
    coords = sobol(n, 2, seed=5)
    x = torch.randn(2, n, 3)
    pool = MaxPool(k, h, 2) if reduce == "max" else AvgPool(k, h, 2)
    xd = x.to(device, copy=True).requires_grad_()
    out = pool(Field(xd, PointSet(coords.to(device)))).values
    x64 = x.double().requires_grad_()
    ref = _window_loop(coords.double(), torch.full((n,), 4 / n, dtype=D64), x64, k, h, 2, reduce)
    close(out, ref)
    g = torch.randn(ref.shape, dtype=D64)
    out.backward(g.to(device, torch.float32))
    ref.backward(g)
    close(xd.grad, x64.grad)
