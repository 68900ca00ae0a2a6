"""A whole training step of the registered INR-Nets against their CNN twins (issue 17, item 1),
and single convolutions against ``nn.Conv2d`` (item 2).

One AdamW step of cross-entropy on a batch of 64: ``inrnet4`` / ``inrnet2`` on 784 fresh
scrambled Sobol points per step (the geometry, neighbours and gather plans, built inside the
step, as in training) against ``cnn4`` / ``cnn2`` on 28 x 28 images; also the INR-Net with
the convolutions' backward pass forced to each side (``inrnet.nn._embedding_bag.BACKWARD``:
``"input"`` was the only way before the output side existed, ``"auto"`` is the default),
and in the shipped recipe (`RECIPES`: ``latent="lattice"``, whole-basis supports), whose
convs after the first run as stencils on the latent lattice; and each on one fixed point
set (`FIXED`), so that the share of a fresh step spent building geometry is printed.
Rounds are interleaved (every variant once per round) in one process and the median is
reported, so that the ratios see the same machine load. Each thread count runs in its own
subprocess (``torch.set_num_threads`` before any work). The conv rows time forward + backward
of a 3x3 ``BSplineConv`` on Sobol points (plan cached) and of ``nn.Conv2d`` on the grid of as
many pixels, in the same interleaved rounds.

Usage: python benchmarks/bench_step.py [--threads 1 2] [--rounds 12] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from inrnet import Field, PointSet
from inrnet.models import create_model
from inrnet.nn import BSplineConv, _embedding_bag
from inrnet.sampling import Sampler, sobol

PAIRS = (("inrnet4", "cnn4"), ("inrnet2", "cnn2"))
SIDES = ("auto", "input")
RECIPES = {"points": {}, "lattice": {"latent": "lattice", "support_extent": "basis", "estimator": "tap_mean"}}
"""Model arguments of each INR-Net variant: the registered default (``latent="points"``) and
the shipped recipe (``create_model("inrnet4", pretrained="fashion_mnist")``: the first strided
conv writes to a fixed lattice, whose later convs are stencils run as ``F.conv2d``; the
per-tap mean quadrature)."""
CONVS = ((64, 32, 1024), (16, 4, 1024), (16, 4, 4096), (16, 4, 16384))
"""``(channels, batch, points)`` of the single-conv rows: a 3x3 ``BSplineConv`` on Sobol points
against ``nn.Conv2d`` on the square grid of as many pixels (issue 17.2's configurations)."""


def _steps(batch: int):
    """``{name: step()}`` for every model and backward side, each with its own AdamW."""
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (batch,))
    images = torch.randn(batch, 1, 28, 28)
    seed = [0]
    sampler = Sampler("sobol", 784)  # what training draws its points with (scattered: no lattice inference)
    fixed = sampler.draw(0)
    steps = {}
    for inr_name, cnn_name in PAIRS:
        cnn = create_model(cnn_name, in_channels=1, num_classes=10)
        opt_c = torch.optim.AdamW(cnn.parameters())

        def inr_step(side, inet, opt, fresh=True):
            _embedding_bag.BACKWARD = side
            seed[0] += 1
            points = sampler.draw(seed[0]) if fresh else fixed  # fresh: geometry built in the step
            field = Field(torch.randn(batch, 784, 1), points)
            loss = F.cross_entropy(inet(field), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def cnn_step(cnn=cnn, opt=opt_c):
            loss = F.cross_entropy(cnn(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for recipe, kwargs in RECIPES.items():
            inet = create_model(inr_name, in_channels=1, num_classes=10, **kwargs)
            opt_i = torch.optim.AdamW(inet.parameters())
            for side in SIDES if recipe == "points" else ("auto",):
                steps[_step_name(inr_name, recipe, side)] = lambda s=side, m=inet, o=opt_i, f=inr_step: f(s, m, o)
            steps[_step_name(inr_name, recipe, FIXED)] = lambda m=inet, o=opt_i, f=inr_step: f("auto", m, o, False)
        steps[cnn_name] = cnn_step
    return steps


FIXED = "fixed points"
"""The step on one point set whose geometry is cached (``auto`` side): fresh minus fixed is what
building the geometry for fresh points costs (issue 17.4)."""


def _step_name(model: str, recipe: str, side: str) -> str:
    return f"{model} {recipe} ({side})"


def _conv_names(c: int, b: int, n: int) -> tuple[str, str]:
    """The row names of one `CONVS` configuration: ours, then ``nn.Conv2d``'s."""
    side = int(round(n ** 0.5))
    return f"BSplineConv {c} ch, batch {b}, {n} points", f"Conv2d {c} ch, batch {b}, {side}x{side}"


def _convs():
    """``{name: call()}``: forward + backward of each `CONVS` configuration, ours and ``nn.Conv2d``
    (neighbours and gather plans built once, before timing, as for a fixed point set)."""
    torch.manual_seed(0)
    calls = {}
    for c, b, n in CONVS:
        side = int(round(n ** 0.5))
        field = Field(torch.randn(b, n, c, requires_grad=True), PointSet(sobol(n, 2, seed=0)))
        ours = BSplineConv(c, c, 3, 2 / side)
        ours(field)
        conv = torch.nn.Conv2d(c, c, 3, padding=1)
        image = torch.randn(b, c, side, side, requires_grad=True)
        name_ours, name_conv = _conv_names(c, b, n)
        calls[name_ours] = lambda f=field, m=ours: m(f).values.sum().backward()
        calls[name_conv] = lambda x=image, m=conv: m(x).sum().backward()
    return calls


def interleaved_medians(steps: dict, rounds: int, warmup: int = 2) -> dict:
    """``{name: median seconds}`` of ``steps`` (``{name: step()}``), each run once per round
    after ``warmup`` calls (first-call allocations and caches), so every median sees the
    same machine load."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def run(threads: int, rounds: int, batch: int) -> dict:
    torch.set_num_threads(threads)
    med = interleaved_medians({**_steps(batch), **_convs()}, rounds)
    _embedding_bag.BACKWARD = "auto"
    return med


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run(args.worker, args.rounds, args.batch)))
        return
    print(f"torch {torch.__version__}, batch {args.batch}, 784 fresh Sobol points per INR-Net step, "
          f"{args.rounds} interleaved rounds, median\n")
    print("| step | threads | ms | / CNN twin |")
    print("|---|---:|---:|---:|")
    for threads in args.threads:
        out = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--rounds", str(args.rounds),
                              "--batch", str(args.batch)], capture_output=True, text=True, check=True)
        med = json.loads(out.stdout.strip().splitlines()[-1])
        for inr_name, cnn_name in PAIRS:
            for name in (_step_name(inr_name, r, side) for r in RECIPES for side in SIDES
                         if r == "points" or side == "auto"):
                print(f"| `{name}` | {threads} | {1e3 * med[name]:.1f} | {med[name] / med[cnn_name]:.2f}x |")
            for r in RECIPES:
                fresh, fixed = med[_step_name(inr_name, r, "auto")], med[_step_name(inr_name, r, FIXED)]
                print(f"| `{_step_name(inr_name, r, FIXED)}`: geometry {(fresh - fixed) / fresh:.0%} of the fresh "
                      f"step | {threads} | {1e3 * fixed:.1f} | {fixed / med[cnn_name]:.2f}x |")
            print(f"| `{cnn_name}` | {threads} | {1e3 * med[cnn_name]:.1f} | 1.00x |")
        for ours, theirs in (_conv_names(*config) for config in CONVS):
            print(f"| {ours} (fwd + bwd) | {threads} | {1e3 * med[ours]:.1f} | {med[ours] / med[theirs]:.2f}x |")
            print(f"| {theirs} (fwd + bwd) | {threads} | {1e3 * med[theirs]:.1f} | 1.00x |")


if __name__ == "__main__":
    main()
