"""The INR dataset format: a JSON manifest plus ``safetensors`` shards.

One dataset is one directory::

    manifest.json             format, version, family {name, config}, count, shard_size,
                              complete, fit settings, and per finished shard: file,
                              start, count, bytes, sha256 (in order of start)
    shard-00000.safetensors   params.<name> [n, *shape], labels [n, ...],
    shard-00001.safetensors   quality.<key> [n] (e.g. psnr_grid, psnr_offgrid,
                              lipschitz_bound: the certified bound, float64)
    shared.safetensors        only for a family with shared parameters (functa's base
                              network): <name> [*shape], listed in the manifest as
                              "shared": {file, bytes, sha256}

Nothing is ever unpickled: the family is rebuilt by name from its JSON config and the
shards are plain tensors, memory-mapped on reading. Every file is written atomically
(a temporary file in the same directory, ``fsync``, ``os.replace``), and the manifest is
rewritten after each finished shard, so an interrupted build resumes
where it stopped ([`inrnet.inr.build`][inrnet.inr.build]). A shard whose size, checksum or header is wrong raises
[`CorruptShardError`][inrnet.inr.store.CorruptShardError] naming the file.

Parameters shared by every INR of a family ([`INRFamily.shared_shapes`][inrnet.inr.base.INRFamily.shared_shapes], e.g.
[`FunctaFamily`][inrnet.inr.functa.FunctaFamily]'s base SIREN and shift map) are stored once, in
``shared.safetensors``, written atomically and checked like a shard (size, sha256, tensor
names and shapes) before [`INRDataset`][inrnet.inr.dataset.INRDataset] binds them to the family
([`read_shared`][inrnet.inr.store.read_shared]); the family's config names their content checksum,
so the manifest alone says which base its INRs need.

The manifest itself is checked when read: in a complete dataset the shards tile
``[0, count)`` in order (the first starts at 0, each next one where the previous one
ends), each names a distinct file inside the directory, and the family config holds only
keys its family takes; anything else is a ``ValueError`` naming the manifest and the bad
entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from inrnet.inr.base import INRBatch, INRFamily, family_from_dict

__all__ = ["FORMAT", "VERSION", "MANIFEST", "SHARED", "CorruptShardError", "save_inrs", "read_manifest",
           "verify_shard", "write_shared", "read_shared"]

FORMAT = "inrnet.inr-dataset"
VERSION = 1
MANIFEST = "manifest.json"
SHARED = "shared.safetensors"
"""The file holding a family's shared parameters (only for families that have some)."""


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
        ValueError: naming the manifest: it is not valid JSON of this format and version,
            or an entry is missing or wrong (see the module docstring), e.g. shards that do
            not tile a complete dataset or a family config key its family does not take.
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
    _check_manifest(manifest, path)
    return manifest


def _is_int(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_manifest(manifest: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``path`` unless ``manifest`` is well formed.

    Every entry is present with its type; ``count`` and ``shard_size`` are positive; the
    family rebuilds from its ``{name, config}``; each shard names a distinct file inside
    the dataset directory, with a positive ``count``, ``bytes >= 0`` and a hex sha256.
    The shards cover items in order without overlapping, within ``[0, count)``; in a
    complete dataset they tile it exactly: the first starts at 0 and each next one where
    the previous one ends, the last at ``count`` (an unfinished build may have gaps).

    Args:
        manifest: a parsed ``manifest.json``.
        path: its file, for the messages.
    """
    where = f"INR dataset manifest {str(path)!r}"
    missing = {"family", "count", "shard_size", "complete", "fit", "shards"} - set(manifest)
    if missing:
        raise ValueError(f"{where}: lacks the entries {sorted(missing)}")
    for key in ("count", "shard_size"):
        if not _is_int(manifest[key], 1):
            raise ValueError(f"{where}: {key!r} must be a positive integer, got {manifest[key]!r}")
    if not isinstance(manifest["complete"], bool):
        raise ValueError(f"{where}: 'complete' must be true or false, got {manifest['complete']!r}")
    if not isinstance(manifest["fit"], dict):
        raise ValueError(f"{where}: 'fit' must be an object of fit settings, got {manifest['fit']!r}")
    family = manifest["family"]
    if not isinstance(family, dict) or not isinstance(family.get("config"), dict) or "name" not in family:
        raise ValueError(f"{where}: 'family' must be an object with a 'name' and a 'config' object, got {family!r}")
    try:
        family_from_dict(family)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: its 'family' entry does not rebuild: {e}") from None
    shared = manifest.get("shared")
    if shared is not None:
        if (not isinstance(shared, dict) or shared.get("file") != SHARED or not _is_int(shared.get("bytes"), 0)
                or not isinstance(shared.get("sha256"), str) or not re.fullmatch("[0-9a-f]{64}", shared["sha256"])):
            raise ValueError(f"{where}: 'shared' must be {{file: {SHARED!r}, bytes, sha256}}, got {shared!r}")
    elif manifest["complete"] and family_from_dict(family).shared_shapes():
        raise ValueError(f"{where}: its family {family['name']!r} has shared parameters, but the manifest lists "
                         f"no 'shared' entry ({SHARED})")
    shards, count = manifest["shards"], manifest["count"]
    if not isinstance(shards, list):
        raise ValueError(f"{where}: 'shards' must be a list of shard entries, got {shards!r}")
    files: dict[str, int] = {}
    end = 0
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: shard {i} must be an object {{file, start, count, bytes, sha256}}, "
                             f"got {entry!r}")
        shard = f"shard {i} ({entry.get('file')!r})"
        missing = {"file", "start", "count", "bytes", "sha256"} - set(entry)
        if missing:
            raise ValueError(f"{where}: {shard} lacks the entries {sorted(missing)}")
        file = entry["file"]
        parts = PurePosixPath(file).parts if isinstance(file, str) else ()
        if not parts or PurePosixPath(file).is_absolute() or ".." in parts or "\\" in file:
            raise ValueError(f"{where}: {shard} must name its file by a relative path inside the dataset "
                             "directory ('/'-separated, no '..', no absolute path)")
        if "/".join(parts) in files:
            raise ValueError(f"{where}: {shard} names the file of shard {files['/'.join(parts)]}")
        files["/".join(parts)] = i
        for key, least in (("start", 0), ("count", 1), ("bytes", 0)):
            if not _is_int(entry[key], least):
                kind = "a positive" if least else "a non-negative"
                raise ValueError(f"{where}: {shard} {key!r} must be {kind} integer, got {entry[key]!r}")
        if not isinstance(entry["sha256"], str) or not re.fullmatch("[0-9a-f]{64}", entry["sha256"]):
            raise ValueError(f"{where}: {shard} 'sha256' must be 64 lowercase hex digits, got {entry['sha256']!r}")
        start = entry["start"]
        if start < end:
            raise ValueError(f"{where}: {shard} starts at {start}, inside the shards listed before it (they end "
                             f"at {end}); shards are listed in order of start and do not overlap")
        if manifest["complete"] and start != end:
            raise ValueError(f"{where}: {shard} starts at {start}, but the shards listed before it end at {end}; "
                             f"the shards of a complete dataset tile [0, {count}) in order")
        end = start + entry["count"]
        if end > count:
            raise ValueError(f"{where}: {shard} ends at {end}, past the dataset's count {count}")
    if manifest["complete"] and end != count:
        raise ValueError(f"{where}: the shards end at {end}, not at the dataset's count {count}; the shards of "
                         f"a complete dataset tile [0, {count}) in order")


def _check_file(path: Path, entry: Mapping[str, Any], checksum: bool, what: str, verbs: tuple[str, str]) -> None:
    """Raise a `CorruptShardError` naming ``what`` if the file at ``path`` is missing, has another size
    than ``entry["bytes"]``, or (with ``checksum``) another sha256 than ``entry["sha256"]``.
    ``verbs``: ``("is", "fails its")`` or ``("are", "fail their")``, to agree with ``what``."""
    be, fail = verbs
    if not path.is_file():
        raise CorruptShardError(f"{what} {be} missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise CorruptShardError(f"{what} {be} truncated or overwritten: {size} bytes, "
                                f"the manifest says {entry['bytes']}")
    if checksum and _sha256(path) != entry["sha256"]:
        raise CorruptShardError(f"{what} {fail} sha256 checksum (corrupt file)")


def verify_shard(root: str | os.PathLike, entry: Mapping[str, Any], family: INRFamily,
                 checksum: bool = True) -> None:
    """Check a shard against its manifest entry: size, sha256, header, tensor names and shapes.

    Raises:
        CorruptShardError: naming the shard file and what is wrong with it.
    """
    path = Path(root) / entry["file"]
    _check_file(path, entry, checksum, f"shard {str(path)!r}", ("is", "fails its"))
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


def write_shared(root: Path, family: INRFamily) -> dict[str, Any] | None:
    """Atomically write ``family.shared`` to ``root/shared.safetensors``.

    Returns:
        Its manifest entry ``{file, bytes, sha256}``, or None for a family without shared parameters.

    Raises:
        ValueError: the family has shared parameters but none are bound.
    """
    if not family.shared_shapes():
        return None
    shared = family.shared
    if not shared:
        raise ValueError(f"{family!r} has no shared parameters bound to store; bind them with family.with_shared()")
    tensors = {k: v.detach().cpu().contiguous() for k, v in shared.items()}
    _atomic_write(root / SHARED, lambda p: save_file(tensors, p, metadata={"format": FORMAT}))
    path = root / SHARED
    return {"file": SHARED, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def read_shared(root: str | os.PathLike, manifest: Mapping[str, Any], family: INRFamily,
                checksum: bool = True) -> INRFamily:
    """``family`` with the shared parameters of the dataset at ``root`` bound (itself if it has none).

    Args:
        root: the dataset directory.
        manifest: its parsed manifest.
        family: the family rebuilt from the manifest.
        checksum: check the file's sha256 (its size and tensor shapes are always checked).

    Raises:
        CorruptShardError: ``shared.safetensors`` is missing, truncated, corrupt, or does not
            hold the family's shared parameters (naming the file and the parameter).
    """
    if not family.shared_shapes():
        return family
    entry = manifest.get("shared")
    path = Path(root) / SHARED
    if entry is None:
        raise CorruptShardError(f"INR dataset {str(root)!r}: its family {family!r} has shared parameters but the "
                                f"manifest lists no {SHARED}")
    _check_file(path, entry, checksum, f"shared parameters {str(path)!r}", ("are", "fail their"))
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CorruptShardError(f"shared parameters {str(path)!r} are corrupt: {e}") from e
    try:
        return family.with_shared(tensors)
    except ValueError as e:
        raise CorruptShardError(f"shared parameters {str(path)!r} do not fit {family!r}: {e}") from e


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
        quality: optional ``{key: Tensor[B]}`` (e.g. the second output of [`fit`][inrnet.inr.fitting.fit]).
        shard_size: INRs per shard (default: one shard).
    """
    root = Path(path)
    if (root / MANIFEST).exists():
        raise FileExistsError(f"{str(root)!r} already holds an INR dataset; write to a new directory")
    n = len(inrs)
    shard_size = shard_size or n
    root.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest(inrs.family, n, shard_size, {})
    shared = write_shared(root, inrs.family)
    if shared is not None:
        manifest["shared"] = shared
    quality = dict(quality or {})
    for i, start in enumerate(range(0, n, shard_size)):
        part = slice(start, start + shard_size)
        manifest["shards"].append(write_shard(root, i, start, inrs[part], labels[part],
                                               {k: q[part] for k, q in quality.items()}))
    manifest["complete"] = True
    write_manifest(root, manifest)
