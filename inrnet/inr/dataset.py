"""Reading INR datasets: [`INRDataset`][inrnet.inr.dataset.INRDataset] and [`load_inrs`][inrnet.inr.dataset.load_inrs].

Shards are opened with ``safetensors.safe_open`` (memory-mapped) the first time an INR
in them is asked for, after their size, sha256 (unless ``verify=False``) and header are
checked; only the rows asked for are copied out.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from inrnet.inr.base import INRBatch, family_from_dict
from inrnet.inr.store import CorruptShardError, read_manifest, read_shared, verify_shard

__all__ = ["INRDataset", "load_inrs", "cat_common_quality"]


def cat_common_quality(parts: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate the fit-quality keys that every part holds: ``{key: Tensor[sum n_i]}``.

    A build resumed with a newer inrnet writes shards with more keys (``lipschitz_bound``)
    beside older ones; a key missing from any shard is left out rather than misaligned.

    Args:
        parts: per shard (or chunk), ``{key: Tensor[n_i]}``.
    """
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0] if all(k in p for p in parts)} if parts else {}


class INRDataset(Dataset):
    """A stored INR dataset (see [`inrnet.inr.store`][inrnet.inr.store] for the format).

    ``dataset[i]`` is ``(params, label)`` with ``params = {name: Tensor[*shape]}`` of INR
    ``i``, so a ``DataLoader`` collates a minibatch into ``{name: Tensor[B, *shape]}``;
    ``INRBatch(dataset.family, params)`` makes it evaluable. [`batch`][inrnet.inr.dataset.INRDataset.batch] reads a list of
    indices straight into an [`INRBatch`][inrnet.inr.base.INRBatch].

    Args:
        path: the dataset directory.
        verify: check each shard's sha256 when it is first opened (sizes and headers
            are always checked).

    Raises:
        FileNotFoundError: no dataset at ``path`` (naming it).
        ValueError: an unfinished build, or a bad manifest (naming it and the bad entry: e.g.
            shards that do not tile ``[0, count)``, an unknown family config key).
        CorruptShardError: a shard (or the shared parameters' file) that is missing, truncated,
            corrupt or malformed.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.root = Path(path)
        self.manifest = read_manifest(self.root)  # checked: the family rebuilds, a complete one's shards tile it
        self.family = read_shared(self.root, self.manifest, family_from_dict(self.manifest["family"]),
                                  checksum=verify)  # shared parameters (functa's base), if the family has any
        shards = self.manifest["shards"]
        done = sum(s["count"] for s in shards)
        if not self.manifest["complete"]:
            raise ValueError(f"INR dataset {str(self.root)!r} is unfinished ({done} of {self.manifest['count']} "
                             "INRs written); rerun its build to complete it")
        self.shards = shards
        self.starts = [s["start"] for s in shards]
        self.verify = verify
        for entry in shards:
            path = self.root / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                verify_shard(self.root, entry, self.family, checksum=False)  # raises, naming the shard
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return self.manifest["count"]

    def __repr__(self) -> str:
        return f"INRDataset({str(self.root)!r}, {len(self)} x {self.family!r}, {len(self.shards)} shard(s))"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # open files do not travel to DataLoader workers
        return state

    def _handle(self, shard: int):
        if shard not in self._handles:
            entry = self.shards[shard]
            verify_shard(self.root, entry, self.family, checksum=self.verify)
            self._handles[shard] = safe_open(self.root / entry["file"], framework="pt")
        return self._handles[shard]

    def _locate(self, index: int) -> tuple[int, int]:
        """(shard, row) of INR ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"INR index {index} out of range for a dataset of {len(self)}")
        index %= len(self)
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _read(self, shard: int, rows: slice, keys: Sequence[str] | None = None, prefix: str = "") -> dict[str, Tensor]:
        """Rows ``rows`` of the tensors ``keys`` (default: all starting with ``prefix``), prefix stripped."""
        f = self._handle(shard)
        keys = keys if keys is not None else [k for k in f.keys() if k.startswith(prefix)]
        try:
            return {k[len(prefix):]: f.get_slice(k)[rows] for k in keys}
        except Exception as e:
            raise CorruptShardError(f"shard {str(self.root / self.shards[shard]['file'])!r} could not be read: {e}") from e

    def _params(self, shard: int, rows: slice) -> dict[str, Tensor]:
        """``{name: Tensor[rows, *shape]}``."""
        return self._read(shard, rows, [f"params.{k}" for k in self.family.param_shapes()], "params.")

    def _labels(self, shard: int, rows: slice) -> Tensor:
        """Tensor[rows, ...]."""
        return self._read(shard, rows, ["labels"])["labels"]

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], Tensor]:
        shard, row = self._locate(int(index))
        rows = slice(row, row + 1)
        return {k: v[0] for k, v in self._params(shard, rows).items()}, self._labels(shard, rows)[0]

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[INRBatch, Tensor]:
        """The INRs ``indices`` as one [`INRBatch`][inrnet.inr.base.INRBatch], and their labels Tensor[len, ...].

        Runs of consecutive indices within a shard are read as one slice each.
        """
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)  # (M,)
        if len(indices) == 0:
            raise ValueError("INRDataset.batch needs at least one index")
        order = torch.argsort(indices, stable=True)
        located = [self._locate(int(i)) for i in indices[order]]
        parts, labels = [], []
        run_start = 0
        for j in range(1, len(located) + 1):
            shard, row = located[j - 1]
            if j < len(located) and located[j] == (shard, row + 1):
                continue
            rows = slice(located[run_start][1], row + 1)
            parts.append(self._params(shard, rows))
            labels.append(self._labels(shard, rows))
            run_start = j
        params = {k: torch.cat([p[k] for p in parts]) for k in self.family.param_shapes()}  # (sorted, *shape)
        labels = torch.cat(labels)  # (sorted, ...)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return INRBatch(self.family, {k: v[inverse] for k, v in params.items()}), labels[inverse]

    @property
    def labels(self) -> Tensor:
        """All labels, Tensor[len, ...]."""
        return torch.cat([self._labels(s, slice(None)) for s in range(len(self.shards))])

    @property
    def quality(self) -> dict[str, Tensor]:
        """The stored fit quality of every INR, ``{key: Tensor[len]}`` (empty if none).

        Only the keys every shard holds (`cat_common_quality`).
        """
        return cat_common_quality([self._read(s, slice(None), prefix="quality.") for s in range(len(self.shards))])


def load_inrs(path: str | os.PathLike, *, verify: bool = True) -> tuple[INRBatch, Tensor]:
    """Every INR of the dataset at ``path`` and its labels, checksums verified.

    Returns:
        An [`INRBatch`][inrnet.inr.base.INRBatch] of all ``B`` INRs and labels Tensor[B, ...].
    """
    dataset = INRDataset(path, verify=verify)
    return dataset.batch(torch.arange(len(dataset)))
