"""Classifying INRs (paper Alg. 1) and the pixel baseline, as LightningModules.

Alg. 1: for each minibatch of INRs and labels, draw query points from a low-discrepancy
sampler, evaluate the INR-Net on the INRs sampled there, backpropagate the loss. The
points and the sampling live in [`INRDataModule`][inrnet.lightning.datamodule.INRDataModule]; a step here
receives a [`Batch`][inrnet.lightning.datamodule.Batch] whose ``inputs`` is the sampled Field.

Metrics (torchmetrics, synchronised across DDP processes): top-1 and top-3 accuracy
(top-3 when there are more than 3 classes) and the loss, per evaluation setting, logged
as ``{stage}/{metric}/{setting}``, e.g. ``test/top1/grid_56x56``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from inrnet.lightning.base import TaskModule
from inrnet.lightning.datamodule import Batch

__all__ = ["INRClassifier", "PixelClassifier"]


class INRClassifier(TaskModule):
    """An INR-Net classifier (``inrnet2``, ``inrnet4``, a converted CNN ``convert``, ...) trained as in Alg. 1.

    Args:
        model: registered model name; it maps a Field [B, N, C] to logits [B, K].
        model_kwargs: its keyword arguments.
        lr: learning rate, see [`TaskModule`][inrnet.lightning.base.TaskModule].
        weight_decay: see [`TaskModule`][inrnet.lightning.base.TaskModule].
        scheduler: ``"constant"`` or ``"cosine"``.
        optimizer: ``"adamw"`` or ``"sgd"``.
        label_smoothing: of the cross-entropy loss.

    Shapes:
        ``forward(inputs) -> logits Tensor[B, K]``; ``predict_step`` returns
        ``{"logits": [B, K], "pred": [B], "target": [B]}``.
    """

    def __init__(self, model: str = "inrnet2", model_kwargs: dict[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-2, scheduler: str = "constant", optimizer: str = "adamw",
                 label_smoothing: float = 0.0):
        super().__init__(model, model_kwargs, lr, weight_decay, scheduler, optimizer)

    def forward(self, inputs: Any) -> Tensor:
        return self.model(inputs)

    def _topks(self) -> tuple[int, ...]:
        return (1, 3) if self.num_classes > 3 else (1,)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch.inputs)
        loss = F.cross_entropy(logits, batch.target, label_smoothing=self.hparams.label_smoothing)
        top1 = (logits.argmax(1) == batch.target).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/top1", top1, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, stage: str, batch: Batch) -> None:
        logits = self(batch.inputs)
        loss = F.cross_entropy(logits, batch.target)
        self.log(f"{stage}/loss/{batch.setting}", loss, batch_size=len(batch), sync_dist=True,
                 add_dataloader_idx=False)
        for k in self._topks():
            self.log_metric(stage, batch.setting, f"top{k}",
                            lambda k=k: MulticlassAccuracy(self.num_classes, top_k=k, average="micro"),
                            logits, batch.target, batch_size=len(batch), prog_bar=k == 1)

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        logits = self(batch.inputs)
        return {"logits": logits, "pred": logits.argmax(1), "target": batch.target}


class PixelClassifier(INRClassifier):
    """The pixel twin (``cnn2``, ``cnn4``): the same task on images [B, C, H, W] from a
    [`PixelDataModule`][inrnet.lightning.pixel.PixelDataModule]. Arguments as [`INRClassifier`][inrnet.lightning.classification.INRClassifier]."""

    takes = "image"

