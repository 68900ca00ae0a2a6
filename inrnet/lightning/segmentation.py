"""Dense prediction on INRs (paper Alg. 2) and the pixel baseline, as LightningModules.

Alg. 2: the INR-Net maps the input INRs to output INRs ``g_i``, which are evaluated at
the coordinates of the labels, ``g_i(x_ij)``; the loss compares them with the labels
``y_ij``. Labels are label maps, so their coordinates are the cell centres of the label
grid: at a finer resolution than the points the input was sampled at, they are
sub-pixel queries. The pixel baseline's logits live on its input grid; they are
bilinearly interpolated to the same label coordinates (the usual FCN upsampling), so
both are scored at exactly the same points.

Metrics (torchmetrics, synchronised across DDP processes), void labels
([`IGNORE_INDEX`][inrnet.lightning.datamodule.IGNORE_INDEX]) ignored: mean IoU over the classes
present, and pixel accuracy, logged as ``{stage}/miou/{setting}`` and
``{stage}/pixacc/{setting}``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from inrnet.field import PointSet
from inrnet.lightning.base import TaskModule
from inrnet.lightning.datamodule import IGNORE_INDEX, Batch
from inrnet.lightning.render import render_labels

__all__ = ["INRSegmenter", "PixelSegmenter", "logits_at"]


def logits_at(logits: Tensor, query: PointSet) -> Tensor:
    """Bilinear interpolation of pixel logits at query coordinates (cell-centre convention).

    Coordinate ``k`` belongs to axis ``k`` of the logits' spatial dims; values between
    cell centres are interpolated, beyond the outer centres clamped (``align_corners=False,
    padding_mode="border"``): at the grid's own cell centres this returns the logits exactly.

    Args:
        logits: Tensor[B, K, H, W].
        query: M points in ``[-1, 1]^2``.

    Returns:
        Tensor[B, M, K].
    """
    if logits.dim() != 4 or query.dim != 2:
        raise ValueError(f"logits_at takes logits [B, K, H, W] and 2-d queries, got {tuple(logits.shape)} "
                         f"and coords {tuple(query.coords.shape)}")
    b = logits.shape[0]
    xy = query.coords.to(logits.dtype).flip(-1)  # (M, 2): grid_sample wants (x = column, y = row)
    xy = xy.reshape(1, -1, 1, 2).expand(b, -1, -1, -1)  # (B, M, 1, 2)
    out = F.grid_sample(logits, xy, mode="bilinear", padding_mode="border", align_corners=False)  # (B, K, M, 1)
    return out.squeeze(-1).transpose(1, 2)  # (B, M, K)


class INRSegmenter(TaskModule):
    """An INR-Net segmenter (``inrnet3``, ``inrnet5``) trained as in Alg. 2.

    Args:
        model: registered model name; ``model(field, query)`` returns a Field of logits
            [B, M, K] at the query points.
        model_kwargs: its keyword arguments.
        lr: learning rate, see [`TaskModule`][inrnet.lightning.base.TaskModule].
        weight_decay: see [`TaskModule`][inrnet.lightning.base.TaskModule].
        scheduler: ``"constant"`` or ``"cosine"``.
        optimizer: ``"adamw"`` or ``"sgd"``.

    Shapes:
        ``forward(inputs, query) -> logits Tensor[B, M, K]`` at the M query points, which is
        ``decode(encode(inputs), query)``; ``predict_step`` returns ``{"logits": [B, M, K],
        "pred": [B, M], "target": [B, M], "coords": [M, d]}``, or, while `render_shape` is
        set (by [`LabelMapWriter`][inrnet.lightning.render.LabelMapWriter]), ``{"labels":
        [B, *render_shape]}`` (uint8 for K <= 256 classes, else int64), the label maps on that
        grid, computed by [`render_labels`][inrnet.lightning.render.render_labels] in chunks of
        `render_chunk_points` points.
    """

    labels = "maps"
    render_shape: tuple[int, ...] | None = None
    """Set: ``predict_step`` renders label maps of this shape instead of scoring the label points."""
    render_chunk_points: int = 1 << 14
    """Query points per chunk of a render."""

    def __init__(self, model: str = "inrnet3", model_kwargs: dict[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-2, scheduler: str = "constant", optimizer: str = "adamw"):
        super().__init__(model, model_kwargs, lr, weight_decay, scheduler, optimizer)

    def forward(self, inputs: Any, query: PointSet) -> Tensor:
        return self.model(inputs, query).values

    def encode(self, inputs: Any) -> Any:
        """What does not depend on the query points, computed once per batch: the backbone's
        ``encode(inputs)`` if it has ``encode`` and ``decode`` (as
        [`INRNetSegmenter`][inrnet.models.inr_nets.INRNetSegmenter]), else the inputs themselves."""
        if callable(getattr(self.model, "encode", None)) and callable(getattr(self.model, "decode", None)):
            return self.model.encode(inputs)
        return inputs

    def decode(self, encoded: Any, query: PointSet) -> Tensor:
        """Logits Tensor[B, M, K] at the M ``query`` points from the output of
        [`encode`][inrnet.lightning.segmentation.INRSegmenter.encode] (a backbone without
        ``encode``/``decode`` runs in full here, once per call)."""
        if callable(getattr(self.model, "encode", None)) and callable(getattr(self.model, "decode", None)):
            return self.model.decode(encoded, query).values
        return self(encoded, query)

    def _step_logits(self, batch: Batch) -> Tensor:
        if batch.query is None:
            raise ValueError("a segmentation batch needs query points (labels must be label maps [B, H, W])")
        return self(batch.inputs, batch.query)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self._step_logits(batch)  # (B, M, K)
        loss = F.cross_entropy(logits.transpose(1, 2), batch.target, ignore_index=IGNORE_INDEX)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, stage: str, batch: Batch) -> None:
        logits = self._step_logits(batch)  # (B, M, K)
        loss = F.cross_entropy(logits.transpose(1, 2), batch.target, ignore_index=IGNORE_INDEX)
        pred = logits.argmax(-1)  # (B, M)
        k, kw = self.num_classes, {"batch_size": len(batch)}
        self.log(f"{stage}/loss/{batch.setting}", loss, sync_dist=True, add_dataloader_idx=False, **kw)
        self.log_metric(stage, batch.setting, "miou",
                        lambda: MulticlassJaccardIndex(k, average="macro", ignore_index=IGNORE_INDEX),
                        pred, batch.target, prog_bar=True, **kw)
        self.log_metric(stage, batch.setting, "pixacc",
                        lambda: MulticlassAccuracy(k, average="micro", ignore_index=IGNORE_INDEX),
                        pred, batch.target, **kw)

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        if self.render_shape is not None:
            dtype = torch.uint8 if self.num_classes <= 256 else torch.long
            return {"labels": render_labels(self, batch.inputs, self.render_shape,
                                            chunk_points=self.render_chunk_points, dtype=dtype)}
        logits = self._step_logits(batch)
        return {"logits": logits, "pred": logits.argmax(-1), "target": batch.target, "coords": batch.query.coords}


class PixelSegmenter(INRSegmenter):
    """The pixel twin (``fcn3``, ``fcn5``) on images [B, C, H, W] from a
    [`PixelDataModule`][inrnet.lightning.pixel.PixelDataModule], scored at the same label coordinates.
    Arguments as [`INRSegmenter`][inrnet.lightning.segmentation.INRSegmenter]."""

    takes = "image"

    def forward(self, inputs: Tensor, query: PointSet) -> Tensor:
        return logits_at(self.model(inputs), query)

    def encode(self, inputs: Tensor) -> Tensor:
        """The pixel logits Tensor[B, K, H, W] on the input grid."""
        return self.model(inputs)

    def decode(self, encoded: Tensor, query: PointSet) -> Tensor:
        """The logits interpolated at ``query``, Tensor[B, M, K] (see
        [`logits_at`][inrnet.lightning.segmentation.logits_at])."""
        return logits_at(encoded, query)
