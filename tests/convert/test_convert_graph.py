"""Converting whole graphs: exactness on the grid (Property 4), graph functions, outputs, errors."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inrnet.convert import ConversionError, from_torch
from inrnet.field import Field, PointSet
from inrnet.inr import PixelINR, sample
from inrnet.sampling import sobol
from inrnet.testing import grid_field

D64 = torch.float64


def small_cnn(c: int = 3, classes: int = 5) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def trained(model: nn.Module, shape, steps: int = 8) -> nn.Module:
    """A few Adam steps on a synthetic task (is the top half brighter?), so weights and BN
    statistics are no longer at their initial values."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, *shape)
        y = (x[:, :, : shape[0] // 2].mean((1, 2, 3)) > x[:, :, shape[0] // 2:].mean((1, 2, 3))).long()
        loss = F.cross_entropy(model(x)[:, :2], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_cnn():
    torch.manual_seed(0)
    return trained(small_cnn(), (16, 16))  # fully convolutional + global pooling: any input size


@pytest.mark.parametrize("shape", [(32, 32), (33, 35)])
@pytest.mark.parametrize("batch", [1, 3])
def test_trained_cnn_is_exact_on_the_grid(shape, batch, trained_cnn, h):
    cnn = trained_cnn
    err, *_ = h.compare(cnn, shape, batch=batch)
    assert err < 1e-4
    err64, *_ = h.compare(copy.deepcopy(cnn), shape, batch=batch, dtype=D64)
    assert err64 < 1e-9


class Blocks(nn.Module):
    """Residual add (in place), squeeze-excitation, concatenation, channels-last layer norm with
    layer scale, functional pooling, spatial mean and in-place functional activations."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.se = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Sigmoid())
        self.dw = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Linear(16, 16)
        self.gamma = nn.Parameter(torch.rand(16, 1, 1))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.stem(x), inplace=True)
        y = self.branch(x)
        y += x
        y = y * self.se(y.mean((2, 3), keepdim=True))
        z = torch.cat([y, x.sigmoid()], dim=1)
        z = F.max_pool2d(z, 2)
        r = self.dw(z).permute(0, 2, 3, 1)
        r = self.mlp(F.gelu(self.norm(r))).permute(0, 3, 1, 2)
        z = z + self.gamma * r
        return self.head(torch.flatten(F.adaptive_avg_pool2d(z, 1), 1)) + 0.5 * z.mean(dim=(-1, -2))[:, :4]


@pytest.mark.parametrize("shape", [(12, 10), (13, 11)])
def test_graph_functions(shape, h):
    err, inet, *_ = h.compare(Blocks(), shape, dtype=D64)
    assert err < 1e-10
    assert "binary('add'" in inet.code and "concat" in inet.code


class InPlace(nn.Module):
    """In-place calls whose inputs are used again: later uses see the modified values."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        y = x * 2
        a = F.gelu(x, approximate="tanh") + F.leaky_relu(x, 0.2, True) + F.softplus(x, 2.0) + x.relu()
        return a + F.hardtanh(x, -0.5, 0.5) + self.relu(y) + y.sigmoid_() + y + x


def test_in_place_calls_keep_the_cnns_semantics(h):
    images = torch.randn(2, 3, 7, 6, dtype=D64)
    err, inet, *_ = h.compare(InPlace(), (7, 6), dtype=D64, images=images.clone())
    assert err < 1e-10
    kept = images.clone()
    inet(grid_field(kept))
    assert torch.equal(kept, images), "the input field is never modified"


def test_converted_state_has_the_cnns_names_and_values(h):
    cnn = h.randomize_norms(Blocks())
    inet = from_torch(cnn, (8, 8))
    ours, theirs = inet.state_dict(), cnn.state_dict()
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert torch.equal(ours[k].reshape(v.shape), v), k
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(inet.parameters(), cnn.parameters())), "copies"


def test_conversion_leaves_the_cnn_alone_and_keeps_its_mode():
    cnn = small_cnn().train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    inet = from_torch(cnn, (9, 9))
    assert cnn.training and inet.training
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert not from_torch(cnn.eval(), (9, 9)).training


def test_training_mode_matches_and_gradients_flow():
    """In train mode BN uses batch statistics on the grid too: same outputs, same running stats."""
    cnn = small_cnn().train()
    inet = from_torch(cnn, (11, 10)).train()
    x = torch.randn(4, 3, 11, 10, dtype=D64)
    cnn, inet = cnn.double(), inet.double()
    out, ref = inet(grid_field(x)), cnn(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inet.get_submodule("1").running_var, cnn[1].running_var)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in inet.parameters())


def test_fully_convolutional_output_is_a_field_queryable_anywhere(h):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2, padding=1))
    err, inet, out, ref = h.compare(net, (9, 8), dtype=D64)
    assert err < 1e-10 and isinstance(out, Field) and out.points.lattice.shape == (5, 4)
    x = torch.randn(1, 3, 9, 8, dtype=D64)
    field = grid_field(x)
    coarse = inet(field)
    query = PointSet(sobol(50, 2, seed=3).double())
    at = inet(field, query)
    assert at.points is query
    for i in range(query.n):  # nearest output point, by brute force
        j = int((coarse.points.coords - query.coords[i]).norm(dim=1).argmin())
        torch.testing.assert_close(at.values[:, i], coarse.values[:, j])
    with pytest.raises(ValueError, match="only apply to a model whose outputs are Fields, this one returns Tensor"):
        from_torch(small_cnn(), (8, 8))(grid_field(torch.randn(1, 3, 8, 8)), query)


class UNet(nn.Module):
    def __init__(self, factor: int = 2):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 4 if factor == 2 else 3, stride=factor, padding=1)
        self.up = nn.Upsample(scale_factor=factor)
        self.out = nn.Conv2d(12, 2, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.a(x))
        return self.out(torch.cat([a, self.up(F.relu(self.down(a)))], 1))


def test_unet_with_nearest_upsampling(h):
    err, *_ = h.compare(UNet(), (10, 8), dtype=D64)
    assert err < 1e-10
    with pytest.raises(ConversionError, match="picks other pixels than torch"):
        from_torch(UNet(factor=3), (9, 9))


def test_grid_points_in_another_order_give_the_same_output():
    """Scattered points at the grid's coordinates, ordered so that prefixes are the strided
    sub-lattices, reproduce the grid output: geometry does not depend on lattice bookkeeping."""
    cnn = small_cnn().double().eval()
    inet = from_torch(cnn, (8, 8))
    x = torch.randn(2, 3, 8, 8, dtype=D64)
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    level = torch.where((i % 4 == 0) & (j % 4 == 0), 0, torch.where((i % 2 == 0) & (j % 2 == 0), 1, 2)).reshape(-1)
    order = torch.cat([torch.nonzero(level == k).squeeze(1) for k in range(3)])
    scattered = PointSet(PointSet.grid((8, 8), dtype=D64).coords[order], order="nested")  # a permuted grid: say so
    out = inet(sample(PixelINR(x), scattered))
    torch.testing.assert_close(out, cnn(x), rtol=1e-10, atol=1e-10)


def test_runs_on_sobol_points():
    inet = from_torch(small_cnn(), (16, 16))
    out = inet(sample(PixelINR(torch.rand(2, 3, 16, 16), mode="linear"), PointSet(sobol(500, 2, seed=0))))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


class TwoBranches(nn.Module):
    """Branches of equal shape on different pixels: (k=3, no padding) vs two (k=2, no padding)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3)
        self.b = nn.Sequential(nn.Conv2d(3, 2, 2), nn.Conv2d(2, 2, 2))

    def forward(self, x):
        return self.a(x) + self.b(x)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(F.max_pool2d(self.conv(x), 2))


class ViewSpatial(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        x = self.conv(x)
        return x.view(x.size(0), 2, -1)  # merges the spatial axes


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 2, 3))

    def forward(self, x):
        return torch.roll(self.body(x), 1, dims=2)


@pytest.mark.parametrize("net,match", [
    (TwoBranches(), "different point sets"),
    (Shared(), "another kind or resolution"),
    (ViewSpatial(), "only views that split or merge the channel axis"),
    (Rolled(), r"torch\.roll in the top-level forward \(node roll\)"),
])
def test_unsupported_graphs_raise(net, match):
    with pytest.raises(ConversionError, match=match):
        from_torch(net, (9, 9))


def test_bad_inputs():
    inet = from_torch(small_cnn(), (8, 8))
    with pytest.raises(TypeError, match="takes a Field"):
        inet(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        inet(grid_field(torch.randn(1, 2, 8, 8)))
    with pytest.raises(ValueError, match="2-d inputs"):
        inet(Field(torch.randn(1, 5, 3), PointSet(torch.rand(5, 3))))
    with pytest.raises(ValueError, match="input_shape"):
        from_torch(small_cnn(), (0, 8))
    with pytest.raises(ConversionError, match="in_channels"):
        from_torch(nn.Sequential(nn.ReLU()), (8, 8))


def test_copies_and_saved_models_keep_working(tmp_path):
    inet = from_torch(Blocks().eval(), (8, 8))
    field = grid_field(torch.randn(2, 3, 8, 8))
    ref = inet(field)
    torch.save(inet, tmp_path / "inet.pt")
    for other in (copy.deepcopy(inet), torch.load(tmp_path / "inet.pt", weights_only=False)):
        torch.testing.assert_close(other(field), ref)
        assert other.input_shape == (8, 8) and other.in_channels == 3


class Resized(nn.Module):
    """``UNet`` with its upsampling done by ``up`` (a module, or a function of the tensor)."""

    def __init__(self, up):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 4, stride=2, padding=1)
        self.up = up
        self.out = nn.Conv2d(12, 2, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.a(x))
        return self.out(torch.cat([a, self.up(F.relu(self.down(a)))], 1))


@pytest.mark.parametrize("up", [
    functools.partial(F.interpolate, scale_factor=2),
    functools.partial(F.interpolate, scale_factor=2, mode="nearest"),
    functools.partial(F.interpolate, size=(10, 8)),
    functools.partial(F.interpolate, size=(10, 8), mode="nearest-exact"),
    nn.Upsample(scale_factor=2, mode="nearest"),
    nn.Upsample(size=(10, 8)),
    nn.Upsample(scale_factor=2, mode="nearest-exact"),
], ids=["F-scale", "F-scale-nearest", "F-size", "F-size-nearest-exact", "Upsample-scale", "Upsample-size",
        "Upsample-nearest-exact"])
def test_nearest_interpolation_is_exact_on_the_grid(up, h):
    err, *_ = h.compare(Resized(up), (10, 8), dtype=D64)
    assert err < 1e-10


@pytest.mark.parametrize("up,where", [
    (functools.partial(F.interpolate, scale_factor=2, mode="bicubic"), r"torch\.nn\.functional\.interpolate in the "
                                                                       r"top-level forward \(node interpolate\)"),
    (functools.partial(F.interpolate, size=(10, 8), mode="area"), "interpolate"),
    (nn.Upsample(scale_factor=2, mode="bicubic"), "Upsample at 'up'"),
], ids=["F-bicubic", "F-size-area", "Upsample-bicubic"])
def test_interpolating_upsampling_names_the_mode_and_the_supported_ones(up, where):
    mode = up.mode if isinstance(up, nn.Module) else up.keywords["mode"]
    with pytest.raises(ConversionError, match=where) as info:
        from_torch(Resized(up), (10, 8))
    assert (f"mode={mode!r} is not supported; the supported modes are 'nearest', 'nearest-exact', 'linear', "
            "'bilinear', 'trilinear'") in str(info.value)


def test_antialiased_interpolation_raises():
    up = functools.partial(F.interpolate, size=(10, 8), mode="bilinear", antialias=True)
    with pytest.raises(ConversionError, match=r"interpolate.*antialias=True is not supported"):
        from_torch(Resized(up), (10, 8))


def test_from_torch_needs_a_module():
    with pytest.raises(TypeError, match=r"inrnet\.convert\.from_torch needs an nn\.Module, got function"):
        from_torch(lambda x: torch.relu(x), (8, 8))


class SignDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Identity(), SignDependent()))

    def forward(self, x):
        return self.body(self.conv(x))


def test_untraceable_submodule_is_named_by_its_path():
    with pytest.raises(ConversionError, match=r"cannot trace Nested in submodule 'body\.1\.1' \(SignDependent\): "
                                              r"TraceError: .*leaf_modules=\(SignDependent,\)") as info:
        from_torch(Nested(), (8, 8))
    assert isinstance(info.value.__cause__, torch.fx.proxy.TraceError)
    with pytest.raises(ConversionError, match=r"cannot trace SignDependent: TraceError"):  # the top level itself
        from_torch(SignDependent(), (8, 8), in_channels=3)
