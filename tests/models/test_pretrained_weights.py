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
    with pytest.raises(ValueError, match="trained with hidden=16, got hidden=32"):
        create_model("inrnet2", pretrained="toy", hidden=32)


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
    (batch norms as trained, no recalibration): measured 91.0% on the 28x28 grid, 92.0% at 3136 and
    87.4% at 784 Sobol points (the 18000-step weights; the 6000-step ones scored 91.0 / 91.2 / 87.2%)."""
    if ("inrnet4", "fashion_mnist") not in pt.list_pretrained():
        pytest.fail("the package ships no inrnet4 'fashion_mnist' weights")
    model = create_model("inrnet4", pretrained="fashion_mnist").eval()
    data = open_dataset("fashion_mnist_default", "test_fourier")
    inrs, labels = data.batch(torch.arange(len(data)))
    lo, hi = inrs.family.value_range
    for points, floor in ((PointSet.grid((28, 28)), 0.88), (PointSet(sobol(3136, 2, seed=0)), 0.88),
                          (PointSet(sobol(784, 2, seed=0)), 0.84)):
        with torch.no_grad():
            values = (sample(inrs, points).values - lo) / (hi - lo)  # the DataModule's [0, 1] range
            accuracy = (model(Field(values, points)).argmax(1) == labels).double().mean()
        assert accuracy >= floor, (points.n, float(accuracy))
