"""The shared conv base: atom path vs per-pair path, the mean estimator, gradcheck, cached
neighbours, input checks, dtypes, and the paddings (zeros, torch's reflect, numpy's symmetric)."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _conv_helpers import D64, torch_conv, twin

from inrnet.field import Field, PointSet
from inrnet.neighbors import Support, neighbors
from inrnet.nn.bspline_conv import BSplineConv
from inrnet.nn.conv import conv_pairs, support_fraction
from inrnet.nn.learned_conv import LegendreConv, MLPConv
from inrnet.sampling import sobol
from inrnet.testing import grid_field


def test_per_pair_path_matches_atom_path():
    pts = PointSet(sobol(200, 2, seed=3, dtype=D64))
    field = Field(torch.randn(3, 200, 6, dtype=D64), pts)
    for layer in [BSplineConv(6, 4, 3, 0.1, groups=2).double(), MLPConv(6, 4, 0.2, n_bins=32).double(),
                  LegendreConv(6, 6, 0.2, groups=6, estimator="mean").double()]:
        out = layer(field)
        nb = neighbors(pts, out.points, layer.support)
        ref = conv_pairs(field.values, nb, layer._pair_weight(pts, out.points, nb), layer.pair_kernel(nb.offset),
                         layer.groups) + layer.bias
        torch.testing.assert_close(out.values, ref, rtol=1e-12, atol=1e-12)


def test_mean_estimator_integrates_constants_exactly():
    pts = PointSet(sobol(500, 2, seed=4, dtype=D64))
    ones = Field(torch.ones(1, 500, 1, dtype=D64), pts)
    layer = LegendreConv(1, 1, 0.3, degree=0, bias=False, estimator="mean").double()
    frac = support_fraction(pts, pts.bounds, layer.support)
    expected = layer.weight.detach()[0, 0, 0] * frac  # P_0 = 1: K is constant, W / |S|
    torch.testing.assert_close(layer(ones).values[0, :, 0], expected)


@pytest.mark.parametrize("make", [
    lambda: BSplineConv(2, 3, 3, 0.4, degree=2, groups=1),
    lambda: MLPConv(2, 2, 0.5, hidden=(4,), groups=2),
    lambda: MLPConv(2, 3, 0.5, hidden=(4,), n_bins=8),
    lambda: LegendreConv(2, 3, 0.5, degree=2, padding="symmetric"),
])
def test_gradcheck(make):
    layer = make().double()
    pts = PointSet(sobol(24, 2, seed=5, dtype=D64))
    v = torch.randn(2, 24, 2, dtype=D64, requires_grad=True)
    params = [p for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda v, *ps: layer(Field(v, pts)).values, (v, *params))


def test_neighbours_and_plan_are_built_once():
    pts = PointSet(sobol(256, 2, seed=0))
    layer = BSplineConv(2, 2, 3, 0.1)
    field = Field(torch.randn(1, 256, 2), pts)
    layer(field)
    keys = set(pts._cache)
    other = BSplineConv(2, 5, 3, 0.1)
    other(field)
    layer(field)
    assert set(pts._cache) == keys


def test_bad_inputs():
    layer = BSplineConv(3, 4, 3, 0.1)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        layer(Field(torch.randn(1, 16, 2), PointSet(sobol(16, 2, seed=0))))
    with pytest.raises(ValueError, match="dimension 3"):
        layer(Field(torch.randn(1, 16, 3), PointSet(sobol(16, 3, seed=0))))
    with pytest.raises(ValueError, match="multiples of groups"):
        BSplineConv(3, 4, 3, 0.1, groups=2)
    with pytest.raises(ValueError, match="padding"):
        BSplineConv(3, 4, 3, 0.1, padding="circular")
    with pytest.raises(ValueError, match="spacing needs 3 entries"):
        BSplineConv(3, 4, (3, 3, 3), (0.1, 0.1))
    with pytest.raises(ValueError, match="wider than the domain"):
        BSplineConv(1, 1, 5, 1.0, padding="none")(Field(torch.randn(1, 16, 1), PointSet(sobol(16, 2, seed=0))))


CONVS = {
    "bspline": lambda: BSplineConv(2, 3, 3, 0.5),
    "mlp-exact": lambda: MLPConv(2, 3, 0.5),
    "mlp-binned": lambda: MLPConv(2, 3, 0.5, n_bins=16),
    "legendre": lambda: LegendreConv(2, 3, 0.5),
}


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
def test_convs_name_themselves_for_non_float_values_and_other_devices(make):
    layer, points = make(), PointSet.grid((4, 4))
    name = type(layer).__name__
    for dtype in (torch.long, torch.complex64):
        with pytest.raises(TypeError, match=f"^{name} needs floating-point values, got a field of {dtype}"):
            layer(Field(torch.ones(1, 16, 2, dtype=dtype), points))
    with pytest.raises(TypeError, match=f"^{name} expects a Field, got Tensor"):
        layer(torch.ones(1, 16, 2))
    with pytest.raises(ValueError, match=f"^{name} is on meta but the field's values are on cpu"):
        layer.to("meta")(Field(torch.ones(1, 16, 2), points))


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
def test_convs_compute_in_the_dtype_of_the_values(make):
    """A float32 layer on float64 values equals its float64 copy (kernels are cast to the values' dtype)."""
    layer = make()
    field = Field(torch.randn(2, 64, 2, dtype=D64), PointSet(sobol(64, 2, seed=1).double()))
    torch.testing.assert_close(layer(field).values, layer.double()(field).values, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Mirrored paddings: "reflect" is torch's, "symmetric" is numpy's
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k,stride", [
    ((7, 6), 3, 1), ((8, 9), 5, 1), ((9, 8), 3, 2), ((10, 7), 5, 2), ((2, 5), 3, 1), ((13,), 3, 1), ((12,), 5, 2),
    ((5, 6, 4), 3, 1),
])
def test_reflect_padding_is_torchs_reflect(shape, k, stride):
    x = torch.randn(2, 3, *shape, dtype=D64)
    layer = BSplineConv(3, 4, k, tuple(2 / s for s in shape), stride=stride, padding="reflect").double()
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(shape)](
        3, 4, k, stride=stride, padding=k // 2, padding_mode="reflect").double()
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    out = layer(grid_field(x))
    ref = conv(x)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)
    assert out.points.lattice.shape == tuple(ref.shape[2:])


@pytest.mark.parametrize("shape,k,padding", [((8, 8), 4, "reflect"), ((7, 9), 2, "reflect"), ((9, 6), 4, "symmetric")])
def test_mirrored_padding_of_even_kernels(shape, k, padding):
    """Even kernels pad (k - 1) // 2 before and k // 2 after, as torch's 'same'."""
    out, ref = twin(shape, k, 1, padding, 1)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,k,stride", [((7, 6), 3, 1), ((8, 9), 5, 1), ((9, 8), 5, 2), ((2, 6), 5, 1)])
def test_symmetric_padding_is_numpys_symmetric(shape, k, stride):
    """Reference: np.pad(mode='symmetric') (the edge pixel repeated), then an unpadded conv."""
    x = torch.randn(2, 3, *shape, dtype=D64)
    layer = BSplineConv(3, 4, k, tuple(2 / s for s in shape), stride=stride, padding="symmetric").double()
    padded = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0)] + [(k // 2, k // 2)] * 2, mode="symmetric"))
    ref = F.conv2d(padded, layer.weight, layer.bias, stride=stride)
    torch.testing.assert_close(layer(grid_field(x)).values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", ["reflect", "symmetric"])
@pytest.mark.parametrize("shape", [(8, 9), (9, 8)])
def test_mirrored_padding_after_a_stride_mirrors_the_strided_feature_map(padding, shape):
    """On an even axis the strided lattice ends a pixel short of the domain: the mirrors are
    its own (its outermost pixel centres, its cells' faces), as torch's on the strided tensor."""
    x = torch.randn(2, 2, *shape, dtype=D64)
    first = BSplineConv(2, 3, 3, tuple(2 / s for s in shape), stride=2).double()
    second = BSplineConv(3, 2, 3, tuple(4 / s for s in shape), padding=padding).double()
    with torch.no_grad():
        out = second(first(grid_field(x)))
        mid = torch_conv(x, first.weight, first.bias, 2, "zeros", 1)
        ref = torch_conv(mid, second.weight, second.bias, 1, padding, 1)
    torch.testing.assert_close(out.values, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)


def _mirrored_conv_reference(layer, field, inset):
    """``g(q) = sum_j w_j sum_y K(y - q) f_j`` over ``x_j`` itself and its mirror images ``y``
    about the planes ``inset`` inside the domain's faces that land outside the domain, by loops."""
    points = field.points
    queries = layer.output_points(points)
    lo = [b[0] for b in points.bounds]
    hi = [b[1] for b in points.bounds]
    d = points.dim
    out = torch.zeros(field.batch_size, queries.n, layer.out_channels, dtype=D64)
    for j, x in enumerate(points.coords.double().tolist()):
        images = []
        for sides in itertools.product((0, -1, 1), repeat=d):
            y, outside = list(x), True
            for k, s in enumerate(sides):
                if s == -1:
                    y[k] = 2 * (lo[k] + inset[k]) - x[k]
                    outside = outside and y[k] < lo[k]
                elif s == 1:
                    y[k] = 2 * (hi[k] - inset[k]) - x[k]
                    outside = outside and y[k] > hi[k]
            if outside:
                images.append(y)
        offsets = (torch.tensor(images, dtype=D64)[None] - queries.coords.double()[:, None]).reshape(-1, d)  # (M*I, d)
        rows = torch.arange(queries.n).repeat_interleave(len(images))
        inside = layer.support.contains(offsets)
        kernel = layer.pair_kernel(offsets[inside])  # (E, C_in, C_out)
        msg = torch.einsum("bc,eco->beo", field.values[:, j].double(), kernel) * points.weights[j].double()
        out.index_add_(1, rows[inside], msg)
    return out + layer.bias.double()


@pytest.mark.parametrize("padding,inset", [("reflect", (0.125, 0.1)), ("symmetric", (0.0, 0.0))])
def test_mirrored_padding_on_scattered_points_matches_a_loop_reference(padding, inset):
    """On scattered points 'reflect' mirrors about the planes half a tap spacing inside the
    faces: f(lo - t) = f(lo + h + t); 'symmetric' across the faces: f(lo - t) = f(lo + t)."""
    points = PointSet(sobol(96, 2, seed=3, dtype=D64))
    field = Field(torch.randn(2, 96, 2, dtype=D64), points)
    layer = BSplineConv(2, 3, 3, (0.25, 0.2), padding=padding).double()
    torch.testing.assert_close(layer(field).values, _mirrored_conv_reference(layer, field, inset),
                               rtol=1e-10, atol=1e-10)


def test_mirrored_paddings_fill_the_support_like_torch():
    """A constant stays constant under either mirror, also at the faces and corners."""
    for padding in ("reflect", "symmetric"):
        layer = BSplineConv(1, 1, 3, 0.25, padding=padding, bias=False).double()
        out = layer(grid_field(torch.ones(1, 1, 8, 8, dtype=D64))).values
        torch.testing.assert_close(out, torch.full_like(out, float(layer.weight.detach().sum())), rtol=1e-12, atol=1e-12)


def test_reflect_needs_taps_and_at_most_n_minus_1_padding():
    for make in (lambda: MLPConv(2, 2, 0.5, padding="reflect"), lambda: LegendreConv(2, 2, 0.5, padding="reflect")):
        with pytest.raises(ValueError, match="use padding='symmetric'"):
            make()
    # torch reflects by at most n - 1 pixels: a 5-tap filter (2 per side) needs 3 pixels
    x = torch.randn(1, 1, 2, 6, dtype=D64)
    with pytest.raises(RuntimeError):
        F.pad(x, (2, 2, 2, 2), mode="reflect")
    with pytest.raises(ValueError, match="along axis 0.*second one would add"):
        BSplineConv(1, 1, 5, (1.0, 1 / 3), padding="reflect").double()(grid_field(x))
    with pytest.raises(ValueError, match="one pixel"):
        BSplineConv(1, 1, 3, (2.0, 1 / 3), padding="reflect").double()(grid_field(torch.randn(1, 1, 1, 6)))
    with pytest.raises(ValueError, match="padding must be one of"):
        BSplineConv(1, 1, 3, 0.5, padding="replicate")


def test_paddings_on_the_same_points_keep_their_own_neighbours():
    """The cached neighbours and plans are per mirror: each padding stays its torch/numpy twin."""
    x = torch.randn(1, 2, 7, 8, dtype=D64)
    field = grid_field(x)
    for padding in ("reflect", "symmetric", "zeros", "reflect"):
        layer = BSplineConv(2, 3, 3, (2 / 7, 2 / 8), padding=padding).double()
        with torch.no_grad():
            out, ref = layer(field).values, torch_conv(x, layer.weight, layer.bias, 1, padding, 1)
        torch.testing.assert_close(out, ref.flatten(2).transpose(1, 2), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="mirror inset must be 2 non-negative"):
        neighbors(field.points, field.points, Support(0.1), reflect=True, inset=(0.1,))


# --- the tap_mean estimator: the filter applied to the field interpolated at its taps -----------

def _tap_mean_reference(layer: BSplineConv, field: Field, queries: PointSet) -> torch.Tensor:
    """A double loop: for each query and tap, the points' ``phi_a``-weighted mean of the field
    (0 without points, or for a tap outside the domain), times the tap's filter weight."""
    pts = field.points
    offsets, mass = layer.atom_taps()
    atoms = layer.atoms().detach()  # (A, C_in, C_out)
    lo = torch.tensor([b[0] for b in pts.bounds], dtype=D64)
    hi = torch.tensor([b[1] for b in pts.bounds], dtype=D64)
    out = torch.zeros(field.values.shape[0], queries.n, layer.out_channels, dtype=D64)
    for m, q in enumerate(queries.coords.double()):
        index, value = layer.expand(pts.coords.double() - q)  # (N, P): every point against this query
        for a in range(layer.num_atoms):
            tap = q + offsets[a]
            phi = (value * (index == a)).sum(1) * layer.support.contains(pts.coords.double() - q, 1e-12)  # (N,)
            w = phi * pts.weights.double()
            if w.sum() <= 0 or not bool(((tap >= lo - 1e-12) & (tap <= hi + 1e-12)).all()):
                continue
            mean = (w[None, :, None] * field.values).sum(1) / w.sum()  # (B, C_in)
            out[:, m] += mass[a] * mean @ atoms[a]
    return out + layer.bias.detach()


SCATTERED_KWS = [dict(kernel_size=3), dict(kernel_size=3, support_extent="basis"), dict(kernel_size=(3, 2), stride=2),
                 dict(kernel_size=3, degree=2)]
"""The per-tap estimators' layers checked against their loops on scattered points."""


def _on_scattered_points(estimator: str, kw: dict) -> tuple[BSplineConv, Field, Field]:
    """A 3 -> 4 B-spline conv (spacing 0.15, ``kw``) with ``estimator`` on 300 Sobol points: the
    layer, its input field and its output."""
    torch.manual_seed(0)
    field = Field(torch.randn(2, 300, 3, dtype=D64), PointSet(sobol(300, 2, seed=7, dtype=D64)))
    layer = BSplineConv(3, 4, spacing=0.15, estimator=estimator, **kw).double()
    return layer, field, layer(field)


@pytest.mark.parametrize("kw", SCATTERED_KWS)
def test_tap_mean_estimator_matches_its_double_loop_on_scattered_points(kw):
    layer, field, out = _on_scattered_points("tap_mean", kw)
    torch.testing.assert_close(out.values, _tap_mean_reference(layer, field, out.points), rtol=1e-10, atol=1e-10)


def test_tap_mean_estimator_interpolates_constants_exactly_where_sum_is_noisy():
    pts = PointSet(sobol(4096, 2, seed=1, dtype=D64))
    ones = Field(torch.ones(1, 4096, 1, dtype=D64), pts)
    q = PointSet.grid((64, 64), dtype=D64)
    tapped = BSplineConv(1, 1, 3, 2 / 64, estimator="tap_mean", bias=False).double()
    plain = BSplineConv(1, 1, 3, 2 / 64, bias=False).double()
    plain.load_state_dict(tapped.state_dict())
    inner = (slice(None), slice(2, -2), slice(2, -2))
    r = tapped(ones, query=q).values.reshape(1, 64, 64)[inner]
    s = plain(ones, query=q).values.reshape(1, 64, 64)[inner]
    torch.testing.assert_close(r, torch.full_like(r, float(tapped.weight.detach().sum())), rtol=1e-12, atol=1e-12)
    assert float(s.std()) > 0.1 * abs(float(tapped.weight.detach().sum()))  # the count noise tap_mean removes


@pytest.mark.parametrize("kw", [dict(), dict(support_extent="basis"), dict(stride=2), dict(padding="symmetric"),
                                dict(padding="reflect"), dict(padding="none"), dict(kernel_size=5, degree=1),
                                dict(kernel_size=2, degree=0)])
@pytest.mark.parametrize("estimator", ["tap_mean", "tap_linear", "tap_quadratic", "tap_spline"])
def test_tap_mean_estimator_is_the_discrete_filter_on_its_grid(kw, estimator):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 10, dtype=D64)
    kw = {"kernel_size": 3, **kw}
    plain = BSplineConv(3, 4, spacing=(2 / 12, 2 / 10), **kw).double()
    tapped = BSplineConv(3, 4, spacing=(2 / 12, 2 / 10), estimator=estimator, **kw).double()
    tapped.load_state_dict(plain.state_dict())
    torch.testing.assert_close(tapped(grid_field(x)).values, plain(grid_field(x)).values, rtol=1e-12, atol=1e-12)


# --- tap_linear / tap_quadratic: a weighted least-squares polynomial at each tap -------------------

def _monomials(r: torch.Tensor, degree: int) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """The non-constant monomials of 2-d offsets ``r`` [n, 2] up to ``degree``, and their axes."""
    axes = [(0,), (1,)] + ([(0, 0), (0, 1), (1, 1)] if degree == 2 else [])
    return torch.stack([r[:, list(a)].prod(1) for a in axes], 1), axes


def _tap_fit_reference(layer: BSplineConv, field: Field, queries: PointSet, degree: int, ridge: float) -> torch.Tensor:
    """A double loop: for each query and tap, the ``phi_a``-weighted least-squares polynomial
    ``alpha + sum_k g_k m_k(x - tap)`` through the points (each coefficient with the ridge
    ``ridge * sum(phi_a w) * prod of its axes' spacing^2``, as extra rows of the design), solved
    with ``torch.linalg.lstsq``; ``alpha`` times the tap's filter weight."""
    pts = field.points
    offsets, mass = layer.atom_taps()
    atoms = layer.atoms().detach()  # (A, C_in, C_out)
    h = layer.spacing
    lo = torch.tensor([b[0] for b in pts.bounds], dtype=D64)
    hi = torch.tensor([b[1] for b in pts.bounds], dtype=D64)
    out = torch.zeros(field.values.shape[0], queries.n, layer.out_channels, dtype=D64)
    for m, q in enumerate(queries.coords.double()):
        index, value = layer.expand(pts.coords.double() - q)  # (N, P)
        for a in range(layer.num_atoms):
            tap = q + offsets[a]
            phi = (value * (index == a)).sum(1) * layer.support.contains(pts.coords.double() - q, 1e-12)
            w = phi * pts.weights.double()
            keep = w > 0
            if not bool(keep.any()) or not bool(((tap >= lo - 1e-12) & (tap <= hi + 1e-12)).all()):
                continue
            sw = w[keep].sqrt()
            feats, axes = _monomials(pts.coords.double()[keep] - tap, degree)  # (n, k)
            design = torch.cat([torch.ones(len(feats), 1, dtype=D64), feats], 1) * sw[:, None]  # (n, 1 + k)
            scale = torch.tensor([float(np.prod([h[i] ** 2 for i in ax])) for ax in axes], dtype=D64)
            penalty = torch.cat([torch.zeros(len(axes), 1, dtype=D64), torch.diag((ridge * w.sum() * scale).sqrt())], 1)
            for b in range(field.values.shape[0]):
                rhs = torch.cat([field.values[b, keep] * sw[:, None],
                                 torch.zeros(len(axes), field.values.shape[2], dtype=D64)])
                coef = torch.linalg.lstsq(torch.cat([design, penalty]), rhs).solution  # (1 + k, C_in)
                out[b, m] += mass[a] * coef[0] @ atoms[a]
    return out + layer.bias.detach()


@pytest.mark.parametrize("estimator", ["tap_linear", "tap_quadratic"])
@pytest.mark.parametrize("kw", SCATTERED_KWS)
def test_tap_fit_estimators_match_their_double_loop_on_scattered_points(kw, estimator):
    from inrnet.nn.conv import TAP_ESTIMATORS, TAP_FIT_RIDGE
    layer, field, out = _on_scattered_points(estimator, kw)
    degree = TAP_ESTIMATORS[estimator]
    ref = _tap_fit_reference(layer, field, out.points, degree, TAP_FIT_RIDGE[degree])
    torch.testing.assert_close(out.values, ref, rtol=1e-9, atol=1e-9)
    mean = BSplineConv(3, 4, spacing=0.15, estimator="tap_mean", **kw).double()
    mean.load_state_dict(layer.state_dict())
    assert not torch.allclose(mean(Field(field.values, PointSet(field.points.coords))).values, out.values, atol=1e-3)


@pytest.mark.parametrize("estimator, degree, n", [("tap_linear", 1, 4096), ("tap_quadratic", 2, 16384)])
def test_tap_fit_estimators_reproduce_their_polynomials_where_tap_mean_blurs_them(monkeypatch, estimator, degree, n):
    # a plane needs 3 points per tap's basis function, a quadratic 6: it holds about 4 and 16 here
    monkeypatch.setattr("inrnet.nn.conv.TAP_FIT_RIDGE", {1: 1e-12, 2: 1e-12})

    def poly(x):
        return 0.3 + 1.5 * x[:, 0] - 2.0 * x[:, 1] + (degree == 2) * (4 * x[:, 0] ** 2 - 3 * x[:, 0] * x[:, 1])

    pts = PointSet(sobol(n, 2, seed=1, dtype=D64))
    q = PointSet.grid((64, 64), dtype=D64)
    exact = poly(q.coords.double()).reshape(64, 64)
    inner = (slice(2, -2), slice(2, -2))
    errors = {}
    for est in (estimator, "tap_mean"):
        conv = BSplineConv(1, 1, 3, 2 / 64, estimator=est, bias=False).double()
        with torch.no_grad():  # the identity filter: the output is the estimate of the field at the query
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
        values = poly(pts.coords.double())[None, :, None]  # (1, N, 1)
        errors[est] = (conv(Field(values, PointSet(pts.coords)), query=q).values.reshape(64, 64) - exact)[inner]
    # a tap whose basis function holds enough points in general position is fitted exactly; with
    # fewer (a line's worth, one) the polynomial is fitted where they determine it, so look at the typical tap
    assert float(errors[estimator].abs().quantile(0.75)) < 1e-7
    assert float(errors["tap_mean"].abs().quantile(0.5)) > 1e-3  # the off-centre mean of a sloped field


# --- the tap-lattice route: per-tap means on the tap lattice, then the discrete filter --------------

def _direct_and_routed(layer, values, points, queries, monkeypatch):
    """The layer's output and input/weight gradients with its direct plan and by the route."""
    out = {}
    for route in (False, True):
        monkeypatch.setattr("inrnet.nn.conv.TAP_LATTICE", route)
        x = values.clone().requires_grad_(True)
        layer.zero_grad()
        y = layer(Field(x, PointSet(points.coords, bounds=points.bounds)), query=queries).values
        (y * torch.linspace(-1, 1, y.numel(), dtype=D64).view_as(y)).sum().backward()
        out[route] = (y.detach(), x.grad, layer.weight.grad.clone())
    return out


@pytest.mark.parametrize("kw", [dict(stride=2), dict(stride=1), dict(stride=(2, 1), groups=3),
                                dict(stride=2, kernel_size=(3, 1)), dict(stride=1, kernel_size=2)])
def test_tap_lattice_route_is_the_direct_plan(kw, monkeypatch):
    torch.manual_seed(0)
    kw = {"kernel_size": 3, **kw}
    layer = BSplineConv(3, 6, spacing=2 / 20, estimator="tap_mean", support_extent="basis", **kw).double()
    points = PointSet(sobol(300, 2, seed=4, dtype=D64))
    queries = PointSet.grid((20, 20), dtype=D64).downsample(kw["stride"])
    assert layer.tap_lattice(points, queries).lattice.shape == (20, 20)
    out = _direct_and_routed(layer, torch.randn(2, 300, 3, dtype=D64), points, queries, monkeypatch)
    for direct, routed in zip(out[False], out[True]):
        torch.testing.assert_close(routed, direct, rtol=1e-10, atol=1e-12)


def test_tap_lattice_route_on_another_box(monkeypatch):
    from inrnet.field import Lattice
    torch.manual_seed(1)
    bounds = [(0.0, 1.0), (-2.0, 1.0)]
    coords = sobol(400, 2, seed=2, dtype=D64) * 0.5 + 0.5
    coords[:, 1] = coords[:, 1] * 3 - 2  # in the box
    points = PointSet(coords, bounds=bounds)
    lat = Lattice((0.05, -1.95), (0.1, 0.1), (10, 30))  # cell centres of the 0.1 grid of the box
    queries = PointSet(lat.coords(D64), lattice=lat, bounds=bounds)
    layer = BSplineConv(2, 3, 3, 0.1, estimator="tap_mean", support_extent="basis").double()
    assert layer.tap_lattice(points, queries) is not None
    out = _direct_and_routed(layer, torch.randn(1, 400, 2, dtype=D64), points, queries, monkeypatch)
    for direct, routed in zip(out[False], out[True]):
        torch.testing.assert_close(routed, direct, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["inrnet2", "inrnet4"])
def test_the_shipped_classifier_recipe_takes_the_tap_lattice_route(name, monkeypatch):
    """The first conv of the lattice recipe (the shipped classifier's) runs through its tap
    lattice, the base grid, and the whole network is the same with the route off."""
    from inrnet.models import create_model
    model = create_model(name, in_channels=1, num_classes=10, latent="lattice", support_extent="basis",
                         estimator="tap_mean").double().eval()
    points = PointSet(sobol(784, 2, seed=5, dtype=D64))
    first = next(m for m in model.modules() if isinstance(m, BSplineConv))
    assert first.tap_lattice(points, model.latent_points(points)).lattice.shape == (28, 28)
    x = torch.randn(3, 784, 1, dtype=D64)
    routed = model(Field(x, points))
    monkeypatch.setattr("inrnet.nn.conv.TAP_LATTICE", False)
    torch.testing.assert_close(routed, model(Field(x, PointSet(points.coords))), rtol=1e-10, atol=1e-12)


def test_tap_lattice_route_only_where_the_layer_factorises():
    points = PointSet(sobol(300, 2, seed=4, dtype=D64))
    grid = PointSet.grid((20, 20), dtype=D64)
    make = lambda **kw: BSplineConv(1, 1, **{"kernel_size": 3, "spacing": 0.1, "estimator": "tap_mean",  # noqa: E731
                                             "support_extent": "basis", **kw}).double()
    assert make().tap_lattice(points, grid) is not None
    assert make(support_extent="taps").tap_lattice(points, grid) is None  # the edge hats are cut by the support
    assert make(padding="symmetric").tap_lattice(points, grid) is None
    assert make(estimator="tap_quadratic").tap_lattice(points, grid) is None
    assert make(kernel_size=5, degree=2).tap_lattice(points, grid) is None  # not hats
    assert make().tap_lattice(points, PointSet.grid((19, 19), dtype=D64)) is None  # taps off the cell centres
    assert make(spacing=0.15).tap_lattice(points, grid) is None  # the box is no whole number of taps
    assert make().tap_lattice(grid, grid) is None  # on a lattice the direct plan is the stencil
    assert make().tap_lattice(points, PointSet(sobol(50, 2, seed=1, dtype=D64))) is None
    assert MLPConv(1, 1, 0.3).tap_lattice(points, grid) is None


# --- tap_spline: a local cubic spline through each tap's nearest points ----------------------------

def _tap_spline_reference(layer: BSplineConv, field: Field, queries: PointSet) -> torch.Tensor:
    """scipy's local RBF interpolant (``kernel="cubic"``, ``degree=1``, the tap's
    ``TAP_SPLINE_NEIGHBORS`` nearest points) at every query's taps, a tap outside the domain
    reading 0 (zero padding) or the field at its mirror image (symmetric padding), times the
    tap's filter weight: a loop over queries and taps."""
    from scipy.interpolate import RBFInterpolator

    from inrnet.nn.conv import TAP_SPLINE_NEIGHBORS
    pts = field.points
    offsets, mass = layer.atom_taps()
    atoms = layer.atoms().detach()  # (A, C_in, C_out)
    lo = torch.tensor([b[0] for b in pts.bounds], dtype=D64)
    hi = torch.tensor([b[1] for b in pts.bounds], dtype=D64)
    b, n, c = field.values.shape
    spline = RBFInterpolator(pts.coords.double().numpy(), field.values.permute(1, 0, 2).reshape(n, b * c).numpy(),
                             neighbors=TAP_SPLINE_NEIGHBORS, kernel="cubic", degree=1)
    out = torch.zeros(b, queries.n, layer.out_channels, dtype=D64)
    for m, q in enumerate(queries.coords.double()):
        for a in range(layer.num_atoms):
            tap = q + offsets[a]
            if layer.padding == "symmetric":
                tap = torch.where(tap < lo, 2 * lo - tap, torch.where(tap > hi, 2 * hi - tap, tap))
            elif not bool(((tap >= lo - 1e-12) & (tap <= hi + 1e-12)).all()):
                continue
            value = torch.from_numpy(spline(tap[None].numpy())).reshape(b, c)  # (B, C_in)
            out[:, m] += mass[a] * value @ atoms[a]
    return out + layer.bias.detach()


@pytest.mark.parametrize("kw", [*SCATTERED_KWS, dict(kernel_size=3, padding="symmetric")])
def test_tap_spline_estimator_matches_scipy_at_every_tap_on_scattered_points(kw):
    layer, field, out = _on_scattered_points("tap_spline", kw)
    torch.testing.assert_close(out.values, _tap_spline_reference(layer, field, out.points), rtol=1e-9, atol=1e-9)


def test_tap_spline_estimator_reproduces_planes_and_beats_the_quadratic_on_a_smooth_field():
    pts = PointSet(sobol(4096, 2, seed=1, dtype=D64))
    q = PointSet.grid((64, 64), dtype=D64)
    fields = {"plane": lambda x: 0.3 + 1.5 * x[:, 0] - 2.0 * x[:, 1],
              "wave": lambda x: torch.sin(9 * x[:, 0] + 2) * torch.cos(7 * x[:, 1])}
    errors = {}
    for name, f in fields.items():
        for est in ("tap_spline", "tap_quadratic"):
            conv = BSplineConv(1, 1, 3, 2 / 64, estimator=est, bias=False).double()
            with torch.no_grad():  # the identity filter: the output is the estimate of the field at the query
                conv.weight.zero_()
                conv.weight[0, 0, 1, 1] = 1.0
            out = conv(Field(f(pts.coords.double())[None, :, None], PointSet(pts.coords)), query=q).values
            errors[name, est] = (out.reshape(-1) - f(q.coords.double())).abs()
    assert float(errors["plane", "tap_spline"].max()) < 1e-10  # everywhere, edges included
    rms = {est: float(errors["wave", est].pow(2).mean().sqrt()) for est in ("tap_spline", "tap_quadratic")}
    assert rms["tap_spline"] < 0.5 * rms["tap_quadratic"], rms


def test_tap_spline_estimator_refuses_points_on_a_line():
    line = torch.stack([torch.linspace(-0.9, 0.9, 40, dtype=D64), torch.zeros(40, dtype=D64)], 1)
    conv = BSplineConv(1, 1, 3, 0.1, estimator="tap_spline").double()
    with pytest.raises(ValueError, match="tap_spline.*one hyperplane"):
        conv(Field(torch.randn(1, 40, 1, dtype=D64), PointSet(line)), query=PointSet(torch.zeros(1, 2, dtype=D64)))


def test_tap_mean_estimator_needs_taps():
    with pytest.raises(ValueError, match="no taps"):
        MLPConv(2, 2, 0.3, estimator="tap_mean")
    with pytest.raises(ValueError, match="no taps"):
        LegendreConv(2, 2, 0.3, estimator="tap_mean")
    with pytest.raises(ValueError, match="no taps"):
        MLPConv(2, 2, 0.3, estimator="tap_linear")
    with pytest.raises(ValueError, match="no taps"):
        LegendreConv(2, 2, 0.3, estimator="tap_quadratic")
    with pytest.raises(ValueError, match="no taps"):
        MLPConv(2, 2, 0.3, estimator="tap_spline")
