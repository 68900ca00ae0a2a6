"""Building one INR dataset in independent parts (processes, GPUs, machines).

The items ``0..count`` are cut into fixed chunks of ``chunk_size``. Each chunk is its own
resumable [`build_dataset`][inrnet.inr.build.build_dataset] directory ``<root>/parts/<a>-<b>/`` (one
shard, fitted with seed ``seed + chunk index``), so any set of processes can build any
set of chunks (``--part k/n`` takes the k-th of n contiguous blocks of chunks,
``--start/--stop`` the chunks meeting an item range) without sharing a file, and the
INRs do not depend on how the work was split. ``<root>/build.json`` records the
settings; a rerun with different ones is refused. When every chunk is finished, the
chunk shards are listed in one ``<root>/manifest.json`` and ``root`` is an ordinary
[`INRDataset`][inrnet.inr.dataset.INRDataset]: whichever process finds every chunk finished
merges, under the lock file ``<root>/.merge.lock``, so processes finishing together merge
once (see [`merge_parts`][inrnet.datasets.parts.merge_parts]).

Under ``torchrun`` or a SLURM job array the build scripts take ``--part rank/world`` and
their GPU from the launcher ([`inrnet.datasets.launch`][inrnet.datasets.launch], through
[`apply_build_arguments`][inrnet.datasets.parts.apply_build_arguments]).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inrnet.datasets.launch import LAUNCHERS, detect_launch, resolve_device, resolve_part
from inrnet.inr import INRBatch, INRDataset, INRFamily, build_dataset, family_from_dict, read_manifest
from inrnet.inr.dataset import cat_common_quality
from inrnet.inr.store import MANIFEST, _atomic_write, new_manifest, verify_shard, write_manifest

__all__ = ["parse_part", "chunk_ranges", "select_chunks", "build_parts", "merge_parts", "parts_done",
           "read_items", "build_report", "add_build_arguments", "apply_build_arguments", "log_quality"]

log = logging.getLogger(__name__)
BUILD = "build.json"
TIMING = "timing.json"
"""Per chunk: the wall time of its fit and who fitted it (part, host, pid), written beside its shard."""
MERGE_LOCK = ".merge.lock"
"""Held (created with ``O_CREAT | O_EXCL``) by the process writing ``<root>/manifest.json``."""


def parse_part(spec: str) -> tuple[int, int]:
    """``"k/n"`` -> ``(k, n)`` with ``0 <= k < n``."""
    try:
        k, n = (int(s) for s in str(spec).split("/"))
    except ValueError:
        raise ValueError(f"a part is 'k/n' (the k-th of n, counted from 0), got {spec!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"a part is 'k/n' with 0 <= k < n, got {spec!r}")
    return k, n


def chunk_ranges(count: int, chunk_size: int) -> list[tuple[int, int]]:
    """The item ranges ``[(a, b), ...]`` of the chunks of ``count`` items."""
    if count < 1 or chunk_size < 1:
        raise ValueError(f"count and chunk_size must be positive, got {count}, {chunk_size}")
    return [(a, min(a + chunk_size, count)) for a in range(0, count, chunk_size)]


def select_chunks(count: int, chunk_size: int, start: int | None = None, stop: int | None = None,
                  part: tuple[int, int] | None = None) -> list[int]:
    """Indices of the chunks meeting items ``[start, stop)``, then the k-th of n blocks of them."""
    start = 0 if start is None else start
    stop = count if stop is None else stop
    if not 0 <= start < stop <= count:
        raise ValueError(f"item range [{start}, {stop}) must lie within [0, {count}) and not be empty")
    chosen = [i for i, (a, b) in enumerate(chunk_ranges(count, chunk_size)) if a < stop and b > start]
    if part is not None:
        k, n = part
        chosen = chosen[len(chosen) * k // n:len(chosen) * (k + 1) // n]
    return chosen


def _part_dir(root: Path, a: int, b: int) -> Path:
    return root / "parts" / f"{a:07d}-{b:07d}"


def _settings(family: INRFamily, count: int, chunk_size: int, fit_kwargs: Mapping[str, Any], seed: int,
              extra: Mapping[str, Any]) -> dict[str, Any]:
    recorded = {k: v for k, v in fit_kwargs.items() if k not in ("device", "compile", "progress")}
    return json.loads(json.dumps({"family": family.to_dict(), "count": count, "chunk_size": chunk_size,
                                  "fit": recorded, "seed": seed, **extra}, default=str))


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    path = root / BUILD
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{str(root)!r} holds a build with other settings ({diff}: {[old.get(k) for k in diff]} "
                             f"there, {[settings.get(k) for k in diff]} now); use another directory")
        return
    root.mkdir(parents=True, exist_ok=True)
    try:
        _atomic_write(path, lambda p: p.write_text(json.dumps(settings, indent=1)))
    except FileNotFoundError:  # another process (same pid, other node) wrote it at the same moment
        if not path.is_file():
            raise
        _check_settings(root, settings)


def parts_done(root: str | os.PathLike, count: int, chunk_size: int, checksum: Sequence[int] = ()) -> list[bool]:
    """Whether each chunk's directory holds a finished dataset with intact shard files.

    Shard sizes are always checked; the sha256 too for the chunks listed in ``checksum``.
    """
    done = []
    for i, (a, b) in enumerate(chunk_ranges(count, chunk_size)):
        part = _part_dir(Path(root), a, b)
        try:
            m = read_manifest(part)
            family = family_from_dict(m["family"])
            for entry in m["shards"]:
                verify_shard(part, entry, family, checksum=i in checksum)
            done.append(bool(m["complete"]) and m["count"] == b - a)
        except (FileNotFoundError, ValueError):  # CorruptShardError is a ValueError
            done.append(False)
    return done


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether a lock's holder may still run: always, unless it is a dead process of this machine."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _acquire(path: Path, stale_after: float, poll: float = 0.2) -> dict[str, Any]:
    """Create the lock file ``path`` atomically, waiting while another live process holds it."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder, age = json.loads(path.read_text() or "{}"), time.time() - path.stat().st_mtime
            except (FileNotFoundError, json.JSONDecodeError):
                holder, age = {}, 0.0  # released or being written just now
            if (holder and not _alive(holder)) or age > stale_after:
                log.warning("%s: removing a stale merge lock (held by %s for %.0f s)", path.parent, holder, age)
                path.unlink(missing_ok=True)
            else:
                time.sleep(poll)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me


def _release(path: Path, me: Mapping[str, Any]) -> None:
    try:
        if json.loads(path.read_text()) == me:
            path.unlink()
    except (FileNotFoundError, json.JSONDecodeError):
        pass


def merge_parts(root: str | os.PathLike, stale_after: float = 3600.0) -> INRDataset:
    """List every finished chunk's shard in ``<root>/manifest.json`` and open the dataset.

    Safe to call from many processes at once: the merge runs under the lock file
    ``<root>/.merge.lock`` (created with ``O_CREAT | O_EXCL``, which local file systems,
    NFS v3+ and Lustre make atomic); a process finding it taken waits for it. The manifest
    is (atomically) written only if it does not already list exactly the current chunks,
    so a merge done is not redone, and a refitted chunk (a new checksum) is merged again.

    Args:
        root: the build directory.
        stale_after: seconds after which a lock is taken to be left by a crashed process
            and removed (a lock of a dead process of this machine is removed at once).

    Raises:
        ValueError: some chunks are unfinished (naming how many and the first ones).
    """
    root = Path(root)
    lock = root / MERGE_LOCK
    me = _acquire(lock, stale_after)
    try:
        merged = _merge_locked(root)
    finally:
        _release(lock, me)
    return merged


def _merge_locked(root: Path) -> INRDataset:
    settings = json.loads((root / BUILD).read_text())
    count, chunk_size = settings["count"], settings["chunk_size"]
    ranges = chunk_ranges(count, chunk_size)
    missing = [f"{a}-{b}" for (a, b), ok in zip(ranges, parts_done(root, count, chunk_size)) if not ok]
    if missing:
        raise ValueError(f"{str(root)!r}: {len(missing)} of {len(ranges)} chunks unfinished "
                         f"(items {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})")
    fit = {**settings["fit"], "seed": settings["seed"]}
    manifest = new_manifest(family_from_dict(settings["family"]), count, chunk_size, fit)
    for a, b in ranges:
        part = _part_dir(root, a, b)
        for entry in read_manifest(part)["shards"]:
            rel = part.relative_to(root) / entry["file"]
            manifest["shards"].append({**entry, "file": rel.as_posix(), "start": a + entry["start"]})
    manifest["complete"] = True
    try:
        old = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        old = None
    if old == json.loads(json.dumps(manifest)):
        log.info("%s: already merged (%d chunks)", root, len(ranges))
    else:
        write_manifest(root, manifest)
        log.info("%s: merged %d chunks into %s", root, len(ranges), MANIFEST)
    return INRDataset(root, verify=False)


def build_parts(root: str | os.PathLike, source: Callable[[int, int], tuple[Tensor, Tensor]], family: INRFamily, *,
                count: int, chunk_size: int, fit_kwargs: Mapping[str, Any] | None = None, seed: int = 0,
                start: int | None = None, stop: int | None = None, part: tuple[int, int] | None = None,
                extra: Mapping[str, Any] | None = None, progress: bool = True) -> INRDataset | None:
    """Fit the selected chunks of a dataset (resumably) and merge it once all chunks exist.

    Args:
        root: the dataset directory.
        source: ``(start, stop) -> (images Tensor[n, C, *shape], labels Tensor[n, ...])``
            over the whole item range.
        family: the INR family.
        count: number of items.
        chunk_size: items per chunk (one shard each).
        fit_kwargs: [`fit`][inrnet.inr.fitting.fit] settings (recorded, except device/compile/progress).
        seed: chunk ``i`` is fitted with seed ``seed + i``.
        start: only the chunks meeting items ``[start, stop)`` (default 0).
        stop: see ``start`` (default ``count``).
        part: ``(k, n)``: only the k-th of n contiguous blocks of the selected chunks.
        extra: more settings to record in ``build.json`` (e.g. the source's preprocessing).
        progress: progress bars.

    Returns:
        The merged dataset if every chunk is finished, else None.
    """
    root = Path(root)
    fit_kwargs = dict(fit_kwargs or {})
    _check_settings(root, _settings(family, count, chunk_size, fit_kwargs, seed, extra or {}))
    ranges = chunk_ranges(count, chunk_size)
    chosen = select_chunks(count, chunk_size, start, stop, part)
    done = parts_done(root, count, chunk_size, checksum=chosen)
    todo = [i for i in chosen if not done[i]]
    log.info("%s: %d of %d chunks done, fitting %d", root, sum(done), len(ranges), len(todo))
    bar = tqdm(total=sum(ranges[i][1] - ranges[i][0] for i in todo), unit="INR", disable=not progress,
               desc=f"{root.name}: {len(todo)} chunk(s)", position=0)
    for i in todo:
        a, b = ranges[i]
        bar.set_postfix(chunk=f"{a}-{b}")
        t0 = time.time()
        build_dataset(_part_dir(root, a, b), lambda s, e, a=a: source(a + s, a + e), family, count=b - a,
                      shard_size=b - a, fit_kwargs=fit_kwargs, seed=seed + i, progress=False)
        timing = {"seconds": round(time.time() - t0, 2), "items": b - a, "device": str(fit_kwargs.get("device")),
                  "compile": bool(fit_kwargs.get("compile")), "threads": torch.get_num_threads(),
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  "part": list(part) if part is not None else None, "host": socket.gethostname(),
                  "pid": os.getpid()}
        _atomic_write(_part_dir(root, a, b) / TIMING, lambda p, t=timing: p.write_text(json.dumps(t)))
        bar.update(b - a)
    bar.close()
    if all(parts_done(root, count, chunk_size)):
        return merge_parts(root)  # once: not rewritten unless a chunk was refitted (a new checksum)
    return None


def build_report(root: str | os.PathLike) -> dict[str, Any]:
    """What a parts build holds so far: chunks done, bytes, fit time, and fit-quality percentiles.

    Returns:
        ``{"count", "done", "chunks", "chunks_done", "bytes", "fit_seconds", "timed_items",
        "quality": {key: {"p5", "p25", "p50", "p75", "p95", "mean"}}}`` over the finished
        chunks (``fit_seconds`` sums the chunks that recorded a timing).
    """
    root = Path(root)
    settings = json.loads((root / BUILD).read_text())
    ranges = chunk_ranges(settings["count"], settings["chunk_size"])
    done = parts_done(root, settings["count"], settings["chunk_size"])
    quality: dict[str, list[Tensor]] = {}
    size = seconds = timed = 0
    for (a, b), ok in zip(ranges, done):
        if not ok:
            continue
        part = _part_dir(root, a, b)
        size += sum(f.stat().st_size for f in part.glob("*.safetensors"))
        for k, v in INRDataset(part, verify=False).quality.items():
            quality.setdefault(k, []).append(v)
        if (part / TIMING).is_file():
            t = json.loads((part / TIMING).read_text())
            seconds, timed = seconds + t["seconds"], timed + t["items"]
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    stats = {}
    for k, parts in quality.items():
        v = torch.cat(parts).double()  # (done items,)
        stats[k] = {**dict(zip(("p5", "p25", "p50", "p75", "p95"), v.quantile(q.double()).tolist())),
                    "mean": v.mean().item()}
    return {"count": settings["count"], "done": sum(b - a for (a, b), ok in zip(ranges, done) if ok),
            "chunks": len(ranges), "chunks_done": sum(done), "bytes": size, "fit_seconds": seconds,
            "timed_items": timed, "quality": stats}


def add_build_arguments(parser, chunk_size: int) -> None:
    """Add the options every build script shares to an ``argparse`` parser.

    ``--start/--stop`` (item range), ``--part k/n``, ``--launcher``, ``--chunk-size``,
    ``--device``, ``--no-compile`` and ``--threads``.

    Args:
        parser: an ``argparse.ArgumentParser``.
        chunk_size: the script's default INRs per chunk.
    """
    parser.add_argument("--start", type=int, default=None, help="first item (its whole chunk is built)")
    parser.add_argument("--stop", type=int, default=None, help="end of the item range")
    parser.add_argument("--part", type=parse_part, default=None, help="k/n: the k-th of n blocks of chunks "
                        "(one per process / GPU; under torchrun or a SLURM array: rank/world by default)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                        help="where --part and the GPU come from: auto (torchrun's RANK/WORLD_SIZE/LOCAL_RANK, "
                        "a SLURM array's SLURM_ARRAY_TASK_ID/COUNT, if set), torchrun or slurm (required), "
                        "none (only --part)")
    parser.add_argument("--chunk-size", type=int, default=chunk_size,
                        help=f"INRs per chunk (default {chunk_size}; it fixes the seeds, keep it across parts)")
    parser.add_argument("--device", default=None, help="fitting device (default: cuda if available, else cpu; "
                        "under a launcher, cuda:LOCAL_RANK)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="fit eagerly (default: torch.compile the fitting step, about 2x faster)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def apply_build_arguments(args) -> str:
    """Set the thread count and logging, take the launcher's part (into ``args.part``); return the device.

    Under ``torchrun`` or a SLURM array ([`detect_launch`][inrnet.datasets.launch.detect_launch]
    with ``args.launcher``), ``args.part`` becomes ``(rank, world)`` (an explicit ``--part``
    must agree: [`resolve_part`][inrnet.datasets.launch.resolve_part]) and log lines start
    with ``[part rank/world]``.

    Args:
        args: the parsed options of [`add_build_arguments`][inrnet.datasets.parts.add_build_arguments].

    Returns:
        The fitting device ([`resolve_device`][inrnet.datasets.launch.resolve_device]):
        ``--device`` if it names one, else ``cuda:LOCAL_RANK`` under a launcher on a
        GPU machine, ``cuda`` or ``cpu``.

    Raises:
        ValueError: the launcher's variables are malformed, or ``--part`` disagrees with them.
    """
    launch = detect_launch(launcher=getattr(args, "launcher", "auto"))
    args.part = resolve_part(args.part, launch)
    prefix = f"[part {launch.rank}/{launch.world}] " if launch.launched else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {prefix}%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, launch, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if launch.launched:
        log.info("%s: rank %d of %d (local %d) builds --part %d/%d on %s", launch.launcher, launch.rank,
                 launch.world, launch.local_rank, *args.part, device)
    return device


def log_quality(quality: Mapping[str, Tensor]) -> None:
    """Log the 5/25/50/75/95th percentiles of each fit-quality measure (``{name: Tensor[n]}``; PSNRs in dB)."""
    pct = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    for key, v in quality.items():
        unit = " dB" if key.startswith("psnr") else ""
        log.info("%s percentiles 5/25/50/75/95: %s%s", key, [round(x, 2) for x in v.double().quantile(pct).tolist()],
                 unit)


def read_items(root: str | os.PathLike, indices: Tensor) -> tuple[INRBatch, Tensor, dict[str, Tensor]]:
    """Items of a (possibly unfinished) parts build, from its finished chunks.

    Args:
        root: the build directory.
        indices: int64 Tensor[M] of item indices.

    Returns:
        The INRs (an [`INRBatch`][inrnet.inr.base.INRBatch] of M), their labels Tensor[M, ...] and
        quality ``{key: Tensor[M]}``, in the order of ``indices``.

    Raises:
        ValueError: an index lies in an unfinished chunk (naming the chunk).
    """
    root = Path(root)
    settings = json.loads((root / BUILD).read_text())
    ranges = chunk_ranges(settings["count"], settings["chunk_size"])
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)  # (M,)
    chunk = torch.div(indices, settings["chunk_size"], rounding_mode="floor")  # (M,)
    inrs, labels, quality, order = [], [], [], []
    for i in chunk.unique().tolist():
        a, b = ranges[i]
        try:
            part = INRDataset(_part_dir(root, a, b))
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"items {a}-{b} of {str(root)!r} are not fitted yet ({e})") from e
        rows = (chunk == i).nonzero()[:, 0]  # (m,)
        batch, lab = part.batch(indices[rows] - a)
        q = part.quality
        inrs.append(batch)
        labels.append(lab)
        quality.append({k: v[indices[rows] - a] for k, v in q.items()})
        order.append(rows)
    inverse = torch.argsort(torch.cat(order))  # (M,)
    return (INRBatch.cat(inrs)[inverse], torch.cat(labels)[inverse],
            {k: v[inverse] for k, v in cat_common_quality(quality).items()})
