"""Batched INR evaluation against the same arithmetic as one raw ``torch.bmm`` chain.

64 SIRENs (the paper's 5x256 and a small 3x32, RGB out) on 1024 and 4096 scattered
points. ``sample`` (chunks of 8 INRs, with its checks) is timed against a raw chain of
``baddbmm`` + in-place ``sin_`` over all 64 INRs at once, on pre-transposed weights,
interleaved in the same run with the same chain run in chunks of 8 INRs (which
isolates ``sample``'s own overhead from the effect of chunking) and with ``sample`` on
one chunk of 64 (at least ``--reps`` rounds, more until ``--budget`` seconds
per configuration); the table gives the best time of each (the machine is shared, so
the minimum is the stable statistic), the median in brackets, and the ratios of the
best times ``sample / raw`` (target <= 1.2) and ``sample / raw in chunks of 8``.

    .venv/bin/python benchmarks/bench_inr_eval.py [--reps 5] [--budget 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from inrnet.field import PointSet
from inrnet.inr import INRBatch, SirenFamily, sample
from inrnet.sampling import sobol


def raw_chain(weights: list[torch.Tensor], biases: list[torch.Tensor], coords: torch.Tensor,
              omegas: list[float]) -> torch.Tensor:
    """The SIREN forward as bare batched matmuls: Tensor[B, N, c]."""
    h = coords.expand(weights[0].shape[0], -1, -1)  # (B, N, d)
    for w, b, omega in zip(weights[:-1], biases[:-1], omegas):
        h = torch.baddbmm(b, h, w, alpha=omega).sin_()  # (B, N, width)
    return torch.baddbmm(biases[-1], h, weights[-1])  # (B, N, c)


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inrs", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| SIREN | points | raw bmm chain, ms best (median) | sample, chunks of 8 | ratio | "
          "raw chain, chunks of 8 | ratio | sample, one chunk of 64 | rounds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for depth, width in ((5, 256), (3, 32)):
        family = SirenFamily(2, 3, width=width, depth=depth)
        inrs = INRBatch(family, family.init_params(args.inrs, generator=torch.Generator().manual_seed(0)))
        weights = [inrs.params[f"weight{i}"].transpose(1, 2).contiguous() for i in range(depth)]  # (B, in, out)
        omegas = [family.first_omega_0] + [family.omega_0] * (depth - 2)
        biases = [inrs.params[f"bias{i}"].unsqueeze(1) * (omegas[i] if i < depth - 1 else 1.0)
                  for i in range(depth)]  # (B, 1, out)
        for n in (1024, 4096):
            points = PointSet(sobol(n, 2, seed=0))
            coords = points.coords.unsqueeze(0)  # (1, N, 2)
            with torch.no_grad():
                ref = raw_chain(weights, biases, coords, omegas)
            torch.testing.assert_close(sample(inrs, points).values, ref, rtol=1e-4, atol=1e-4)
            runs = {"raw": [], "raw8": [], "ours": [], "ours64": []}

            def raw8():
                for s in range(0, args.inrs, 8):
                    raw_chain([w[s:s + 8] for w in weights], [b[s:s + 8] for b in biases], coords, omegas)
            start = time.perf_counter()
            while len(runs["raw"]) < args.reps or time.perf_counter() - start < args.budget:
                # interleaved, so load from other jobs hits all three alike
                with torch.no_grad():
                    runs["raw"] += timed(lambda: raw_chain(weights, biases, coords, omegas), 1)
                    runs["raw8"] += timed(raw8, 1)
                runs["ours"] += timed(lambda: sample(inrs, points), 1)
                runs["ours64"] += timed(lambda: sample(inrs, points, chunk_size=64), 1)
                if len(runs["raw"]) >= 200:
                    break
            best = {k: 1e3 * min(v) for k, v in runs.items()}
            med = {k: 1e3 * statistics.median(v) for k, v in runs.items()}
            cell = {k: f"{best[k]:.1f} ({med[k]:.1f})" for k in runs}
            print(f"| {depth}x{width} | {n} | {cell['raw']} | {cell['ours']} | {best['ours'] / best['raw']:.2f} | "
                  f"{cell['raw8']} | {best['ours'] / best['raw8']:.2f} | {cell['ours64']} | {len(runs['raw'])} |",
                  flush=True)


if __name__ == "__main__":
    main()
