"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; Zalando Research, MIT licence): images and INR settings.

The four IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``) are looked for
in ``root``, then ``$INRNET_FASHION_MNIST``, then Debian's ``dataset-fashion-mnist``
location `DEBIAN_ROOT`; torchvision's layout (``<root>/FashionMNIST/raw``) is
accepted too, and ``download=True`` fetches the files with torchvision when a network
exists.

The INR settings are those of the weight-space benchmark: SIREN ``2 -> 32 -> 32 -> 1``,
``omega_0 = 30`` (`SIREN`), fitted for 100 Adam steps at 3e-3 (`FIT`); the
cross-parameterisation test split uses the small Gaussian Fourier-feature net
`FOURIER`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from inrnet.datasets.embedded import open_default
from inrnet.datasets.idx import read_idx
from inrnet.inr import FourierFamily, SirenFamily

__all__ = ["read_idx", "load_fashion_mnist_images", "find_fashion_mnist", "default_images",
           "CLASSES", "DEBIAN_ROOT", "ENV_VAR", "SPLITS", "SIREN", "FOURIER", "FIT", "FIT_FOURIER"]

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package puts the files."""
ENV_VAR = "INRNET_FASHION_MNIST"
"""Environment variable naming a folder with the IDX files."""
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
"""Class names, by label."""
SPLITS = {"train": "train", "test": "t10k"}
"""Split -> IDX file prefix."""
SIZES = {"train": 60000, "test": 10000}
"""Split -> number of items."""

SIREN = SirenFamily(in_features=2, out_features=1, width=32, depth=3, omega_0=30.0, first_omega_0=30.0)
"""The weight-space benchmark's SIREN: 2 -> 32 -> 32 -> 1, omega_0 = 30 (1185 parameters)."""
FOURIER = FourierFamily(in_features=2, out_features=1, features=32, sigma=2.0, width=32, depth=3)
"""Gaussian Fourier features for the test split: 32 frequencies (sigma 2 cycles per unit of
[-1, 1]^2, under the 7-cycle Nyquist limit of 28 pixels), ReLU MLP 64 -> 32 -> 32 -> 1
(3169 trainable parameters, 64 frozen)."""
FIT = {"steps": 100, "lr": 3e-3, "batch_size": 500}
"""fit() settings of the SIRENs."""
FIT_FOURIER = {"steps": 300, "lr": 3e-3, "batch_size": 500}
"""fit() settings of the Fourier-feature nets."""


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    bases = [Path(root)] if root is not None else \
        [Path(p) for p in (os.environ.get(ENV_VAR), DEBIAN_ROOT) if p]
    return [d for b in bases for d in (b, b / "FashionMNIST" / "raw")]


def find_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The images and labels IDX files of ``split``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a folder with the files (default: ``$INRNET_FASHION_MNIST``, then `DEBIAN_ROOT`).

    Raises:
        ValueError: an unknown split.
        FileNotFoundError: the files are in none of the folders looked in (all named).
    """
    if split not in SPLITS:
        raise ValueError(f"Fashion-MNIST has the splits {sorted(SPLITS)}, not {split!r}")
    names = [f"{SPLITS[split]}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
    looked = _candidates(root)
    for folder in looked:
        found = [next((folder / (n + ext) for ext in (".gz", "") if (folder / (n + ext)).is_file()), None)
                 for n in names]
        if all(found):
            return found[0], found[1]
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files {names} (.gz or raw) not found in {[str(p) for p in looked]}; "
        f"install Debian's dataset-fashion-mnist, set ${ENV_VAR}, pass root=, or download=True")


def load_fashion_mnist_images(split: str, root: str | os.PathLike | None = None, *,
                              download: bool = False) -> tuple[Tensor, Tensor]:
    """The images and labels of a Fashion-MNIST split.

    Args:
        split: ``"train"`` (60000 items) or ``"test"`` (10000).
        root: a folder with the IDX files (see `find_fashion_mnist`).
        download: if the files are not found, download them into ``root`` (default
            ``~/.cache/inrnet/fashion_mnist``) with torchvision.

    Returns:
        images uint8 Tensor[n, 28, 28] and labels int64 Tensor[n] in ``0..9``.

    Raises:
        ValueError: unknown split, corrupt or truncated files, or images and labels that
            disagree in number or range.
    """
    try:
        image_path, label_path = find_fashion_mnist(split, root)
    except FileNotFoundError:
        if not download:
            raise
        import torchvision

        target = Path(root) if root is not None else Path.home() / ".cache" / "inrnet" / "fashion_mnist"
        torchvision.datasets.FashionMNIST(str(target), train=split == "train", download=True)
        image_path, label_path = find_fashion_mnist(split, target)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or images.dtype != torch.uint8:
        raise ValueError(f"{str(image_path)!r} should hold uint8 images [n, 28, 28], got "
                         f"{images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"{str(label_path)!r} holds labels {tuple(labels.shape)} for {len(images)} images "
                         f"in {str(image_path)!r}")
    labels = labels.long()
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise ValueError(f"{str(label_path)!r} holds label {int(labels.max())}; "
                         f"Fashion-MNIST has {len(CLASSES)} classes")
    return images, labels


def default_images(split: str) -> tuple[Tensor, Tensor]:
    """The source images of the embedded default dataset (``"fashion_mnist_default"``).

    Pixel baselines trained on these see exactly the items the default INRs were fitted
    to, in the same order.

    Args:
        split: ``"train"``, ``"test"`` or ``"test_fourier"`` (the same items as ``"test"``).

    Returns:
        images uint8 Tensor[n, 28, 28] and labels int64 Tensor[n].
    """
    return open_default().images(split)
