import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg

from inrnet.field import Field, PointSet
from inrnet.nn.parametric import (InnerProduct, LegendreFunction, MLPFunction, Modulate, inner_product, legendre_1d,
                                 legendre_basis, modulate, multi_indices)
from inrnet.sampling.points import sobol


def slow_basis(coords: np.ndarray, degree: int, bounds, total: bool = True) -> np.ndarray:
    """The orthonormal Legendre basis on a box, one numpy legval call per point, axis and degree."""
    d = coords.shape[1]
    idx = multi_indices(degree, d, total).tolist()
    vol = math.prod(hi - lo for lo, hi in bounds)
    out = np.zeros((coords.shape[0], len(idx)))
    for n, x in enumerate(coords):
        for a, degs in enumerate(idx):
            value = 1.0 / math.sqrt(vol)
            for k, m in enumerate(degs):
                lo, hi = bounds[k]
                t = (2 * x[k] - lo - hi) / (hi - lo)
                value *= math.sqrt(2 * m + 1) * npleg.legval(t, [0] * m + [1])
            out[n, a] = value
    return out


def gauss_points(n: int, bounds) -> PointSet:
    """A tensor-product Gauss-Legendre rule on a 2-d box: exact for polynomials of degree < 2n per axis."""
    t, w = npleg.leggauss(n)
    axes = [(lo + hi) / 2 + (hi - lo) / 2 * t for lo, hi in bounds]
    weights = [(hi - lo) / 2 * w for lo, hi in bounds]
    x0, x1 = np.meshgrid(*axes, indexing="ij")
    w2 = np.outer(*weights)
    return PointSet(torch.tensor(np.stack([x0.ravel(), x1.ravel()], -1)), torch.tensor(w2.ravel()), bounds=bounds)


def test_legendre_1d_matches_numpy():
    t = torch.linspace(-1, 1, 41, dtype=torch.float64)
    p = legendre_1d(t, 7)
    for n in range(8):
        expected = math.sqrt(2 * n + 1) * npleg.legval(t.numpy(), [0] * n + [1])
        np.testing.assert_allclose(p[:, n].numpy(), expected, rtol=1e-12, atol=1e-12)
    assert legendre_1d(t, 0).shape == (41, 1)


def test_multi_indices():
    tot = multi_indices(3, 2)
    assert len(tot) == math.comb(5, 2) and tot[0].tolist() == [0, 0] and int(tot.sum(1).max()) == 3
    assert (tot.sum(1)[1:] >= tot.sum(1)[:-1]).all()
    ten = multi_indices(2, 3, total=False)
    assert len(ten) == 27 and int(ten.max()) == 2
    assert multi_indices(1, 2).tolist() == [[0, 0], [0, 1], [1, 0]]


@pytest.mark.parametrize("total", [True, False])
def test_legendre_basis_matches_slow_reference(total):
    bounds = ((0.0, 2.0), (-1.0, 3.0))
    coords = torch.rand(30, 2, dtype=torch.float64) * torch.tensor([2.0, 4.0], dtype=torch.float64) \
        + torch.tensor([0.0, -1.0], dtype=torch.float64)
    fast = legendre_basis(coords, 3, bounds, total)
    np.testing.assert_allclose(fast.numpy(), slow_basis(coords.numpy(), 3, bounds, total), rtol=1e-12, atol=1e-12)


def test_legendre_basis_is_orthonormal_on_the_box():
    bounds = ((0.0, 2.0), (-1.0, 3.0))
    # Gauss-Legendre: exact for these polynomials
    pts = gauss_points(8, bounds)
    phi = legendre_basis(pts.coords, 4, bounds)
    gram = phi.T @ (phi * pts.weights[:, None])
    torch.testing.assert_close(gram, torch.eye(phi.shape[1], dtype=torch.float64), rtol=0, atol=1e-12)
    # a fine midpoint grid (error O(h^2)) and scrambled Sobol points (QMC error)
    for pts, tol in [(PointSet.grid((256, 256), dtype=torch.float64), 5e-4),
                     (PointSet(sobol(2 ** 14, 2, seed=3, dtype=torch.float64)), 1e-4)]:
        phi = legendre_basis(pts.coords, 3)
        gram = phi.T @ (phi * pts.weights[:, None])
        assert (gram - torch.eye(phi.shape[1], dtype=torch.float64)).abs().max() < tol


def test_legendre_function_evaluates_and_caches_its_basis():
    fn = LegendreFunction(4, degree=2, dim=2).double()
    points = PointSet(sobol(64, 2, seed=0, dtype=torch.float64))
    out = fn(points)
    assert out.shape == (64, 4)
    expected = torch.tensor(slow_basis(points.coords.numpy(), 2, ((-1, 1), (-1, 1)))) @ fn.coefficients.detach()
    torch.testing.assert_close(out.detach(), expected)
    assert fn.basis(points) is fn.basis(points)
    torch.testing.assert_close(fn(points.coords), out)
    with pytest.raises(ValueError, match="R\\^2"):
        fn(torch.rand(5, 3))


def test_inner_product_fast_path_matches_generic_and_loop_reference():
    torch.manual_seed(1)
    points = PointSet(sobol(32, 2, seed=1, dtype=torch.float64))
    values = torch.randn(2, 32, 3, dtype=torch.float64)
    fn = LegendreFunction(3 * 2, degree=2).double()
    fast = InnerProduct(fn, 3)(Field(values, points))
    g = fn(points).reshape(32, 3, 2)
    generic = inner_product(values, g, points.weights)
    slow = torch.zeros(2, 2, dtype=torch.float64)
    for b in range(2):
        for k in range(2):
            for i in range(3):
                for n in range(32):
                    slow[b, k] += points.weights[n] * values[b, n, i] * g[n, i, k]
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(generic, slow)


def test_inner_product_with_mlp_function_and_gradcheck():
    points = PointSet(torch.rand(6, 2, dtype=torch.float64) * 2 - 1)
    values = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    mlp = MLPFunction(2 * 3, dim=2, hidden=5, depth=2).double()
    layer = InnerProduct(mlp, 2)
    out = layer(Field(values, points))
    assert out.shape == (2, 3)
    g = mlp(points).reshape(6, 2, 3)
    torch.testing.assert_close(out, torch.einsum("n,bni,nik->bk", points.weights, values, g))
    leg = InnerProduct(LegendreFunction(2 * 3, 2).double(), 2)
    assert torch.autograd.gradcheck(lambda v, c: torch.einsum("bca,ack->bk", leg.function.moments(v, points),
                                                              c.reshape(-1, 2, 3)), (values, leg.function.coefficients))
    assert torch.autograd.gradcheck(lambda v: layer(Field(v, points)), (values,))


def test_inner_product_converges_with_sobol_points():
    """Property 3: the QMC inner product tends to the integral (exact here by Gauss-Legendre)."""
    fn = LegendreFunction(2, degree=3).double()
    layer = InnerProduct(fn, 1)

    def f(x):
        return (torch.sin(2 * x[:, :1]) * torch.exp(x[:, 1:]))[None]  # (1, N, 1)

    exact_pts = gauss_points(24, ((-1.0, 1.0), (-1.0, 1.0)))
    exact = layer(Field(f(exact_pts.coords), exact_pts)).detach()
    errors = []
    for m in (6, 10, 14):
        pts = PointSet(sobol(2 ** m, 2, seed=5, dtype=torch.float64))
        errors.append((layer(Field(f(pts.coords), pts)).detach() - exact).abs().max().item())
    assert errors[2] < errors[1] / 10 < errors[0] / 100 and errors[2] < 1e-5


def test_modulate():
    points = PointSet(torch.rand(5, 2, dtype=torch.float64))
    values = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    fn = LegendreFunction(3, 1).double()
    out = Modulate(fn)(Field(values, points))
    torch.testing.assert_close(out.values, values * fn(points))
    one = LegendreFunction(1, 1).double()
    torch.testing.assert_close(Modulate(one)(Field(values, points)).values, values * one(points))
    assert torch.autograd.gradcheck(lambda v, c: modulate(v, legendre_basis(points.coords, 1) @ c),
                                    (values, fn.coefficients))
    with pytest.raises(ValueError, match="cannot modulate"):
        Modulate(LegendreFunction(2, 1).double())(Field(values, points))


def test_errors():
    with pytest.raises(ValueError, match="multiple of in_channels"):
        InnerProduct(LegendreFunction(5, 1), 2)
    layer = InnerProduct(LegendreFunction(4, 1), 2)
    with pytest.raises(ValueError, match="expects 2 input channels"):
        layer(Field(torch.randn(1, 4, 3), PointSet.grid((2, 2))))
    with pytest.raises(TypeError, match="expects a Field"):
        layer(torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match="inner_product needs"):
        inner_product(torch.randn(1, 4, 2), torch.randn(4, 3, 1), torch.ones(4))
    with pytest.raises(ValueError, match="degree"):
        legendre_1d(torch.zeros(3), -1)
