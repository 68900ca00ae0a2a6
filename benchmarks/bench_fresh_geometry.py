"""What fresh points cost a training step (issue 17, item 4), with the points-major gather of
one-channel inputs on and off (``inrnet.nn._embedding_bag.POINTS_MAJOR_CHANNELS``).

One AdamW step of cross-entropy, batch 64: the shipped recipe of ``inrnet4`` / ``inrnet2``
(latent lattice, whole-basis supports, ``estimator="tap_mean"``) on 784 fresh scrambled Sobol
points per step (the geometry built in the step, as in training) and on one fixed point set
(its geometry cached), each with the points-major gather off (0) and on (1), next to
``cnn4`` / ``cnn2`` on 28 x 28 images. All variants run in interleaved rounds in one
process (median), so they see the same machine load; fresh minus fixed is the geometry.

``--estimators tap_mean tap_quadratic`` times the recipe under each first-conv quadrature
(points-major gather on), for what a per-tap fit adds to the geometry of a fresh step.
``--tap-lattice-off`` also times every variant with the first conv's two-step route off
(``inrnet.nn.conv.TAP_LATTICE``: the per-tap means on the tap lattice, then the discrete
filter), i.e. with its direct plan from the scattered points.

Usage: python benchmarks/bench_fresh_geometry.py [--threads 1 2] [--rounds 25] [--estimators tap_mean ...]
       [--tap-lattice-off]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F

from inrnet import Field
from inrnet.models import create_model
from inrnet.nn import _embedding_bag
from inrnet.nn import conv as conv_module
from inrnet.sampling import Sampler

from bench_step import interleaved_medians  # noqa: E402  (benchmarks/ is the script's folder)

RECIPE = {"latent": "lattice", "support_extent": "basis", "estimator": "tap_mean"}
PAIRS = (("inrnet4", "cnn4"), ("inrnet2", "cnn2"))


def run(threads: int, rounds: int, estimators: list[str], routes: tuple[bool, ...], batch: int = 64) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (batch,))
    images = torch.randn(batch, 1, 28, 28)
    sampler = Sampler("sobol", 784)
    fixed = sampler.draw(0)
    calls = [0]
    variants = {}
    gathers = (0, 1) if len(estimators) == 1 else (1,)
    for (inr_name, cnn_name), est in ((pair, est) for pair in PAIRS for est in estimators):
        inet = create_model(inr_name, in_channels=1, num_classes=10, **{**RECIPE, "estimator": est})
        opt = torch.optim.AdamW(inet.parameters())

        def inr_step(points_major, fresh, route, inet=inet, opt=opt):
            _embedding_bag.POINTS_MAJOR_CHANNELS = points_major
            conv_module.TAP_LATTICE = route
            calls[0] += 1
            points = sampler.draw(calls[0]) if fresh else fixed
            loss = F.cross_entropy(inet(Field(torch.randn(batch, 784, 1), points)), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for pm in gathers:
            for route in routes:
                for fresh in (True, False):
                    variants[(inr_name, est, pm, route, fresh)] = \
                        lambda pm=pm, fresh=fresh, route=route, f=inr_step: f(pm, fresh, route)
        if cnn_name in variants:
            continue
        cnn = create_model(cnn_name, in_channels=1, num_classes=10)
        opt_c = torch.optim.AdamW(cnn.parameters())

        def cnn_step(cnn=cnn, opt=opt_c):
            loss = F.cross_entropy(cnn(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        variants[cnn_name] = cnn_step
    med = {k: 1e3 * v for k, v in interleaved_medians(variants, rounds).items()}
    _embedding_bag.POINTS_MAJOR_CHANNELS = 1
    conv_module.TAP_LATTICE = True
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    for inr_name, cnn_name in PAIRS:
        for est in estimators:
            for pm in gathers:
                for route in routes:
                    fresh, fix = med[(inr_name, est, pm, route, True)], med[(inr_name, est, pm, route, False)]
                    print(f"| `{inr_name}` | `{est}` | {threads} | {on(pm)} | {on(route)} "
                          f"| {fresh:.1f} | {fresh / med[cnn_name]:.2f}x | {fix:.1f} | {(fresh - fix) / fresh:.0%} |")
        print(f"| `{cnn_name}` | | {threads} | | | {med[cnn_name]:.1f} | 1.00x | | |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--estimators", nargs="+", default=["tap_mean"], help="first-conv quadratures to time")
    parser.add_argument("--tap-lattice-off", action="store_true",
                        help="also time the first conv's direct plan (TAP_LATTICE off)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        run(args.worker, args.rounds, args.estimators, (True, False) if args.tap_lattice_off else (True,))
        return
    print(f"torch {torch.__version__}, batch 64, 784 points, {args.rounds} interleaved rounds, median\n")
    print("| step | estimator | threads | points-major | tap lattice | fresh (ms) | / CNN twin | fixed (ms) "
          "| geometry |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|")
    for threads in args.threads:  # each thread count in its own process
        out = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--rounds", str(args.rounds),
                              "--estimators", *args.estimators] + ["--tap-lattice-off"] * args.tap_lattice_off,
                             capture_output=True, text=True, check=True)
        print(out.stdout.rstrip())


if __name__ == "__main__":
    main()
