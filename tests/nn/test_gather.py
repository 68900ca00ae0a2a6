"""The fused, chunked atom convolution against its per-pair reference: outputs and both
gradients, every chunk size (one row per chunk up to the whole batch), channel groups, with
the plan's bags stacked over the batch or shifted per chunk (large batches); the plan's
public CSR arrays, and the backend seam of `atom_conv` (every registered backend against
the per-pair reference, the choice by name, device and priority)."""

import pytest
import torch

from inrnet.field import Field, PointSet
from inrnet.neighbors import neighbors
from inrnet.nn import _embedding_bag, gather as _gather
from inrnet.nn.gather import atom_conv, list_backends, register_backend
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import conv_pairs
from inrnet.nn.learned_conv import LegendreConv
from inrnet.sampling import sobol

D64 = torch.float64


def gather_atoms(values, plan):
    """``Z[b, m, a, :] = sum_j S[(m, a), j] values[b, j, :]``, whole, from the plan's public CSR
    arrays (``index_add``: independent of any backend).

    Args:
        values: Tensor[B, N, C].

    Returns:
        Tensor[B, M, A, C].
    """
    b, _, c = values.shape
    m, a = plan.num_out, plan.num_atoms
    rows = torch.repeat_interleave(torch.arange(m * a), plan.rowptr.diff())  # (nnz,) row (m, a) of each entry
    z = values.new_zeros(b, m * a, c).index_add(1, rows, values[:, plan.col] * plan.value.to(values)[:, None])
    return z.view(b, m, a, c)  # (B, M, A, C)


def index_add_backend(values, plan, atoms, groups, chunk_bytes):
    """A second backend from the public CSR arrays alone: `gather_atoms`, then the atom
    matmul per group (autograd does the backward)."""
    z = gather_atoms(values, plan)  # (B, M, A, C_in)
    b, m, a, _ = z.shape
    cg, o = atoms.shape[1:]
    zg = z.view(b, m, a, groups, cg)  # (B, M, A, g, Cg)
    wg = atoms.view(a, cg, groups, o // groups)  # (A, Cg, g, Og)
    return torch.einsum("bmagc,acgo->bmgo", zg, wg).reshape(b, m, o)  # (B, M, C_out)


@pytest.fixture(params=["stacked", "shifted"])
def bags_mode(request, monkeypatch):
    """Both ways of running a plan over a batch: a cached stacked copy, or one sample's bags
    shifted chunk by chunk (what batches too large to stack use)."""
    if request.param == "shifted":
        monkeypatch.setattr(_embedding_bag, "STACK_BYTES", 0)
    return request.param


@pytest.fixture(params=["input", "output"])
def side(request, monkeypatch):
    """Both ways through the backward pass, forced (``"auto"`` picks one by its cost model)."""
    monkeypatch.setattr(_embedding_bag, "BACKWARD", request.param)
    return request.param


@pytest.fixture
def registry(monkeypatch):
    """A copy of the backend registry for the test to register into, restored after."""
    monkeypatch.setattr(_gather, "_BACKENDS", dict(_gather._BACKENDS))


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


def _assert_matches_reference(layer, field, queries, out, tol=1e-12):
    """``out`` and its gradients (input and weights) equal the per-pair reference's."""
    ref = _reference(layer, field, queries)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (field.values, layer.weight), g)
    want = torch.autograd.grad(ref, (field.values, layer.weight), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("chunk_bytes", [1, 500, 4000, None])
@pytest.mark.parametrize("stride", [1, 2])
def test_matches_per_pair_reference_in_every_chunking(groups, chunk_bytes, stride, bags_mode, side):
    layer, field, queries, plan = _setup(groups, stride=stride)
    atoms = layer.atoms()
    out = atom_conv(field.values, plan, atoms, groups, chunk_bytes=chunk_bytes)
    _assert_matches_reference(layer, field, queries, out)


@pytest.mark.parametrize("points_major", [0, 1, 4])
@pytest.mark.parametrize("c_in", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_points_major_gather_of_narrow_inputs_matches_the_reference(points_major, c_in, stride, side, monkeypatch):
    """Inputs of at most ``POINTS_MAJOR_CHANNELS`` channels gather the whole batch in one bag per
    row of S (a first conv); output and both gradients are the per-pair reference's either way."""
    monkeypatch.setattr(_embedding_bag, "POINTS_MAJOR_CHANNELS", points_major)
    layer, field, queries, plan = _setup(1, c_in=c_in, stride=stride)
    used = _embedding_bag._points_major_z(field.values.detach(), plan) is not None
    assert used == (c_in <= points_major)
    out = atom_conv(field.values, plan, layer.atoms(), 1, backend="embedding_bag")
    _assert_matches_reference(layer, field, queries, out)


def test_gradcheck_small_chunks_groups(bags_mode, side):
    layer, field, _, plan = _setup(2, c_in=4, c_out=4, n=20)
    atoms = layer.atoms().detach().requires_grad_()
    x = field.values.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: atom_conv(x, plan, w, 2, chunk_bytes=200), (x, atoms))


def test_only_the_gradients_asked_for(side):
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


def test_wrong_number_of_atoms():
    layer, field, _, plan = _setup(1)
    with pytest.raises(ValueError, match="expects 9 atoms"):
        atom_conv(field.values, plan, layer.atoms()[:4])


def test_shifted_bags_span_samples_like_the_stacked_copy():
    _, _, _, plan = _setup(1)
    one = _embedding_bag._plan_bags(plan, "gather")  # one sample's gather bags
    assert one.stride == plan.num_in
    stacked = one.stacked(3)
    assert int(stacked.index.max()) >= 2 * plan.num_in  # the third sample's rows
    n_bags = one.ptr.numel() - 1
    for r0, r1 in [(0, 3 * n_bags), (5, n_bags + 7), (n_bags - 1, 2 * n_bags + 1), (2 * n_bags, 3 * n_bags)]:
        for got, want in zip(one.rows(r0, r1, D64), stacked.rows(r0, r1, D64)):
            torch.testing.assert_close(got, want)


# --- the plan's public CSR arrays ---------------------------------------------------------

def _dense(ptr, index, value, n_rows, n_cols):
    """A CSR matrix ``[n_rows, n_cols]``, dense."""
    rows = torch.repeat_interleave(torch.arange(n_rows), ptr.diff())  # (nnz,)
    return torch.zeros(n_rows, n_cols, dtype=value.dtype).index_put((rows, index), value, accumulate=True)


@pytest.mark.parametrize("padding", ["zeros", "symmetric"])
def test_csr_arrays_hold_s_and_its_transpose(padding):
    """``rowptr, col, value`` are ``S [M * A, N]`` as the pairs' atoms define it; ``colptr, row,
    value_t`` its transpose read by rows ``(j, a)``; both sorted, no zeros stored."""
    pts = PointSet(sobol(40, 2, seed=1, dtype=D64))
    layer = BSplineConv(2, 3, 3, 0.2, padding=padding).double()
    plan = layer.gather_plan(pts, pts)
    m, a, n = plan.num_out, plan.num_atoms, plan.num_in
    assert (m, a, n) == (40, 9, 40)
    assert plan.rowptr.shape == (m * a + 1,) and plan.colptr.shape == (n * a + 1,)
    assert plan.col.shape == plan.value.shape == plan.row.shape == plan.value_t.shape == (plan.nnz,)
    assert int(plan.rowptr[-1]) == int(plan.colptr[-1]) == plan.nnz and bool((plan.value != 0).all())
    nb = neighbors(pts, pts, layer.support, reflect=padding == "symmetric")
    index, value = layer.expand(nb.offset)  # (E, P)
    want = torch.zeros(m, a, n, dtype=D64)
    for p in range(index.shape[1]):
        want.index_put_((nb.row, index[:, p], nb.col), value[:, p] * pts.weights[nb.col], accumulate=True)
    s = _dense(plan.rowptr, plan.col, plan.value, m * a, n)  # (M * A, N)
    torch.testing.assert_close(s, want.view(m * a, n))
    s_t = _dense(plan.colptr, plan.row, plan.value_t, n * a, m).view(n, a, m)  # (N, A, M)
    torch.testing.assert_close(s_t.permute(2, 1, 0), want)
    # each row of S^T keeps its entries ordered by output point (a fixed summation order)
    starts = torch.repeat_interleave(plan.colptr[:-1], plan.colptr.diff())  # (nnz,) its row's first entry
    later = torch.arange(plan.nnz) > starts
    assert bool((plan.row[1:][later[1:]] >= plan.row[:-1][later[1:]]).all())


def test_the_transpose_is_built_only_for_a_backward_into_the_input():
    pts = PointSet(sobol(64, 2, seed=2))
    layer = BSplineConv(1, 4, 3, 0.25)
    data = Field(torch.randn(2, 64, 1), pts)  # an INR's samples: no gradient
    layer(data).values.square().sum().backward()
    plan = layer.gather_plan(pts, pts)
    assert layer.weight.grad is not None and ("S^T",) not in plan._cache
    feats = Field(torch.randn(2, 64, 1, requires_grad=True), pts)
    layer(feats).values.square().sum().backward()
    assert feats.values.grad is not None and ("S^T",) in plan._cache


# --- the backend seam -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", list_backends("cpu"))
@pytest.mark.parametrize("groups", [1, 2])
def test_every_registered_backend_matches_the_per_pair_reference(backend, groups):
    layer, field, queries, plan = _setup(groups, stride=2 if groups == 2 else 1)
    _assert_matches_reference(layer, field, queries, atom_conv(field.values, plan, layer.atoms(), groups,
                                                               backend=backend))


def test_auto_is_the_builtin_embedding_bag_backend():
    assert list_backends() == list_backends("cpu") == list_backends("cuda") == ["embedding_bag"]
    layer, field, _, plan = _setup(1)
    x, atoms = field.values.detach(), layer.atoms().detach()
    assert torch.equal(atom_conv(x, plan, atoms), atom_conv(x, plan, atoms, backend="embedding_bag"))


def test_an_unknown_backend_names_the_registered_ones():
    layer, field, _, plan = _setup(1)
    with pytest.raises(ValueError, match=r"backend 'triton'; registered: \['embedding_bag'\], or 'auto'"):
        atom_conv(field.values, plan, layer.atoms(), backend="triton")


def test_a_registered_backend_runs_by_name_and_by_priority(registry):
    """A backend from the public CSR arrays alone equals the reference; ``"auto"`` takes the
    highest priority among the backends for the device."""
    calls = []

    def counted(*args):
        calls.append(args[0].device.type)
        return index_add_backend(*args)
    register_backend("index_add", counted, devices=["cpu"], priority=1)
    register_backend("index_add", counted, devices=["cpu"], priority=1)  # the same function again: no-op
    assert list_backends("cpu") == ["index_add", "embedding_bag"] and list_backends("cuda") == ["embedding_bag"]
    layer = LegendreConv(4, 6, 0.3, degree=2, groups=2, bias=False).double()
    pts = PointSet(sobol(50, 2, seed=2, dtype=D64))
    field = Field(torch.randn(2, 50, 4, dtype=D64, requires_grad=True), pts)
    out = layer(field)  # "auto" inside the layer
    assert calls == ["cpu"]
    _assert_matches_reference(layer, field, pts, out.values)
    plan = layer.gather_plan(pts, pts)
    torch.testing.assert_close(atom_conv(field.values, plan, layer.atoms(), 2, backend="embedding_bag"), out.values)


def test_register_backend_refuses_auto_and_a_taken_name(registry):
    with pytest.raises(ValueError, match="auto"):
        register_backend("auto", index_add_backend)
    with pytest.raises(ValueError, match="'embedding_bag' is already registered"):
        register_backend("embedding_bag", index_add_backend)


def test_a_backend_for_another_device_is_refused(registry):
    register_backend("cuda_only", index_add_backend, devices=("cuda",), priority=5)
    layer, field, _, plan = _setup(1)
    assert list_backends("cpu") == ["embedding_bag"]
    with pytest.raises(ValueError, match="'cuda_only' does not run on cpu.*'embedding_bag'"):
        atom_conv(field.values, plan, layer.atoms(), backend="cuda_only")


def test_backward_side_takes_the_cheaper_way():
    """Stride 2 (a quarter of the outputs): the output side; stride 1 with as many channels in as
    out: the input side (the same GEMMs, half the gathering); a one-channel first layer whose
    input needs no gradient: the output side (it gathers one value where the input side gathers 6)."""
    _, _, _, strided = _setup(1, c_in=6, c_out=6, n=200, stride=2)
    _, _, _, same = _setup(1, c_in=6, c_out=6, n=200)
    _, _, _, first = _setup(1, c_in=1, c_out=6, n=200)
    assert _embedding_bag.backward_side(strided, 6, 6, 1, True, True) == "output"
    assert _embedding_bag.backward_side(same, 6, 6, 1, True, True) == "input"
    assert _embedding_bag.backward_side(first, 1, 6, 1, False, True) == "output"


def test_merged_bags_are_the_transpose_summed_over_atoms():
    """The output side's scatter: bag ``j`` sums ``S[(m, a), j] * table[m * A + a]``."""
    _, _, _, plan = _setup(1, stride=2)
    merged = _embedding_bag._merged_bags(plan)
    m, a, n = plan.num_out, plan.num_atoms, plan.num_in
    dense = torch.zeros(m * a, n, dtype=D64)
    rows = torch.repeat_interleave(torch.arange(m * a), plan.rowptr.diff())
    dense[rows, plan.col] = plan.value.to(D64)
    table = torch.randn(m * a, 3, dtype=D64)
    got = torch.nn.functional.embedding_bag(merged.index, table, merged.ptr, mode="sum",
                                            per_sample_weights=merged.value.to(D64), include_last_offset=True)
    torch.testing.assert_close(got, dense.t() @ table)
