"""``sample``: generic callables, dtype/device handling, transforms and clear errors."""

import pytest
import torch
from torch import nn

from inrnet.field import PointSet
from inrnet.inr import INRBatch, PixelINR, Siren, SirenFamily, sample
from inrnet.sampling import grid, sobol


def test_generic_callables_and_modules():
    x = sobol(16, 2, seed=0)
    lin = nn.Linear(2, 3)
    fns = [lambda c: c.sum(-1, keepdim=True).repeat(1, 3), lin, Siren(2, 3, width=4, depth=2)]
    f = sample(fns, x)
    assert f.values.shape == (3, 16, 3) and not f.values.requires_grad
    torch.testing.assert_close(f.values[0], x.sum(-1, keepdim=True).repeat(1, 3))
    torch.testing.assert_close(f.values[1], lin(x).detach())
    torch.testing.assert_close(f.values[2], fns[2](x).detach())
    single = sample(lambda c: c[:, :1] * 2, x)
    assert single.values.shape == (1, 16, 1)


def test_returns_field_on_the_given_points_without_grad():
    pts = PointSet.grid((4, 4))
    fam = SirenFamily(2, 1, width=8, depth=3)
    params = {k: v.requires_grad_() for k, v in fam.init_params(3).items()}
    f = sample(INRBatch(fam, params), pts)
    assert f.points is pts and not f.values.requires_grad


def test_dtype_promotion():
    fam = SirenFamily(2, 1, width=8, depth=3)
    batch = INRBatch(fam, fam.init_params(2))
    assert sample(batch, grid((3, 3))).values.dtype == torch.float32
    f64 = sample(batch, grid((3, 3), dtype=torch.float64)).values
    assert f64.dtype == torch.float64
    torch.testing.assert_close(f64.float(), sample(batch, grid((3, 3))).values, rtol=1e-4, atol=1e-5)


def test_shared_transform_is_composition():
    fam = SirenFamily(2, 2, width=8, depth=3)
    batch = INRBatch(fam, fam.init_params(3, dtype=torch.float64))
    x = sobol(32, 2, seed=3, dtype=torch.float64)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    got = sample(batch, x, transform=lambda c: c @ rot.T)
    assert got.points.coords is x or torch.equal(got.points.coords, x)
    torch.testing.assert_close(got.values, sample(batch, x @ rot.T).values)


def test_wrong_dimension():
    fam = SirenFamily(2, 1, width=8, depth=3)
    with pytest.raises(ValueError, match=r"d=2.*dimension 3"):
        sample(INRBatch(fam, fam.init_params(2)), sobol(8, 3, seed=0))


def test_nan_outputs_name_the_inrs():
    fam = SirenFamily(2, 1, width=8, depth=3)
    params = fam.init_params(12)
    params["bias2"][5] = float("nan")
    params["weight0"][10, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"INR\(s\) \[5, 10\]"):
        sample(INRBatch(fam, params), grid((4, 4)), chunk_size=4)
    with pytest.raises(ValueError, match=r"INR 1 .*NaN"):
        sample([lambda c: c, lambda c: c / 0 * 0], grid((2, 2)))


def test_empty_and_bad_arguments():
    fam = SirenFamily(2, 1, width=8, depth=3)
    batch = INRBatch(fam, fam.init_params(2))
    with pytest.raises(ValueError, match="empty point set"):
        sample(batch, torch.zeros(0, 2))
    with pytest.raises(ValueError, match="empty sequence"):
        sample([], grid((2, 2)))
    with pytest.raises(ValueError, match="chunk_size"):
        sample(batch, grid((2, 2)), chunk_size=0)
    with pytest.raises(TypeError, match="inrs must be"):
        sample(42, grid((2, 2)))
    with pytest.raises(ValueError, match="transform must map"):
        sample(batch, grid((2, 2)), transform=lambda c: c[:2])
    with pytest.raises(ValueError, match=r"Tensor\[N=4, c\]"):
        sample([lambda c: c[:1]], grid((2, 2)))
    with pytest.raises(ValueError, match="channels"):
        sample([lambda c: c, lambda c: c[:, :1]], grid((2, 2)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_params_follow_cuda_points():
    fam = SirenFamily(2, 3, width=16, depth=3)
    batch = INRBatch(fam, fam.init_params(10))
    pts = PointSet.grid((8, 8), device="cuda")
    f = sample(batch, pts, chunk_size=4)
    assert f.values.device.type == "cuda"
    torch.testing.assert_close(f.values.cpu(), sample(batch, grid((8, 8))).values, rtol=1e-4, atol=1e-5)
    images = torch.rand(2, 1, 8, 8)
    assert torch.equal(sample(PixelINR(images, "linear"), pts).values.cpu(), images.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="move it"):
        sample([nn.Linear(2, 1)], pts)
