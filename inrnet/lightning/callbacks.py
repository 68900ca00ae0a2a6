"""Callbacks: ``SavePredictions`` writes what ``inrnet predict`` computes to one file;
``RecalibrateNorms`` re-estimates batch-norm statistics at each evaluation setting's points;
``CheckpointRNG`` (which every task module adds) checkpoints the RNGs training draws from.

    inrnet predict --config CONFIG --ckpt_path CKPT \\
        --trainer.callbacks+=inrnet.lightning.SavePredictions --trainer.callbacks.path=predictions.pt

The file holds a dict of tensors concatenated over the batches (classification:
``logits [n, K]``, ``pred [n]``, ``target [n]``; segmentation: ``logits [n, M, K]``,
``pred [n, M]``, ``target [n, M]`` and the label coordinates ``coords [M, d]``), in the
order of the predict split (one process; under DDP each rank writes ``path`` with its rank).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

from inrnet.nn.recalibrate import NormSnapshot, recalibrate_norms, restore_norms, snapshot_norms

__all__ = ["SavePredictions", "RecalibrateNorms", "CheckpointRNG"]


class SavePredictions(BasePredictionWriter):
    """Save every predict batch's outputs to ``path`` (``torch.save``) at the end of predict.

    Args:
        path: the output file; ``.rank{r}`` is inserted before the suffix on DDP rank r > 0.
    """

    def __init__(self, path: str = "predictions.pt"):
        super().__init__(write_interval="epoch")
        self.path = path

    def write_on_epoch_end(self, trainer, pl_module, predictions: Any, batch_indices: Any) -> None:
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not outputs:
            raise ValueError("predict produced no batches to save")
        merged = {}
        for key in outputs[0]:
            parts = [o[key].detach().cpu() for o in outputs]
            merged[key] = parts[0] if key == "coords" else torch.cat(parts)  # (n, ...)
        path = Path(self.path)
        if trainer.global_rank > 0:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(merged, path)


class RecalibrateNorms(Callback):
    """Before each evaluation setting, re-estimate the model's batch-norm statistics there.

    A continuous net's batch-norm statistics belong to the point density it was trained
    at: on fewer points the QMC estimates in every conv are noisier, the features' variance
    grows, and a net trained on 3136 points per step fails on 784 (see the user guide,
    "How many points to train on"). Before the first batch of each test (and, with
    ``stages=("val", "test")``, validation) DataLoader, this runs ``num_batches`` batches of
    *training* INRs, sampled on that setting's points, through the model with
    [`inrnet.nn.recalibrate_norms`][inrnet.nn.recalibrate.recalibrate_norms] (no labels, no gradients, weights untouched). The
    trained statistics are put back when the stage ends, so checkpoints and later stages
    see the model as trained.

        inrnet test --config CONFIG --ckpt_path CKPT \\
            --trainer.callbacks+=inrnet.lightning.RecalibrateNorms --trainer.callbacks.num_batches=50

    Args:
        num_batches: training batches (of the DataModule's ``batch_size``) per setting.
        stages: ``"test"`` and/or ``"val"``.
        seed: picks the training INRs (the same ones for every setting).

    Needs an [`INRDataModule`][inrnet.lightning.datamodule.INRDataModule] (or [`PixelDataModule`][inrnet.lightning.pixel.PixelDataModule])
    with a training split.
    """

    def __init__(self, num_batches: int = 50, stages: tuple[str, ...] | list[str] = ("test",), seed: int = 0):
        super().__init__()
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
        unknown = set(stages) - {"val", "test"}
        if unknown or not stages:
            raise ValueError(f"stages must be some of ('val', 'test'), got {tuple(stages)!r}")
        self.num_batches, self.stages, self.seed = num_batches, tuple(stages), seed
        self._saved: NormSnapshot | None = None

    def _batches(self, datamodule: Any, stage: str, index: int, device: torch.device):
        """``num_batches`` Batches of seeded random training INRs, evaluated on setting ``index``'s points."""
        if "train" not in datamodule.data:
            datamodule.setup("fit")
        train = datamodule.data.get("train")
        if train is None:
            raise ValueError("RecalibrateNorms needs the DataModule's training split to recalibrate on")
        size = datamodule.batch_size
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
        for i in range(min(self.num_batches, -(-len(train) // size))):
            inrs, labels = train.batch(order[i * size:(i + 1) * size].sort().values)
            yield datamodule.make_batch(inrs.to(device), labels.to(device), stage, index)

    def _start(self, trainer, pl_module, stage: str) -> None:
        if stage in self.stages:
            self._saved = snapshot_norms(pl_module)
            if not self._saved:
                raise ValueError(f"RecalibrateNorms: {type(pl_module.model).__name__} has no batch norm to recalibrate")

    def _batch_start(self, trainer, pl_module, stage: str, batch_idx: int, dataloader_idx: int) -> None:
        if stage not in self.stages or batch_idx != 0 or trainer.sanity_checking:
            return
        datamodule = trainer.datamodule

        def forward(batch) -> None:
            pl_module(batch.inputs) if batch.query is None else pl_module(batch.inputs, batch.query)

        recalibrate_norms(pl_module, self._batches(datamodule, stage, dataloader_idx, pl_module.device), forward)

    def _end(self, trainer, pl_module, stage: str) -> None:
        if stage in self.stages and self._saved is not None:
            restore_norms(self._saved)
            self._saved = None

    def on_test_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module, "test")

    def on_validation_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module, "val")

    def on_test_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch_start(trainer, pl_module, "test", batch_idx, dataloader_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self._batch_start(trainer, pl_module, "val", batch_idx, dataloader_idx)

    def on_test_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "test")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._end(trainer, pl_module, "val")


class CheckpointRNG(Callback):
    """Checkpoint the random number generators training draws from; restore them on resume.

    Dropout, and augmentations without a generator of their own
    ([`PointDropout`][inrnet.nn.augment.PointDropout] ``generator=None``), draw from the
    global RNGs, which Lightning neither saves nor restores: a resumed run would draw other
    masks than the uninterrupted one. This callback's state, saved in every checkpoint,
    holds the global torch RNG (CPU, and the current CUDA device's if CUDA is in use),
    numpy's and Python's, and the state of every ``torch.Generator`` a submodule of the
    task module keeps as ``generator`` (a seeded ``PointDropout``, ``RandomFlip``,
    ``RandomAffine``). ``fit(ckpt_path=...)`` restores them right before the first resumed
    step (after the sanity check), so with the DataModule's own state (data order, sampler
    scrambles) the resumed run reproduces the uninterrupted one.

    Every [`TaskModule`][inrnet.lightning.base.TaskModule] adds it (``configure_callbacks``).
    Under DDP the checkpoint holds rank 0's states and every rank restores them; ranks seeded
    alike (``seed_everything``) hold the same states anyway.
    """

    def __init__(self):
        super().__init__()
        self._module: torch.nn.Module | None = None
        self._restore: dict[str, Any] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._module = pl_module

    def _generators(self) -> dict[str, torch.Generator]:
        if self._module is None:
            return {}
        return {name: m.generator for name, m in self._module.named_modules()
                if isinstance(getattr(m, "generator", None), torch.Generator)}

    def state_dict(self) -> dict[str, Any]:
        """``{"torch": ByteTensor, "cuda": ByteTensor (if CUDA is in use), "numpy": {...}, "python": tuple,
        "generators": {module name: ByteTensor}}``, tensors and plain containers only
        (checkpoints load with ``weights_only=True``)."""
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(),
                 "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                           "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
                 "python": random.getstate(),
                 "generators": {name: g.get_state() for name, g in self._generators().items()}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep ``state_dict`` to restore at the start of the resumed training.

        Raises:
            ValueError: ``state_dict`` lacks the global states.
        """
        if not isinstance(state_dict, dict) or not {"torch", "numpy", "python", "generators"} <= set(state_dict):
            raise ValueError("a CheckpointRNG state holds the 'torch', 'numpy', 'python' and 'generators' states, "
                             f"got {sorted(state_dict) if isinstance(state_dict, dict) else state_dict!r}")
        self._restore = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        state, self._restore = self._restore, None
        if state is None:
            return
        generators = self._generators()
        if set(state["generators"]) != set(generators):
            raise ValueError(f"the checkpoint holds the RNGs of modules {sorted(state['generators'])}, but this "
                             f"model's generators are in modules {sorted(generators)}")
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        numpy = state["numpy"]
        np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                             numpy["has_gauss"], numpy["cached_gaussian"]))
        random.setstate(state["python"])
        for name, g in generators.items():
            g.set_state(state["generators"][name])
