"""Issue 17's speed table in one command: every benchmark behind it, run in turn, each printing
its own markdown table with today's ratios.

* ``bench_step.py``: a training step of ``inrnet4`` / ``inrnet2`` (784 fresh Sobol points,
  batch 64) against ``cnn4`` / ``cnn2``, and ``BSplineConv`` against ``nn.Conv2d`` (items 1, 2);
* ``bench_fresh_geometry.py``: the share of a fresh step spent on geometry (item 4);
* ``bench_mlpconv.py``: the exact and binned ``MLPConv`` against neuraloperator's
  ``IntegralTransform`` (item 5; its rows need neuraloperator installed);
* ``bench_paper.py --paper-repo DIR``: the paper's own INR-Net-4 / INR-Net-2 step against ours
  in the paper's widths and point counts (item 1), only when ``--paper-repo`` is given (the
  user fetches the paper's code; it is never vendored);
* ``bench_conv.py --quick`` (with ``--locality``; minutes): time and bytes per pair, support fixed
  in cells, from 2^10 to 2^14 points, and the fitted exponent (item 3 asks for 2^10-2^18 against
  ``Conv2d``'s memory; this is the part the benchmark has).

Every benchmark interleaves its variants in one process and reports medians, so run this on an
otherwise idle machine. ``--rounds`` is passed to those that take it.

Usage: python benchmarks/issue17.py [--rounds N] [--threads 1 2] [--paper-repo DIR] [--locality]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(title: str, script: str, args: list[str]) -> None:
    print(f"\n## {title}\n\n`python benchmarks/{script} {' '.join(args)}`\n", flush=True)
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    print(out.stdout.rstrip())
    if out.returncode:
        print(f"\n{script} failed (exit {out.returncode}):\n{out.stderr.strip()[-2000:]}")
    print(f"\n({time.monotonic() - start:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds of each benchmark (default: its own)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paper-repo", default=None, help="a checkout of clintonjwang/inrnet (bench_paper.py)")
    parser.add_argument("--locality", action="store_true", help="also bench_conv.py --quick (minutes)")
    args = parser.parse_args(argv)
    threads = ["--threads", *map(str, args.threads)]
    rounds = [] if args.rounds is None else ["--rounds", str(args.rounds)]
    _run("Training step and conv against the CNN twins (items 1, 2)", "bench_step.py", threads + rounds)
    _run("Fresh geometry's share of a step (item 4)", "bench_fresh_geometry.py", threads + rounds)
    _run("MLP kernels against neuraloperator (item 5)", "bench_mlpconv.py", threads + rounds)
    if args.paper_repo:
        _run("Against the paper's code (item 1)", "bench_paper.py",
             ["--paper-repo", args.paper_repo] + threads + rounds)
    else:
        print("\n(the paper-code rows need --paper-repo DIR: a checkout of clintonjwang/inrnet)")
    if args.locality:
        _run("Locality at scale (item 3)", "bench_conv.py", ["--quick"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
