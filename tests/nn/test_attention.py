import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg

from inrnet.field import Field, PointSet
from inrnet.nn.attention import Attention, attention
from inrnet.nn.parametric import MLPFunction, multi_indices
from inrnet.nn.pointwise import ChannelMixing
from inrnet.sampling.points import sobol


def slow_legendre(x, degree):
    """Values of the orthonormal [-1, 1]^2 Legendre basis at one point, by numpy legval."""
    return [math.prod(math.sqrt(2 * m + 1) * npleg.legval(x[k], [0] * m + [1]) for k, m in enumerate(degs)) / 2
            for degs in multi_indices(degree, 2).tolist()]


def slow_attention(layer: Attention, field: Field, context: Field | None = None) -> np.ndarray:
    """Eqs. 131-134 by loops in float64."""
    h, d_k, width = layer.num_heads, layer.d_k, layer.num_heads * layer.d_k
    src = context if context is not None else field

    def aggregate(fn, f, n_in):
        coef = fn.coefficients.detach().numpy()  # (n_basis, C * width)
        out = np.zeros((f.batch_size, width))
        for b in range(f.batch_size):
            for n in range(f.points.n):
                phi = slow_legendre(f.coords[n].tolist(), fn.degree)
                for i in range(n_in):
                    for a in range(width):
                        g = sum(phi[m] * coef[m, i * width + a] for m in range(len(phi)))
                        out[b, a] += f.points.weights[n].item() * f.values[b, n, i].item() * g
        return out

    q = aggregate(layer.query.function, src, src.channels)
    k = aggregate(layer.key.function, field, field.channels)
    v = layer.value(field).values.detach().numpy()
    out = np.zeros_like(v)
    for b in range(field.batch_size):
        for head in range(h):
            for a in range(d_k):
                s = [q[b, head * d_k + a] * k[b, head * d_k + c] / math.sqrt(d_k) for c in range(d_k)]
                e = [math.exp(z - max(s)) for z in s]
                for c in range(d_k):
                    out[b, :, head * d_k + a] += e[c] / sum(e) * v[b, :, head * d_k + c]
    return out


@pytest.mark.parametrize("heads", [1, 2])
def test_self_attention_matches_loop_reference(heads):
    points = PointSet(sobol(16, 2, seed=0, dtype=torch.float64))
    field = Field(torch.randn(2, 16, 3, dtype=torch.float64), points)
    layer = Attention(3, d_k=2, num_heads=heads, degree=2).double()
    out = layer(field)
    assert out.points is field.points and out.channels == heads * 2
    np.testing.assert_allclose(out.values.detach().numpy(), slow_attention(layer, field), rtol=1e-10, atol=1e-12)


def test_cross_attention_takes_queries_from_the_context():
    field = Field(torch.randn(2, 12, 3, dtype=torch.float64), PointSet.grid((3, 4), dtype=torch.float64))
    context = Field(torch.randn(2, 20, 2, dtype=torch.float64), PointSet(sobol(20, 2, seed=4, dtype=torch.float64)))
    layer = Attention(3, d_k=3, num_heads=2, cross=True, context_channels=2, degree=1).double()
    out = layer(field, context)
    assert out.points is field.points
    np.testing.assert_allclose(out.values.detach().numpy(), slow_attention(layer, field, context),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="needs a context"):
        layer(field)
    with pytest.raises(ValueError, match="expects 2 input channels"):
        layer(field, field)


def test_attention_mixes_value_channels_by_a_stochastic_matrix():
    q, k = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    v = torch.randn(3, 5, 2, 1).expand(3, 5, 2, 4).reshape(3, 5, 8)  # equal channels within a head
    torch.testing.assert_close(attention(q, k, v), v)
    with pytest.raises(ValueError, match="attention needs"):
        attention(q, k, torch.randn(3, 5, 7))


def test_attention_gradcheck():
    points = PointSet(sobol(8, 2, seed=1, dtype=torch.float64))
    layer = Attention(2, d_k=2, num_heads=1, degree=1).double()
    values = torch.randn(1, 8, 2, dtype=torch.float64, requires_grad=True)
    params = [layer.query.function.coefficients, layer.key.function.coefficients, layer.value.weight,
              layer.value.bias]

    def f(v, *p):
        return layer(Field(v, points)).values
    assert torch.autograd.gradcheck(f, (values, *params))


def test_queries_and_keys_converge_with_sobol_points():
    """Property 3 on an analytic input: Q and K tend to their integrals (Gauss-Legendre reference)."""
    layer = Attention(2, d_k=3, degree=2).double()

    def f(x):
        return torch.stack([torch.sin(2 * x[:, 0]) * x[:, 1], torch.exp(-x[:, 0] ** 2 - x[:, 1])], -1)[None]

    t, w = npleg.leggauss(20)
    x0, x1 = np.meshgrid(t, t, indexing="ij")
    gauss = PointSet(torch.tensor(np.stack([x0.ravel(), x1.ravel()], -1)), torch.tensor(np.outer(w, w).ravel()))
    with torch.no_grad():
        exact = torch.cat([layer.query(Field(f(gauss.coords), gauss)), layer.key(Field(f(gauss.coords), gauss))], -1)
        errors = []
        for m in (6, 10, 14):
            pts = PointSet(sobol(2 ** m, 2, seed=7, dtype=torch.float64))
            qk = torch.cat([layer.query(Field(f(pts.coords), pts)), layer.key(Field(f(pts.coords), pts))], -1)
            errors.append((qk - exact).abs().max().item())
    assert errors[2] < errors[1] / 10 < errors[0] / 100 and errors[2] < 1e-4


def test_custom_value_and_functions():
    points = PointSet(sobol(16, 2, seed=2))
    field = Field(torch.randn(2, 16, 3), points)
    value = ChannelMixing(3, 4, normalized=True)
    layer = Attention(3, d_k=2, num_heads=2, value=value,
                      query_function=MLPFunction(3 * 4, 2, hidden=8), key_function=MLPFunction(3 * 4, 2, hidden=8))
    out = layer(field)
    assert out.values.shape == (2, 16, 4)
    out.values.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_attention_errors():
    points = PointSet.grid((4, 4))
    field = Field(torch.randn(1, 16, 3), points)

    class Shrink(torch.nn.Module):
        def forward(self, f):
            sub = f.points.downsample(2)
            return Field(f.values[:, sub.parent_index], sub)

    with pytest.raises(ValueError, match="different point sets"):
        Attention(3, d_k=3, value=Shrink())(field)
    with pytest.raises(ValueError, match="need num_heads \\* d_k = 2"):
        Attention(3, d_k=2, value=ChannelMixing(3, 5))(field)
    with pytest.raises(ValueError, match="context was given"):
        Attention(3, d_k=2)(field, field)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        Attention(3, d_k=2)(Field(torch.randn(1, 16, 2), points))
    with pytest.raises(TypeError, match="expects a Field"):
        Attention(3, d_k=2)(field.values)
    with pytest.raises(ValueError, match="need num_heads"):
        Attention(3, d_k=2, query_function=MLPFunction(3 * 3, 2))
