"""The INR dataset format: a JSON manifest plus ``safetensors`` shards.

One dataset is one directory::

    manifest.json             format, version, family {name, config}, count, shard_size,
                              complete, fit settings, and per finished shard: file,
                              start, count, bytes, sha256
    shard-00000.safetensors   params.<name> [n, *shape], labels [n, ...],
    shard-00001.safetensors   quality.<key> [n] (e.g. psnr_grid, psnr_offgrid)

Nothing is ever unpickled: the family is rebuilt by name from its JSON config and the
shards are plain tensors, memory-mapped on reading. Every file is written atomically
(a temporary file in the same directory, ``fsync``, ``os.replace``), and the manifest is
rewritten after each finished shard, so an interrupted build resumes
where it stopped (:mod:`inrnet.inr.build`). A shard whose size, checksum or header is wrong raises
:class:`CorruptShardError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from inrnet.inr.base import INRBatch, INRFamily

__all__ = ["FORMAT", "VERSION", "MANIFEST", "CorruptShardError", "save_inrs", "read_manifest", "verify_shard"]

FORMAT = "inrnet.inr-dataset"
VERSION = 1
MANIFEST = "manifest.json"


class CorruptShardError(ValueError):
    """A shard file is missing, truncated, fails its checksum, or is not what the manifest says."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically (re)write ``root/manifest.json``."""
    _atomic_write(root / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``manifest.json`` of the dataset at ``root``.

    Raises:
        FileNotFoundError: ``root`` or its manifest does not exist.
        ValueError: the manifest is not valid JSON of this format and version.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no INR dataset at {str(root)!r}: the directory does not exist")
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no INR dataset at {str(root)!r}: {str(path)!r} does not exist")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"INR dataset manifest {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} is not an {FORMAT} manifest of version {VERSION}")
    missing = {"family", "count", "shard_size", "complete", "fit", "shards"} - set(manifest)
    if missing:
        raise ValueError(f"INR dataset manifest {str(path)!r} lacks the entries {sorted(missing)}")
    return manifest


def verify_shard(root: str | os.PathLike, entry: Mapping[str, Any], family: INRFamily,
                 checksum: bool = True) -> None:
    """Check a shard against its manifest entry: size, sha256, header, tensor names and shapes.

    Raises:
        CorruptShardError: naming the shard file and what is wrong with it.
    """
    path = Path(root) / entry["file"]
    if not path.is_file():
        raise CorruptShardError(f"shard {str(path)!r} is missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise CorruptShardError(f"shard {str(path)!r} is truncated or overwritten: {size} bytes, "
                                f"the manifest says {entry['bytes']}")
    if checksum and _sha256(path) != entry["sha256"]:
        raise CorruptShardError(f"shard {str(path)!r} fails its sha256 checksum (corrupt file)")
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CorruptShardError(f"shard {str(path)!r} is corrupt: cannot read its safetensors header ({e})") from e
    n = entry["count"]
    expected = {f"params.{k}": (n, *s) for k, s in family.param_shapes().items()}
    wrong = {k: shapes.get(k) for k, s in expected.items() if shapes.get(k) != s}
    if "labels" not in shapes or shapes["labels"][:1] != (n,):
        wrong["labels"] = shapes.get("labels")
    if wrong:
        raise CorruptShardError(f"shard {str(path)!r} does not hold {n} INRs of {family!r}: "
                                f"unexpected tensors {wrong} (expected {expected}, labels [{n}, ...])")


def write_shard(root: Path, index: int, start: int, inrs: INRBatch, labels: Tensor,
                 quality: Mapping[str, Tensor]) -> dict[str, Any]:
    """Atomically write shard ``index`` (INRs ``start:start + len(inrs)``).

    Args:
        inrs: the shard's n INRs.
        labels: Tensor[n, ...].
        quality: ``{key: Tensor[n]}``.

    Returns:
        Its manifest entry ``{file, start, count, bytes, sha256}``.
    """
    n = len(inrs)
    if labels.shape[:1] != (n,) or any(q.shape != (n,) for q in quality.values()):
        raise ValueError(f"a shard of {n} INRs needs labels [{n}, ...] and quality [{n}], got labels "
                         f"{tuple(labels.shape)} and quality { {k: tuple(q.shape) for k, q in quality.items()} }")
    tensors = {f"params.{k}": v.detach().cpu().contiguous() for k, v in inrs.params.items()}
    tensors["labels"] = labels.detach().cpu().contiguous()
    tensors.update({f"quality.{k}": q.detach().cpu().contiguous() for k, q in quality.items()})
    name = f"shard-{index:05d}.safetensors"
    _atomic_write(root / name, lambda p: save_file(tensors, p, metadata={"format": FORMAT, "start": str(start)}))
    path = root / name
    return {"file": name, "start": start, "count": n, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def new_manifest(family: INRFamily, count: int, shard_size: int, fit: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a dataset of ``count`` INRs with no finished shard yet."""
    return {"format": FORMAT, "version": VERSION, "family": family.to_dict(), "count": count,
            "shard_size": shard_size, "complete": False, "fit": dict(fit), "shards": []}


def save_inrs(path: str | os.PathLike, inrs: INRBatch, labels: Tensor, *,
              quality: Mapping[str, Tensor] | None = None, shard_size: int | None = None) -> None:
    """Write fitted INRs as a dataset (a new directory, or one without a manifest yet).

    Args:
        inrs: B INRs of one family.
        labels: Tensor[B, ...].
        quality: optional ``{key: Tensor[B]}`` (e.g. the second output of :func:`fit`).
        shard_size: INRs per shard (default: one shard).
    """
    root = Path(path)
    if (root / MANIFEST).exists():
        raise FileExistsError(f"{str(root)!r} already holds an INR dataset; write to a new directory")
    n = len(inrs)
    shard_size = shard_size or n
    root.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest(inrs.family, n, shard_size, {})
    quality = dict(quality or {})
    for i, start in enumerate(range(0, n, shard_size)):
        part = slice(start, start + shard_size)
        manifest["shards"].append(write_shard(root, i, start, inrs[part], labels[part],
                                               {k: q[part] for k, q in quality.items()}))
    manifest["complete"] = True
    write_manifest(root, manifest)
