"""Task modules: metrics against hand counts, sub-pixel scoring, input checks, checkpoints."""

import lightning as L
import pytest
import torch

from inrnet.field import PointSet
from inrnet.lightning import (INRClassifier, INRDataModule, INRSegmenter, PixelClassifier, PixelDataModule,
                              PixelSegmenter, InMemoryINRDataset, load_task, logits_at, model_input, num_outputs)
from inrnet.lightning.datamodule import IGNORE_INDEX
from inrnet.models import create_model


def _trainer(**kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


SMALL = {"widths": [4, 8], "hidden": 8, "num_classes": 4, "base_resolution": 8}


def test_model_introspection():
    assert model_input(create_model("inrnet2")) == ("field", 2, 1)
    assert model_input(create_model("fcn3", in_channels=3)) == ("image", 2, 3)
    assert num_outputs(create_model("inrnet4", num_classes=12)) == 12
    assert num_outputs(create_model("inrnet5", num_classes=7, conv="mlp", width=4)) == 7  # not the kernel MLP's
    assert num_outputs(create_model("fcn5", num_classes=5, width=4)) == 5


def test_classifier_metrics_match_hand_counts(memory_data):
    model = INRClassifier("inrnet2", SMALL)
    dm = INRDataModule(memory_data, batch_size=8, eval_batch_size=3, train_sampler="sobol:64",
                       test_samplers=["grid:8x8", "sobol:64"])
    trainer = _trainer(max_steps=2)
    trainer.fit(model, dm)
    results = trainer.test(model, dm, verbose=False)
    metrics = {k: v for r in results for k, v in r.items()}
    model.eval()
    test = memory_data["test"]
    inrs, labels = test.batch(torch.arange(len(test)))
    for i, setting in enumerate(["grid_8x8", "sobol_64"]):
        with torch.no_grad():
            logits = model(dm.make_batch(inrs, labels, "test", i).inputs)  # (8, 4)
        top1 = sum(int(logits[b].argmax() == labels[b]) for b in range(len(labels))) / len(labels)
        top3 = sum(int(labels[b] in logits[b].topk(3).indices) for b in range(len(labels))) / len(labels)
        assert metrics[f"test/top1/{setting}"] == pytest.approx(top1)
        assert metrics[f"test/top3/{setting}"] == pytest.approx(top3)


def test_classifier_learns_the_tiny_task(memory_data):
    torch.manual_seed(0)
    model = INRClassifier("inrnet2", SMALL, lr=1e-2)
    dm = INRDataModule(memory_data, batch_size=16, train_sampler="sobol:64", test_samplers=["grid:8x8"])
    trainer = _trainer(max_steps=60)
    trainer.fit(model, dm)
    assert trainer.test(model, dm, verbose=False)[0]["test/top1/grid_8x8"] >= 0.75


def _segmentation_data(n=4, k=3):
    g = torch.Generator().manual_seed(1)
    maps = torch.randint(0, k, (n, 12, 12), generator=g)
    maps[:, 0] = IGNORE_INDEX
    return InMemoryINRDataset.from_images(torch.rand(n, 1, 6, 6, generator=g), maps)


def _miou_reference(pred, target, k):
    """Mean IoU over the classes present in pred or target, void ignored: plain counting."""
    ious = []
    for c in range(k):
        inter = union = 0
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            if t == IGNORE_INDEX:
                continue
            inter += p == c and t == c
            union += p == c or t == c
        if union:
            ious.append(inter / union)
    return sum(ious) / len(ious)


@pytest.mark.parametrize("task,model,dm_cls,spec", [(INRSegmenter, "inrnet3", INRDataModule, "sobol:64"),
                                                    (PixelSegmenter, "fcn5", PixelDataModule, "grid:6x6")])
def test_segmenters_score_at_subpixel_label_coordinates(task, model, dm_cls, spec):
    ds = _segmentation_data()
    kw = {"in_channels": 1, "num_classes": 3, "width": 4} | ({"base_resolution": 6} if model == "inrnet3" else {})
    module = task(model, kw)
    dm = dm_cls({"train": ds, "test": ds}, batch_size=4, eval_batch_size=3, train_sampler=spec,
                test_samplers=[spec], train_label_points=20)
    trainer = _trainer(max_steps=2)
    trainer.fit(module, dm)
    metrics = trainer.test(module, dm, verbose=False)[0]
    module.eval()
    inrs, maps = ds.batch(torch.arange(4))
    batch = dm.make_batch(inrs, maps, "test")
    assert batch.query.n == 144  # every label of the 12x12 maps, twice finer than the 6x6 input
    with torch.no_grad():
        pred = module(batch.inputs, batch.query).argmax(-1)  # (4, 144)
    valid = batch.target != IGNORE_INDEX
    name = spec.replace(":", "_")
    assert metrics[f"test/pixacc/{name}"] == pytest.approx((pred == batch.target)[valid].float().mean().item())
    assert metrics[f"test/miou/{name}"] == pytest.approx(_miou_reference(pred, batch.target, 3))


def test_logits_at_is_bilinear_between_cell_centres():
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    q = torch.tensor([[-0.75, -0.8], [0.1, 0.3], [-0.99, 0.95], [0.5, -0.2]], dtype=torch.float64)
    out = logits_at(logits, PointSet(q))  # (2, 4, 3)
    for m, (y, x) in enumerate(q.tolist()):  # reference: interpolate by hand in index space, clamped
        u = min(max(((y + 1) * 4 - 1) / 2, 0), 3)
        v = min(max(((x + 1) * 5 - 1) / 2, 0), 4)
        i0, j0 = min(int(u), 2), min(int(v), 3)
        a, b = u - i0, v - j0
        ref = ((1 - a) * (1 - b) * logits[..., i0, j0] + (1 - a) * b * logits[..., i0, j0 + 1]
               + a * (1 - b) * logits[..., i0 + 1, j0] + a * b * logits[..., i0 + 1, j0 + 1])
        torch.testing.assert_close(out[:, m], ref, rtol=1e-10, atol=1e-10)
    on_grid = logits_at(logits, PointSet.grid((4, 5), dtype=torch.float64))
    torch.testing.assert_close(on_grid, logits.flatten(2).transpose(1, 2), rtol=1e-12, atol=1e-12)


def test_input_checks_before_training(memory_data):
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        INRClassifier("resnet9")
    with pytest.raises(ValueError, match="needs an INR-Net.*'cnn2' is a pixel model"):
        INRClassifier("cnn2")
    with pytest.raises(ValueError, match="needs a pixel model"):
        PixelClassifier("inrnet2")
    spec = {"dim": 2, "channels": 1, "label_dims": 0, "max_label": 3}
    model = INRClassifier("inrnet2", SMALL)
    model.check_input(spec)
    with pytest.raises(ValueError, match=r"2-d coordinates but the dataset's INRs take d=3"):
        model.check_input(spec | {"dim": 3})
    with pytest.raises(ValueError, match=r"1 input channel\(s\) but the dataset's INRs output 3.*in_channels=3"):
        model.check_input(spec | {"channels": 3})
    with pytest.raises(ValueError, match="predicts 4 classes but the dataset has label 9"):
        model.check_input(spec | {"max_label": 9})
    with pytest.raises(ValueError, match="needs class labels"):
        model.check_input(spec | {"label_dims": 2})
    rgb = {s: InMemoryINRDataset.from_images(torch.rand(4, 3, 8, 8), torch.arange(4)) for s in ("train", "test")}
    trainer = _trainer(max_steps=1)
    with pytest.raises(ValueError, match="output 3"):
        trainer.fit(model, INRDataModule(rgb, train_sampler="sobol:16"))
    assert trainer.global_step == 0


def test_checkpoints_rebuild_by_name_and_refuse_other_architectures(memory_data, tmp_path):
    model = INRClassifier("inrnet2", SMALL)
    trainer = _trainer(max_steps=1)
    trainer.fit(model, INRDataModule(memory_data, train_sampler="sobol:32"))
    path = tmp_path / "a.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_task(path)
    assert type(loaded) is INRClassifier and loaded.hparams.model_kwargs == SMALL
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    other = INRClassifier("inrnet4", SMALL)
    trainer = _trainer(max_steps=2)
    with pytest.raises(ValueError, match="checkpoint holds INRClassifier with model.*'inrnet2'.*builds.*'inrnet4'"):
        trainer.fit(other, INRDataModule(memory_data, train_sampler="sobol:32"), ckpt_path=path)
    torch.save({"state_dict": {}}, tmp_path / "b.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint of an inrnet task"):
        load_task(tmp_path / "b.ckpt")
