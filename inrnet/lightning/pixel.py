"""``PixelDataModule``: the INR datasets as images, for the pixel baselines.

The paper's CNNs "sample INRs along the grid": the same INRs an INR-Net sees, evaluated at
the cell centres of an image grid, reshaped to images ``[B, C, H, W]``. Everything else
(splits, subsets, DDP sharding, evaluation settings, segmentation label points) is
[`INRDataModule`][inrnet.lightning.datamodule.INRDataModule]'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from inrnet.field import Field
from inrnet.lightning.datamodule import INRDataModule

__all__ = ["PixelDataModule"]


class PixelDataModule(INRDataModule):
    """The same data for pixel models: INRs rendered on a grid, as images Tensor[B, C, *shape].

    Every sampler spec must be a grid (``"grid:28x28"``). INR datasets are rendered at the
    grid's cell centres, exactly as the paper's CNNs sample INRs; for pixel images wrapped
    in [`from_images`][inrnet.lightning.data.InMemoryINRDataset.from_images] (``"linear"``), a
    finer grid is their bilinear upsampling. Arguments as [`INRDataModule`][inrnet.lightning.datamodule.INRDataModule].
    """

    def __init__(self, dataset: Any = "fashion_mnist", root: str | None = None, train_split: str = "train",
                 val_split: str | None = None, test_split: str = "test", predict_split: str | None = None,
                 batch_size: int = 64, eval_batch_size: int | None = None, train_sampler: str = "grid:28x28",
                 val_samplers: Sequence[str] | None = None, test_samplers: Sequence[str] = ("grid:28x28",),
                 train_label_points: int | None = None, eval_label_stride: int = 1, limit_train: int | None = None,
                 limit_val: int | None = None, limit_test: int | None = None, val_size: int = 0,
                 shuffle: bool = True, num_workers: int = 0, chunk_size: int = 64, seed: int = 0):
        for spec in [train_sampler, *(val_samplers or []), *test_samplers]:
            if not str(spec).strip().startswith("grid"):
                raise ValueError(f"pixel models need grid samplers like 'grid:28x28', got {spec!r}")
        super().__init__(dataset, root, train_split, val_split, test_split, predict_split, batch_size,
                         eval_batch_size, train_sampler, val_samplers, test_samplers, train_label_points,
                         eval_label_stride, limit_train, limit_val, limit_test, val_size, shuffle, num_workers,
                         chunk_size, seed)

    def format_inputs(self, field: Field, sampler) -> Tensor:
        """Images Tensor[B, C, *shape] from a Field on the sampler's grid."""
        b, _, c = field.values.shape
        return field.values.transpose(1, 2).reshape(b, c, *sampler.shape)  # (B, C, *shape)
