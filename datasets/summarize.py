"""Summarise built INR datasets: items done, size on disk, fit time, fit-quality percentiles.

    python datasets/summarize.py .cache/fashion_mnist/test .cache/fashion_mnist/train

Prints one Markdown table row per dataset folder (as in datasets/README.md) and, with
``--json``, the full report of ``inrnet.datasets.parts.build_report``. A folder without
``build.json`` (a dataset written by ``save_inrs`` or ``import_inrs``) is summarised from its
manifest and shards: all items done, no fit timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from inrnet.datasets.parts import BUILD, build_report
from inrnet.inr import INRDataset


def dataset_report(root: str) -> dict[str, Any]:
    """``build_report``'s keys for a finished dataset with no ``build.json`` (one chunk, untimed)."""
    ds = INRDataset(root, verify=False)
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    stats = {k: {**dict(zip(("p5", "p25", "p50", "p75", "p95"), v.double().quantile(q).tolist())),
                 "mean": v.double().mean().item()} for k, v in ds.quality.items()}
    size = sum(f.stat().st_size for f in Path(root).glob("*.safetensors"))
    return {"count": len(ds), "done": len(ds), "chunks": 1, "chunks_done": 1, "bytes": size,
            "fit_seconds": 0.0, "timed_items": 0, "quality": stats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="dataset folders built by the datasets/ scripts")
    p.add_argument("--json", action="store_true", help="print the full reports as JSON")
    args = p.parse_args(argv)
    print("| folder | items done | MB | fit time (s per 1000, timed chunks) | PSNR grid p5/p50/p95 (dB) "
          "| PSNR off-grid p5/p50/p95 (dB) |")
    print("|---|---:|---:|---:|---|---|")
    reports = {}
    for folder in args.folders:
        report = build_report if (Path(folder) / BUILD).is_file() else dataset_report
        r = reports[folder] = report(folder)
        per_k = f"{1000 * r['fit_seconds'] / r['timed_items']:.0f}" if r["timed_items"] else "n/a"
        cells = [" / ".join(f"{r['quality'][k][p]:.1f}" for p in ("p5", "p50", "p95")) if k in r["quality"] else "n/a"
                 for k in ("psnr_grid", "psnr_offgrid")]
        print(f"| {folder} | {r['done']} of {r['count']} | {r['bytes'] / 1e6:.1f} | {per_k} | {cells[0]} | {cells[1]} |")
    if args.json:
        print(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
