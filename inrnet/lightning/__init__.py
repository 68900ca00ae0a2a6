"""Training with Lightning: task modules around registered backbones, and INR DataModules.

| class | task | model takes |
|---|---|---|
| [`INRClassifier`][inrnet.lightning.classification.INRClassifier] | classification (paper Alg. 1) | a Field sampled on the step's points |
| [`INRSegmenter`][inrnet.lightning.segmentation.INRSegmenter] | dense prediction (paper Alg. 2), scored at the label coordinates | a Field, query points |
| [`PixelClassifier`][inrnet.lightning.classification.PixelClassifier], [`PixelSegmenter`][inrnet.lightning.segmentation.PixelSegmenter] | the pixel baselines of the same tasks | images |
| [`INRDataModule`][inrnet.lightning.datamodule.INRDataModule] | INR datasets, a sampler per split, INRs evaluated on the training device | |
| [`PixelDataModule`][inrnet.lightning.pixel.PixelDataModule] | the same INRs rendered on a grid, as images | |

A segmenter's label maps at any resolution: [`render`][inrnet.lightning.render.render], and in
``inrnet predict`` the [`LabelMapWriter`][inrnet.lightning.render.LabelMapWriter] callback (indexed PNGs).
"""

from inrnet.lightning.base import TaskModule, load_task, model_input, num_outputs
from inrnet.lightning.callbacks import CheckpointRNG, RecalibrateNorms, SavePredictions
from inrnet.lightning.classification import INRClassifier, PixelClassifier
from inrnet.lightning.data import (INRDatasetLike, InMemoryINRDataset, SubsetINRDataset, open_dataset,
                                   parse_sampler, random_subset, setting_name)
from inrnet.lightning.datamodule import IGNORE_INDEX, Batch, INRDataModule
from inrnet.lightning.pixel import PixelDataModule
from inrnet.lightning.render import LabelMapWriter, render, render_labels, save_label_map
from inrnet.lightning.segmentation import INRSegmenter, PixelSegmenter, logits_at

__all__ = ["TaskModule", "INRClassifier", "PixelClassifier", "INRSegmenter", "PixelSegmenter", "INRDataModule",
           "PixelDataModule", "Batch", "IGNORE_INDEX", "INRDatasetLike", "InMemoryINRDataset", "SubsetINRDataset",
           "random_subset", "open_dataset", "parse_sampler", "setting_name", "load_task", "model_input",
           "num_outputs", "logits_at", "SavePredictions", "RecalibrateNorms", "CheckpointRNG", "render",
           "render_labels", "save_label_map", "LabelMapWriter"]
