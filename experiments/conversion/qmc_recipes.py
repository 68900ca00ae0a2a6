"""Recipes that make a converted CNN survive QMC sampling, measured without fine-tuning.

The CNN of ``experiments/conversion/qmc_analysis.py`` (trained on Fashion-MNIST pixels mapped
to [-1, 1], cached) and a torchvision ResNet-18 trained briefly on the same pixels are
converted with ``inrnet.convert.from_torch`` and evaluated on the embedded INR dataset
``fashion_mnist_default`` (test SIRENs, or ``--test-split test_fourier``; INR values mapped
from the family's value range to [-1, 1], as the pixels) on the 28 x 28 grid and on 784,
3136 and 12544 scrambled Sobol points, for each recipe:

* ``plain``: ``from_torch(cnn, (28, 28))``, every layer integrates over the input's points;
* ``lattice``: ``latent="lattice"``, the first convolution writes onto its grid lattice;
* ``+mean`` / ``+basis``: the first convolution with the ratio estimator / the kernel
  continuous at its support's boundary (``first_conv=``);
* ``pixels``: ``latent="pixels"``, the input estimated at the pixel centres (kernel
  regression), then the whole CNN on the pixels;
* ``+recal``: batch-norm statistics re-estimated (``inrnet.nn.recalibrate_norms``) on
  ``--recal-batches`` batches of training INRs sampled at the test density (fresh scrambles).

``--finetune RECIPE``: then fine-tune the CNN on grid samples of the training INRs and the
model converted with ``RECIPE`` on freshly scrambled Sobol samples at ``--finetune-points``,
same budget (``--finetune-steps`` Adam steps of ``--finetune-batch``; paper Table E.2).

Reported: accuracy, agreement with the converted model's prediction on the grid, and the
relative logit drift from it. Results are appended to ``--json`` as they come (a rerun
skips what is there).

Usage (the tables of docs/conversion.md, "Converted networks on scattered points")::

    export OMP_NUM_THREADS=1; R=experiments/conversion/qmc_recipes.py
    python $R
    python $R --test-split test_fourier --recipes plain lattice+basis pixels --densities grid 784 3136
    python $R --models resnet18 --recipes plain lattice pixels --densities grid 784 3136
    python $R --recipes --recal no --densities grid --finetune plain lattice+basis pixels --finetune-points 784

About 40 minutes on 2 shared CPU cores, 12 of them for the plain conversion recalibrated at
12544 points (the CNNs are trained once and cached: about 40 s and 4 minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qmc_analysis import load_split, make_cnn, train  # noqa: E402

from inrnet.convert import from_torch  # noqa: E402
from inrnet.field import Field, PointSet  # noqa: E402
from inrnet.inr import sample  # noqa: E402
from inrnet.lightning.data import open_dataset  # noqa: E402
from inrnet.nn import recalibrate_norms  # noqa: E402
from inrnet.sampling import sobol  # noqa: E402

SHAPE = (28, 28)
RECIPES = {
    "plain": dict(),
    "lattice": dict(latent="lattice"),
    "lattice+mean": dict(latent="lattice", first_conv={"estimator": "mean"}),
    "lattice+basis": dict(latent="lattice", first_conv={"support_extent": "basis"}),
    "pixels": dict(latent="pixels"),
}
DENSITIES = ("grid", 784, 3136, 12544)


def pretrained(kind: str, cache: Path, steps: int, seed: int) -> nn.Module:
    """The CNN (``"small"``: qmc_analysis's; ``"resnet18"``: torchvision's, its gray input repeated to 3 channels)
    trained on Fashion-MNIST pixels in [-1, 1], cached under ``cache``."""
    path = cache / f"qmc_recipes_{kind}_{steps}_{seed}.pt"
    model = make_cnn() if kind == "small" else _resnet18()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    torch.manual_seed(seed)
    x, y = load_split("train")
    perm = torch.randperm(len(x))
    pick = lambda s: perm[(s * 128) % 59904:(s * 128) % 59904 + 128]  # noqa: E731
    tic = time.time()
    train(model, lambda s: (x[pick(s)] * 2 - 1, y[pick(s)]), steps, 2e-3)
    xt, yt = load_split("t10k")
    with torch.no_grad():
        acc = torch.cat([model(xt[i:i + 500] * 2 - 1).argmax(1) for i in range(0, 10000, 500)]).eq(yt).float().mean()
    print(f"  {kind}: trained {steps} steps in {time.time() - tic:.0f}s, pixel test accuracy {acc:.4f}", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


class _Gray3(nn.Module):
    """Repeat a 1-channel image to 3 channels for an RGB network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.repeat(1, 3, 1, 1))


def _resnet18() -> nn.Module:
    return _Gray3(torchvision.models.resnet18(num_classes=10))


def points_for(density, seed: int) -> PointSet:
    """The 28 x 28 grid, or ``density`` scrambled Sobol points of scramble ``seed``."""
    return PointSet.grid(SHAPE) if density == "grid" else PointSet(sobol(int(density), 2, seed=seed))


def fields(inrs, points: PointSet, channels: int) -> Field:
    """INR samples mapped from the family's value range to [-1, 1] (the CNN's pixels), ``channels`` copies."""
    lo, hi = inrs.family.value_range
    f = sample(inrs, points)
    values = (f.values - lo) / (hi - lo) * 2 - 1  # (B, N, 1)
    return Field(values.repeat(1, 1, channels), f.points)


@torch.no_grad()
def logits(model, data, points: PointSet, n: int, channels: int, batch: int) -> torch.Tensor:
    out = []
    for i in range(0, n, batch):
        inrs, _ = data.batch(range(i, min(n, i + batch)))
        out.append(model(fields(inrs, points, channels)))
    return torch.cat(out)


def recalibrate(model, train_data, density, batches: int, batch: int, channels: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_data), generator=g)

    def gen():
        for k in range(batches):
            inrs, _ = train_data.batch(order[(k * batch) % len(order):][:batch])
            yield fields(inrs, points_for(density, 50_000 + k), channels)
    recalibrate_norms(model, gen())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("experiments/conversion/qmc_recipes.json"))
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "inrnet" / "conversion")
    parser.add_argument("--models", nargs="+", default=["small"], choices=["small", "resnet18"])
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--densities", nargs="+", default=[str(d) for d in DENSITIES])
    parser.add_argument("--recal", choices=["both", "no", "yes"], default="both")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--recal-batches", type=int, default=50)
    parser.add_argument("--recal-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune", nargs="*", default=[], choices=list(RECIPES))
    parser.add_argument("--finetune-points", type=int, default=3136)
    parser.add_argument("--finetune-steps", type=int, default=160)
    parser.add_argument("--finetune-batch", type=int, default=50)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    train_data = open_dataset("fashion_mnist_default", "train")
    test_data = open_dataset("fashion_mnist_default", args.test_split)
    n = min(args.n_test, len(test_data))
    labels = test_data.labels[:n]
    densities = [d if d == "grid" else int(d) for d in args.densities]
    recals = {"both": (False, True), "no": (False,), "yes": (True,)}[args.recal]
    t0 = time.time()
    for kind in args.models:
        cnn = pretrained(kind, args.cache, args.pretrain_steps, args.seed)
        channels = 1 if kind == "small" else 3
        if kind == "resnet18":  # converted as the RGB network, fed the gray INR in 3 channels
            cnn = cnn.net
        ref = logits(from_torch(cnn, SHAPE, in_channels=channels), test_data, PointSet.grid(SHAPE), n, channels,
                     args.batch)
        for recipe in args.recipes:
            for recal in recals:
                for density in densities:
                    key = f"{kind}|{args.test_split}|{recipe}{'+recal' if recal else ''}|{density}"
                    if key in results:
                        continue
                    tic = time.time()
                    model = from_torch(cnn, SHAPE, in_channels=channels, **RECIPES[recipe])
                    if recal:
                        recalibrate(model, train_data, density, args.recal_batches, args.recal_batch, channels,
                                    args.seed)
                    out = logits(model, test_data, points_for(density, 1000 + args.seed), n, channels,
                                 args.batch if density == "grid" else max(10, args.batch * 3136 // density))
                    drift = ((out - ref).norm(dim=1) / ref.norm(dim=1)).mean()
                    results[key] = dict(accuracy=float((out.argmax(1) == labels).float().mean()),
                                        agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
                                        drift=float(drift), seconds=time.time() - tic, inrs=n)
                    r = results[key]
                    print(f"[{time.time() - t0:5.0f}s] {key}: accuracy {r['accuracy']:.4f} agreement "
                          f"{r['agreement']:.3f} drift {r['drift']:.3f} ({r['seconds']:.0f}s)", flush=True)
                    save(args.json, results)
        for recipe in args.finetune:
            key = f"{kind}|{args.test_split}|finetune|{recipe}|{args.finetune_points}"
            if key in results:
                continue
            results[key] = finetune(cnn, recipe, train_data, test_data, n, labels, channels, args)
            print(f"[{time.time() - t0:5.0f}s] {key}: {results[key]}", flush=True)
            save(args.json, results)


def save(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def finetune(cnn: nn.Module, recipe: str, train_data, test_data, n: int, labels, channels: int, args) -> dict:
    """Fine-tune copies of the CNN (grid samples) and of its ``recipe`` conversion (fresh Sobol samples)."""
    grid = PointSet.grid(SHAPE)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.cat([torch.randperm(len(train_data), generator=g) for _ in range(
        1 + args.finetune_steps * args.finetune_batch // len(train_data))])
    pick = lambda s: order[s * args.finetune_batch:(s + 1) * args.finetune_batch]  # noqa: E731

    def images(inrs):
        return fields(inrs, grid, channels).values.transpose(1, 2).reshape(-1, channels, *SHAPE)  # (B, C, 28, 28)

    def batches(step, points_of):
        inrs, y = train_data.batch(pick(step))
        return points_of(inrs, step), y

    out: dict = dict(steps=args.finetune_steps, batch=args.finetune_batch, points=args.finetune_points)
    tuned = copy.deepcopy(cnn)
    tic = time.time()
    train(tuned, lambda s: batches(s, lambda inrs, _: images(inrs)), args.finetune_steps, args.finetune_lr)
    out["cnn_seconds"] = time.time() - tic
    with torch.no_grad():
        grid_logits = torch.cat([tuned(images(test_data.batch(range(i, min(n, i + 250)))[0]))
                                 for i in range(0, n, 250)])
    out["cnn_grid"] = float((grid_logits.argmax(1) == labels).float().mean())
    model = from_torch(cnn, SHAPE, in_channels=channels, **RECIPES[recipe])
    tic = time.time()
    train(model, lambda s: batches(s, lambda inrs, k: fields(inrs, points_for(args.finetune_points, 20_000 + k),
                                                             channels)),
          args.finetune_steps, args.finetune_lr)
    out["inrnet_seconds"] = time.time() - tic
    for density in ("grid", 784, args.finetune_points):
        o = logits(model, test_data, points_for(density, 1000 + args.seed), n, channels, 100)
        out[f"inrnet_{density}"] = float((o.argmax(1) == labels).float().mean())
    return out


if __name__ == "__main__":
    main()
