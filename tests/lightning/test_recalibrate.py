"""RecalibrateNorms: batch-norm statistics re-estimated per evaluation setting, then put back."""

import copy

import lightning as L
import pytest
import torch

from inrnet.lightning import (INRClassifier, INRDataModule, INRSegmenter, InMemoryINRDataset, PixelClassifier,
                              PixelDataModule, RecalibrateNorms)
from inrnet.nn import recalibrate_norms

SMALL = {"widths": [4, 8], "hidden": 8, "num_classes": 4, "base_resolution": 8}


def _segmentation_data(n=4, k=3):
    g = torch.Generator().manual_seed(1)
    return InMemoryINRDataset.from_images(torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, k, (n, 12, 12)))


def _trainer(**kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def _stats(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_each_test_setting_is_scored_with_statistics_from_training_inrs_on_its_points(memory_data):
    torch.manual_seed(0)
    model = INRClassifier("inrnet2", SMALL, lr=1e-2)
    dm = INRDataModule(memory_data, batch_size=4, eval_batch_size=3, train_sampler="sobol:64",
                       test_samplers=["grid:8x8", "sobol:32"])
    trainer = _trainer(max_steps=6, callbacks=[RecalibrateNorms(num_batches=3, seed=1)])
    trainer.fit(model, dm)
    trained = _stats(model)
    metrics = {k: v for r in trainer.test(model, dm, verbose=False) for k, v in r.items()}
    for k, v in _stats(model).items():  # the trained statistics are back
        torch.testing.assert_close(v, trained[k])

    train, test = memory_data["train"], memory_data["test"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    inrs, labels = test.batch(torch.arange(len(test)))
    for i, setting in enumerate(["grid_8x8", "sobol_32"]):
        reference = copy.deepcopy(model).eval()
        batches = [dm.make_batch(*train.batch(order[4 * j:4 * j + 4].sort().values), "test", i).inputs
                   for j in range(3)]
        recalibrate_norms(reference, batches)
        assert any(not torch.allclose(a, b) for a, b in zip(_stats(reference).values(), trained.values()))
        with torch.no_grad():
            logits = reference(dm.make_batch(inrs, labels, "test", i).inputs)  # (8, 4)
        top1 = (logits.argmax(1) == labels).float().mean().item()
        assert metrics[f"test/top1/{setting}"] == pytest.approx(top1)


def test_validation_during_fit_and_other_tasks(memory_data, monkeypatch):
    import inrnet.lightning.callbacks as callbacks

    calls = []
    monkeypatch.setattr(callbacks, "recalibrate_norms", lambda *a, **k: calls.append(1) or recalibrate_norms(*a, **k))
    model = PixelClassifier("cnn2", {"num_classes": 4, "widths": [4, 8], "hidden": 8})
    dm = PixelDataModule(memory_data, batch_size=4, train_sampler="grid:8x8", val_samplers=["grid:16x16"],
                         test_samplers=["grid:16x16"], val_size=4)
    trainer = _trainer(max_steps=6, num_sanity_val_steps=1,
                       callbacks=[RecalibrateNorms(num_batches=2, stages=["val", "test"])])
    trainer.fit(model, dm)
    assert len(calls) == 2 and "val/top1/grid_16x16" in trainer.callback_metrics  # after epochs 1 and 2, none for the sanity check
    trained = _stats(model)
    assert trainer.test(model, dm, verbose=False)[0]["test/top1/grid_16x16"] >= 0
    assert len(calls) == 3
    for k, v in _stats(model).items():
        torch.testing.assert_close(v, trained[k])

    ds = _segmentation_data()
    seg = INRSegmenter("inrnet3", {"in_channels": 1, "num_classes": 3, "width": 4, "base_resolution": 6})
    dm = INRDataModule({"train": ds, "test": ds}, batch_size=2, train_sampler="sobol:64",
                       test_samplers=["sobol:36"], train_label_points=20)
    trainer = _trainer(max_steps=2, callbacks=[RecalibrateNorms(num_batches=2)])
    trainer.fit(seg, dm)
    assert "test/miou/sobol_36" in trainer.test(seg, dm, verbose=False)[0]


def test_bad_arguments_and_models_without_batch_norm(memory_data):
    with pytest.raises(ValueError, match="num_batches"):
        RecalibrateNorms(num_batches=0)
    with pytest.raises(ValueError, match="stages"):
        RecalibrateNorms(stages=["train"])
    model = INRClassifier("inrnet2", SMALL)
    for module in model.modules():
        if hasattr(module, "track_running_stats"):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    dm = INRDataModule(memory_data, batch_size=8, train_sampler="sobol:64", test_samplers=["sobol:64"])
    with pytest.raises(ValueError, match="no batch norm to recalibrate"):
        _trainer(callbacks=[RecalibrateNorms()]).test(model, dm, verbose=False)
