"""MLP-kernel convolutions against neuraloperator's ``IntegralTransform`` (issue 17, item 5).

The same work on the same neighbours: N scrambled Sobol points in ``[-1, 1]^2``, a ball
support holding about ``--neighbours`` points, C channels, a batch of B fields, and a
depthwise kernel MLP (2 hidden layers of 32, ReLU) giving one weight per channel and pair,
summed over each output point's pairs with the points' quadrature weights. Timed: forward +
backward (gradients of the field and the kernel's parameters), neighbours built once and
reused (both sides get the same CSR pairs), interleaved rounds in one process, median.

* ours, exact: ``MLPConv(C, C, Support(r, "ball"), groups=C)``, the kernel MLP at every pair;
* ours, binned: the same with ``n_bins=64`` (the kernel at 64 Voronoi seeds, the fused atom path);
* neuraloperator: ``IntegralTransform(channel_mlp_layers=[4, 32, 32, C], transform_type="linear")``
  (its kernel MLP reads ``(y, x)``, 4 inputs), the pairs passed as ``neighbors_index`` /
  ``neighbors_row_splits`` and the per-pair weights. Its reduction is ``torch_scatter.segment_csr``
  when torch-scatter is installed (not on this project's machine) and otherwise a Python loop
  over the output points (114 s for one forward + backward at 4096 points, measured once);
  here it runs with ``torch.segment_reduce(..., "sum", offsets=indptr)``, torch's own CSR
  segment sum, in place of either, so that the row times its kernel and messages, not a loop.

neuraloperator is not a dependency: install it beside this project's torch without letting pip
replace torch, e.g. ``pip install --no-deps neuraloperator==2.0.0 tensorly tensorly-torch opt-einsum``
(plus what its import then asks for). Without it only our two rows are printed.

Usage: python benchmarks/bench_mlpconv.py [--threads 1 2] [--rounds 15] [--points 4096 16384]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

import torch
import torch.nn.functional as F

from inrnet import Field, PointSet
from inrnet.neighbors import Support, neighbors
from inrnet.nn import MLPConv
from inrnet.sampling import sobol

from bench_step import interleaved_medians  # noqa: E402  (benchmarks/ is the script's folder)


def _neuraloperator():
    """neuraloperator's ``IntegralTransform`` with a native CSR segment sum, or None if not installed."""
    try:
        from neuralop.layers import integral_transform
    except ImportError:
        return None

    def segment_csr(src, indptr, reduction="sum", use_scatter=True):  # torch_scatter.segment_csr's contract
        return torch.segment_reduce(src, reduction, offsets=indptr, axis=src.ndim - 2)

    src, indptr = torch.randn(2, 7, 3), torch.tensor([0, 2, 2, 7])  # the stand-in sums each row's pairs
    ref = torch.stack([src[:, 0:2].sum(1), src[:, 2:2].sum(1), src[:, 2:7].sum(1)], 1)
    torch.testing.assert_close(segment_csr(src, indptr.expand(2, -1)), ref)
    integral_transform.segment_csr = segment_csr
    return integral_transform.IntegralTransform


def run(threads: int, rounds: int, sizes: list[int], channels: int, batch: int, k: float) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    transform = _neuraloperator()
    for n in sizes:
        radius = math.sqrt(k * 4 / (math.pi * n))  # about k points in the ball at n points on [-1, 1]^2
        pts = PointSet(sobol(n, 2, seed=0))
        support = Support(radius, "ball")
        nbrs = neighbors(pts, pts, support)
        values = torch.randn(batch, n, channels, requires_grad=True)
        exact = MLPConv(channels, channels, support, groups=channels)
        binned = MLPConv(channels, channels, support, groups=channels, n_bins=64)
        steps = {"exact": lambda m=exact: m(Field(values, pts)).values.sum().backward(),
                 "binned": lambda m=binned: m(Field(values, pts)).values.sum().backward()}
        if transform is not None:
            gno = transform(channel_mlp_layers=[4, 32, 32, channels], channel_mlp_non_linearity=F.relu,
                            transform_type="linear")
            pairs = {"neighbors_index": nbrs.col, "neighbors_row_splits": nbrs.indptr,
                     "weights": pts.weights[nbrs.col]}
            steps["neuraloperator"] = lambda g=gno: g(pts.coords, pairs, f_y=values).sum().backward()
        med = {key: 1e3 * v for key, v in interleaved_medians(steps, rounds).items()}
        e = nbrs.col.numel()
        gno_ms = med.get("neuraloperator")
        cells = [f"{med['exact']:.1f}", f"{med['binned']:.1f}", f"{gno_ms:.1f}" if gno_ms else "not installed"]
        cells += [f"{gno_ms / med[k]:.2f}x" if gno_ms else "—" for k in ("exact", "binned")]
        print(f"| {threads} | {n} | {e / n:.1f} | {channels} | {batch} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--points", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--neighbours", type=float, default=24.0, help="mean points per support")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        run(args.worker, args.rounds, args.points, args.channels, args.batch, args.neighbours)
        return
    print(f"torch {torch.__version__}, depthwise MLP kernel (hidden 32, 32), forward + backward, "
          f"{args.rounds} interleaved rounds, median; neuraloperator "
          f"{'found' if _neuraloperator() else 'not installed'}\n")
    print("| threads | points | pairs / point | C | B | ours exact (ms) | ours binned (ms) | neuraloperator (ms) "
          "| neuraloperator / exact | neuraloperator / binned |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:  # each thread count in its own process
        out = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--rounds", str(args.rounds),
                              "--points", *map(str, args.points), "--channels", str(args.channels),
                              "--batch", str(args.batch), "--neighbours", str(args.neighbours)],
                             capture_output=True, text=True, check=True)
        print(out.stdout.rstrip())


if __name__ == "__main__":
    main()
