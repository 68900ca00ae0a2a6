"""Builds on many processes: the part and device a launcher gives (fast), the merge lock (fast),
and a Fashion-MNIST build under ``torchrun --nproc-per-node 2`` on CPUs, killed and resumed (slow)."""

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from _dataset_helpers import SCRIPTS, TINY_FIT, TINY_GRAY, load_script, write_idx

from inrnet.datasets.launch import Launch, detect_launch, resolve_device, resolve_part
from inrnet.datasets.parts import (MERGE_LOCK, add_build_arguments, apply_build_arguments, build_parts, chunk_ranges,
                                   merge_parts, parts_done, select_chunks)
from inrnet.inr import INRDataset

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


# --- which part, which device (fast) ---------------------------------------------------------

def test_no_launcher_keeps_the_explicit_part():
    assert detect_launch({}) == Launch()
    assert resolve_part(None, Launch()) is None and resolve_part((1, 3), Launch()) == (1, 3)
    single = detect_launch({"RANK": "0", "WORLD_SIZE": "1", "SLURM_ARRAY_TASK_ID": "0",
                            "SLURM_ARRAY_TASK_COUNT": "1"})
    assert single == Launch() and resolve_part((2, 4), single) == (2, 4)  # one process: no launcher


def test_torchrun_gives_rank_of_world():
    launch = detect_launch(TORCHRUN)
    assert launch == Launch("torchrun", 1, 2, 1) and launch.launched
    assert resolve_part(None, launch) == (1, 2) == resolve_part((1, 2), launch)
    with pytest.raises(ValueError, match=r"--part 0/2 disagrees with torchrun.*rank 1 of 2 \(--part 1/2\)"):
        resolve_part((0, 2), launch)
    assert resolve_part((0, 2), detect_launch(TORCHRUN, launcher="none")) == (0, 2)  # --launcher none: --part wins


def test_slurm_array_tasks():
    def part(**env):
        return resolve_part(None, detect_launch({f"SLURM_ARRAY_TASK_{k}": str(v) for k, v in env.items()}))

    assert part(ID=5, COUNT=8) == (5, 8)
    assert part(ID=3, MIN=1, MAX=4, COUNT=4) == (2, 4)  # --array=1-4
    assert part(ID=4, MIN=0, MAX=6, STEP=2, COUNT=4) == (2, 4)  # --array=0-6:2
    assert part(ID=7, MIN=0, MAX=7) == (7, 8)  # no COUNT (old SLURM)
    with pytest.raises(ValueError, match="contiguous"):
        part(ID=3, MIN=0, MAX=6, STEP=2, COUNT=4)
    both = detect_launch({**TORCHRUN, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"})
    assert both == Launch("torchrun+slurm", 3, 6, 1)  # task 1 of 3, rank 1 of 2 in it
    assert detect_launch({**TORCHRUN, "SLURM_ARRAY_TASK_ID": "1"}, launcher="torchrun") == Launch("torchrun", 1, 2, 1)


def test_launcher_errors():
    with pytest.raises(ValueError, match=r"\$RANK is not set"):
        detect_launch({}, launcher="torchrun")
    with pytest.raises(ValueError, match=r"\$SLURM_ARRAY_TASK_ID is not set"):
        detect_launch({}, launcher="slurm")
    with pytest.raises(ValueError, match="must be an integer"):
        detect_launch({"RANK": "a", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="does not lie in"):
        detect_launch({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="launcher must be one of"):
        detect_launch({}, launcher="mpi")


def test_device_per_local_rank():
    local3 = Launch("torchrun", 3, 4, 3)
    assert resolve_device(None, Launch(), 0) == "cpu" and resolve_device(None, local3, 0) == "cpu"
    assert resolve_device(None, Launch(), 2) == "cuda"
    assert resolve_device(None, local3, 4) == "cuda:3" and resolve_device("cuda", local3, 4) == "cuda:3"
    assert resolve_device(None, local3, 2) == "cuda:1"  # more processes than GPUs: round-robin
    assert resolve_device("cuda:0", local3, 4) == "cuda:0" and resolve_device("cpu", local3, 4) == "cpu"


def test_apply_build_arguments_takes_the_launchers_part(monkeypatch):
    parser = argparse.ArgumentParser()
    add_build_arguments(parser, chunk_size=4)
    for key in ("SLURM_ARRAY_TASK_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in TORCHRUN.items():
        monkeypatch.setenv(key, value)
    args = parser.parse_args([])
    device = apply_build_arguments(args)
    assert args.part == (1, 2)
    assert device == resolve_device(None, Launch("torchrun", 1, 2, 1),
                                    torch.cuda.device_count() if torch.cuda.is_available() else 0)
    with pytest.raises(ValueError, match="--part 1/4 disagrees"):
        apply_build_arguments(parser.parse_args(["--part", "1/4"]))
    args = parser.parse_args(["--part", "1/4", "--launcher", "none"])
    apply_build_arguments(args)
    assert args.part == (1, 4)


# --- the merge: once, under a lock (fast) ------------------------------------------------------

def _source(n=8):
    images = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(0))  # (n, 1, 6, 6)
    return lambda a, b: (images[a:b], torch.arange(a, b) % 3)


def _tiny(root, **kw):
    return build_parts(root, _source(), TINY_GRAY, count=8, chunk_size=2, fit_kwargs=TINY_FIT, seed=3,
                       progress=False, **kw)


def test_concurrent_merges_write_once(tmp_path, caplog):
    root = tmp_path / "b"
    assert _tiny(root, part=(0, 2)) is None
    assert len(_tiny(root, part=(1, 2))) == 8  # the last part merges
    stamp = (root / "manifest.json").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="inrnet.datasets.parts")
    caplog.clear()
    results = []
    threads = [threading.Thread(target=lambda: results.append(merge_parts(root))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(len(r) == 8 for r in results)
    assert [r.message for r in caplog.records].count(f"{root}: already merged (4 chunks)") == 4
    assert (root / "manifest.json").stat().st_mtime_ns == stamp and not (root / MERGE_LOCK).exists()

    (root / "manifest.json").unlink()
    caplog.clear()
    threads = [threading.Thread(target=merge_parts, args=(root,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = [r.message for r in caplog.records]
    assert messages.count(f"{root}: merged 4 chunks into manifest.json") == 1
    assert messages.count(f"{root}: already merged (4 chunks)") == 3


def test_stale_merge_locks_are_removed(tmp_path, caplog):
    root = tmp_path / "b"
    _tiny(root)
    (root / "manifest.json").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = root / MERGE_LOCK
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "time": 0}))
    with caplog.at_level(logging.WARNING, logger="inrnet.datasets.parts"):
        assert len(merge_parts(root)) == 8  # a dead process of this machine: removed at once
    assert "stale merge lock" in caplog.text and not lock.exists()

    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))  # another machine's: wait...
    t0 = time.time()
    merge_parts(root, stale_after=1.0)  # ... until it is older than stale_after
    assert time.time() - t0 >= 0.5 and not lock.exists()


# --- torchrun --nproc-per-node 2 on CPUs (slow) ------------------------------------------------

COUNT, CHUNK = 8, 2  # 4 chunks: rank 0 fits chunks 0-1, rank 1 chunks 2-3

DIE = """import os, runpy, sys
import inrnet.datasets.parts as parts
real, calls = parts.build_dataset, []
def build_dataset(*args, **kwargs):  # rank DIE_RANK dies before its chunk number DIE_AFTER + 1
    if os.environ["RANK"] == os.environ["DIE_RANK"] and len(calls) == int(os.environ["DIE_AFTER"]):
        os._exit(3)
    calls.append(1)
    return real(*args, **kwargs)
parts.build_dataset = build_dataset
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _args(fmnist_root, out):
    return ["--split", "test", "--out", str(out), "--source", str(fmnist_root), "--count", str(COUNT),
            "--chunk-size", str(CHUNK), "--steps", "3", "--no-compile", "--threads", "1", "--device", "cpu"]


def _torchrun(script_args, tmp_path, die=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    script = str(SCRIPTS / "fashion_mnist" / "build.py")
    if die is not None:
        (tmp_path / "die.py").write_text(DIE)
        env.update(DIE_RANK=str(die[0]), DIE_AFTER=str(die[1]))
        command += [str(tmp_path / "die.py"), script]
    else:
        command += [script]
    return subprocess.run(command + script_args, capture_output=True, text=True, env=env, timeout=600)


def _read(path):
    return path.read_text() if path.is_file() else None


def _chunks(root):
    return sorted((root / "parts").iterdir())


def _assert_equal_datasets(a, b):
    x, la = a.batch(range(len(a)))
    y, lb = b.batch(range(len(b)))
    assert len(a) == len(b) and torch.equal(la, lb)
    for k in x.params:  # same seeds -> the same weights, however the work was split
        assert torch.equal(x.params[k], y.params[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A fake Fashion-MNIST folder and a one-process build of it (1 thread, no launcher)."""
    tmp = tmp_path_factory.mktemp("one")
    source = tmp / "fmnist"
    source.mkdir()
    rng = np.random.default_rng(2)
    for prefix in ("train", "t10k"):
        write_idx(source / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(COUNT, 28, 28)))
        write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", np.arange(COUNT) % 10)
    threads = torch.get_num_threads()
    try:
        assert load_script("fashion_mnist/build.py")([*_args(source, tmp / "out"), "--launcher", "none"]) == 0
    finally:
        torch.set_num_threads(threads)
    return source, INRDataset(tmp / "out" / "test")


@pytest.mark.slow
def test_torchrun_two_processes_fit_own_chunks_and_merge_once(reference, tmp_path):
    source, one = reference
    out = tmp_path / "out"
    run = _torchrun(_args(source, out), tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    log = run.stdout + run.stderr
    assert log.count("merged 4 chunks into manifest.json") == 1, log[-4000:]
    for k in range(2):
        assert f"[part {k}/2] " in log and f"torchrun: rank {k} of 2 (local {k}) builds --part {k}/2 on cpu" in log
    owner = {i: k for k in range(2) for i in select_chunks(COUNT, CHUNK, part=(k, 2))}
    timings = [json.loads((c / "timing.json").read_text()) for c in _chunks(out / "test")]
    assert [t["part"] for t in timings] == [[owner[i], 2] for i in range(4)]  # each rank fitted its own chunks
    assert len({t["pid"] for t in timings}) == 2
    _assert_equal_datasets(INRDataset(out / "test"), one)
    assert not (out / "test" / MERGE_LOCK).exists()


@pytest.mark.slow
def test_killed_torchrun_build_resumes_without_refitting(reference, tmp_path):
    source, one = reference
    out = tmp_path / "out"
    killed = _torchrun(_args(source, out), tmp_path, die=(1, 1))  # rank 1 dies after its first chunk
    assert killed.returncode != 0
    root = out / "test"
    assert not (root / "manifest.json").exists()
    names = [f"{a:07d}-{b:07d}" for a, b in chunk_ranges(COUNT, CHUNK)]
    finished = {name: (_read(root / "parts" / name / "timing.json"),
                       (root / "parts" / name / "shard-00000.safetensors").stat().st_mtime_ns)
                for name, ok in zip(names, parts_done(root, COUNT, CHUNK)) if ok}
    assert "0000004-0000006" in finished and "0000006-0000008" not in finished
    resumed = _torchrun(_args(source, out), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert log.count("merged 4 chunks into manifest.json") == 1
    rank0_left = 2 - len(finished.keys() & {"0000000-0000002", "0000002-0000004"})
    for k, left in ((0, rank0_left), (1, 1)):  # each rank fits only its unfinished chunks
        assert re.search(rf"\[part {k}/2\] {re.escape(str(root))}: \d of 4 chunks done, fitting {left}\n", log), log
    for name, (timing, stamp) in finished.items():  # finished chunks are not refitted
        chunk = root / "parts" / name
        assert _read(chunk / "timing.json") == timing
        assert (chunk / "shard-00000.safetensors").stat().st_mtime_ns == stamp
    pids = {json.loads((c / "timing.json").read_text())["pid"] for c in _chunks(root)}
    assert len(pids) >= 2
    _assert_equal_datasets(INRDataset(root), one)
