"""``SavePredictions``: write what ``inrnet predict`` computes to one file.

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
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["SavePredictions"]


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
