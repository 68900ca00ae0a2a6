"""The fused, chunked atom convolution against its per-pair reference: outputs and both
gradients, every chunk size (one row per chunk up to the whole batch), channel groups, with
the plan's bags stacked over the batch or shifted per chunk (large batches)."""

import pytest
import torch

from inrnet.field import Field, PointSet
from inrnet.neighbors import neighbors
from inrnet.nn import _gather
from inrnet.nn._gather import atom_conv, gather_atoms
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import conv_pairs
from inrnet.sampling import sobol

D64 = torch.float64


@pytest.fixture(params=["stacked", "shifted"])
def bags_mode(request, monkeypatch):
    """Both ways of running a plan over a batch: a cached stacked copy, or one sample's bags
    shifted chunk by chunk (what batches too large to stack use)."""
    if request.param == "shifted":
        monkeypatch.setattr(_gather, "STACK_BYTES", 0)
    return request.param


def _setup(groups, c_in=4, c_out=6, n=60, stride=1, degree=None):
    pts = PointSet(sobol(n, 2, seed=7, dtype=D64))
    layer = BSplineConv(c_in, c_out, 3, 0.15, groups=groups, stride=stride, degree=degree, bias=False).double()
    field = Field(torch.randn(3, n, c_in, dtype=D64, requires_grad=True), pts)
    layer(field)  # builds and caches the plan
    queries = layer.output_points(pts)
    plan = next(v for k, v in pts._cache.items() if k[0] == "conv-plan")
    return layer, field, queries, plan


def _reference(layer, field, queries):
    nb = neighbors(field.points, queries, layer.support)
    return conv_pairs(field.values, nb, layer._pair_weight(field.points, queries, nb), layer.pair_kernel(nb.offset),
                      layer.groups)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("chunk_bytes", [1, 500, 4000, None])
def test_matches_per_pair_reference_in_every_chunking(groups, chunk_bytes, bags_mode):
    layer, field, queries, plan = _setup(groups, stride=2 if groups == 2 else 1)
    atoms = layer.atoms()
    out = atom_conv(field.values, plan, atoms, groups, chunk_bytes=chunk_bytes)
    ref = _reference(layer, field, queries)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (field.values, layer.weight), g)
    want = torch.autograd.grad(ref, (field.values, layer.weight), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_gradcheck_small_chunks_groups(bags_mode):
    layer, field, _, plan = _setup(2, c_in=4, c_out=4, n=20)
    atoms = layer.atoms().detach().requires_grad_()
    x = field.values.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: atom_conv(x, plan, w, 2, chunk_bytes=200), (x, atoms))


def test_only_the_gradients_asked_for():
    layer, field, _, plan = _setup(1)
    frozen = layer.atoms().detach()
    out = atom_conv(field.values, plan, frozen)
    (gx,) = torch.autograd.grad(out.sum(), field.values)
    assert gx.shape == field.values.shape
    x = field.values.detach()
    atoms = layer.atoms()
    (gw,) = torch.autograd.grad(atom_conv(x, plan, atoms).sum(), layer.weight)
    assert gw.shape == layer.weight.shape


def test_whole_gather_matches_chunked_forward(bags_mode):
    layer, field, _, plan = _setup(1)
    z = gather_atoms(field.values.detach(), plan)  # (B, M, A, C)
    atoms = layer.atoms().detach()
    torch.testing.assert_close(torch.einsum("bmac,aco->bmo", z, atoms),
                               atom_conv(field.values.detach(), plan, atoms, chunk_bytes=64))


def test_wrong_number_of_points():
    layer, field, _, plan = _setup(1)
    with pytest.raises(ValueError, match="60"):
        atom_conv(field.values[:, :50], plan, layer.atoms())


def test_shifted_bags_span_samples_like_the_stacked_copy():
    _, _, _, plan = _setup(1)
    plan.bags(1)
    one = plan._bags[0]  # one sample's gather bags
    assert one.stride == plan.num_in
    stacked = one.stacked(3)
    assert int(stacked.index.max()) >= 2 * plan.num_in  # the third sample's rows
    n_bags = one.ptr.numel() - 1
    for r0, r1 in [(0, 3 * n_bags), (5, n_bags + 7), (n_bags - 1, 2 * n_bags + 1), (2 * n_bags, 3 * n_bags)]:
        for got, want in zip(one.rows(r0, r1, D64), stacked.rows(r0, r1, D64)):
            torch.testing.assert_close(got, want)
