"""Label maps from a segmenter's output INR, at any resolution, and indexed PNGs of them.

A segmenter's output is a continuous function, so a label map can be read off it on any
grid: [`render`][inrnet.lightning.render.render] evaluates the input INRs on the model's
input points, runs everything before the head once
([`INRSegmenter.encode`][inrnet.lightning.segmentation.INRSegmenter.encode]), then queries
the head at the grid's cell centres in chunks of ``chunk_points`` points
([`INRSegmenter.decode`][inrnet.lightning.segmentation.INRSegmenter.decode]) and keeps only
each chunk's argmax. Memory holds the labels ``[B, H, W]`` and one chunk's head
evaluation (its logits ``[B, chunk_points, K]`` and the head conv's gather plan, a few KB
per query point: about 60 MiB at the default 16384), never the logits of the whole image. Each query point of an
INR-Net's head conv depends only on the features near it, so chunking changes nothing;
a backbone without ``encode``/``decode`` runs in full once per chunk (correct, slower).

[`LabelMapWriter`][inrnet.lightning.render.LabelMapWriter] does this in ``inrnet predict``
and writes ``<out_dir>/<item id>.png``, palette (``P`` mode) PNGs whose void index
([`IGNORE_INDEX`][inrnet.lightning.datamodule.IGNORE_INDEX], 255) is transparent:

    inrnet predict --config CONFIG --ckpt_path CKPT \\
        --trainer.callbacks+=inrnet.lightning.LabelMapWriter \\
        --trainer.callbacks.out_dir=labels --trainer.callbacks.shape=[1024,2048]
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor

from inrnet.field import Field, PointSet
from inrnet.inr import INRBatch, sample
from inrnet.lightning.data import SubsetINRDataset, parse_sampler
from inrnet.lightning.datamodule import IGNORE_INDEX
from inrnet.sampling.points import check_shape

__all__ = ["render", "render_labels", "save_label_map", "palette", "parse_shape", "LabelMapWriter", "PALETTES"]

PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # The Cityscapes category colours (flat, construction, object, nature, sky, human, vehicle).
    "cityscapes": ((128, 64, 128), (70, 70, 70), (153, 153, 153), (107, 142, 35), (70, 130, 180), (220, 20, 60),
                   (0, 0, 142)),
    # Background black, then the 10 Fashion-MNIST classes (matplotlib's tab10).
    "fashion_mnist_scenes": ((0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                             (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34),
                             (23, 190, 207)),
}
"""RGB colour of each label, per dataset name of [`inrnet.datasets`][inrnet.datasets]."""


def palette(name: str | Sequence[Sequence[int]] | None, num_classes: int) -> list[tuple[int, int, int]]:
    """The colours of labels ``0 .. num_classes - 1``.

    Args:
        name: a key of [`PALETTES`][inrnet.lightning.render.PALETTES], a list of RGB
            triples, or None for generated colours (evenly spaced hues).
        num_classes: K, the labels to colour (at most 255: index 255 is void).

    Returns:
        K ``(r, g, b)`` tuples of ints in ``[0, 255]``.

    Raises:
        ValueError: an unknown name, a palette with fewer than K colours, or K > 255.
    """
    if not 0 < num_classes <= IGNORE_INDEX:
        raise ValueError(f"indexed PNGs hold 1 to {IGNORE_INDEX} classes (index {IGNORE_INDEX} is void), "
                         f"got {num_classes}")
    if name is None:
        return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(k / num_classes, 0.75, 0.95))
                for k in range(num_classes)]
    if isinstance(name, str):
        if name not in PALETTES:
            raise ValueError(f"unknown palette {name!r}; known: {sorted(PALETTES)}, or give a list of RGB triples")
        name = PALETTES[name]
    colours = [tuple(int(c) for c in rgb) for rgb in name]
    if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
        raise ValueError("a palette is a list of (r, g, b) triples of ints in [0, 255]")
    if len(colours) < num_classes:
        raise ValueError(f"the palette has {len(colours)} colours for {num_classes} classes")
    return colours[:num_classes]


def parse_shape(shape: str | Sequence[int]) -> tuple[int, ...]:
    """``"1024x2048"`` or ``[1024, 2048]`` as a tuple of positive ints."""
    if isinstance(shape, str):
        try:
            shape = [int(s) for s in shape.lower().split("x")]
        except ValueError:
            raise ValueError(f"a render shape is like '1024x2048' or [1024, 2048], got {shape!r}") from None
    return check_shape(tuple(shape))


def _cell_centres(shape: tuple[int, ...], start: int, stop: int, device) -> Tensor:
    """Rows ``start:stop`` of ``grid(shape)`` without building the rest, Tensor[stop - start, d]."""
    flat = torch.arange(start, stop, device=device)
    coords = []
    for s in reversed(shape):
        coords.append((2.0 * (flat % s).double() + 1.0) / s - 1.0)
        flat = flat // s
    return torch.stack(coords[::-1], dim=-1).float()


def render_labels(task: Any, inputs: Field | Tensor, shape: str | Sequence[int], *, chunk_points: int = 1 << 14,
                  dtype: torch.dtype = torch.long) -> Tensor:
    """Argmax label maps of a segmenter on the cell centres of a grid, in chunks of points.

    Args:
        task: an [`INRSegmenter`][inrnet.lightning.segmentation.INRSegmenter] (or
            [`PixelSegmenter`][inrnet.lightning.segmentation.PixelSegmenter]); its mode
            (train/eval) is used as it is.
        inputs: what the task takes, as in a [`Batch`][inrnet.lightning.datamodule.Batch]:
            a Field (values Tensor[B, N, C]) or images Tensor[B, C, h, w].
        shape: the grid, e.g. ``(1024, 2048)`` or ``"1024x2048"``; any size.
        chunk_points: query points per head evaluation.
        dtype: of the labels (``torch.uint8`` takes an eighth of the memory of int64).

    Returns:
        Tensor[B, *shape] of labels in ``[0, K)``, on the inputs' device.
    """
    shape = parse_shape(shape)
    if not isinstance(chunk_points, int) or chunk_points < 1:
        raise ValueError(f"chunk_points must be a positive integer, got {chunk_points!r}")
    values = inputs.values if isinstance(inputs, Field) else inputs
    total = math.prod(shape)
    with torch.no_grad():
        encoded = task.encode(inputs)
        out = torch.empty(values.shape[0], total, dtype=dtype, device=values.device)  # (B, H * W)
        for start in range(0, total, chunk_points):
            stop = min(start + chunk_points, total)
            query = PointSet(_cell_centres(shape, start, stop, values.device))
            out[:, start:stop] = task.decode(encoded, query).argmax(-1)  # (B, chunk, K) -> (B, chunk)
    return out.reshape(-1, *shape)


def render(model: Any, inrs: INRBatch, shape: str | Sequence[int], *, sampler: Any = "grid:64x64",
           chunk_points: int = 1 << 14, chunk_size: int = 64, dtype: torch.dtype = torch.long) -> Tensor:
    """Label maps of INRs by a segmenter, at any resolution.

    The INRs are evaluated on ``sampler``'s points and mapped from their family's
    ``value_range`` to ``[0, 1]``, exactly as [`INRDataModule`][inrnet.lightning.datamodule.INRDataModule]
    prepares a batch (pass the config's first ``test_samplers`` spec to match ``inrnet
    predict``), then [`render_labels`][inrnet.lightning.render.render_labels] runs in eval mode.

    Example:
        >>> labels = render(load_task("last.ckpt"), inrs, (1024, 2048), sampler="grid:128x256")  # doctest: +SKIP

    Args:
        model: an [`INRSegmenter`][inrnet.lightning.segmentation.INRSegmenter] or
            [`PixelSegmenter`][inrnet.lightning.segmentation.PixelSegmenter] (the latter needs a grid sampler).
        inrs: B INRs.
        shape: the output grid, e.g. ``(1024, 2048)`` or ``"1024x2048"``.
        sampler: the input points: a sampler spec (``"grid:64x64"``, ``"sobol:4096"``), a
            [`Sampler`][inrnet.sampling.sampler.Sampler] or a PointSet.
        chunk_points: query points per head evaluation; memory beyond the labels is one
            chunk's head evaluation, a few KB per point.
        chunk_size: INRs per batched evaluation in [`sample`][inrnet.inr.evaluate.sample].
        dtype: of the labels.

    Returns:
        Tensor[B, *shape] of labels in ``[0, K)``, on the INRs' device.
    """
    grid_shape = None
    if isinstance(sampler, PointSet):
        points = sampler
    else:
        sampler = parse_sampler(sampler, inrs.family.in_features, rescramble=False, device=inrs.device)
        points, grid_shape = sampler(), getattr(sampler, "shape", None)
    field = sample(inrs, points, chunk_size=chunk_size)
    lo, hi = inrs.family.value_range
    field = field.replace((field.values - lo) * (1.0 / (hi - lo)))  # (B, N, C) in [0, 1]
    inputs: Field | Tensor = field
    if getattr(model, "takes", None) == "image":
        if grid_shape is None:
            raise ValueError("a pixel segmenter needs a grid sampler spec like 'grid:64x64'")
        b, _, c = field.values.shape
        inputs = field.values.transpose(1, 2).reshape(b, c, *grid_shape)  # (B, C, *grid)
    training = model.training
    model.eval()
    try:
        return render_labels(model, inputs, shape, chunk_points=chunk_points, dtype=dtype)
    finally:
        model.train(training)


def save_label_map(labels: Tensor, path: str | Path, colours: Sequence[Sequence[int]]) -> None:
    """Write a label map as an indexed (``P`` mode) PNG, void (255) transparent.

    Args:
        labels: Tensor[H, W] of labels in ``[0, len(colours))`` or 255.
        path: the PNG file (its folder is created).
        colours: RGB of each label, e.g. from [`palette`][inrnet.lightning.render.palette].

    Raises:
        ValueError: labels that are not 2-d, or outside the palette and not void.
    """
    if labels.dim() != 2:
        raise ValueError(f"a label map is Tensor[H, W], got shape {tuple(labels.shape)}")
    array = labels.detach().cpu().numpy()
    bad = (array != IGNORE_INDEX) & ((array < 0) | (array >= len(colours)))
    if bad.any():
        raise ValueError(f"labels outside the palette's {len(colours)} colours (and not void {IGNORE_INDEX})")
    image = Image.fromarray(array.astype(np.uint8))  # "L"; putpalette makes it "P"
    flat = [0] * (3 * 256)
    for k, rgb in enumerate(colours):
        flat[3 * k:3 * k + 3] = list(rgb)
    image.putpalette(flat)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")  # written whole, then renamed: a reader never sees half a PNG
    image.save(part, format="PNG", transparency=IGNORE_INDEX)  # tRNS: index 255 fully transparent, the others opaque
    os.replace(part, path)


def _item_ids(dataset: Any, positions: Sequence[int]) -> list[int]:
    """Positions in a (nested) subset as item indices of the split it was drawn from."""
    index = torch.as_tensor(list(positions), dtype=torch.long)
    while isinstance(dataset, SubsetINRDataset):
        index, dataset = dataset.indices[index], dataset.base
    return index.tolist()


class LabelMapWriter(BasePredictionWriter):
    """In ``inrnet predict``, write each item's label map on a ``shape`` grid to ``<out_dir>/<item id>.png``.

    While predicting, the segmenter's ``predict_step`` renders label maps (see
    [`render_labels`][inrnet.lightning.render.render_labels]) instead of scoring the label
    points; each batch is written as it comes, and its entry in the predictions Lightning
    collects is cut to ``{"item": Tensor[B]}``, so memory stays bounded over the split. The
    item id is the item's index in the predict split (``limit_test`` subsets keep the
    split's indices). The PNGs are palette images: label ``k`` has colour ``k`` of the
    palette, void (255) is transparent.

    Args:
        out_dir: the folder of the PNGs.
        shape: the label maps' grid, ``[H, W]`` or ``"HxW"``; any size.
        palette: a key of [`PALETTES`][inrnet.lightning.render.PALETTES] or a list of RGB
            triples; default the DataModule's dataset name's palette if there is one, else
            generated colours.
        chunk_points: query points per head evaluation.
    """

    def __init__(self, out_dir: str = "label_maps", shape: Sequence[int] | str = (1024, 2048),
                 palette: str | list[list[int]] | None = None, chunk_points: int = 1 << 14):
        super().__init__(write_interval="batch")
        if not isinstance(chunk_points, int) or chunk_points < 1:
            raise ValueError(f"chunk_points must be a positive integer, got {chunk_points!r}")
        self.out_dir, self.shape, self.chunk_points = Path(out_dir), parse_shape(shape), chunk_points
        if len(self.shape) != 2:
            raise ValueError(f"PNG label maps are 2-d, got shape {self.shape}")
        self.palette = palette
        self._colours: list[tuple[int, int, int]] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        if not hasattr(type(pl_module), "render_shape"):
            raise ValueError(f"LabelMapWriter needs a segmenter (INRSegmenter, PixelSegmenter), "
                             f"got {type(pl_module).__name__}")
        name = self.palette
        dataset = getattr(trainer.datamodule, "dataset", None)
        if name is None and isinstance(dataset, str) and dataset in PALETTES:
            name = dataset
        self._colours = palette(name, pl_module.num_classes)
        pl_module.render_shape, pl_module.render_chunk_points = self.shape, self.chunk_points

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "predict" and hasattr(type(pl_module), "render_shape"):
            pl_module.render_shape = None

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices: Sequence[int] | None,
                           batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if batch_indices is None:
            raise ValueError("LabelMapWriter needs the predict batches' item indices, which Lightning did not track")
        labels = prediction.pop("labels")  # (B, H, W)
        dataset = getattr(trainer.datamodule, "data", {}).get("predict")
        ids = _item_ids(dataset, batch_indices)
        for item, label_map in zip(ids, labels):
            save_label_map(label_map, self.out_dir / f"{item}.png", self._colours)
        prediction["item"] = torch.as_tensor(ids)
