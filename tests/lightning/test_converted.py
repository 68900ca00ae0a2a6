"""Converted CNNs through the Lightning tasks: the class count is read off the model's output,
not off the last layer it happens to register."""

import lightning as L
import pytest
import timm
import torch
import torchvision
from torch import nn

from inrnet.convert import from_torch
from inrnet.field import Field, PointSet
from inrnet.lightning import INRClassifier, INRDataModule, InMemoryINRDataset, num_outputs
from inrnet.models import _registry, register_model

# (source, name, kwargs, input shape); random init, small inputs keep them fast
FAMILIES = [
    ("timm", "resnet18", {"num_classes": 10, "in_chans": 1}, (28, 28)),
    ("torchvision", "mobilenet_v3_small", {"num_classes": 10}, (32, 32)),
    ("torchvision", "efficientnet_b0", {"num_classes": 10}, (32, 32)),
    ("timm", "convnext_atto", {"num_classes": 10}, (32, 32)),
    pytest.param("torchvision", "convnext_tiny", {"num_classes": 10}, (32, 32), marks=pytest.mark.slow),
    pytest.param("torchvision", "vgg11_bn", {"num_classes": 10}, (32, 32), marks=pytest.mark.slow),
]


def _cnn(source: str, name: str, kwargs: dict) -> nn.Module:
    if source == "timm":
        return timm.create_model(name, pretrained=False, **kwargs)
    return torchvision.models.get_model(name, weights=None, **kwargs)


def _trainer(**kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


@pytest.mark.parametrize("source,name,kwargs,shape", FAMILIES)
def test_num_outputs_is_the_width_of_the_converted_output(source, name, kwargs, shape):
    inet = from_torch(_cnn(source, name, kwargs), shape)
    channels = inet.in_channels
    with torch.no_grad():
        out = inet.eval()(Field(torch.zeros(1, shape[0] * shape[1], channels), PointSet.grid(shape)))  # (1, K)
    inet.train()
    assert num_outputs(inet) == out.shape[1] == kwargs["num_classes"]
    assert all(m.training for m in inet.modules())


def test_num_outputs_of_a_fully_convolutional_converted_model_is_its_channels():
    features = torchvision.models.efficientnet_b0(weights=None).features[:3]  # ends in 24 channels
    inet = from_torch(nn.Sequential(features, nn.Conv2d(24, 5, 1)), (32, 32))
    assert num_outputs(inet) == 5


class _HeadFirst(nn.Module):
    """Registers its head before its conv, and keeps a norm frozen in eval mode."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.conv = nn.Conv2d(1, 8, 3)
        self.norm = nn.BatchNorm2d(8)

    def forward(self, images):
        return self.head(self.norm(self.conv(images)).mean((2, 3)))  # (B, 3)


def test_num_outputs_follows_the_forward_and_leaves_modes_and_rng_alone():
    model = _HeadFirst()
    model.norm.eval()
    state = torch.random.get_rng_state()
    assert num_outputs(model) == 3
    assert model.training and model.conv.training and not model.norm.training
    assert torch.equal(torch.random.get_rng_state(), state)


def test_num_outputs_takes_a_declared_num_classes_and_names_what_it_cannot_read():
    declared = _HeadFirst()
    declared.num_classes = 7
    assert num_outputs(declared) == 7

    class Dict(_HeadFirst):
        def forward(self, images):
            return {"out": super().forward(images)}

    class Fails(_HeadFirst):
        def forward(self, images):
            raise RuntimeError("needs 224x224 images")

    with pytest.raises(ValueError, match="Dict predicts: it returns a dict, not logits"):
        num_outputs(Dict())
    with pytest.raises(ValueError, match=r"Fails predicts: it fails on a dummy input \(RuntimeError: needs 224x224"):
        num_outputs(Fails())


def test_a_registered_converted_resnet_trains_tests_and_checks_labels(memory_data, monkeypatch):
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))

    @register_model("converted_resnet18")
    def converted_resnet18(num_classes: int = 10) -> nn.Module:
        return from_torch(timm.create_model("resnet18", num_classes=num_classes, in_chans=1), (28, 28))

    task = INRClassifier("converted_resnet18", {"num_classes": 10})
    assert task.num_classes == 10
    dm = INRDataModule(memory_data, batch_size=8, train_sampler="sobol:64", test_samplers=["grid:8x8"])
    trainer = _trainer(max_steps=2)
    trainer.fit(task, dm)
    assert trainer.global_step == 2
    results = trainer.test(task, dm, verbose=False)
    assert 0.0 <= results[0]["test/top1/grid_8x8"] <= 1.0

    labels = torch.tensor([0, 1, 10, 2])
    bad = {s: InMemoryINRDataset.from_images(torch.rand(4, 1, 8, 8), labels) for s in ("train", "test")}
    trainer = _trainer(max_steps=1)
    with pytest.raises(ValueError, match="predicts 10 classes but the dataset has label 10"):
        trainer.fit(INRClassifier("converted_resnet18"), INRDataModule(bad, train_sampler="sobol:16"))
    assert trainer.global_step == 0
