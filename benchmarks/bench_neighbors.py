"""Benchmark: CPU neighbour search on 2D Sobol points, N = 2^10 ... 2^16.

For every N, a scrambled Sobol point set is searched against itself (queries = points,
as a stride-1 convolution does) with two box supports:

* ``3x3 cells``: half width ``1.5 * 2 / sqrt(N)``, a 3x3-pixel window at the matching
  grid resolution, so the number of pairs grows like ``9 N``;
* ``fixed``: a fixed half width in domain units (default ``1/32``), so the number of
  pairs grows like ``N^2``.

Each (N, support, backend) is timed with :func:`inrnet.neighbors.find_neighbors` (the
uncached search) after one warm-up call; the table reports the median and minimum wall
time, the minimum process CPU time (all threads), the number of pairs E and the time per
pair (from the minimum wall time, the steadier figure on a shared machine). All backends
must return the same pairs.

``--queries lattice`` instead searches the points from the queries of a latent lattice (a
first conv writing to the grid of ``round(sqrt(N))`` pixels per axis, whole-basis 3x3
support: half width 2 pixels), where the ``lattice`` backend applies (the default there)::

    .venv/bin/python benchmarks/bench_neighbors.py --queries lattice --backends kdtree cells lattice

Run from the repository root::

    .venv/bin/python benchmarks/bench_neighbors.py
    .venv/bin/python benchmarks/bench_neighbors.py --profile   # + where the time goes at the largest N
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import platform
import pstats
import statistics
import time

import torch

from inrnet import PointSet, Support
from inrnet.neighbors import find_neighbors
from inrnet.sampling import sobol


def time_search(points: PointSet, support: Support, backend: str, repeats: int,
                queries: PointSet | None = None) -> dict:
    """Median and minimum wall time, minimum process CPU time (s) of ``repeats`` uncached
    searches of ``queries`` (default: the points themselves), and the number of pairs."""
    queries = points if queries is None else queries
    pairs = find_neighbors(points, queries, support, backend=backend).num_pairs  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = find_neighbors(points, queries, support, backend=backend)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if result.num_pairs != pairs:
            raise RuntimeError(f"{backend}: {result.num_pairs} pairs, then {pairs}")
    return dict(median=statistics.median(wall), fastest=min(wall), cpu=min(cpu), pairs=pairs)


def supports(n: int, fixed_half_width: float) -> dict[str, Support]:
    """The two supports benchmarked at ``n`` points."""
    return {"3x3 cells": Support(1.5 * 2 / math.sqrt(n)), "fixed": Support(fixed_half_width)}


def run(log2n: range, backends: list[str], fixed_half_width: float, repeats: int,
        lattice_queries: bool = False) -> list[dict]:
    """One row per (N, support, backend); raises if two backends disagree on the pairs."""
    rows = []
    for k in log2n:
        n = 2**k
        points = PointSet(sobol(n, 2, seed=0))
        queries, cases = None, supports(n, fixed_half_width)
        if lattice_queries:
            side = round(math.sqrt(n))
            queries, cases = PointSet.grid((side, side)), {"latent 3x3": Support(2 * 2 / side)}
        for name, support in cases.items():
            reference = None
            for backend in backends:
                timing = time_search(points, support, backend, repeats, queries)
                pairs = timing["pairs"]
                if reference is not None and pairs != reference:
                    raise RuntimeError(f"N={n}, {name}: {backend} finds {pairs} pairs, {backends[0]} {reference}")
                reference = pairs
                rows.append(dict(n=n, support=name, half_width=support.half_width[0], backend=backend, **timing))
                print(f"N=2^{k} {name:9s} {backend:6s} {timing['fastest'] * 1e3:9.2f} ms {pairs:>10d} pairs",
                      flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (time per pair from the minimum wall time)."""
    lines = ["| N | support | half width | backend | median (ms) | min (ms) | min CPU (ms) | pairs E "
             "| pairs / point | ns / pair |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| 2^{int(math.log2(r['n']))} = {r['n']} | {r['support']} | {r['half_width']:.4g} | "
                     f"{r['backend']} | {r['median'] * 1e3:.2f} | {r['fastest'] * 1e3:.2f} | "
                     f"{r['cpu'] * 1e3:.2f} | "
                     f"{r['pairs']} | {r['pairs'] / r['n']:.1f} | {r['fastest'] / max(1, r['pairs']) * 1e9:.0f} |")
    return "\n".join(lines)


def profile(n: int, backends: list[str], fixed_half_width: float, top: int = 12) -> str:
    """cProfile of three searches per backend at ``n`` points with the 3x3-cell support."""
    points = PointSet(sobol(n, 2, seed=0))
    support = supports(n, fixed_half_width)["3x3 cells"]
    out = io.StringIO()
    for backend in backends:
        find_neighbors(points, points, support, backend=backend)  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(3):
            find_neighbors(points, points, support, backend=backend)
        profiler.disable()
        out.write(f"\n### {backend}, N = {n}, 3 calls\n")
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--min-log2n", type=int, default=10)
    parser.add_argument("--max-log2n", type=int, default=16)
    parser.add_argument("--backends", nargs="+", default=["kdtree", "cells"], choices=["kdtree", "cells", "lattice", "brute"])
    parser.add_argument("--queries", choices=["points", "lattice"], default="points",
                        help="the points themselves, or a latent lattice of sqrt(N) pixels per axis")
    parser.add_argument("--fixed-half-width", type=float, default=1 / 32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also profile the largest N")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = run(range(args.min_log2n, args.max_log2n + 1), args.backends, args.fixed_half_width, args.repeats,
               lattice_queries=args.queries == "lattice")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}; median of {args.repeats} runs\n")
    print(markdown(rows))
    if args.profile:
        if args.queries == "lattice":
            parser.error("--profile profiles the points-as-queries search")
        print(profile(2**args.max_log2n, args.backends, args.fixed_half_width))


if __name__ == "__main__":
    main()
