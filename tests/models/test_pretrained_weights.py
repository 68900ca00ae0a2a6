"""Shipped weights by name: safetensors with their config, recipe and scores; nothing pickled."""

import json

import pytest
import torch
from safetensors.torch import save_file

from inrnet.field import Field, PointSet
from inrnet.inr import sample
from inrnet.lightning.data import open_dataset
from inrnet.models import create_model, model_config
from inrnet.models import pretrained as pt
from inrnet.sampling import sobol
from inrnet.testing import grid_field


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(pt, "WEIGHTS_DIR", tmp_path)
    return tmp_path


def _trained(**kw):
    torch.manual_seed(0)
    m = create_model("inrnet2", widths=(4, 8), hidden=16, **kw)
    with torch.no_grad():  # batch-norm statistics that differ from a fresh model's
        for mod in m.modules():
            if hasattr(mod, "running_mean") and mod.running_mean is not None:
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    return m.eval()


def test_save_then_create_model_by_tag_rebuilds_the_same_network(store):
    m = _trained(latent="lattice")
    path = pt.save_pretrained(m, "toy", recipe={"steps": 3}, scores={"sobol:784": 0.5}, provenance={"commit": "x"})
    assert path == store / "inrnet2.toy.safetensors" and not list(store.glob("*.tmp"))
    assert pt.list_pretrained() == [("inrnet2", "toy")]
    info = pt.pretrained_info("inrnet2", "toy")
    assert info["config"]["latent"] == "lattice" and info["scores"] == {"sobol:784": 0.5}
    loaded = create_model("inrnet2", pretrained="toy").eval()
    assert model_config(loaded)["pretrained"] == "toy" and loaded.latent == "lattice"
    x = grid_field(torch.randn(2, 1, 28, 28))
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    pts = PointSet(sobol(500, 2, seed=1))
    f = type(x)(torch.randn(2, 500, 1), pts)
    torch.testing.assert_close(loaded(f), m(f), rtol=0, atol=0)
    # kwargs that agree are fine; one that contradicts the stored architecture is named
    create_model("inrnet2", pretrained="toy", widths=[4, 8])
    with pytest.raises(ValueError, match="are a model with hidden=16, got hidden=32"):
        create_model("inrnet2", pretrained="toy", hidden=32)
    # an evaluation-only keyword may differ: the same weights under another quadrature
    other = create_model("inrnet2", pretrained="toy", estimator="tap_mean").eval()
    assert {c.estimator for c in other.modules() if hasattr(c, "estimator")} == {"tap_mean"}
    torch.testing.assert_close(other(x), m(x), rtol=1e-5, atol=1e-5)  # on the grid, the same filter


def test_unknown_and_malformed_weights_are_refused(store):
    with pytest.raises(ValueError, match="no pretrained weights 'inrnet2' tagged 'nope'.*no weights for 'inrnet2'"):
        create_model("inrnet2", pretrained="nope")
    pt.save_pretrained(_trained(), "toy", recipe={}, scores={}, provenance={})
    with pytest.raises(ValueError, match="tags for 'inrnet2': 'toy'"):
        create_model("inrnet2", pretrained="other")
    with pytest.raises(ValueError, match="plain name"):
        pt.pretrained_path("inrnet2", "../etc")
    save_file({"w": torch.zeros(2)}, str(store / "inrnet4.bare.safetensors"))  # no metadata
    with pytest.raises(ValueError, match="not an inrnet pretrained file"):
        pt.pretrained_info("inrnet4", "bare")
    meta = {k: json.dumps(v) for k, v in
            {"config": {"name": "inrnet4"}, "recipe": {}, "scores": {}, "provenance": {}}.items()}
    save_file({"w": torch.zeros(2)}, str(store / "inrnet4.wrong.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="does not fit INRNetClassifier: missing"):
        create_model("inrnet4", pretrained="wrong")


def test_every_shipped_file_loads_and_names_its_scores():
    shipped = pt.list_pretrained()
    for name, tag in shipped:
        info = pt.pretrained_info(name, tag)
        assert info["scores"] and info["recipe"] and info["provenance"].get("commit")
        create_model(name, pretrained=tag)


def test_shipped_inrnet4_classifies_the_embedded_test_inrs():
    """The shipped Fashion-MNIST INR-Net-4 on the 500 Fourier-feature test INRs embedded in the package
    (batch norms as trained, no recalibration): measured 91.0% on the 28x28 grid, 91.2% at 3136 and
    91.4% at 784 Sobol points with the shipped ``estimator="tap_mean"`` (with ``"sum"``, as trained:
    91.0 / 92.0 / 87.4%)."""
    if ("inrnet4", "fashion_mnist") not in pt.list_pretrained():
        pytest.fail("the package ships no inrnet4 'fashion_mnist' weights")
    model = create_model("inrnet4", pretrained="fashion_mnist").eval()
    data = open_dataset("fashion_mnist_default", "test_fourier")
    inrs, labels = data.batch(torch.arange(len(data)))
    lo, hi = inrs.family.value_range
    for points, floor in ((PointSet.grid((28, 28)), 0.88), (PointSet(sobol(3136, 2, seed=0)), 0.88),
                          (PointSet(sobol(784, 2, seed=0)), 0.88)):
        with torch.no_grad():
            values = (sample(inrs, points).values - lo) / (hi - lo)  # the DataModule's [0, 1] range
            accuracy = (model(Field(values, points)).argmax(1) == labels).double().mean()
        assert accuracy >= floor, (points.n, float(accuracy))


def _embedded_scenes(n: int):
    """``n`` test scenes composed (`make_scenes`) from the package's embedded Fourier-feature test
    INRs rendered on their 28x28 grid: canvases as PixelINRs and their label maps [n, 64, 64]."""
    from inrnet.datasets.scenes import make_scenes
    from inrnet.inr import PixelINR
    data = open_dataset("fashion_mnist_default", "test_fourier")
    inrs, classes = data.batch(torch.arange(len(data)))
    lo, hi = inrs.family.value_range
    with torch.no_grad():
        images = ((sample(inrs, PointSet.grid((28, 28))).values - lo) / (hi - lo)).clamp(0, 1)
    items = (images.reshape(-1, 28, 28) * 255).round().to(torch.uint8)
    canvases, labels = make_scenes(items, classes, 0, n, seed=0, split="test")
    return PixelINR(canvases, "linear"), labels


def test_shipped_segmenter_segments_scenes_of_the_embedded_test_items():
    """The shipped multi-scale segmenter (`inrnet_unet` / 'fashion_mnist_scenes') on 64 scenes made of the
    embedded test items (batch norms as trained): measured mIoU 0.612 / pixel accuracy 93.2% with the
    input on the 64x64 grid and 0.603 / 92.9% on 4096 Sobol points with the shipped
    ``estimator="tap_spline"`` (0.595 / 92.6% with ``"tap_quadratic"``, 0.587 / 92.2% with
    ``"tap_mean"``, as trained), labels at the
    64x64 cell centres (the first-pass weights, Sobol-trained with ``sum``: 0.584 / 92.5% and
    0.553 / 91.2%)."""
    from torchmetrics.classification import MulticlassJaccardIndex
    if ("inrnet_unet", "fashion_mnist_scenes") not in pt.list_pretrained():
        pytest.fail("the package ships no inrnet_unet 'fashion_mnist_scenes' weights")
    model = create_model("inrnet_unet", pretrained="fashion_mnist_scenes").eval()
    scenes, labels = _embedded_scenes(64)
    query, target = PointSet.grid((64, 64)), labels.flatten(1).long()
    for points, floor in ((query, 0.56), (PointSet(sobol(4096, 2, seed=0)), 0.54)):
        with torch.no_grad():
            pred = model(Field(sample(scenes, points).values, points), query).values.argmax(-1)  # (64, 4096)
        miou = MulticlassJaccardIndex(11, average="macro", ignore_index=255)(pred, target)
        assert miou >= floor, (points.n, float(miou))
        assert (pred == target).double().mean() >= 0.88
