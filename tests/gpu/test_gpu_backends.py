"""Every `atom_conv` backend that runs on the device against the float64 per-pair reference
(``conv_pairs`` on the CPU over brute-force neighbours): output and the gradients of the
input and of the atoms, in one chunk and in many, with channel groups and mirrors; and the
stencil route of plans between two lattices, on a grid."""

import copy

import pytest
import torch

from inrnet.field import PointSet
from inrnet.neighbors import find_neighbors
from inrnet.nn.gather import atom_conv, list_backends
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import conv_pairs
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.sampling import sobol

pytestmark = pytest.mark.gpu

D64 = torch.float64

# Kernels with atoms, as (name, builder(c_in, c_out)).
LAYERS = [
    ("bspline", lambda i, o: BSplineConv(i, o, 3, 0.1)),
    ("bspline-stride2-groups2-symmetric-mean", lambda i, o: BSplineConv(i, o, 3, 0.1, stride=2, groups=2,
                                                                         padding="symmetric", estimator="mean")),
    ("mlp-binned", lambda i, o: MLPConv(i, o, 0.15, n_bins=16, hidden=(8,))),
    ("legendre-groups2", lambda i, o: LegendreConv(i, o, 0.15, degree=2, groups=2)),
]


def _reference(layer, values: torch.Tensor, atoms: torch.Tensor, points: PointSet) -> torch.Tensor:
    """float64 per-pair convolution on the CPU (no bias), with ``atoms`` as the kernel's weights."""
    queries = layer.output_points(points)
    inset = layer.mirror_inset()
    nb = find_neighbors(points, queries, layer.support, reflect=inset is not None, inset=inset or 0.0, backend="brute")
    index, value = layer.expand(nb.offset)  # (E, P) each
    kernel = torch.einsum("ep,epio->eio", value, atoms[index])  # (E, C_in / groups, C_out)
    return conv_pairs(values, nb, layer._pair_weight(points, queries, nb), kernel, layer.groups)


@pytest.mark.parametrize("chunk_bytes", [None, 4096], ids=["default-chunks", "small-chunks"])
@pytest.mark.parametrize("name,build", LAYERS, ids=[n for n, _ in LAYERS])
def test_every_backend_matches_the_per_pair_reference(name, build, chunk_bytes, device, close):
    backends = list_backends(device)
    assert "embedding_bag" in backends
    layer = build(8, 12)
    coords = sobol(400, 2, seed=5)
    x = torch.randn(3, 400, 8)
    reference = copy.deepcopy(layer).double()
    atoms64 = reference.atoms().detach().requires_grad_()
    x64 = x.double().requires_grad_()
    ref = _reference(reference, x64, atoms64, PointSet(coords.double()))
    g = torch.randn(ref.shape, dtype=D64)
    want = torch.autograd.grad(ref, (x64, atoms64), g)
    on_device = copy.deepcopy(layer).to(device)
    points = PointSet(coords.to(device))
    plan = on_device.gather_plan(points, on_device.output_points(points))
    for backend in backends:
        xd = x.to(device, copy=True).requires_grad_()
        atoms = atoms64.detach().float().to(device).requires_grad_()
        out = atom_conv(xd, plan, atoms, layer.groups, chunk_bytes=chunk_bytes, backend=backend)
        close(out, ref)
        got = torch.autograd.grad(out, (xd, atoms), g.to(device, torch.float32))
        for a, b in zip(got, want):
            close(a, b)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_stencil_route_on_a_grid_matches_the_per_pair_reference(stride, device, close):
    """A plan between two lattices is found to be a stencil on the device too, and its discrete
    convolution (cuDNN) gives the per-pair reference's output and gradients."""
    layer = BSplineConv(8, 12, 3, 2 / 20, stride=stride, support_extent="basis")
    reference = copy.deepcopy(layer).double()
    atoms64 = reference.atoms().detach().requires_grad_()
    x64 = torch.randn(3, 400, 8, dtype=D64, requires_grad=True)
    ref = _reference(reference, x64, atoms64, PointSet.grid((20, 20), dtype=D64))
    g = torch.randn(ref.shape, dtype=D64)
    want = torch.autograd.grad(ref, (x64, atoms64), g)
    on_device = copy.deepcopy(layer).to(device)
    points = PointSet.grid((20, 20), device=device)
    plan = on_device.gather_plan(points, on_device.output_points(points))
    assert plan.stencil is not None and plan.stencil.taps.device.type == device.type
    xd = x64.detach().float().to(device).requires_grad_()
    atoms = atoms64.detach().float().to(device).requires_grad_()
    out = atom_conv(xd, plan, atoms, layer.groups)  # "auto": the stencil route
    close(out, ref)
    for a, b in zip(torch.autograd.grad(out, (xd, atoms), g.to(device, torch.float32)), want):
        close(a, b)
