"""``inrnet show``: a PNG grid of renders of a stored INR dataset, titled with labels and fit quality.

Any dataset works: a name of the registry (``fashion_mnist_default``, ``fashion_mnist``,
...), a dataset directory (``DIR/manifest.json``), or a directory of splits
(``DIR/<split>/manifest.json``). Each panel is one INR sampled on a ``--shape`` grid,
its values mapped from the family's ``value_range`` to ``[0, 1]`` (1 channel: grey, 3:
RGB, others: the first channel), titled with its label (the class name where the
registry, or an imported dataset's ``import.json``, knows it) and its stored fit PSNR
(``psnr_grid``) if the dataset has one. Rendering uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from inrnet.datasets.registry import DATASETS, get_dataset
from inrnet.inr import INRDataset, sample
from inrnet.inr.importer import IMPORT_RECORD
from inrnet.inr.store import MANIFEST
from inrnet.sampling.points import grid

__all__ = ["show", "render_items", "open_any", "parse_shape", "main"]


def parse_shape(spec: str | Sequence[int]) -> tuple[int, int]:
    """``"64x64"`` (or ``(64, 64)``, or ``"64"``) -> ``(64, 64)``.

    Raises:
        ValueError: not one or two positive integers.
    """
    parts = spec.lower().split("x") if isinstance(spec, str) else list(spec)
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"a render shape is HxW of positive integers (e.g. 64x64), got {spec!r}")
    return sizes


def open_any(dataset: str | os.PathLike, split: str | None = None,
             root: str | os.PathLike | None = None) -> tuple[Any, tuple[str, ...]]:
    """A stored dataset and its class names by label (empty when not known).

    Args:
        dataset: a registry name, a dataset directory, or a directory of splits.
        split: the split of a name or of a directory of splits (default ``train``, or the
            only split found); ignored for a dataset directory.
        root: where named datasets live (their default location if None).

    Raises:
        ValueError: an unknown name or split (naming the valid ones).
        FileNotFoundError: a named split that is not built.
    """
    path = Path(dataset)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / MANIFEST).is_file())
            if split is None:
                split = "train" if "train" in splits or len(splits) != 1 else splits[0]
            if split not in splits:
                raise ValueError(f"{str(path)!r} is not an INR dataset and has no split {split!r}; splits found: "
                                 f"{splits or 'none'}")
            path = path / split
        record = path / IMPORT_RECORD
        classes = ()
        if record.is_file():
            classes = tuple(json.loads(record.read_text()).get("classes") or ())
        return INRDataset(path), classes
    name = str(dataset)
    if name not in DATASETS:
        raise ValueError(f"{name!r} is neither a directory nor a dataset name; valid names: {sorted(DATASETS)}")
    return get_dataset(name, split or "train", root=root), DATASETS[name].classes


def _title(label: Tensor, classes: Sequence[str], psnr: float | None) -> str:
    if label.numel() != 1:
        text = "label map"
    else:
        k = int(label.reshape(()))
        text = "no label" if k < 0 else (f"{classes[k]} ({k})" if 0 <= k < len(classes) else f"label {k}")
    return text if psnr is None else f"{text}\n{psnr:.1f} dB"


@torch.no_grad()
def render_items(dataset: Any, indices: Sequence[int] | Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Render INRs ``indices`` of ``dataset`` on a grid.

    Args:
        dataset: an INR dataset (``.batch(indices) -> (INRBatch, labels)``), of a 2-d family.
        indices: the M items.
        shape: ``(H, W)``.

    Returns:
        Images float Tensor[M, H, W, c] in ``[0, 1]`` (the family's ``value_range`` mapped
        there, clamped) and the labels Tensor[M, ...].
    """
    inrs, labels = dataset.batch(indices)
    family = inrs.family
    if family.in_features != 2:
        raise ValueError(f"inrnet show renders 2-d INRs, but {family!r} takes d={family.in_features} coordinates")
    lo, hi = family.value_range
    values = sample(inrs, grid(tuple(shape))).values  # (M, H W, c)
    images = ((values.float() - lo) / (hi - lo)).clamp(0, 1)  # (M, H W, c)
    return images.reshape(len(inrs), *shape, values.shape[-1]), labels  # (M, H, W, c)


def show(dataset: str | os.PathLike | Any, split: str | None = None, *, out: str | os.PathLike | None = None,
         count: int = 16, shape: Sequence[int] | str = (64, 64), seed: int | None = None,
         root: str | os.PathLike | None = None, classes: Sequence[str] | None = None):
    """A grid of renders of the first ``count`` items (or ``count`` random ones) of a dataset.

    Args:
        dataset: a registry name, a dataset directory, a directory of splits, or an open
            INR dataset object (``.batch``, ``len``; ``.quality`` optional).
        split: see [`open_any`][inrnet.datasets.show.open_any].
        out: write the grid to this PNG file (None: only return the figure).
        count: panels (at most the dataset's length).
        shape: render size ``(H, W)`` or ``"HxW"``.
        seed: draw the items at random with this seed instead of taking the first ones.
        root: where named datasets live.
        classes: class names by label (default: what the registry or ``import.json`` says).

    Returns:
        The matplotlib ``Figure``, one axes per panel (``len(fig.axes) == min(count, len)``).
    """
    from matplotlib.figure import Figure  # lazily: matplotlib is only needed to draw

    if isinstance(dataset, (str, os.PathLike)):
        dataset, known = open_any(dataset, split, root)
    else:
        known = ()
    classes = tuple(classes if classes is not None else known)
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    shape = parse_shape(shape)
    n = min(count, len(dataset))
    if seed is None:
        indices = torch.arange(n)
    else:
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    images, labels = render_items(dataset, indices, shape)  # (n, H, W, c), (n, ...)
    try:
        quality = dataset.quality
    except (AttributeError, KeyError, IndexError):
        quality = {}
    psnr = quality.get("psnr_grid")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.7 * cols, 1.95 * rows), layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = images[i]  # (H, W, c)
        if img.shape[-1] == 3:
            ax.imshow(img.numpy(), vmin=0, vmax=1)
        else:
            ax.imshow(img[..., 0].numpy(), cmap="gray", vmin=0, vmax=1)
        p = None if psnr is None else float(psnr[int(indices[i])])
        ax.set_title(f"#{int(indices[i])} " + _title(labels[i], classes, p), fontsize=7)
        ax.set_axis_off()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig


def main(argv: list[str] | None = None):
    """``inrnet show DATASET [--split S] [--out grid.png] [--count 16] [--shape 64x64] [--seed N] [--root R]``.

    Returns:
        The figure [`show`][inrnet.datasets.show.show] drew. A bad dataset, split or option stops with
        its message (exit status 2).
    """
    parser = argparse.ArgumentParser(prog="inrnet show", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a registry name (e.g. fashion_mnist_default) or a dataset directory")
    parser.add_argument("--split", default=None, help="the split (default: train)")
    parser.add_argument("--out", default="grid.png", help="the PNG to write (default: %(default)s)")
    parser.add_argument("--count", type=int, default=16, help="panels (default: %(default)s)")
    parser.add_argument("--shape", default="64x64", help="render size HxW (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random items with this seed (default: the first)")
    parser.add_argument("--root", default=None, help="where named datasets live")
    args = parser.parse_args(argv)
    try:
        fig = show(args.dataset, args.split, out=args.out, count=args.count, shape=args.shape, seed=args.seed,
                   root=args.root)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    print(f"wrote {len(fig.axes)} renders to {args.out}")
    return fig
