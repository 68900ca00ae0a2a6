"""Fashion-MNIST scenes: a small segmentation benchmark that runs on a CPU.

Each scene is a ``64 x 64`` canvas (black, like Fashion-MNIST's background) with 2 to 4
Fashion-MNIST items pasted at random scales (item side 16..40 pixels, bilinear with
antialiasing) and random positions (wholly inside the canvas); train scenes draw items
from the train split, test scenes from the test split only. An item's foreground is its
pixels above 0.1 with holes filled; it overwrites earlier items there, so later items
occlude earlier ones. The label map holds 0 for background and ``1 + class`` on each
item's visible foreground. Scene ``i`` of a split depends only on ``(seed, split, i)``,
so any range of scenes can be made independently and reproducibly.

The canvases are fitted with `SIREN` (2 -> 64 -> 64 -> 64 -> 1, omega_0 = 30) and
stored with their label maps (uint8 ``[n, 64, 64]``) by `build_scenes`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes
from torch import Tensor
from torch.nn import functional as F

from inrnet.datasets import fashion_mnist as fm
from inrnet.datasets.parts import build_parts
from inrnet.inr import INRDataset, INRFamily, SirenFamily

__all__ = ["CLASSES", "SPLITS", "SIREN", "FIT", "compose_scene", "make_scenes", "build_scenes"]

CLASSES = ("background",) + fm.CLASSES
"""Label ``k``: 0 background, ``1 + c`` Fashion-MNIST class ``c``."""
SPLITS = {"train": ("train", 0), "test": ("test", 1)}
"""split -> (Fashion-MNIST split the items come from, split id mixed into the seed)."""
SIREN = SirenFamily(in_features=2, out_features=1, width=64, depth=4, omega_0=30.0, first_omega_0=30.0)
FIT = {"steps": 150, "lr": 2e-3, "batch_size": 50}
CANVAS = 64
ITEMS = (2, 4)
SIDE = (16, 40)
THRESHOLD = 0.1


def compose_scene(items: Tensor, classes: Tensor, sides: Tensor, positions: Tensor,
                  canvas: int = CANVAS) -> tuple[Tensor, Tensor]:
    """Paste items onto a black canvas, later ones on top.

    Args:
        items: uint8 Tensor[k, 28, 28].
        classes: Tensor[k] in ``0..9``.
        sides: Tensor[k], the pasted side length of each item.
        positions: Tensor[k, 2], the (row, column) of each item's top-left corner.
        canvas: the canvas side.

    Returns:
        the image float Tensor[canvas, canvas] in ``[0, 1]`` and the label map uint8
        Tensor[canvas, canvas] (0 background, ``1 + class`` on visible foreground).
    """
    k = len(items)
    if items.dim() != 3 or len(classes) != k or len(sides) != k or positions.shape != (k, 2):
        raise ValueError(f"compose_scene needs items [k, h, w], classes [k], sides [k], positions [k, 2]; got "
                         f"{tuple(items.shape)}, {tuple(classes.shape)}, {tuple(sides.shape)}, "
                         f"{tuple(positions.shape)}")
    image = torch.zeros(canvas, canvas)
    labels = torch.zeros(canvas, canvas, dtype=torch.uint8)
    for item, cls, side, (r, c) in zip(items, classes.tolist(), sides.tolist(), positions.tolist()):
        if not (0 <= r and 0 <= c and r + side <= canvas and c + side <= canvas):
            raise ValueError(f"an item of side {side} at ({r}, {c}) does not fit a {canvas}x{canvas} canvas")
        pix = F.interpolate(item[None, None].float() / 255, size=(side, side), mode="bilinear",
                            antialias=True, align_corners=False)[0, 0].clamp_(0, 1)  # (side, side)
        mask = torch.from_numpy(binary_fill_holes((pix > THRESHOLD).numpy()))  # (side, side)
        image[r:r + side, c:c + side][mask] = pix[mask]
        labels[r:r + side, c:c + side][mask] = 1 + cls
    return image, labels


def make_scenes(images: Tensor, classes: Tensor, start: int, stop: int, *, seed: int = 0,
                split: str = "train") -> tuple[Tensor, Tensor]:
    """Scenes ``start:stop`` of a split, drawn from the item pool ``images``.

    Args:
        images: uint8 Tensor[P, 28, 28], the split's Fashion-MNIST items.
        classes: Tensor[P].
        start: the first scene.
        stop: one past the last scene.
        seed: the dataset seed.
        split: ``"train"`` or ``"test"`` (mixed into each scene's seed).

    Returns:
        images float Tensor[n, 1, 64, 64] and label maps uint8 Tensor[n, 64, 64].
    """
    if split not in SPLITS:
        raise ValueError(f"unknown scene split {split!r}; valid: {sorted(SPLITS)}")
    out_images, out_labels = [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, SPLITS[split][1], i])
        k = int(rng.integers(ITEMS[0], ITEMS[1] + 1))
        pick = torch.from_numpy(rng.integers(0, len(images), size=k))  # (k,)
        sides = torch.from_numpy(rng.integers(SIDE[0], SIDE[1] + 1, size=k))  # (k,)
        positions = torch.from_numpy(np.stack([rng.integers(0, CANVAS - s + 1, size=2) for s in sides.tolist()]))
        image, labels = compose_scene(images[pick], classes[pick], sides, positions)
        out_images.append(image)
        out_labels.append(labels)
    return torch.stack(out_images)[:, None], torch.stack(out_labels)  # (n, 1, 64, 64), (n, 64, 64)


def build_scenes(out: str | os.PathLike, split: str, count: int, *, source_root: str | os.PathLike | None = None,
                 seed: int = 0, family: INRFamily | None = None, fit_kwargs: Mapping[str, Any] | None = None,
                 chunk_size: int = 250, start: int | None = None, stop: int | None = None,
                 part: tuple[int, int] | None = None, device=None, compile: bool = False,
                 progress: bool = True) -> INRDataset | None:
    """Compose and fit ``count`` scenes of ``split`` into ``<out>/<split>/``.

    Args:
        out: the output folder.
        split: ``"train"`` or ``"test"``.
        count: number of scenes.
        source_root: the Fashion-MNIST IDX folder (see
            [`load_fashion_mnist_images`][inrnet.datasets.load_fashion_mnist_images]).
        seed: the scene seed.
        family: overrides `SIREN`.
        fit_kwargs: override `FIT`.
        chunk_size: INRs per chunk; ``start``/``stop``/``part`` select chunks.
        device: where to fit.
        compile: ``torch.compile`` the fitting loss.

    Returns:
        The dataset once every chunk is fitted, else None.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown scene split {split!r}; valid: {sorted(SPLITS)}")
    pool, pool_labels = fm.load_fashion_mnist_images(SPLITS[split][0], source_root)
    fit_kwargs = {**(fit_kwargs or FIT), "device": device, "compile": compile}

    def source(a: int, b: int):
        return make_scenes(pool, pool_labels, a, b, seed=seed, split=split)

    return build_parts(Path(out) / split, source, family or SIREN, count=count, chunk_size=chunk_size,
                       fit_kwargs=fit_kwargs, seed=seed + 1_000_000 * SPLITS[split][1], start=start, stop=stop,
                       part=part, progress=progress,
                       extra={"source": f"fashion_mnist_scenes/{split}", "scene_seed": seed, "canvas": CANVAS,
                              "items": list(ITEMS), "side": list(SIDE), "threshold": THRESHOLD})
