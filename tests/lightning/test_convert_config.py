"""A converted pretrained CNN (``model: convert``) fine-tuned and tested through the tasks and the
CLI, and rebuilt from its checkpoints without the weights file it started from.

Weights are random: none (``weights: null``) or a state dict the test writes and deletes.
"""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
import yaml

from inrnet.cli import build, main
from inrnet.convert.pretrained import NoNetworkError, WeightsFileNotFoundError
from inrnet.inr import PixelINR, save_inrs
from inrnet.lightning import INRClassifier, INRDataModule, load_task
from inrnet.lightning.callbacks import CheckpointRNG

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "fashion_mnist" / "convert_efficientnet.yaml"
RUN = Path("runs") / "fashion_mnist_convert_efficientnet"


def _en(weights, size: int = 8, classes: int = 4) -> dict:
    """INR-Net-EN's model_kwargs at a small size: EfficientNet-B0 features[:3] and a linear head."""
    return {"source": "torchvision/efficientnet_b0", "input_shape": [size, size], "weights": weights,
            "in_channels": 1, "truncate": "features[:3]", "head": "linear", "num_classes": classes}


def _trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, **kw)


def _weights_file(tmp_path) -> Path:
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), path)
    return path


def _tree(root: Path) -> Path:
    """A tiny Fashion-MNIST-like dataset directory: 28x28 gray INRs, 10 classes, the config's splits."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("test_fourier", 8)):
        save_inrs(root / split, PixelINR(torch.rand(n, 1, 28, 28, generator=g), "linear"), torch.arange(n) % 10)
    return root


def _tiny(data: Path, weights: str) -> list[str]:
    return ["--data.dataset", str(data), "--data.limit_train", "null", "--data.val_size", "4",
            "--data.batch_size", "4", "--data.eval_batch_size", "8", "--trainer.max_steps", "2",
            "--data.test_samplers", "[grid:28x28, sobol:784]", "--model.init_args.model_kwargs.weights", weights,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_the_config_is_table_e2s_protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, task, dm = build(["--config", str(CONFIG), "--trainer.logger", "false",
                               "--model.init_args.model_kwargs.weights", "null"])
    kwargs = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["model_kwargs"]
    assert kwargs["source"] == "torchvision/efficientnet_b0" and kwargs["truncate"] == "features[:3]"
    assert kwargs["head"] == "linear" and Path(kwargs["weights"]).suffix == ".pth"
    assert type(task) is INRClassifier and task.hparams.optimizer == "adamw" and task.hparams.lr == 1e-3
    assert task.num_classes == 10 and task.in_channels == 1 and task.model.input_shape == (28, 28)
    torch.testing.assert_close(task.model.normalize.mean.flatten(), torch.tensor([0.449]))  # ImageNet's, gray
    assert dm.specs["train"] == ["sobol:784"] and {"grid:28x28", "sobol:784"} <= set(dm.specs["test"])
    assert dm.limits["train"] - dm.val_size == 2000  # 200 per class


@pytest.mark.parametrize("weights", ["null", "file"])
def test_inrnet_fit_then_test_from_the_checkpoint_through_the_cli(weights, tmp_path, monkeypatch):
    """``inrnet fit`` for 2 steps, then ``inrnet test --ckpt_path`` on grid and Sobol points; with
    a weights file, it is deleted before testing: the checkpoint supersedes it."""
    monkeypatch.chdir(tmp_path)
    data = _tree(tmp_path / "data")
    path = _weights_file(tmp_path) if weights == "file" else None
    tiny = _tiny(data, str(path) if path else "null")
    main(["fit", "--config", str(CONFIG), *tiny])
    ckpt = RUN / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    if path is not None:
        path.unlink()
    main(["test", "--config", str(CONFIG), "--ckpt_path", str(ckpt), *tiny])
    (row,) = csv.DictReader(open(RUN / "version_1" / "metrics.csv"))
    for setting in ("grid_28x28", "sobol_784"):
        assert 0.0 <= float(row[f"test/top1/{setting}"]) <= 1.0
    saved = torch.load(ckpt, weights_only=True)
    assert saved["inrnet"]["model"]["name"] == "convert"
    assert saved["hyper_parameters"]["model_kwargs"]["weights"] in ([str(path)] if path else [None, "None"])  # the
    # command line hands `null` inside model_kwargs (a dict of Any) on as "None", which means None too


def test_a_checkpoint_supersedes_the_weights_file(memory_data, tmp_path):
    path = _weights_file(tmp_path)
    task = INRClassifier("convert", _en(str(path)))
    head = task.model.get_parameter("head.fc.weight").detach().clone()
    dm = INRDataModule(memory_data, batch_size=8, train_sampler="sobol:64", test_samplers=["grid:8x8"])
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(task, dm)
    assert not torch.equal(task.model.get_parameter("head.fc.weight"), head)  # it trained
    (ckpt,) = tmp_path.rglob("*.ckpt")
    path.unlink()

    loaded = load_task(ckpt)  # rebuilt from the checkpoint's arguments, which still name the file
    assert loaded.hparams.model_kwargs["weights"] == str(path)
    for (k, v), (k2, v2) in zip(task.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    batch = dm.make_batch(*memory_data["test"].batch([0, 1]), "test")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(batch.inputs), task.eval()(batch.inputs))

    fresh = INRClassifier("convert", _en(str(path)))  # as `inrnet test --config ... --ckpt_path` builds it
    results = _trainer(tmp_path).test(fresh, dm, ckpt_path=ckpt, verbose=False)
    assert 0.0 <= results[0]["test/top1/grid_8x8"] <= 1.0
    assert torch.equal(fresh.model.get_parameter("head.fc.weight"), task.model.get_parameter("head.fc.weight"))

    orphan = INRClassifier("convert", _en(str(path)))  # nothing supplies the weights
    with pytest.raises(WeightsFileNotFoundError, match="efficientnet_b0.pth does not exist") as info:
        orphan(batch.inputs)
    assert "none was loaded" in " ".join(info.value.__notes__)
    trainer = _trainer(tmp_path, max_steps=1)
    with pytest.raises(WeightsFileNotFoundError):
        trainer.fit(orphan, dm)
    assert trainer.global_step == 0


def test_offline_hub_weights_fail_before_the_first_step_unless_a_checkpoint_supplies_them(
        memory_data, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    kwargs = {"source": "timm/resnet18", "input_shape": [8, 8], "weights": "pretrained", "in_channels": 1,
              "num_classes": 4}
    task = INRClassifier("convert", kwargs)
    assert task.num_classes == 4 and task.model.config == {"name": "convert", **kwargs}
    dm = INRDataModule(memory_data, batch_size=8, train_sampler="sobol:64", test_samplers=["grid:8x8"])
    trainer = _trainer(tmp_path, max_steps=1)
    with pytest.raises(NoNetworkError, match="no network connection"):
        trainer.fit(task, dm)
    assert trainer.global_step == 0

    source = INRClassifier("convert", {**kwargs, "weights": None})
    checkpoint = {"inrnet": {"task": "INRClassifier", "model": {"name": "convert", **kwargs}},
                  "state_dict": source.state_dict()}
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])
    trainer = _trainer(tmp_path, max_steps=1, callbacks=[CheckpointRNG()])
    trainer.fit(task, dm)
    assert trainer.global_step == 1
