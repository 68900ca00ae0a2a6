"""ImageNet big-12 (paper App. D.1): 12 WordNet superclasses of ImageNet as INRs.

The superclasses are the ``big_12`` set of the ``robustness`` library (`BIG12`). A
class folder (a WordNet id, ``ImageFolder`` layout ``<root>/<folder>/<wnid>/*.JPEG``)
belongs to the most specific superclass it descends from (see
`superclass`: dogs are "dog", not "carnivore");
classes under none are left out. ``per_class`` images per superclass are drawn by a
seeded permutation of the sorted file list; files that fail to decode are skipped (and
counted in the index) and the next ones drawn. Images are centre-cropped to a square and
resized to 256x256 (bicubic), then fitted as in the paper: SIREN 5 x 256, omega_0 = 30,
2000 Adam steps at 1e-4 (`SIREN`, `FIT`); the test split also as Gaussian
Fourier-feature nets, 4 ReLU layers of 256 (`FOURIER`, `FIT_FOURIER`).

Splits: ``train`` (SIRENs of the ``train`` folder), ``test`` and ``test_fourier`` (SIRENs
and Fourier-feature nets of the same ``val`` images).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inrnet.datasets.parts import build_parts
from inrnet.datasets.sources import check_images, load_image, write_index
from inrnet.datasets.wordnet import WordNet, read_wordnet
from inrnet.inr import FourierFamily, INRDataset, INRFamily, SirenFamily

__all__ = ["BIG12", "CLASSES", "SPLITS", "SIREN", "FOURIER", "FIT", "FIT_FOURIER", "IMAGE_EXTENSIONS",
           "scan_imagenet", "select_items", "index_big12", "build_big12"]

log = logging.getLogger(__name__)

BIG12 = (("dog", "n02084071"), ("structure", "n04341686"), ("bird", "n01503061"), ("clothing", "n03051540"),
         ("wheeled vehicle", "n04576211"), ("reptile", "n01661091"), ("carnivore", "n02075296"),
         ("insect", "n02159955"), ("musical instrument", "n03800933"), ("food", "n07555863"),
         ("furniture", "n03405725"), ("primate", "n02469914"))
"""(name, WordNet id) of the 12 superclasses; the label is the position."""
CLASSES = tuple(name for name, _ in BIG12)
SPLITS = {"train": ("train", "siren", 500), "test": ("val", "siren", 200), "test_fourier": ("val", "fourier", 200)}
"""split -> (ImageNet folder, INR kind, default images per superclass: the paper's 500 / 200)."""
SIREN = SirenFamily(in_features=2, out_features=3, width=256, depth=5, omega_0=30.0, first_omega_0=30.0)
FOURIER = FourierFamily(in_features=2, out_features=3, features=256, sigma=5.0, width=256, depth=4)
FIT = {"steps": 2000, "lr": 1e-4, "batch_size": 8}
FIT_FOURIER = {"steps": 2000, "lr": 1e-3, "batch_size": 8}
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def scan_imagenet(folder: str | os.PathLike, wordnet: WordNet) -> tuple[list[str], list[int], dict[str, Any]]:
    """List the images of the big-12 classes in an ``ImageFolder`` tree.

    Returns:
        sorted relative file paths, their superclass labels, and a report
        ``{"classes": {wnid: label}, "outside": [wnids under no superclass],
        "unknown": [folders not in the hierarchy]}``.

    Raises:
        FileNotFoundError: ``folder`` is missing (naming it).
        ValueError: it holds no class folder of any superclass.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet folder {str(folder)!r} does not exist "
                                "(expected <root>/<split>/<wnid>/*.JPEG)")
    wnids = [str(w) for _, w in BIG12]
    files, labels, classes, outside, unknown = [], [], {}, [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in wordnet:
            unknown.append(sub.name)
            continue
        label = wordnet.superclass(sub.name, wnids)
        if label is None:
            outside.append(sub.name)
            continue
        classes[sub.name] = label
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                files.append(f"{sub.name}/{f.name}")
                labels.append(label)
    if unknown:
        log.warning("%s: %d folder(s) are not WordNet ids of the hierarchy and were skipped: %s",
                    folder, len(unknown), unknown[:5])
    if not classes:
        raise ValueError(f"{str(folder)!r} holds no class folder under any big-12 superclass "
                         f"({len(outside)} outside, {len(unknown)} unknown folders)")
    return files, labels, {"classes": classes, "outside": outside, "unknown": unknown}


def select_items(files: Sequence[str], labels: Sequence[int], per_class: int | None, seed: int, *,
                 usable=None) -> tuple[list[str], list[int], dict[str, str], dict[int, int]]:
    """Draw up to ``per_class`` usable files of each superclass, by a seeded permutation.

    Args:
        usable: ``files -> (ok list[bool], {file: reason})``; files that are not ok are
            skipped and the next in the permutation drawn.

    Returns:
        files and labels (by superclass, then in drawing order), ``{file: reason}`` of the
        skipped ones, and ``{label: shortfall}`` for superclasses with too few files.
    """
    rng = np.random.default_rng(seed)
    chosen, chosen_labels, skipped, short = [], [], {}, {}
    for label in range(len(BIG12)):
        pool = [f for f, lab in zip(files, labels) if lab == label]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        want = len(pool) if per_class is None else per_class
        taken, pos = [], 0
        while len(taken) < want and pos < len(pool):
            batch = pool[pos:pos + want - len(taken)]
            pos += len(batch)
            ok, reasons = usable(batch) if usable is not None else ([True] * len(batch), {})
            taken += [f for f, good in zip(batch, ok) if good]
            skipped.update(reasons)
        if len(taken) < want and per_class is not None:
            short[label] = want - len(taken)
        chosen += taken
        chosen_labels += [label] * len(taken)
    return chosen, chosen_labels, skipped, short


def index_big12(root: str | os.PathLike, wordnet: str | os.PathLike | WordNet, out: str | os.PathLike, split: str,
                *, per_class: int | None = None, seed: int = 0, image_size: int = 256) -> dict[str, Any]:
    """Make (or reuse) ``<out>/<split>/index.json``: the items of one split, decodes checked.

    Args:
        root: the ImageNet root with ``train/`` and ``val/`` class folders.
        wordnet: the hierarchy (a path for `read_wordnet`).
        out: the output folder.
        split: ``"train"``, ``"test"`` or ``"test_fourier"``.
        per_class: images per superclass (default: the paper's, 500 train / 200 test;
            0: all).
        seed: seeds the drawing.
        image_size: side of the square images.

    Returns:
        ``{"settings", "root", "files", "labels", "skipped", "short", "scan"}``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of imagenet_big12; valid: {sorted(SPLITS)}")
    folder_name, _, default_per_class = SPLITS[split]
    per_class = default_per_class if per_class is None else (per_class or None)
    settings = {"folder": folder_name, "per_class": per_class, "seed": seed, "image_size": image_size,
                "classes": [list(c) for c in BIG12]}
    path = Path(out) / split / "index.json"
    if path.is_file():
        return write_index(path, {"settings": settings})
    folder = Path(root) / folder_name
    wn = wordnet if isinstance(wordnet, WordNet) else read_wordnet(wordnet)
    files, labels, scan = scan_imagenet(folder, wn)
    chosen, chosen_labels, skipped, short = select_items(
        files, labels, per_class, seed, usable=lambda fs: check_images([folder / f for f in fs]))
    for label, missing in short.items():
        log.warning("%s: superclass %r has %d fewer usable images than per_class=%s",
                    folder, CLASSES[label], missing, per_class)
    skipped = {os.path.relpath(k, folder): v for k, v in skipped.items()}
    return write_index(path, {"settings": settings, "root": str(folder), "files": chosen, "labels": chosen_labels,
                              "skipped": skipped, "short": {CLASSES[k]: v for k, v in short.items()}, "scan": scan})


def build_big12(root: str | os.PathLike, wordnet: str | os.PathLike | WordNet, out: str | os.PathLike, split: str, *,
                per_class: int | None = None, seed: int = 0, image_size: int = 256, family: INRFamily | None = None,
                fit_kwargs: Mapping[str, Any] | None = None, chunk_size: int = 64, start: int | None = None,
                stop: int | None = None, part: tuple[int, int] | None = None, device=None, compile: bool = False,
                progress: bool = True) -> INRDataset | None:
    """Index and fit one split into ``<out>/<split>/`` (resumable; parts as `build_parts`).

    Args:
        root: as `index_big12`.
        wordnet: as `index_big12`.
        out: as `index_big12`.
        split: as `index_big12`.
        per_class: as `index_big12`.
        seed: as `index_big12`.
        image_size: as `index_big12`.
        family: overrides the paper's family (`SIREN` / `FOURIER`), e.g. for a small test.
        fit_kwargs: override the paper's fitting settings (`FIT` / `FIT_FOURIER`).
        chunk_size: INRs per chunk (fixes the seeds: keep it across parts).
        start: only the chunks meeting items ``[start, stop)`` (`build_parts`).
        stop: see ``start``.
        part: ``(k, n)``: only the k-th of n blocks of the selected chunks (`build_parts`).
        device: where to fit (not recorded).
        compile: ``torch.compile`` the fitting loss (not recorded).
        progress: progress bars.

    Returns:
        The dataset once every chunk is fitted, else None.
    """
    index = index_big12(root, wordnet, out, split, per_class=per_class, seed=seed, image_size=image_size)
    kind = SPLITS[split][1]
    family = family or (SIREN if kind == "siren" else FOURIER)
    fit_kwargs = {**(fit_kwargs or (FIT if kind == "siren" else FIT_FOURIER)), "device": device, "compile": compile}
    folder, files = Path(root) / SPLITS[split][0], index["files"]
    labels = torch.tensor(index["labels"], dtype=torch.long)
    if not files:
        raise ValueError(f"imagenet_big12 {split}: no usable image in {str(folder)!r}")

    def source(a: int, b: int):
        images = torch.stack([load_image(folder / f, (image_size, image_size)) for f in files[a:b]])  # (n, 3, S, S)
        return images, labels[a:b]

    return build_parts(Path(out) / split, source, family, count=len(files), chunk_size=chunk_size,
                       fit_kwargs=fit_kwargs, seed=seed + 1_000_000 * list(SPLITS).index(split),
                       start=start, stop=stop, part=part, progress=progress,
                       extra={"source": "imagenet_big12", "index": index["settings"]})
