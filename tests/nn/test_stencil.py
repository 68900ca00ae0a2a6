"""The stencil route of `atom_conv`: plans between two lattices that are discrete convolutions
run as one ``F.conv{1,2,3}d``, against the registered gather backend on the same plan
(outputs and both gradients), and the plans that must not be taken for stencils."""

import pytest
import torch

from inrnet.field import Field, Lattice, PointSet
from inrnet.models import create_model
from inrnet.nn import gather
from inrnet.nn._stencil import stencil_of
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.gather import atom_conv
from inrnet.sampling import sobol

D64 = torch.float64


def _plan(layer, points, queries=None):
    queries = layer.output_points(points) if queries is None else queries
    return layer.gather_plan(points, queries), queries


def _both_routes(layer, values, plan):
    """Outputs and gradients (values, atoms) through the stencil and through the gather backend."""
    out = []
    for backend in ("auto", "embedding_bag"):
        x = values.detach().clone().requires_grad_(True)
        atoms = layer.atoms().detach().clone().requires_grad_(True)
        y = atom_conv(x, plan, atoms, layer.groups, backend=backend)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        gx, ga = torch.autograd.grad(y, (x, atoms), dy)
        out.append((y, gx, ga))
    return out


@pytest.mark.parametrize("shape,k,stride,padding,groups,extent,degree", [
    ((12, 10), 3, 1, "zeros", 1, "taps", 1), ((12, 10), 3, 2, "zeros", 1, "taps", 1),
    ((9, 11), 3, 2, "zeros", 1, "basis", 1), ((8, 8), 4, 1, "zeros", 2, "taps", 1),
    ((9, 8), 4, 2, "none", 1, "taps", 1), ((10, 9), 5, 3, "none", 1, "taps", 2),
    ((8, 8), 3, 1, "zeros", 4, "taps", 3), ((7, 9), (3, 5), (1, 2), "zeros", 1, "taps", 0),
    ((16,), 3, 2, "zeros", 1, "taps", 1), ((5, 6, 4), 3, 1, "zeros", 1, "taps", 1),
])
@pytest.mark.parametrize("estimator", ["sum", "mean", "tap_mean"])
@pytest.mark.parametrize("dtype", [D64, torch.float32])
def test_stencil_route_matches_the_gather_backend(shape, k, stride, padding, groups, extent, degree, dtype, estimator):
    """On a lattice the ratio estimator's edge rows are the plain ones where the support is the
    taps' box (its plans are stencils too), not where it covers whole basis functions (the
    support's fraction inside the domain then differs from the lattice's share of it). The
    per-tap mean estimator (``tap_mean``)'s plans are stencils for degree <= 1, where each tap's basis function
    holds one lattice point; for higher degrees the taps at the border renormalise (unless
    ``padding="none"`` keeps the supports off the border)."""
    points = PointSet.grid(shape, dtype=dtype)
    spacing = tuple(2 / s for s in shape)
    layer = BSplineConv(4, 8, k, spacing, stride=stride, padding=padding, groups=groups, degree=degree,
                        support_extent=extent, estimator=estimator).to(dtype)
    plan, queries = _plan(layer, points)
    if estimator == "mean" and extent == "basis":
        assert plan.stencil is None
        return
    if estimator == "tap_mean" and degree > 1 and padding != "none":
        assert plan.stencil is None
        return
    assert plan.stencil is not None
    assert plan.stencil.out_shape == queries.lattice.shape
    values = torch.randn(3, points.n, 4, dtype=dtype)
    (y, gx, ga), (y_ref, gx_ref, ga_ref) = _both_routes(layer, values, plan)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == D64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    torch.testing.assert_close(ga, ga_ref, **tol)


def test_a_kernel_off_the_lattice_spacing_is_still_a_stencil():
    """Taps 1/6 apart on a lattice 1/5 apart along one axis: every entry is a fractional
    basis value, still the same at every output (float32 coordinates, rounding tolerated)."""
    points = PointSet.grid((12, 10))
    layer = BSplineConv(3, 5, 3, 2 / 12)
    plan, _ = _plan(layer, points)
    assert plan.stencil is not None
    (y, gx, ga), (y_ref, gx_ref, ga_ref) = _both_routes(layer, torch.randn(2, 120, 3), plan)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(padding="reflect"), dict(padding="symmetric")])
def test_plans_that_are_not_translation_invariant_keep_the_gather(kwargs):
    points = PointSet.grid((9, 8), dtype=D64)
    layer = BSplineConv(2, 3, 3, (2 / 9, 2 / 8), **kwargs).double()
    plan, _ = _plan(layer, points)
    assert plan.stencil is None


def test_scattered_points_and_queries_off_the_lattice_have_no_stencil():
    layer = BSplineConv(2, 3, 3, 0.2).double()
    scattered = PointSet(sobol(64, 2, seed=0, dtype=D64))
    assert _plan(layer, scattered)[0].stencil is None
    grid = PointSet.grid((8, 8), dtype=D64)
    shifted = PointSet(Lattice((-0.8, -0.8), (0.25, 0.25), (7, 7)).coords(D64))  # half a cell off the grid
    assert shifted.lattice is not None
    assert _plan(layer, grid, shifted)[0].stencil is None


def test_stencil_of_refuses_a_missing_or_altered_entry():
    points = PointSet.grid((6, 6), dtype=D64)
    layer = BSplineConv(1, 1, 3, 2 / 6).double()
    queries = layer.output_points(points)
    nbrs = layer._neighbors(points, queries)
    index, value = layer.expand(nbrs.offset.double())
    weight = layer._pair_weight(points, queries, nbrs).double()
    row = nbrs.row.repeat_interleave(index.shape[1])
    col = nbrs.col.repeat_interleave(index.shape[1])
    atom, val = index.reshape(-1), (value * weight[:, None]).reshape(-1)
    keep = val != 0
    row, col, atom, val = row[keep], col[keep], atom[keep], val[keep]
    lat = (points.lattice, queries.lattice)
    assert stencil_of(row, col, atom, val, layer.num_atoms, *lat, D64) is not None
    assert stencil_of(row[1:], col[1:], atom[1:], val[1:], layer.num_atoms, *lat, D64) is None  # one missing
    altered = val.clone()
    altered[val.argmax()] *= 1.01
    assert stencil_of(row, col, atom, altered, layer.num_atoms, *lat, D64) is None
    twice = torch.cat([row, row[:1]]), torch.cat([col, col[:1]]), torch.cat([atom, atom[:1]]), torch.cat([val, val[:1]])
    assert stencil_of(*twice, layer.num_atoms, *lat, D64) is None  # one entry repeated


@pytest.mark.parametrize("points", ["grid", "sobol"])
def test_a_lattice_latent_classifier_is_the_same_through_either_route(points, monkeypatch):
    """The shipped recipe's model: on the grid every conv is a stencil, on Sobol points all but
    the first (whose outputs are the latent lattice); logits and gradients agree."""
    torch.manual_seed(0)
    model = create_model("inrnet4", in_channels=1, num_classes=10, latent="lattice", support_extent="basis")
    model.eval()
    pts = PointSet.grid((28, 28)) if points == "grid" else PointSet(sobol(784, 2, seed=3))
    x = torch.randn(4, 784, 1)
    outs = []
    for on in (True, False):
        monkeypatch.setattr(gather, "STENCIL", on)
        model.zero_grad()
        logits = model(Field(x, pts))
        logits.square().sum().backward()
        outs.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
