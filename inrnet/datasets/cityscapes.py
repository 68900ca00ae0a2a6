"""Cityscapes (paper App. D.2): SIRENs of street scenes with 7-category label maps.

Layout (the official one)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    <root>/gtCoarse/<split>/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png

Label ids are grouped into the 7 categories flat, construction, object, nature, sky,
human, vehicle (labels 0..6) by the category of each label in the official Cityscapes
label definitions (`LABELS`); void is `IGNORE_INDEX`.
Images are resized (bicubic, default 256 x 512) and fitted with the paper's SIREN
(5 x 256, omega_0 = 30, 2500 Adam steps at 1e-4); the label maps are stored at full
resolution (1024 x 2048), one per annotation, as uint8 ``[n, A, H, W]``.

Dataset splits: ``train`` (Cityscapes train, coarse labels: the paper's training set),
``train_fine``, ``test`` (Cityscapes val, fine labels) and ``test_coarse``; they read the
built folders ``<out>/train`` and ``<out>/val``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inrnet.datasets.labelmaps import IGNORE_INDEX
from inrnet.datasets.parts import build_parts
from inrnet.datasets.sources import ImageDecodeError, check_images, decode, load_image, write_index
from inrnet.inr import INRDataset, INRFamily, SirenFamily

__all__ = ["LABELS", "CATEGORIES", "ANNOTATIONS", "DATASET_SPLITS", "SIREN", "FIT", "category_lut",
           "to_categories", "load_label_map", "scan_cityscapes", "index_cityscapes", "build_cityscapes"]

log = logging.getLogger(__name__)

LABELS = (
    ("unlabeled", 0, 255, "void", 0, True), ("ego vehicle", 1, 255, "void", 0, True),
    ("rectification border", 2, 255, "void", 0, True), ("out of roi", 3, 255, "void", 0, True),
    ("static", 4, 255, "void", 0, True), ("dynamic", 5, 255, "void", 0, True),
    ("ground", 6, 255, "void", 0, True), ("road", 7, 0, "flat", 1, False),
    ("sidewalk", 8, 1, "flat", 1, False), ("parking", 9, 255, "flat", 1, True),
    ("rail track", 10, 255, "flat", 1, True), ("building", 11, 2, "construction", 2, False),
    ("wall", 12, 3, "construction", 2, False), ("fence", 13, 4, "construction", 2, False),
    ("guard rail", 14, 255, "construction", 2, True), ("bridge", 15, 255, "construction", 2, True),
    ("tunnel", 16, 255, "construction", 2, True), ("pole", 17, 5, "object", 3, False),
    ("polegroup", 18, 255, "object", 3, True), ("traffic light", 19, 6, "object", 3, False),
    ("traffic sign", 20, 7, "object", 3, False), ("vegetation", 21, 8, "nature", 4, False),
    ("terrain", 22, 9, "nature", 4, False), ("sky", 23, 10, "sky", 5, False),
    ("person", 24, 11, "human", 6, False), ("rider", 25, 12, "human", 6, False),
    ("car", 26, 13, "vehicle", 7, False), ("truck", 27, 14, "vehicle", 7, False),
    ("bus", 28, 15, "vehicle", 7, False), ("caravan", 29, 255, "vehicle", 7, True),
    ("trailer", 30, 255, "vehicle", 7, True), ("train", 31, 16, "vehicle", 7, False),
    ("motorcycle", 32, 17, "vehicle", 7, False), ("bicycle", 33, 18, "vehicle", 7, False),
    ("license plate", -1, -1, "vehicle", 7, False),
)
"""The official label definitions (cityscapesScripts ``labels.py``): name, id, trainId,
category, catId, ignoreInEval. ``license plate`` (id -1) never appears in labelIds files."""
CATEGORIES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
"""The 7 categories; label ``k`` is ``CATEGORIES[k]`` (Cityscapes catId ``k + 1``)."""
ANNOTATIONS = {"gtFine": "_gtFine_labelIds.png", "gtCoarse": "_gtCoarse_labelIds.png"}
"""Annotation folder name -> labelIds file suffix."""
DATASET_SPLITS = {"train": ("train", "gtCoarse"), "train_fine": ("train", "gtFine"),
                  "test": ("val", "gtFine"), "test_coarse": ("val", "gtCoarse")}
"""dataset split -> (built Cityscapes split, annotation)."""
SIREN = SirenFamily(in_features=2, out_features=3, width=256, depth=5, omega_0=30.0, first_omega_0=30.0)
FIT = {"steps": 2500, "lr": 1e-4, "batch_size": 4}
IMAGE_SUFFIX = "_leftImg8bit.png"


def category_lut(ignore_in_eval: bool = False) -> Tensor:
    """labelId -> category label (0..6, void 255), uint8 Tensor[256].

    Args:
        ignore_in_eval: also make void the labels the official benchmark ignores
            (parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer).
    """
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
    for _, label_id, _, _, cat_id, ignored in LABELS:
        if label_id >= 0 and cat_id > 0 and not (ignore_in_eval and ignored):
            lut[label_id] = cat_id - 1
    return lut


def to_categories(label_ids: Tensor, ignore_in_eval: bool = False) -> Tensor:
    """Map a labelIds map (uint8 Tensor[H, W]) to categories (uint8 Tensor[H, W], void 255)."""
    return category_lut(ignore_in_eval)[label_ids.long()]


def load_label_map(path: str | os.PathLike, ignore_in_eval: bool = False) -> Tensor:
    """A ``*_labelIds.png`` file as a category map, uint8 Tensor[H, W].

    Raises:
        ImageDecodeError: the file is missing, undecodable, or not a single-channel
            map of label ids 0..33.
    """
    img = decode(path, "L") if Path(path).is_file() else None
    if img is None:
        raise ImageDecodeError(f"label file {str(path)!r} does not exist")
    ids = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W)
    if int(ids.max()) > 33:
        raise ImageDecodeError(f"label file {str(path)!r} holds label id {int(ids.max())}; "
                               "labelIds files hold 0..33 (is it a color or instance file?)")
    return to_categories(ids, ignore_in_eval)


def scan_cityscapes(root: str | os.PathLike, split: str,
                    annotations: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The image stems of a Cityscapes split having every annotation, and the skipped ones.

    Returns:
        sorted stems ``<city>/<city>_<seq>_<frame>``, and ``{stem: reason}`` of images
        lacking an annotation file.

    Raises:
        FileNotFoundError: a missing image or annotation folder (naming it).
        ValueError: an unknown annotation, or no image at all.
    """
    root = Path(root)
    bad = [a for a in annotations if a not in ANNOTATIONS]
    if bad or not annotations:
        raise ValueError(f"annotations must be some of {sorted(ANNOTATIONS)}, got {list(annotations)}")
    images = root / "leftImg8bit" / split
    for folder in [images] + [root / a / split for a in annotations]:
        if not folder.is_dir():
            raise FileNotFoundError(f"Cityscapes folder {str(folder)!r} does not exist (root {str(root)!r}, "
                                    f"split {split!r}); pass the annotations you have with --annotations")
    stems = sorted(f"{p.parent.name}/{p.name[:-len(IMAGE_SUFFIX)]}" for p in images.glob(f"*/*{IMAGE_SUFFIX}"))
    if not stems:
        raise ValueError(f"no *{IMAGE_SUFFIX} images in {str(images)!r}/<city>/")
    kept, skipped = [], {}
    for stem in stems:
        missing = [a for a in annotations if not (root / a / split / f"{stem}{ANNOTATIONS[a]}").is_file()]
        if missing:
            skipped[stem] = f"no {' / '.join(missing)} labelIds file"
        else:
            kept.append(stem)
    return kept, skipped


def _label_maps(root: Path, split: str, stem: str, annotations: Sequence[str], size: Sequence[int] | None) -> Tensor:
    """uint8 Tensor[A, H, W] of one image's annotations (nearest-resized to ``size`` if given)."""
    maps = [load_label_map(root / a / split / f"{stem}{ANNOTATIONS[a]}") for a in annotations]
    if size is not None:
        maps = [torch.nn.functional.interpolate(m[None, None].float(), size=tuple(size), mode="nearest")[0, 0]
                .to(torch.uint8) for m in maps]  # (H, W)
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ImageDecodeError(f"Cityscapes {stem}: annotations of different sizes {shapes}")
    return torch.stack(maps)  # (A, H, W)


def index_cityscapes(root: str | os.PathLike, out: str | os.PathLike, split: str,
                     annotations: Sequence[str] = ("gtFine", "gtCoarse"), *, image_size: Sequence[int] = (256, 512),
                     label_size: Sequence[int] | None = None, count: int | None = None) -> dict[str, Any]:
    """Make (or reuse) ``<out>/<split>/index.json``: the usable images of a Cityscapes split.

    Every image and label file is decoded once; failures are skipped and listed.
    """
    settings = {"split": split, "annotations": list(annotations), "image_size": list(image_size),
                "label_size": list(label_size) if label_size else None, "count": count}
    path = Path(out) / split / "index.json"
    if path.is_file():
        return write_index(path, {"settings": settings})
    root = Path(root)
    stems, skipped = scan_cityscapes(root, split, annotations)
    stems = stems[:count] if count else stems
    ok, failed = check_images([root / "leftImg8bit" / split / f"{s}{IMAGE_SUFFIX}" for s in stems])
    kept = []
    for stem, good in zip(stems, ok):
        try:
            if not good:
                raise ImageDecodeError(failed[str(root / "leftImg8bit" / split / f"{stem}{IMAGE_SUFFIX}")])
            _label_maps(root, split, stem, annotations, label_size)
            kept.append(stem)
        except ImageDecodeError as e:
            skipped[stem] = str(e)
    if not kept:
        raise ValueError(f"Cityscapes {split}: no usable image in {str(root)!r} ({len(skipped)} skipped)")
    return write_index(path, {"settings": settings, "files": kept, "skipped": skipped})


def build_cityscapes(root: str | os.PathLike, out: str | os.PathLike, split: str, *,
                     annotations: Sequence[str] = ("gtFine", "gtCoarse"), image_size: Sequence[int] = (256, 512),
                     label_size: Sequence[int] | None = None, count: int | None = None, seed: int = 0,
                     family: INRFamily | None = None, fit_kwargs: Mapping[str, Any] | None = None,
                     chunk_size: int = 32, start: int | None = None, stop: int | None = None,
                     part: tuple[int, int] | None = None, device=None, compile: bool = False,
                     progress: bool = True) -> INRDataset | None:
    """Index and fit a Cityscapes split (``"train"``, ``"val"``) into ``<out>/<split>/``.

    Args:
        root: the Cityscapes root (``leftImg8bit/``, ``gtFine/``, ``gtCoarse/``).
        out: the output folder.
        split: the Cityscapes split.
        annotations: the label folders to store, in this order (``[n, A, H, W]``).
        image_size: ``(H, W)`` the images are resized to before fitting.
        label_size: ``(H, W)`` of the stored label maps (default: full resolution).
        count: only the first ``count`` images (sorted by name).
        family: overrides the paper's SIREN.
        fit_kwargs: override the paper's fitting settings.
        chunk_size: INRs per chunk; ``start``/``stop``/``part`` select chunks
            (`build_parts`).
        device: where to fit.
        compile: ``torch.compile`` the fitting loss.

    Returns:
        The dataset once every chunk is fitted, else None.
    """
    index = index_cityscapes(root, out, split, annotations, image_size=image_size, label_size=label_size, count=count)
    root = Path(root)
    stems = index["files"]
    fit_kwargs = {**(fit_kwargs or FIT), "device": device, "compile": compile}

    def source(a: int, b: int):
        images = torch.stack([load_image(root / "leftImg8bit" / split / f"{s}{IMAGE_SUFFIX}", image_size, crop=False)
                              for s in stems[a:b]])  # (n, 3, H, W)
        labels = torch.stack([_label_maps(root, split, s, annotations, label_size) for s in stems[a:b]])  # (n, A, h, w)
        return images, labels

    return build_parts(Path(out) / split, source, family or SIREN, count=len(stems), chunk_size=chunk_size,
                       fit_kwargs=fit_kwargs, seed=seed + (0 if split == "train" else 1_000_000), start=start,
                       stop=stop, part=part, progress=progress,
                       extra={"source": "cityscapes", "index": index["settings"]})
