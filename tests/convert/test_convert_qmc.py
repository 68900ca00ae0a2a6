"""``from_torch(latent="lattice", first_conv=...)``: exact on the grid, and on scattered points the
first convolution's quadrature onto its grid lattice followed by the CNN itself."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inrnet.convert import ConversionError, from_torch
from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample
from inrnet.sampling import sobol

D64 = torch.float64


def _block(i: int, o: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.BatchNorm2d(o), nn.ReLU()]


def stride1_cnn() -> nn.Sequential:
    """The QMC analysis's CNN (experiments/conversion/qmc_analysis.py): a stride-1 first conv."""
    return nn.Sequential(*_block(1, 6), nn.MaxPool2d(2), *_block(6, 8), nn.MaxPool2d(2), *_block(8, 8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def strided_cnn() -> nn.Sequential:
    """A strided 3 x 3 stem, a ResNet-style max pool, a strided conv."""
    return nn.Sequential(*_block(1, 6, stride=2), nn.MaxPool2d(3, 2, 1), *_block(6, 8, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def resnet_stem_cnn() -> nn.Sequential:
    """A 7 x 7 stride-2 stem (torchvision ResNet's), degree-2 B-spline kernel."""
    return nn.Sequential(nn.Conv2d(1, 6, 7, 2, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *_block(6, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


class Residual(nn.Module):
    """A first conv, then a residual block and a 1 x 1 head: a fully convolutional output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*_block(1, 6, stride=2))
        self.body = nn.Sequential(*_block(6, 6))
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        y = self.stem(x)
        return self.head(F.relu(y + self.body(y)))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3), (m.running_mean, -0.3, 0.3),
                                  (m.running_var, 0.5, 2.0)):
                    t.copy_(torch.rand(t.shape, generator=g, dtype=D64) * (hi - lo) + lo)
    return model.eval()


def _relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


MODELS = {"stride1": stride1_cnn, "strided": strided_cnn, "resnet_stem": resnet_stem_cnn, "residual": Residual}
VARIANTS = [None, {"estimator": "mean"}, {"support_extent": "basis"}]


@pytest.mark.parametrize("first_conv", VARIANTS, ids=["taps", "mean", "basis"])
@pytest.mark.parametrize("name", list(MODELS))
def test_lattice_conversion_is_the_cnn_on_the_grid(name, first_conv):
    """latent='lattice' (and the first-conv variants, for degree <= 1 kernels) reproduce the CNN on the grid."""
    cnn = randomized(MODELS[name]())
    if name == "resnet_stem" and first_conv and "support_extent" in first_conv:
        with pytest.raises(ConversionError, match=r"support_extent='basis' is the discrete filter on the grid only "
                                                  r"for piecewise-linear kernels .* \(7, 7\) taps, degree 2"):
            from_torch(cnn, (28, 28), latent="lattice", first_conv=first_conv)
        return
    assert _grid_error(from_torch(cnn, (28, 28), latent="lattice", first_conv=first_conv), cnn) <= 1e-9


def _grid_error(model, cnn) -> float:
    """Relative error of the converted ``model`` against ``cnn`` on two random images, sampled on the grid."""
    images = torch.randn(2, 1, 28, 28, dtype=D64)
    with torch.no_grad():
        out = model(sample(PixelINR(images), PointSet.grid((28, 28), dtype=D64)))
        ref = cnn(images)
    if isinstance(out, Field):
        out = out.values.transpose(1, 2).reshape(ref.shape)
    return _relative(out, ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_pixels_conversion_is_the_cnn_on_the_grid(name):
    cnn = randomized(MODELS[name](), seed=2)
    assert _grid_error(from_torch(cnn, (28, 28), latent="pixels"), cnn) <= 1e-9


@pytest.mark.parametrize("n", [300, 3136])
def test_pixels_conversion_on_sobol_is_the_cnn_on_kernel_regression_pixels(n):
    """latent='pixels': each pixel is the tent-weighted mean of the samples within ``r`` (loop reference; a
    pixel for 300 points, half a pixel for 3136 = 4 x 784), the nearest sample where none is; then the
    torch CNN on that image."""
    cnn = randomized(strided_cnn(), seed=4)
    points = PointSet(sobol(n, 2, seed=5).double())  # 300: sparse, some pixels have no sample in their tent
    field = sample(PixelINR(torch.randn(2, 1, 28, 28, dtype=D64)), points)
    h = 2 / 28
    r = h if n <= 784 else h / 2
    image = torch.zeros(2, 1, 28, 28, dtype=D64)
    empty = 0
    for i in range(28):
        for j in range(28):
            c = torch.tensor([-1 + (i + 0.5) * h, -1 + (j + 0.5) * h], dtype=D64)
            a = _tent((points.coords - c) / r).prod(1) * points.weights  # (N,)
            if a.sum() > 0:
                image[:, 0, i, j] = (a[None] * field.values[..., 0]).sum(1) / a.sum()
            else:
                empty += 1
                image[:, 0, i, j] = field.values[:, (points.coords - c).norm(dim=1).argmin(), 0]
    assert (empty > 0) == (n == 300)
    with torch.no_grad():
        out = from_torch(cnn, (28, 28), latent="pixels")(field)
        ref = cnn(image)
    assert _relative(out, ref) <= 1e-9


def _tent(u: torch.Tensor) -> torch.Tensor:
    return (1 - u.abs()).clamp_min(0)


def first_conv_on_lattice(conv: nn.Conv2d, points: torch.Tensor, weights: torch.Tensor, values: torch.Tensor,
                          extent: float) -> torch.Tensor:
    """The slow reference of a 3 x 3 conv's quadrature onto its grid pixels (28 x 28 image, zero padding).

    Output pixel ``p`` (centre ``q``) is ``sum_j w_j sum_c K_{o c}(x_j - q) f_c(x_j) + b_o`` with
    ``K(delta) = sum_{a b} W[o, c, a, b] tent(delta_0 / h - (a - 1)) tent(delta_1 / h - (b - 1)) / h^2``,
    the piecewise-linear interpolant of the taps (cross-correlation: tap ``a`` reads ``q + (a - 1) h``),
    cut to ``|delta_k| <= extent h``.

    Args:
        conv: the discrete layer (3 x 3, padding 1).
        points: Tensor[N, 2] in [-1, 1]^2.
        weights: Tensor[N], quadrature weights.
        values: Tensor[B, N, C_in].
        extent: half width of the support in pixels (1.5: the taps' footprint; 2: whole tents).

    Returns:
        Tensor[B, C_out, H', W'], the strided pixel grid of the CNN.
    """
    h = 2 / 28
    s = conv.stride[0]
    centres = -1 + (torch.arange(0, 28, s, dtype=D64) + 0.5) * h  # (H',)
    out = torch.zeros(values.shape[0], conv.out_channels, len(centres), len(centres), dtype=D64)
    for i, q0 in enumerate(centres):
        for j, q1 in enumerate(centres):
            u = (points - torch.stack([q0, q1])) / h  # (N, 2)
            inside = (u.abs() <= extent).all(1)
            taps = torch.arange(3, dtype=D64) - 1
            phi0, phi1 = _tent(u[inside, :1] - taps), _tent(u[inside, 1:] - taps)  # (n, 3) each
            kernel = torch.einsum("ocab,na,nb->noc", conv.weight, phi0, phi1) / h ** 2  # (n, C_out, C_in)
            out[:, :, i, j] = torch.einsum("n,noc,bnc->bo", weights[inside], kernel, values[:, inside]) + conv.bias
    return out


@pytest.mark.parametrize("first_conv,extent", [(None, 1.5), ({"support_extent": "basis"}, 2.0)],
                         ids=["taps", "basis"])
@pytest.mark.parametrize("name", ["stride1", "strided"])
def test_lattice_conversion_on_sobol_is_the_first_quadrature_then_the_cnn(name, first_conv, extent):
    """On scattered points only the first conv sees them: its quadrature onto the lattice it has on the
    grid, reshaped to an image, through the rest of the torch CNN, is the converted model's output."""
    cnn = randomized(MODELS[name](), seed=1)
    points = PointSet(sobol(500, 2, seed=3).double())
    field = sample(PixelINR(torch.randn(2, 1, 28, 28, dtype=D64)), points)  # nearest-pixel values
    model = from_torch(cnn, (28, 28), latent="lattice", first_conv=first_conv)
    with torch.no_grad():
        out = model(field)
        image = first_conv_on_lattice(cnn[0], points.coords, points.weights, field.values, extent)
        ref = cnn[1:](image)
        plain = from_torch(cnn, (28, 28))(field)
    assert _relative(out, ref) <= 1e-9
    assert _relative(plain, ref) > 1e-3  # the paper's conversion integrates every layer over the points


def test_lattice_outputs_live_on_the_grid_lattice_and_are_shared():
    """A fully convolutional model gives a field on the CNN's output lattice, the same point set every call."""
    cnn = randomized(Residual())
    model = from_torch(cnn, (28, 28), latent="lattice")
    a = model(sample(PixelINR(torch.randn(1, 1, 28, 28, dtype=D64)), PointSet(sobol(400, 2, seed=0).double())))
    b = model(sample(PixelINR(torch.randn(1, 1, 28, 28, dtype=D64)), PointSet(sobol(300, 2, seed=1).double())))
    assert a.points is b.points and a.points.lattice.shape == (14, 14)
    assert a.points.lattice == PointSet.grid((28, 28), dtype=D64).downsample(2).lattice


class _InputResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return (x + self.conv(x)).mean((2, 3))


class _PoolFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(F.max_pool2d(x, 2)).mean((2, 3))


@pytest.mark.parametrize("cnn,match", [
    (nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 4, 3, padding=1)),
     r"cannot convert MaxPool2d at '0': latent='lattice' needs the first layer that leaves the input points to be "
     r"a convolution with a window .* here it is a MaxPool"),
    (nn.Sequential(nn.Conv2d(1, 4, 1, stride=2), nn.Conv2d(4, 4, 3, padding=1)),
     r"cannot convert Conv2d at '0': latent='lattice' needs .* here it is a StridedChannelMixing"),
    (_InputResidual(), r"latent='lattice' cannot combine a feature map on the input points with one on the first "
                       r"window layer's lattice"),
    (_PoolFirst(), r"max_pool2d .* need the first layer that leaves the input points to be a convolution module"),
], ids=["pool-first", "strided-1x1-first", "input-residual", "function-first"])
def test_lattice_conversion_names_what_it_cannot_handle(cnn, match):
    with pytest.raises(ConversionError, match=match):
        from_torch(cnn, (8, 8), latent="lattice")


def test_first_conv_options_are_checked():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 3, padding=1))
    with pytest.raises(ConversionError, match=r"first_conv=\{'estimator': 'mean'\} applies to a plain BSplineConv; "
                                              r"the first convolution converts to a DilatedBSplineConv"):
        from_torch(cnn, (8, 8), first_conv={"estimator": "mean"})
    with pytest.raises(ValueError, match=r"first_conv options are .* got 'degree': 3"):
        from_torch(cnn, (8, 8), first_conv={"degree": 3})
    with pytest.raises(ValueError, match=r"estimator='mean' with support_extent='basis' is not the CNN on the grid"):
        from_torch(cnn, (8, 8), first_conv={"estimator": "mean", "support_extent": "basis"})
    with pytest.raises(ValueError, match=r"first_conv sets the first convolution's quadrature; with latent='pixels'"):
        from_torch(cnn, (8, 8), latent="pixels", first_conv={"estimator": "mean"})
    with pytest.raises(ValueError, match=r"latent must be one of \('points', 'lattice', 'pixels'\), got 'grid'"):
        from_torch(cnn, (8, 8), latent="grid")


@pytest.mark.parametrize("latent,match", [
    ("lattice", r"latent='lattice' puts the first window layer's outputs on the lattice of grid\(\(28, 28\)\) in "
                r"\[-1, 1\]\^2; the input points' bounds are"),
    ("pixels", r"latent='pixels' estimates the input on the lattice of grid\(\(28, 28\)\)")])
def test_grid_latents_need_points_on_the_unit_box(latent, match):
    model = from_torch(randomized(stride1_cnn()), (28, 28), latent=latent)
    points = PointSet(sobol(200, 2, seed=0).double() * 0.5, bounds=[(-0.5, 0.5)] * 2)
    with pytest.raises(ValueError, match=match):
        model(Field(torch.randn(1, 200, 1, dtype=D64), points))


@pytest.mark.parametrize("latent", ["lattice", "pixels"])
def test_grid_latent_models_deepcopy_and_pickle(latent, tmp_path):
    model = from_torch(randomized(strided_cnn()), (28, 28), latent=latent)
    field = sample(PixelINR(torch.randn(2, 1, 28, 28, dtype=D64)), PointSet(sobol(700, 2, seed=2).double()))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with torch.no_grad():
        ref = model(field)
        for other in (copy.deepcopy(model), loaded):
            assert _relative(other(field), ref) <= 1e-12
