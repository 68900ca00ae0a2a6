"""Reading source images for the INR builders: decoding, resizing, and the item index.

Builders first list their items and try to decode every one (`check_images`);
files that fail are *skipped and logged*, with their reasons kept in the index file
(``index.json``, written once per split, `write_index`), so the fitted dataset has
no holes and says what it left out. An image that decodes at indexing time but fails
later raises [`ImageDecodeError`][inrnet.datasets.ImageDecodeError] naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = ["ImageDecodeError", "decode", "load_image", "check_images", "write_index", "read_index"]

log = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """A source image or label file could not be read or decoded."""


def decode(path: str | os.PathLike, mode: str) -> Image.Image:
    """Open and fully decode an image file in PIL ``mode`` (``"RGB"``, ``"L"``, ...).

    Raises:
        ImageDecodeError: a missing, truncated or undecodable file (naming it).
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if img.mode != mode else img.copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"cannot decode image {str(path)!r}: {e}") from e


def load_image(path: str | os.PathLike, size: Sequence[int] | None = None, *, crop: bool = True,
               mode: str = "RGB", resample: int = Image.Resampling.BICUBIC) -> Tensor:
    """An image as floats in ``[0, 1]``.

    Args:
        path: the file.
        size: ``(H, W)`` to resize to (None: keep its size).
        crop: first crop the largest centred box of the target's aspect ratio (no
            distortion); else stretch.
        mode: PIL mode; ``"RGB"`` gives 3 channels, ``"L"`` one.
        resample: PIL resampling filter.

    Returns:
        Tensor[C, H, W].
    """
    img = decode(path, mode)
    if size is not None:
        h, w = int(size[0]), int(size[1])
        box = None
        if crop:
            scale = min(img.width / w, img.height / h)
            cw, ch = w * scale, h * scale
            left, top = (img.width - cw) / 2, (img.height - ch) / 2
            box = (left, top, left + cw, top + ch)
        img = img.resize((w, h), resample, box=box)
    array = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
    array = array[:, :, None] if array.ndim == 2 else array  # (H, W, C)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (C, H, W)


def check_images(paths: Sequence[str | os.PathLike], mode: str = "RGB") -> tuple[list[bool], dict[str, str]]:
    """Try to decode every file.

    Returns:
        ``ok`` (one bool per path) and ``{path: reason}`` of the files that failed.
    """
    ok, failed = [], {}
    for p in paths:
        try:
            decode(p, mode)
            ok.append(True)
        except ImageDecodeError as e:
            ok.append(False)
            failed[str(p)] = str(e.__cause__ or e)
    return ok, failed


def write_index(path: str | os.PathLike, index: dict[str, Any]) -> dict[str, Any]:
    """Write an index file atomically, or, if one exists, check it matches and return it.

    ``index["settings"]`` must match the existing file's; its items are then reused, so
    concurrent or later parts of a build see the same item list.

    Raises:
        ValueError: an existing index made with other settings.
    """
    path = Path(path)
    if path.is_file():
        old = read_index(path)
        new = json.loads(json.dumps(index["settings"]))
        if old.get("settings") != new:
            raise ValueError(f"{str(path)!r} was made with settings {old.get('settings')}, not {new}; "
                             "use another output folder")
        return old
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, path)
    skipped = index.get("skipped", {})
    if skipped:
        log.warning("%s: skipped %d unreadable item(s), e.g. %s", path, len(skipped), next(iter(skipped.items())))
    return index


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """Read an index file (raising ``ValueError`` naming it if it is not valid JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"index file {str(path)!r} is corrupt ({e}); delete it to rebuild the index") from e
