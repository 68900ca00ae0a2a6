"""The dataset registry: ``get_dataset(name, split, root)``.

A built dataset lives in ``<root>/<split>/`` (an INR dataset directory, see
[`inrnet.inr.store`][inrnet.inr.store]). ``root`` defaults to ``$INRNET_DATA/<name>`` or, without that
variable, ``~/.cache/inrnet/<name>``. The embedded default ``fashion_mnist_default`` is
read from the package and ignores ``root``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from inrnet.datasets.cityscapes import DATASET_SPLITS
from inrnet.datasets.embedded import open_default
from inrnet.datasets.fashion_mnist import CLASSES as FASHION_CLASSES
from inrnet.datasets.imagenet import CLASSES as BIG12_CLASSES
from inrnet.datasets.labelmaps import LabelMapDataset
from inrnet.datasets.parts import BUILD, parts_done
from inrnet.inr import INRDataset
from inrnet.inr.store import MANIFEST

__all__ = ["DatasetInfo", "DATASETS", "ENV_VAR", "default_root", "get_dataset", "list_datasets"]

ENV_VAR = "INRNET_DATA"
"""Environment variable naming the folder that holds every named dataset."""


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: its splits, the folder each reads, the command that builds it, and its class names
    by label (empty when unknown or for segmentation datasets)."""

    name: str
    splits: tuple[str, ...]
    build: str
    folder: Callable[[str], str] = lambda split: split
    segmentation: bool = False
    doc: str = ""
    classes: tuple[str, ...] = ()


_FM = "python datasets/fashion_mnist/build.py --split {folder} --out {root}"
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("fashion_mnist", ("train", "test", "test_fourier"), _FM,
                doc="Fashion-MNIST 28x28 as SIREN 2-32-32-1 (test_fourier: Gaussian Fourier-feature nets)",
                classes=FASHION_CLASSES),
    DatasetInfo("fashion_mnist_default", ("train", "test", "test_fourier"),
                "python datasets/fashion_mnist/build_default.py",
                doc="a class-balanced subset of fashion_mnist shipped in the package (float16 parameters)",
                classes=FASHION_CLASSES),
    DatasetInfo("imagenet_big12", ("train", "test", "test_fourier"),
                "python datasets/imagenet_big12/build.py --imagenet IMAGENET --wordnet WORDNET "
                "--split {folder} --out {root}",
                doc="12 WordNet superclasses of ImageNet, 256x256, SIREN 5x256 (test_fourier: Fourier features)",
                classes=BIG12_CLASSES),
    DatasetInfo("cityscapes", ("train", "train_fine", "test", "test_coarse"),
                "python datasets/cityscapes/build.py --cityscapes CITYSCAPES --split {folder} --out {root}",
                folder=lambda split: "train" if split.startswith("train") else "val", segmentation=True,
                doc="Cityscapes SIRENs with 7-category label maps at full resolution (train: coarse labels)"),
    DatasetInfo("fashion_mnist_scenes", ("train", "test"),
                "python datasets/fashion_mnist_scenes/build.py --split {folder} --count 3000 --out {root}",
                segmentation=True, doc="64x64 canvases of 2-4 Fashion-MNIST items with per-pixel labels"),
)}


def default_root(name: str) -> Path:
    """Where the named dataset is looked for when no root is given."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "inrnet") / name


def list_datasets() -> dict[str, tuple[str, ...]]:
    """``{name: splits}`` of every registered dataset."""
    return {name: info.splits for name, info in DATASETS.items()}


def _open_built(info: DatasetInfo, split: str, root: Path) -> INRDataset:
    folder = info.folder(split)
    path = root / folder
    command = info.build.format(folder=folder, root=root)
    if not (path / MANIFEST).is_file():
        if (path / BUILD).is_file():
            settings = json.loads((path / BUILD).read_text())
            done = parts_done(path, settings["count"], settings["chunk_size"])
            state = f"is unfinished ({sum(done)} of {len(done)} chunks)"
        else:
            state = "does not exist"
        raise FileNotFoundError(f"the {info.name} {split!r} dataset at {str(path)!r} {state}; "
                                f"build it with: {command}")
    return INRDataset(path)


def _annotation(info: DatasetInfo, split: str, dataset: INRDataset) -> int:
    """Which stored annotation the Cityscapes dataset split ``split`` reads."""
    wanted = DATASET_SPLITS[split][1]
    built = json.loads((dataset.root / BUILD).read_text())["index"]["annotations"]
    if wanted not in built:
        raise ValueError(f"cityscapes split {split!r} needs {wanted} labels, but {str(dataset.root)!r} was built "
                         f"with {built}; rebuild it with --annotations {' '.join(built + [wanted])}")
    return built.index(wanted)


def get_dataset(name: str, split: str, root: str | os.PathLike | None = None) -> Dataset:
    """Open one split of a named INR dataset.

    Args:
        name: one of `DATASETS` (``"fashion_mnist"``, ``"fashion_mnist_default"``,
            ``"imagenet_big12"``, ``"cityscapes"``, ``"fashion_mnist_scenes"``).
        split: one of the dataset's splits.
        root: the folder holding the built splits (default [`default_root`][inrnet.datasets.default_root]);
            ignored by ``"fashion_mnist_default"``.

    Returns:
        A dataset with ``len``, ``__getitem__`` (``(params, label)``), ``.family``,
        ``.labels`` and ``.batch(indices) -> (INRBatch, labels)``: classes int64 Tensor[B],
        or for segmentation datasets label maps int64 Tensor[B, H, W] (void 255).

    Raises:
        ValueError: an unknown name or split (listing the valid ones).
        FileNotFoundError: the split is not built (naming the path and the build command).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    info = DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} of {name}; valid: {list(info.splits)}")
    if name == "fashion_mnist_default":
        return open_default().split(split)
    dataset = _open_built(info, split, Path(root) if root is not None else default_root(name))
    if name == "cityscapes":
        return LabelMapDataset(dataset, _annotation(info, split, dataset))
    if info.segmentation:
        return LabelMapDataset(dataset)
    return dataset
