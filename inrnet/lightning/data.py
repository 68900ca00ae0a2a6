"""What the DataModules read: INR datasets by name or path, in-memory datasets, sampler specs.

An *INR dataset* here is anything with ``len()``, ``.family`` (an
[`INRFamily`][inrnet.inr.base.INRFamily]), ``.labels`` (Tensor[len, ...]) and
``.batch(indices) -> (INRBatch, labels Tensor[b, ...])``: a stored
[`INRDataset`][inrnet.inr.dataset.INRDataset], a named dataset of [`inrnet.datasets`][inrnet.datasets], an
[`InMemoryINRDataset`][inrnet.lightning.data.InMemoryINRDataset], or a [`SubsetINRDataset`][inrnet.lightning.data.SubsetINRDataset] of any of them.

Sampler specs are short strings that fit in a YAML config or on the command line:
``"sobol:1024"``, ``"halton:1024"``, ``"shrunk:784"``, ``"mc:784"``, ``"grid:28x28"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from inrnet.inr import INRBatch, INRDataset, INRFamily, PixelINR
from inrnet.sampling import SCHEMES, MixedSampler, Sampler

__all__ = ["INRDatasetLike", "InMemoryINRDataset", "SubsetINRDataset", "random_subset", "open_dataset",
           "parse_sampler", "setting_name"]

MANIFEST = "manifest.json"


@runtime_checkable
class INRDatasetLike(Protocol):
    """The interface the DataModules need from an INR dataset."""

    family: INRFamily

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[INRBatch, Tensor]: ...


class InMemoryINRDataset:
    """INRs held in memory: an [`INRBatch`][inrnet.inr.base.INRBatch] of ``B`` INRs and their labels.

    Args:
        inrs: the INRs.
        labels: Tensor[B] class labels, or Tensor[B, H, W] label maps.
    """

    def __init__(self, inrs: INRBatch, labels: Tensor):
        labels = torch.as_tensor(labels)
        if labels.dim() == 0 or len(labels) != len(inrs):
            raise ValueError(f"need one label (map) per INR: {len(inrs)} INRs, labels {tuple(labels.shape)}")
        self.inrs, self._labels = inrs, labels

    @classmethod
    def from_images(cls, images: Tensor, labels: Tensor, mode: str = "linear",
                    value_range: Sequence[float] = (0.0, 1.0)) -> InMemoryINRDataset:
        """Pixel arrays as INRs ([`PixelINR`][inrnet.inr.pixel.PixelINR]).

        Sampled on their own grid they give back the pixels exactly; ``mode="linear"`` on a
        finer grid gives their bilinear upsampling (``F.interpolate(mode="bilinear",
        align_corners=False)``).

        Args:
            images: Tensor[B, C, *shape] (uint8 images are scaled to ``[0, 1]``), or
                Tensor[B, *shape] for one channel.
            labels: Tensor[B, ...].
        """
        images = torch.as_tensor(images)
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        if images.dim() == 3:
            images = images.unsqueeze(1)  # (B, 1, H, W)
        return cls(PixelINR(images, mode, value_range), labels)

    @property
    def family(self) -> INRFamily:
        return self.inrs.family

    @property
    def labels(self) -> Tensor:
        """Tensor[len, ...]."""
        return self._labels

    def __len__(self) -> int:
        return len(self.inrs)

    def __repr__(self) -> str:
        return f"InMemoryINRDataset({len(self)} x {self.family!r})"

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[INRBatch, Tensor]:
        """The INRs ``indices`` and their labels Tensor[b, ...]."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return self.inrs[index], self._labels[index]


class SubsetINRDataset:
    """The items ``indices`` of an INR dataset, renumbered from 0.

    Args:
        base: an INR dataset.
        indices: Tensor[n] of item indices into ``base``.
    """

    def __init__(self, base: INRDatasetLike, indices: Tensor):
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if len(indices) == 0 or int(indices.min()) < 0 or int(indices.max()) >= len(base):
            raise ValueError(f"subset indices must be in [0, {len(base)}), got {len(indices)} indices")
        self.base, self.indices = base, indices

    @property
    def family(self) -> INRFamily:
        return self.base.family

    @property
    def labels(self) -> Tensor:
        """Tensor[len, ...]."""
        return self.base.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"SubsetINRDataset({len(self)} of {self.base!r})"

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[INRBatch, Tensor]:
        """The INRs ``indices`` (of the subset) and their labels Tensor[b, ...]."""
        return self.base.batch(self.indices[torch.as_tensor(indices, dtype=torch.long).reshape(-1)])


def random_subset(dataset: INRDatasetLike, limit: int | None, seed: int = 0) -> INRDatasetLike:
    """A seeded random subset of ``limit`` items, in index order (the dataset itself if
    ``limit`` is None or not smaller)."""
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise ValueError(f"a dataset limit must be a positive integer or None, got {limit}")
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    return SubsetINRDataset(dataset, keep.sort().values)


def _splits_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if (p / MANIFEST).is_file()) if path.is_dir() else []


def open_dataset(dataset: str | os.PathLike | INRDatasetLike, split: str, root: str | None = None) -> INRDatasetLike:
    """Open one split of an INR dataset.

    Args:
        dataset: a name known to [`inrnet.datasets.get_dataset`][inrnet.datasets.get_dataset] (``"fashion_mnist"``,
            ``"fashion_mnist_default"``, ``"cityscapes"``, ...); a directory whose
            sub-directory ``split`` is a stored INR dataset (``<dir>/<split>/manifest.json``);
            or an INR dataset object, returned as is.
        split: the split (``"train"``, ``"test"``, ...).
        root: where named datasets live (their default location if None).

    Raises:
        ValueError: an unknown name or split, naming the valid ones.
    """
    if isinstance(dataset, INRDatasetLike) and not isinstance(dataset, (str, os.PathLike)):
        return dataset
    path = Path(dataset)
    if path.is_dir():
        if not (path / split / MANIFEST).is_file():
            raise ValueError(f"no split {split!r} in the INR dataset directory {str(path)!r}: expected "
                             f"{str(path / split / MANIFEST)!r}; splits found: {_splits_in(path) or 'none'}")
        return INRDataset(path / split)
    if os.sep in str(dataset) or str(dataset).startswith("."):
        raise ValueError(f"INR dataset directory {str(dataset)!r} does not exist")
    try:
        from inrnet.datasets import get_dataset
    except ImportError as e:
        raise ValueError(f"dataset {str(dataset)!r} is not a directory, and named datasets need the "
                         f"inrnet.datasets package, which failed to import: {e}") from e
    return get_dataset(str(dataset), split, root=root)


_SPEC = re.compile(r"^\s*(?P<scheme>[a-z]+)\s*:\s*(?P<size>\d+(?:\s*x\s*\d+)*|\d+\s*-\s*\d+)\s*$")


def parse_sampler(spec: str | Sampler | MixedSampler, dim: int | None = None, *, seed: int = 0,
                  rescramble: bool = True, device=None) -> Sampler | MixedSampler:
    """A [`Sampler`][inrnet.sampling.sampler.Sampler] from a spec string (a Sampler is returned as is).

    ``"sobol:1024"`` (also ``halton``, ``shrunk``, ``mc``) draws 1024 points in ``[-1, 1]^dim``
    (``dim`` default 2); ``"sobol:784-3136"`` draws a fresh count per step, log-uniformly
    between 784 and 3136 (mixed-density training; rescrambling samplers only);
    ``"grid:28x28"`` is the grid of cell centres of a 28x28 image (``"grid:28"`` in 1D; if
    ``dim`` is given the grid's rank must equal it). Specs joined by ``|`` are a
    [`MixedSampler`][inrnet.sampling.sampler.MixedSampler] for training: each step draws from
    one of them, e.g. ``"grid:64x64|sobol:4096-16384"`` (the pixel lattice half the steps).

    Raises:
        ValueError: a malformed spec, an unknown scheme, a grid of the wrong rank, or a
            mixture for evaluation (``rescramble=False``).
    """
    if isinstance(spec, (Sampler, MixedSampler)):
        return spec
    if "|" in str(spec):
        if not rescramble:
            raise ValueError(f"a mixture of samplers {spec!r} draws a different point set at every step: it is a "
                             "training sampler; evaluate on each of its parts instead")
        parts = [parse_sampler(part, dim, seed=seed, rescramble=True, device=device) for part in str(spec).split("|")]
        return MixedSampler(parts, seed=seed)
    match = _SPEC.match(str(spec))
    if match is None:
        raise ValueError(f"sampler spec must look like 'sobol:1024', 'sobol:784-3136' or 'grid:28x28', got {spec!r}")
    scheme = match["scheme"]
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r} in {spec!r}; choose one of {SCHEMES}")
    if "-" in match["size"]:
        if scheme == "grid":
            raise ValueError(f"a grid has one size, not a range: {spec!r}")
        lo, hi = (int(v) for v in match["size"].split("-"))
        return Sampler(scheme, (lo, hi), dim or 2, seed=seed, rescramble=rescramble, device=device)
    sizes = [int(s) for s in re.split(r"\s*x\s*", match["size"])]
    if scheme == "grid":
        if dim is not None and len(sizes) != dim:
            raise ValueError(f"grid spec {spec!r} has {len(sizes)} axes but the INRs take {dim} coordinates")
        return Sampler("grid", shape=sizes, seed=seed, rescramble=rescramble, device=device)
    if len(sizes) != 1:
        raise ValueError(f"{scheme} spec {spec!r} takes one number of points, e.g. '{scheme}:1024'")
    return Sampler(scheme, sizes[0], dim or 2, seed=seed, rescramble=rescramble, device=device)


def setting_name(spec: str | Sampler | MixedSampler) -> str:
    """A metric-friendly name of a sampler spec: ``"sobol:784" -> "sobol_784"``, ``"grid:28x28" -> "grid_28x28"``."""
    if isinstance(spec, MixedSampler):
        return "+".join(setting_name(s) for s in spec.samplers)
    if isinstance(spec, Sampler):
        if spec.scheme == "grid":
            size = "x".join(map(str, spec.shape))
        else:
            size = str(spec.n) if spec.n_range is None else "-".join(map(str, spec.n_range))
        return f"{spec.scheme}_{size}"
    return re.sub(r"\s+", "", str(spec)).replace(":", "_").replace("|", "+")
