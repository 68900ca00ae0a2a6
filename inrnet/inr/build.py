"""``build_dataset``: fit an INR to every image of a source and store them, resumably."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from inrnet.inr.base import INRBatch, INRFamily, INRModule
from inrnet.inr.dataset import INRDataset
from inrnet.inr.fitting import fit
from inrnet.inr.store import (MANIFEST, CorruptShardError, new_manifest, read_manifest, verify_shard,
                              write_manifest, write_shard, write_shared)

__all__ = ["build_dataset"]

_NOT_RECORDED = ("device", "progress", "compile")
"""fit() arguments that do not change the INRs, left out of the manifest."""


def _record(value: Any) -> Any:
    """A JSON-able record of a fit argument; tensors and INRs by their sha256, dataclass options
    (``LiuRegularizer``, ``KLipschitz``) as ``{class name: fields}``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__name__: _record(dataclasses.asdict(value))}
    if isinstance(value, INRModule):
        value = value.as_batch()
    if isinstance(value, INRBatch):
        value = value.params
    if isinstance(value, Tensor):
        value = {"": value}
    if isinstance(value, Mapping) and value and all(isinstance(v, Tensor) for v in value.values()):
        h = hashlib.sha256()
        for k in sorted(value):
            h.update(k.encode())
            raw = value[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # (bytes,)
            h.update(raw.numpy().tobytes())
        return f"sha256:{h.hexdigest()}"
    return json.loads(json.dumps(value, default=str))


def _source_range(source, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """Images Tensor[n, C, *shape] and labels Tensor[n, ...] of items ``start:stop``."""
    if callable(source):
        images, labels = source(start, stop)
    else:
        items = [source[i] for i in range(start, stop)]
        images = torch.stack([torch.as_tensor(img) for img, _ in items])  # (n, C, *shape)
        labels = torch.stack([torch.as_tensor(lab) for _, lab in items])  # (n, ...)
    labels = torch.as_tensor(labels)
    if len(images) != stop - start or len(labels) != stop - start:
        raise ValueError(f"source gave {len(images)} images and {len(labels)} labels for items "
                         f"[{start}, {stop}); expected {stop - start}")
    return images, labels


def build_dataset(out_dir: str | os.PathLike, source: Sequence | Callable[[int, int], tuple[Tensor, Tensor]],
                  family: INRFamily, *, count: int | None = None, shard_size: int = 1024,
                  fit_kwargs: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> INRDataset:
    """Fit an INR of ``family`` to every image of ``source`` and store them in ``out_dir``.

    Shards already listed in the manifest and verified (size, sha256, header) are
    skipped, so rerunning after an interruption fits only the missing shards (a listed
    shard that fails verification is refitted). Rerunning on a directory built with a
    different family, count, shard size or fit settings is an error.

    Args:
        out_dir: the dataset directory (created if needed).
        source: a sequence of ``(image Tensor[C, *shape], label)``, or a callable
            ``(start, stop) -> (images Tensor[n, C, *shape], labels Tensor[n, ...])``.
        family: the INR family to fit.
        count: number of items (default ``len(source)``; required for a callable).
        shard_size: INRs per shard (and per call of [`fit`][inrnet.inr.fitting.fit]).
        fit_kwargs: keyword arguments of [`fit`][inrnet.inr.fitting.fit] (steps, lr,
            batch_size, device, ...), recorded in the manifest (except device, progress
            and compile; tensors by checksum).
        seed: shard ``i`` is fitted with seed ``seed + i``.
        progress: progress bars.

    Returns:
        The finished dataset.
    """
    if count is None:
        if callable(source):
            raise ValueError("build_dataset needs count= when the source is a callable")
        count = len(source)
    if not isinstance(shard_size, int) or shard_size < 1 or not isinstance(count, int) or count < 1:
        raise ValueError(f"count and shard_size must be positive integers, got {count!r}, {shard_size!r}")
    fit_kwargs = dict(fit_kwargs or {})
    for key in ("seed", "progress"):
        if key in fit_kwargs:
            raise ValueError(f"pass {key} to build_dataset itself, not in fit_kwargs")
    recorded = {k: _record(v) for k, v in fit_kwargs.items() if k not in _NOT_RECORDED}
    recorded["seed"] = seed
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp"):  # left by a build that was killed mid-write
        stale.unlink()
    manifest = new_manifest(family, count, shard_size, recorded)
    if (root / MANIFEST).exists():
        old = read_manifest(root)
        for key in ("family", "count", "shard_size", "fit"):
            if old.get(key) != manifest[key]:
                raise ValueError(f"{str(root)!r} holds a dataset built with {key}={old.get(key)!r}, not "
                                 f"{manifest[key]!r}; use another directory to build a different dataset")
        manifest = old
    shared = write_shared(root, family)  # a family's shared parameters (functa's base), once, before any shard
    if shared is not None:
        manifest["shared"] = shared
    done = {}
    for entry in manifest["shards"]:
        try:
            verify_shard(root, entry, family)
        except CorruptShardError:
            continue  # refitted below
        done[entry["start"]] = entry
    for i, start in enumerate(range(0, count, shard_size)):
        if start in done:
            continue
        images, labels = _source_range(source, start, min(start + shard_size, count))
        inrs, quality = fit(images, family, seed=seed + i, progress=progress, **fit_kwargs)
        done[start] = write_shard(root, i, start, inrs, labels, quality)
        manifest["shards"] = [done[s] for s in sorted(done)]
        write_manifest(root, manifest)
    manifest["complete"] = True
    write_manifest(root, manifest)
    return INRDataset(root, verify=False)
