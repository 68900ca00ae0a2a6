"""The embedded default Fashion-MNIST INR dataset shipped inside the package.

One ``safetensors`` file, `DEFAULT_PATH` (provenance and licence in the README beside
it), built by ``datasets/fashion_mnist/build_default.py`` from the full build. For each
split ``s`` (``train``, ``test``, ``test_fourier``) it holds ``s.params.<name>``
(float16 ``[n, *shape]``), ``s.labels`` (uint8 ``[n]``), ``s.index`` (int32 ``[n]``: the
item's index in the Fashion-MNIST split) and ``s.quality.<key>`` (float32 ``[n]``, the
fit quality of the stored float16 parameters); the source images are ``train.images``
and ``test.images`` (uint8 ``[n, 28, 28]``). The header metadata holds the families and
fit settings as JSON. Parameters are returned as float32.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor
from torch.utils.data import Dataset

from inrnet.inr import INRBatch, INRFamily, family_from_dict

__all__ = ["DEFAULT_PATH", "EMBEDDED_SPLITS", "EmbeddedINRDataset", "EmbeddedDefault", "open_default", "write_default"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "fashion_mnist_default.safetensors"
EMBEDDED_SPLITS = {"train": "train", "test": "test", "test_fourier": "test"}
"""split -> the split whose images it was fitted to."""


class EmbeddedINRDataset(Dataset):
    """One split of the embedded dataset, in memory, with [`INRDataset`][inrnet.inr.dataset.INRDataset]'s interface.

    ``dataset[i]`` is ``(params {name: float32 Tensor[*shape]}, label int64 Tensor[])``.
    """

    def __init__(self, split: str, family: INRFamily, params: Mapping[str, Tensor], labels: Tensor,
                 index: Tensor, quality: Mapping[str, Tensor]):
        self.split, self.family = split, family
        self.params = {k: v.float() for k, v in params.items()}
        self._inrs = INRBatch(family, self.params)  # validates the shapes
        n = len(self._inrs)
        if labels.shape != (n,) or index.shape != (n,) or any(q.shape != (n,) for q in quality.values()):
            raise ValueError(f"embedded split {split!r}: {n} INRs but labels {tuple(labels.shape)}, "
                             f"index {tuple(index.shape)}, quality { {k: tuple(q.shape) for k, q in quality.items()} }")
        self._labels, self.index, self._quality = labels.long(), index.long(), dict(quality)

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return f"EmbeddedINRDataset({self.split!r}, {len(self)} x {self.family!r})"

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], Tensor]:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"INR index {i} out of range for a dataset of {len(self)}")
        return {k: v[int(i)] for k, v in self.params.items()}, self._labels[int(i)]

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[INRBatch, Tensor]:
        """The INRs ``indices`` as one [`INRBatch`][inrnet.inr.base.INRBatch] and their labels int64 Tensor[len]."""
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)  # (M,)
        if len(indices) == 0:
            raise ValueError("batch needs at least one index")
        if bool((indices >= len(self)).any()) or bool((indices < -len(self)).any()):
            raise IndexError(f"INR indices out of range for a dataset of {len(self)}")
        return self._inrs[indices], self._labels[indices]

    @property
    def labels(self) -> Tensor:
        """All labels, int64 Tensor[n]."""
        return self._labels

    @property
    def quality(self) -> dict[str, Tensor]:
        """Fit quality of the stored (float16) INRs, ``{key: Tensor[n]}`` in dB."""
        return dict(self._quality)


class EmbeddedDefault:
    """The whole embedded file: its splits and source images.

    Args:
        path: the file (default `DEFAULT_PATH`).

    Raises:
        FileNotFoundError: the file is missing (a broken install).
        ValueError: it is not a valid embedded dataset (naming what is wrong).
    """

    def __init__(self, path: str | os.PathLike = DEFAULT_PATH):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"the embedded default dataset {str(self.path)!r} is missing (a broken "
                                    "install?); rebuild it with datasets/fashion_mnist/build_default.py")
        try:
            with safe_open(self.path, framework="pt") as f:
                meta = f.metadata() or {}
            self.tensors = load_file(self.path)
            self.meta = {k: json.loads(v) for k, v in meta.items()}
        except (SafetensorError, OSError, json.JSONDecodeError) as e:
            raise ValueError(f"the embedded default dataset {str(self.path)!r} is corrupt: {e}") from e
        missing = [s for s in EMBEDDED_SPLITS if s not in self.meta.get("families", {})]
        if missing:
            raise ValueError(f"the embedded default dataset {str(self.path)!r} lacks the splits {missing}")

    def split(self, split: str) -> EmbeddedINRDataset:
        """One split as an [`EmbeddedINRDataset`][inrnet.datasets.EmbeddedINRDataset]."""
        if split not in EMBEDDED_SPLITS:
            raise ValueError(f"unknown split {split!r} of fashion_mnist_default; valid: {sorted(EMBEDDED_SPLITS)}")
        family = family_from_dict(self.meta["families"][split])
        t = self.tensors
        try:
            params = {k: t[f"{split}.params.{k}"] for k in family.param_shapes()}
            quality = {k[len(f"{split}.quality."):]: v for k, v in t.items() if k.startswith(f"{split}.quality.")}
            return EmbeddedINRDataset(split, family, params, t[f"{split}.labels"], t[f"{split}.index"], quality)
        except KeyError as e:
            raise ValueError(f"the embedded default dataset {str(self.path)!r} lacks the tensor {e}") from e

    def images(self, split: str) -> tuple[Tensor, Tensor]:
        """Source images uint8 Tensor[n, 28, 28] and labels int64 Tensor[n] of ``split``, in its INRs' order.

        ``test_fourier`` (a subset of ``test``'s items) reads the matching ``test`` images.
        """
        if split not in EMBEDDED_SPLITS:
            raise ValueError(f"unknown split {split!r} of fashion_mnist_default; valid: {sorted(EMBEDDED_SPLITS)}")
        source = EMBEDDED_SPLITS[split]
        images, labels = self.tensors[f"{source}.images"], self.tensors[f"{split}.labels"].long()
        if split == source:
            return images, labels
        wanted, have = self.tensors[f"{split}.index"].long(), self.tensors[f"{source}.index"].long()
        match = wanted[:, None] == have[None, :]  # (n, m)
        if not bool(match.any(1).all()):
            raise ValueError(f"embedded split {split!r} holds items whose images are not in {source!r}")
        return images[match.long().argmax(1)], labels


@functools.lru_cache(maxsize=1)
def open_default() -> EmbeddedDefault:
    """The embedded default dataset, read once per process."""
    return EmbeddedDefault()


def write_default(path: str | os.PathLike, splits: Mapping[str, Mapping[str, Any]],
                  images: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Write an embedded dataset file.

    Args:
        path: the file to write.
        splits: ``{split: {"family": INRFamily, "params": {name: Tensor[n, *shape]},
            "labels": Tensor[n], "index": Tensor[n], "quality": {key: Tensor[n]}}}``.
        images: ``{source split: uint8 Tensor[n, 28, 28]}``.
        meta: more JSON-able metadata (fit settings, source, licence).
    """
    tensors: dict[str, Tensor] = {}
    for split, s in splits.items():
        tensors.update({f"{split}.params.{k}": v.half().contiguous() for k, v in s["params"].items()})
        tensors[f"{split}.labels"] = s["labels"].to(torch.uint8).contiguous()
        tensors[f"{split}.index"] = s["index"].to(torch.int32).contiguous()
        tensors.update({f"{split}.quality.{k}": v.float().contiguous() for k, v in s["quality"].items()})
    tensors.update({f"{k}.images": v.to(torch.uint8).contiguous() for k, v in images.items()})
    metadata = {"families": json.dumps({s: v["family"].to_dict() for s, v in splits.items()}),
                **{k: json.dumps(v) for k, v in meta.items()}}
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    save_file(tensors, tmp, metadata=metadata)
    os.chmod(tmp, 0o644)  # package data: readable by everyone
    os.replace(tmp, path)
