"""Continuous convolution benchmarks (issue 4, item 9).

1. A 3x3-support B-spline convolution, 64 -> 64 channels, batch 32, on 1024 Sobol points,
   forward + backward, next to ``nn.Conv2d`` 3x3 on 32x32 in the same run.
2. Scaling for N = 2^10 ... 2^16: support fixed in cells (constant neighbours per point)
   and fixed in domain units (neighbours grow with N). Each configuration runs in a fresh
   subprocess so its peak RSS is its own; reports time/E and bytes/E and the fitted
   exponent of time against the number of pairs E.
3. Binned MLP convolution: kernel evaluations per forward against N.

Usage: python benchmarks/bench_conv.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import torch


def times_of(fn, repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return np.array(times)


def headline(repeats: int, rounds: int = 8) -> dict:
    from inrnet import Field, PointSet
    from inrnet.nn.bspline_conv import BSplineConv
    from inrnet.sampling import sobol
    torch.manual_seed(0)
    b, c, n = 32, 64, 1024
    field = Field(torch.randn(b, n, c, requires_grad=True), PointSet(sobol(n, 2, seed=0)))
    ours = BSplineConv(c, c, 3, 2 / 32)
    conv = torch.nn.Conv2d(c, c, 3, padding=1)
    image = torch.randn(b, c, 32, 32, requires_grad=True)
    ours(field)  # neighbour search and gather plan: once per point set, outside the timing
    # This machine is shared and noisy: interleave rounds of both so they see the same
    # conditions, and report the median over all calls and the minimum (the least
    # disturbed call, timeit's advice) of each.
    t_ours, t_conv = [], []
    for _ in range(rounds):
        t_ours.append(times_of(lambda: ours(field).values.sum().backward(), repeats, warmup=1))
        t_conv.append(times_of(lambda: conv(image).sum().backward(), repeats, warmup=1))
    t_ours, t_conv = np.concatenate(t_ours), np.concatenate(t_conv)
    pairs = ours.output_points(field.points)  # same points
    from inrnet.neighbors import neighbors
    e = neighbors(field.points, pairs, ours.support).num_pairs
    return {"bspline_ms": 1e3 * np.median(t_ours), "conv2d_ms": 1e3 * np.median(t_conv),
            "ratio": np.median(t_ours) / np.median(t_conv), "bspline_min_ms": 1e3 * t_ours.min(),
            "conv2d_min_ms": 1e3 * t_conv.min(), "ratio_min": t_ours.min() / t_conv.min(), "pairs": e}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def _peak_rss() -> int:
    return _status_bytes("VmHWM")


def one_scaling_run(n: int, mode: str, b: int, c: int, repeats: int) -> dict:
    """Runs in its own process: time of forward+backward (cached geometry; the fastest of 7
    calls) and the peak RSS
    growth over the run, geometry setup (neighbours, gather plan) included."""
    from inrnet import Field, PointSet
    from inrnet.neighbors import neighbors
    from inrnet.nn.bspline_conv import BSplineConv
    from inrnet.sampling import sobol
    spacing = 2 / math.sqrt(n) if mode == "cells" else 0.0125  # 3 taps: half width 1.5 * spacing
    field = Field(torch.randn(b, n, c, requires_grad=True), PointSet(sobol(n, 2, seed=0)))
    layer = BSplineConv(c, c, 3, spacing)
    base = _reset_peak_rss()
    t0 = time.perf_counter()
    layer(field)
    setup = time.perf_counter() - t0
    t = float(times_of(lambda: layer(field).values.sum().backward(), repeats, warmup=1).min())
    peak = _peak_rss() - base
    e = neighbors(field.points, field.points, layer.support).num_pairs
    return {"n": n, "mode": mode, "pairs": e, "seconds": t, "setup_seconds": setup, "peak_bytes": peak}


def scaling(quick: bool, b: int, c: int) -> list[dict]:
    out = []
    ns = [2 ** k for k in range(10, 15 if quick else 17)]
    for mode in ["cells", "domain"]:
        for n in ns:
            cmd = [sys.executable, __file__, "--one", str(n), mode, str(b), str(c)]
            out.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return out


def binned_calls() -> list[tuple[int, int]]:
    from inrnet import Field, PointSet
    from inrnet.nn.learned_conv import MLPConv
    from inrnet.sampling import sobol
    layer = MLPConv(8, 8, 0.05, n_bins=64)
    calls: list[int] = []
    layer.mlp[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    rows = []
    for n in [2 ** 10, 2 ** 12, 2 ** 14, 2 ** 16]:
        calls.clear()
        layer(Field(torch.randn(1, n, 8), PointSet(sobol(n, 2, seed=0))))
        rows.append((n, sum(calls)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N up to 2^14 and fewer repeats")
    p.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        n, mode, b, c = args.one
        print(json.dumps(one_scaling_run(int(n), mode, int(b), int(c), repeats=7)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    h = headline(5, rounds=3 if args.quick else 8)
    print("\n## B-spline conv 3x3, 64->64, B=32, 1024 Sobol points, forward+backward\n")
    print("| statistic | ours (ms) | nn.Conv2d 32x32 (ms) | ratio | pairs |\n|---|---|---|---|---|")
    print(f"| median | {h['bspline_ms']:.1f} | {h['conv2d_ms']:.1f} | {h['ratio']:.2f} | {h['pairs']} |")
    print(f"| min | {h['bspline_min_ms']:.1f} | {h['conv2d_min_ms']:.1f} | {h['ratio_min']:.2f} | {h['pairs']} |")
    b, c = 4, 16
    rows = scaling(args.quick, b, c)
    print(f"\n## Scaling, B={b}, C={c}->{c}, 3x3-tap B-spline, forward+backward\n")
    print("| support | N | pairs E | time (ms) | time/E (ns) | peak RSS (MB) | bytes/E | setup (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['n']} | {r['pairs']} | {1e3 * r['seconds']:.2f} | {1e9 * r['seconds'] / r['pairs']:.1f} "
              f"| {r['peak_bytes'] / 2 ** 20:.1f} | {r['peak_bytes'] / r['pairs']:.0f} | {1e3 * r['setup_seconds']:.1f} |")
    for mode in ["cells", "domain"]:
        sel = [r for r in rows if r["mode"] == mode and r["n"] >= 2 ** 12]
        slope = np.polyfit(np.log([r["pairs"] for r in sel]), np.log([r["seconds"] for r in sel]), 1)[0]
        print(f"\nfitted exponent of time against E ({mode}, N >= 2^12): {slope:.3f}")
    print("\n## Binned MLP conv (64 bins): kernel MLP rows evaluated per forward\n")
    print("| N | MLP evaluations |\n|---|---|")
    for n, k in binned_calls():
        print(f"| {n} | {k} |")


if __name__ == "__main__":
    main()
