"""Shared by the experiment scripts: run one config (fit, then test) within a budget."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from inrnet.cli import build

CONFIGS = Path(__file__).resolve().parent / "configs"


def machine() -> str:
    """One line naming the machine: CPU count, GPU if any, torch version."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} CPU x {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


def commit() -> str:
    """The repository's HEAD commit (short), or 'unknown'."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=CONFIGS, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fit_and_test(config: str | Path, overrides: list[str], *, max_minutes: float | None = None,
                 out: str | Path = "runs", checkpoint: str | Path | None = None, fit: bool = True) -> dict[str, Any]:
    """``inrnet fit`` then ``inrnet test`` of one config, as the command line would run them.

    Args:
        config: a YAML config (a path, or a path relative to ``experiments/configs``).
        overrides: extra command-line style arguments (``["--data.limit_train", "512"]``).
        max_minutes: stop training after this long (``trainer.max_time``), if given.
        out: where the CSV logs go.
        checkpoint: if given, the trained model is saved there (``trainer.save_checkpoint``)
            before testing; :func:`inrnet.lightning.load_task` rebuilds it.
        fit: ``False`` tests the model as the config builds it (e.g. shipped weights), untrained.

    Returns:
        ``{"metrics": {name: value}, "steps": int, "fit_minutes": float, "test_minutes": float}``.
    """
    path = Path(config)
    path = path if path.is_file() else CONFIGS / path
    args = ["--config", str(path), "--trainer.logger.init_args.save_dir", str(out), *overrides]
    if max_minutes is not None:
        s = max(1, int(max_minutes * 60))
        args += ["--trainer.max_time", f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"]
    trainer, model, datamodule = build(args)
    start = time.monotonic()
    if fit:
        trainer.fit(model, datamodule)
    fit_minutes = (time.monotonic() - start) / 60
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    start = time.monotonic()
    results = trainer.test(model, datamodule, verbose=False)
    metrics = {k: float(v) for r in results for k, v in r.items()}
    return {"metrics": metrics, "steps": trainer.global_step, "fit_minutes": fit_minutes,
            "test_minutes": (time.monotonic() - start) / 60, "model": model}


def stamp() -> dict[str, str]:
    """Machine, commit and UTC date of a measurement."""
    return {"machine": machine(), "commit": commit(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a temporary file beside it, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
