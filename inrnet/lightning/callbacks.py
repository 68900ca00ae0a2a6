"""Callbacks: ``SavePredictions`` writes what ``inrnet predict`` computes to one file;
``RecalibrateNorms`` re-estimates batch-norm statistics at each evaluation setting's points.

    inrnet predict --config CONFIG --ckpt_path CKPT \\
        --trainer.callbacks+=inrnet.lightning.SavePredictions --trainer.callbacks.path=predictions.pt

The file holds a dict of tensors concatenated over the batches (classification:
``logits [n, K]``, ``pred [n]``, ``target [n]``; segmentation: ``logits [n, M, K]``,
``pred [n, M]``, ``target [n, M]`` and the label coordinates ``coords [M, d]``), in the
order of the predict split (one process; under DDP each rank writes ``path`` with its rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

from inrnet.nn.norm import NormSnapshot, recalibrate_norms, restore_norms, snapshot_norms

__all__ = ["SavePredictions", "RecalibrateNorms"]


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
    :func:`inrnet.nn.recalibrate_norms` (no labels, no gradients, weights untouched). The
    trained statistics are put back when the stage ends, so checkpoints and later stages
    see the model as trained.

        inrnet test --config CONFIG --ckpt_path CKPT \\
            --trainer.callbacks+=inrnet.lightning.RecalibrateNorms --trainer.callbacks.num_batches=50

    Args:
        num_batches: training batches (of the DataModule's ``batch_size``) per setting.
        stages: ``"test"`` and/or ``"val"``.
        seed: picks the training INRs (the same ones for every setting).

    Needs an :class:`~inrnet.lightning.INRDataModule` (or :class:`~inrnet.lightning.PixelDataModule`)
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
