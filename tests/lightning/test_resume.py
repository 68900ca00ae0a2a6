"""Exact resume: an interrupted and resumed ``fit`` ends where the uninterrupted one does.

Training draws its randomness from four places: the data order (a permutation per pass
over the data), the training sampler's scramble counter, the label-point generator
(segmentation) and the RNGs of the model (dropout, augmentations). Every run here fits 12
training items in batches of 5 (3 steps per epoch, validation after each epoch) for ``N``
steps; a resumed run starts from a checkpoint of step ``k`` in a fresh Trainer,
DataModule and module, through ``Trainer.fit(ckpt_path=...)`` as ``inrnet fit
--ckpt_path`` does, and must end with the weights and optimiser state of the straight run.
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from inrnet.cli import main
from inrnet.inr import PixelINR, save_inrs
from inrnet.lightning import CheckpointRNG, INRClassifier, INRDataModule, INRSegmenter, InMemoryINRDataset
from inrnet.models import _registry, create_model
from inrnet.nn import PointDropout, RandomAffine, RandomFlip

N = 8  # steps of every run: epochs 0 and 1 in full, 2 steps of epoch 2
SMALL = {"widths": [4, 8], "hidden": 8, "num_classes": 4, "base_resolution": 8}


@pytest.fixture
def dropout_model(monkeypatch):
    """Registers ``"dropout_inrnet2"``: point dropout on the global RNG and on a seeded generator, then inrnet2."""
    monkeypatch.setitem(_registry._MODELS, "dropout_inrnet2",
                        lambda **kw: nn.Sequential(PointDropout(0.3), PointDropout(0.2, generator=7),
                                                   create_model("inrnet2", **kw)))


def _datamodule(data, **kw):
    """16 training items: 4 held out for validation, 12 in 3 steps per epoch."""
    return INRDataModule(data, batch_size=5, val_size=4, train_sampler="sobol:64", test_samplers=["sobol:64"], **kw)


def _fit(model, datamodule, max_steps=N, ckpt_path=None, callbacks=(), **trainer_kw):
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, callbacks=list(callbacks),
                        enable_checkpointing=bool(callbacks), enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=1, **trainer_kw)
    trainer.fit(model, datamodule, ckpt_path=ckpt_path)
    return trainer


def _assert_close(ours, theirs, what):
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=0, msg=lambda m: f"{what} {key}: {m}")


def _assert_same_state(resumed, straight):
    """Weights, optimiser state and the DataModule's state agree to float tolerance."""
    _assert_close(resumed.lightning_module.state_dict(), straight.lightning_module.state_dict(), "weight")
    ours, theirs = resumed.optimizers[0].state_dict()["state"], straight.optimizers[0].state_dict()["state"]
    assert ours.keys() == theirs.keys()
    for index in ours:
        _assert_close(ours[index], theirs[index], f"optimiser state of parameter {index}")
    ours, theirs = resumed.datamodule.state_dict(), straight.datamodule.state_dict()
    assert ours["samplers"] == theirs["samplers"] == {"train/0": {"calls": N}}
    assert torch.equal(ours["label_rng"], theirs["label_rng"])
    assert resumed.global_step == straight.global_step == N


@pytest.mark.parametrize("model", ["inrnet2", "dropout_inrnet2"])
def test_resume_from_a_checkpoint_of_the_run_reproduces_it(tmp_path, memory_data, model, dropout_model):
    torch.manual_seed(0)
    every_step = ModelCheckpoint(tmp_path, "{step}", save_top_k=-1, every_n_train_steps=1)
    straight = _fit(INRClassifier(model, SMALL), _datamodule(memory_data), callbacks=[every_step])
    # step 3: after the epoch's last batch (resumes at epoch 1); step 4: mid-epoch 1. Both cross epoch ends.
    for k in (3, 4):
        torch.manual_seed(k)  # other initial weights and global RNG: all must come from the checkpoint
        resumed = _fit(INRClassifier(model, SMALL), _datamodule(memory_data), ckpt_path=tmp_path / f"step={k}.ckpt")
        _assert_same_state(resumed, straight)


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_max_steps_run_continued_reproduces_the_straight_one(tmp_path, memory_data, dropout_model, shuffle):
    torch.manual_seed(0)
    straight = _fit(INRClassifier("dropout_inrnet2", SMALL), _datamodule(memory_data, shuffle=shuffle))
    torch.manual_seed(0)  # stops mid-epoch 1; Lightning closes that epoch, the order must not skip its rest
    _fit(INRClassifier("dropout_inrnet2", SMALL), _datamodule(memory_data, shuffle=shuffle), max_steps=5,
         callbacks=[ModelCheckpoint(tmp_path, save_last=True)])
    torch.manual_seed(5)
    resumed = _fit(INRClassifier("dropout_inrnet2", SMALL), _datamodule(memory_data, shuffle=shuffle),
                   ckpt_path=tmp_path / "last.ckpt")
    _assert_same_state(resumed, straight)


def test_resume_when_lightning_replaces_the_sampler(tmp_path, memory_data):
    """``overfit_batches`` swaps in a SequentialSampler: the first 2 batches, epoch after epoch."""
    torch.manual_seed(0)
    every_step = ModelCheckpoint(tmp_path, "{step}", save_top_k=-1, every_n_train_steps=1)
    straight = _fit(INRClassifier("inrnet2", SMALL), _datamodule(memory_data), callbacks=[every_step],
                    overfit_batches=2)
    torch.manual_seed(3)
    resumed = _fit(INRClassifier("inrnet2", SMALL), _datamodule(memory_data), ckpt_path=tmp_path / "step=3.ckpt",
                   overfit_batches=2)
    _assert_same_state(resumed, straight)


def test_segmentation_label_points_resume(tmp_path):
    g = torch.Generator().manual_seed(1)
    maps = torch.randint(0, 3, (16, 8, 8), generator=g)
    data = {"train": InMemoryINRDataset.from_images(torch.rand(16, 1, 8, 8, generator=g), maps),
            "test": InMemoryINRDataset.from_images(torch.rand(4, 1, 8, 8, generator=g), maps[:4])}

    def fit(**kw):
        model = INRSegmenter("inrnet3", {"in_channels": 1, "num_classes": 3, "width": 4, "base_resolution": 8})
        return _fit(model, _datamodule(data, train_label_points=10), **kw)

    torch.manual_seed(0)
    straight = fit(callbacks=[ModelCheckpoint(tmp_path, "{step}", save_top_k=-1, every_n_train_steps=1)])
    torch.manual_seed(4)
    _assert_same_state(fit(ckpt_path=tmp_path / "step=4.ckpt"), straight)


def test_inrnet_fit_ckpt_path_continues_exactly(tmp_path, monkeypatch):
    """``inrnet fit --ckpt_path last.ckpt`` of a 2-step run, to 5 steps, ends as a 5-step run does."""
    monkeypatch.chdir(tmp_path)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    save_inrs(tmp_path / "data" / "train", PixelINR(x[:12], "linear"), torch.arange(12) % 4)
    save_inrs(tmp_path / "data" / "test", PixelINR(x[12:], "linear"), torch.arange(4))

    def fit(name, steps, *extra):
        main(["fit", "--seed_everything", "0", "--model", "INRClassifier", "--model.model", "inrnet2",
              "--model.model_kwargs", str(SMALL | {"in_channels": 1}), "--data", "INRDataModule",
              "--data.dataset", str(tmp_path / "data"), "--data.val_size", "4", "--data.batch_size", "3",
              "--data.train_sampler", "sobol:64", "--data.test_samplers", "[sobol:64]",
              "--trainer.max_steps", str(steps), "--trainer.accelerator", "cpu", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(tmp_path / name),
              "--trainer.callbacks.save_last", "true", *extra])
        return torch.load(tmp_path / name / "last.ckpt", weights_only=True)

    straight = fit("straight", 5)
    fit("stopped", 2)  # 8 training items in batches of 3: stops mid-epoch 0, resumes across its end
    resumed = fit("resumed", 5, "--ckpt_path", str(tmp_path / "stopped" / "last.ckpt"))
    assert resumed["global_step"] == straight["global_step"] == 5
    _assert_close(resumed["state_dict"], straight["state_dict"], "weight")
    ours, theirs = resumed["optimizer_states"][0]["state"], straight["optimizer_states"][0]["state"]
    for index in theirs:
        _assert_close(ours[index], theirs[index], f"optimiser state of parameter {index}")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_train_loader_state_counts_the_batches_handed_out(memory_data, num_workers):
    def loader():
        dm = INRDataModule(memory_data, batch_size=5, train_sampler="sobol:64", num_workers=num_workers, seed=3)
        return dm.train_dataloader()

    def labels(batches):
        return [b[1].tolist() for b in batches]

    straight = loader()
    passes = [labels(straight) for _ in range(3)]  # 16 items: batches of 5, 5, 5, 1
    assert passes[0] != passes[1] and sorted(sum(passes[0], [])) == sorted(sum(passes[1], []))
    assert straight.state_dict() == {"epoch": 2, "batches": 4}
    interrupted = loader()
    labels(interrupted)
    batches = iter(interrupted)
    next(batches), next(batches)  # the workers prefetch more: they do not count
    assert interrupted.state_dict() == {"epoch": 1, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(interrupted.state_dict())
    assert labels(resumed) == passes[1][2:]  # the rest of pass 1
    assert labels(resumed) == passes[2]
    finished = loader()
    finished.load_state_dict({"epoch": 0, "batches": 4})  # a finished pass: the next one starts
    assert labels(finished) == passes[1]


def test_bad_states_raise(memory_data):
    dm = INRDataModule(memory_data, batch_size=5, train_sampler="sobol:64")
    with pytest.raises(ValueError, match="an INRDataModule state is"):
        dm.load_state_dict({"samplers": {}})
    with pytest.raises(ValueError, match="a training DataLoader state is"):
        dm.train_dataloader().load_state_dict({"epoch": -1, "batches": 0})
    with pytest.raises(ValueError, match="a CheckpointRNG state holds"):
        CheckpointRNG().load_state_dict({"torch": torch.get_rng_state()})


def test_resume_with_augmentation_reproduces_the_run(tmp_path, memory_data):
    """Flips, affine maps and point dropout of the training INRs come from the DataModule's checkpointed generator."""
    def datamodule():
        return _datamodule(memory_data, point_dropout=0.25,
                           train_transforms=[RandomFlip(dims=(0, 1)), RandomAffine(max_rotation=20.0, max_scale=0.1)])

    torch.manual_seed(0)
    straight = _fit(INRClassifier("inrnet2", SMALL), datamodule(),
                    callbacks=[ModelCheckpoint(tmp_path, "{step}", save_top_k=-1, every_n_train_steps=1)])
    torch.manual_seed(4)
    resumed = _fit(INRClassifier("inrnet2", SMALL), datamodule(), ckpt_path=tmp_path / "step=4.ckpt")
    _assert_same_state(resumed, straight)
    assert torch.equal(resumed.datamodule.state_dict()["augment_rng"], straight.datamodule.state_dict()["augment_rng"])
