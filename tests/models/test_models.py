"""Registry, shapes, and that each INR-Net with B-spline convs is its pixel baseline's exact twin."""

import pytest
import torch

from inrnet.field import PointSet
from inrnet.models import create_model, list_models, model_config
from inrnet.sampling import sobol
from inrnet.testing import grid_field

PAIRS = [("inrnet2", "cnn2", {}), ("inrnet4", "cnn4", {}), ("inrnet3", "fcn3", {"width": 8}),
         ("inrnet5", "fcn5", {"width": 8}), ("inrnet_unet", "unet", {"widths": (4, 8, 8)})]
SEGMENTERS = ("inrnet3", "inrnet5", "inrnet_unet")


def test_registry_lists_and_rebuilds():
    assert {"inrnet2", "inrnet3", "inrnet4", "inrnet5", "cnn2", "cnn4", "fcn3", "fcn5", "inrnet_unet",
            "unet"} <= set(list_models())
    m = create_model("inrnet4", in_channels=3, num_classes=12, widths=(8, 16), base_resolution=32)
    config = model_config(m)
    assert config == {"name": "inrnet4", "in_channels": 3, "num_classes": 12, "widths": (8, 16),
                      "base_resolution": 32}
    rebuilt = create_model(**config)
    rebuilt.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*inrnet2"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="no config"):
        model_config(torch.nn.Linear(2, 2))


def test_estimator_reaches_every_conv():
    from inrnet.nn.conv import ContinuousConv
    model = create_model("inrnet4", estimator="mean")
    convs = [m for m in model.modules() if isinstance(m, ContinuousConv)]
    assert len(convs) == 4 and all(m.estimator == "mean" for m in convs)
    with pytest.raises(ValueError, match="estimator"):
        create_model("inrnet2", estimator="median")


@pytest.mark.parametrize("inr_name,cnn_name,kw", PAIRS)
@pytest.mark.parametrize("size", [16, 15])
def test_bspline_inrnet_is_the_exact_twin_of_its_baseline(inr_name, cnn_name, kw, size):
    torch.manual_seed(0)
    c = 3 if inr_name in SEGMENTERS else 1
    cnn = create_model(cnn_name, in_channels=c, **kw).double().eval()
    inr = create_model(inr_name, in_channels=c, base_resolution=size, **kw).double().eval()
    # give the norms non-trivial running statistics, then copy every weight across
    for mod in cnn.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    missing = inr.load_state_dict(cnn.state_dict(), strict=False)
    assert not missing.unexpected_keys and not missing.missing_keys
    x = torch.randn(2, c, size, size, dtype=torch.float64)
    out = inr(grid_field(x))
    ref = cnn(x)
    if ref.dim() == 4:  # dense output [B, K, H, W]
        ref = ref.flatten(2).transpose(1, 2)
        out = out.values
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("conv", ["bspline", "mlp"])
def test_forward_on_sobol_points_and_queries(conv):
    pts = PointSet(sobol(256, 2, seed=0))
    field = grid_field(torch.randn(2, 1, 8, 8))
    field = type(field)(torch.randn(2, 256, 1), pts)
    clf = create_model("inrnet4", conv=conv, widths=(4, 8), hidden=16)
    assert clf(field).shape == (2, 10)
    seg = create_model("inrnet5", in_channels=1, num_classes=3, width=4, conv=conv)
    query = torch.rand(37, 2) * 2 - 1
    out = seg(field, query)
    assert out.values.shape == (2, 37, 3) and torch.equal(out.coords, query)


@pytest.mark.parametrize("name,cnn_name", [("inrnet2", "cnn2"), ("inrnet4", "cnn4")])
@pytest.mark.parametrize("size", [16, 15])
def test_lattice_latent_is_the_twin_on_the_grid_and_fixes_the_latent_points(name, cnn_name, size):
    torch.manual_seed(0)
    cnn = create_model(cnn_name).double().eval()
    inr = create_model(name, base_resolution=size, latent="lattice").double().eval()
    inr.load_state_dict(cnn.state_dict())
    x = torch.randn(2, 1, size, size, dtype=torch.float64)
    torch.testing.assert_close(inr(grid_field(x)), cnn(x), rtol=1e-9, atol=1e-9)
    # on scattered points the first conv lands on the grid's stride-2 sub-lattice, whatever the input density
    seen = []
    hook = inr.features[0].conv.register_forward_hook(lambda m, a, out: seen.append(out.points))
    for n in (200, 800):
        pts = PointSet(sobol(n, 2, seed=n, dtype=torch.float64))
        assert inr(type(grid_field(x))(torch.randn(2, n, 1, dtype=torch.float64), pts)).shape == (2, 10)
    hook.remove()
    sub = PointSet(grid_field(x).coords).downsample(2)
    assert seen[0] is seen[1] and torch.equal(seen[0].coords, sub.coords)
    assert seen[0].order == "lattice" and seen[0].lattice.shape == sub.lattice.shape


def test_lattice_latent_refuses_what_it_cannot_place():
    with pytest.raises(ValueError, match="latent must be one of"):
        create_model("inrnet2", latent="grid")
    inr = create_model("inrnet2", latent="lattice")
    pts = PointSet(sobol(64, 2, seed=0) * 0.5, bounds=[(-0.5, 0.5)] * 2)
    with pytest.raises(ValueError, match="lays its lattice out on"):
        inr(type(grid_field(torch.zeros(1, 1, 4, 4)))(torch.zeros(1, 64, 1), pts))


@pytest.mark.parametrize("name,cnn_name,kw", PAIRS[2:])
@pytest.mark.parametrize("size", [16, 15])
def test_lattice_latent_segmenters_are_twins_on_the_grid_and_answer_any_query(name, cnn_name, kw, size):
    torch.manual_seed(0)
    cnn = create_model(cnn_name, in_channels=1, num_classes=3, **kw).double().eval()
    inr = create_model(name, in_channels=1, num_classes=3, base_resolution=size, latent="lattice",
                       support_extent="basis", **kw).double().eval()
    inr.load_state_dict(cnn.state_dict())
    x = torch.randn(2, 1, size, size, dtype=torch.float64)
    ref = cnn(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(inr(grid_field(x)).values, ref, rtol=1e-9, atol=1e-9)
    # scattered input: the features live on the size x size lattice, whatever the density
    for n in (300, 1200):
        pts = PointSet(sobol(n, 2, seed=n, dtype=torch.float64))
        field = type(grid_field(x))(torch.randn(2, n, 1, dtype=torch.float64), pts)
        features = inr.encode(field)
        assert features.points is inr.latent_points(pts) and features.points.lattice.shape == (size, size)
        assert inr(field).values.shape == (2, n, 3)  # default query: the input points
        query = torch.rand(11, 2, dtype=torch.float64) * 2 - 1
        out = inr(field, query)
        assert out.values.shape == (2, 11, 3) and torch.equal(out.coords, query)
        # chunked queries answer the same as one query
        torch.testing.assert_close(torch.cat([inr.decode(features, query[:5]).values,
                                              inr.decode(features, query[5:]).values], 1), out.values)


def test_segmenters_refuse_what_they_cannot_place():
    with pytest.raises(ValueError, match="latent must be one of"):
        create_model("inrnet3", latent="grid")
    with pytest.raises(ValueError, match="latent must be one of"):
        create_model("inrnet_unet", latent="grid")
    with pytest.raises(ValueError, match="at least two levels"):
        create_model("inrnet_unet", widths=(8,))
    with pytest.raises(ValueError, match="at least two levels"):
        create_model("unet", widths=(8, 0))
    inr = create_model("inrnet_unet", in_channels=1, widths=(4, 4), base_resolution=8)
    pts = PointSet(sobol(64, 2, seed=0) * 0.5, bounds=[(-0.5, 0.5)] * 2)
    with pytest.raises(ValueError, match="lays its lattice out on"):
        inr(type(grid_field(torch.zeros(1, 1, 4, 4)))(torch.zeros(1, 64, 1), pts))


@pytest.mark.parametrize("name,cnn_name,kw", PAIRS[2:])
@pytest.mark.parametrize("s", [2, 3])
def test_oversampled_stem_is_the_twin_of_its_every_sth_tap_on_the_grid(name, cnn_name, kw, s):
    # stem_oversample=s: 2s+1 taps at spacing h/s with degree-1 splines, which vanish on the
    # grid except at every s-th tap: there the kernel is the 3x3 filter of those taps times s^2
    torch.manual_seed(0)
    size = 12
    cnn = create_model(cnn_name, in_channels=1, num_classes=3, **kw).double().eval()
    inr = create_model(name, in_channels=1, num_classes=3, base_resolution=size, latent="lattice",
                       support_extent="basis", stem_oversample=s, **kw).double().eval()
    state = cnn.state_dict()
    (key,) = [k for k, v in inr.state_dict().items() if k.endswith("conv.weight") and v.shape[-1] == 2 * s + 1]
    assert inr.state_dict()[key].shape[-2:] == (2 * s + 1, 2 * s + 1) and state[key].shape[-2:] == (3, 3)
    fine = torch.randn(inr.state_dict()[key].shape, dtype=torch.float64)  # the off-grid taps are arbitrary
    fine[..., ::s, ::s] = state[key] / s ** 2
    state[key] = fine
    inr.load_state_dict(state)
    x = torch.randn(2, 1, size, size, dtype=torch.float64)
    ref = cnn(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(inr(grid_field(x)).values, ref, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="oversample must be a positive integer"):
        create_model(name, stem_oversample=0)
    with pytest.raises(ValueError, match="B-spline kernels' options"):
        create_model(name, conv="mlp", support_extent="taps", stem_oversample=2)
