"""Table E.3 analogue: a converted segmenter fine-tuned under QMC sampling on the Fashion-MNIST scenes.

The paper (App. E.2, Table E.3) converts a pretrained ConvNeXt-UPerNet to an INR-Net and
fine-tunes it under QMC sampling on Cityscapes INRs, against fine-tuning the network itself.
Here, on a CPU and at a small scale:

1. Pretrain a small fully convolutional segmenter (`Segmenter`: a strided conv-BN-ReLU encoder,
   a decoder of bilinear upsampling, ``torch.cat`` skips and conv-BN-ReLU, 11 classes) on pixel
   scenes composed on the fly by ``inrnet.datasets.scenes.make_scenes`` from the Fashion-MNIST
   *train* items (scene indices from 100000 on, so none is a SIREN train scene; values in
   [0, 1], as the repo maps every INR's values). Cached under ``--cache``.
2. Fit a small SIREN scene dataset with the repo's ``build_scenes`` (``--n-train`` train and
   ``--n-test`` test scenes, the first scenes of each split at scene seed 0; resumable) into
   ``--cache``.
3. Evaluate on the SIREN test scenes, labels at their 64 x 64 pixel coordinates: the CNN on the
   INRs sampled on the 64 x 64 grid; the model converted by ``from_torch(cnn, (64, 64), ...)``
   for the recipes ``plain`` / ``lattice+basis`` / ``pixels`` (as in ``qmc_recipes.py``), with
   and without ``recalibrate_norms`` (``--recal-batches`` batches of train SIRENs at the test
   density, fresh scrambles), on the grid and on ``--points`` scrambled Sobol points; the
   converted model's output Field is queried at the label coordinates (``inet(field, query)``,
   nearest neighbour; on the grid it is the label grid itself).
4. Fine-tune with the same budget (``--finetune-steps`` Adam steps of ``--finetune-batch``
   train SIRENs, lr ``--finetune-lr``, cosine schedule) the CNN on grid samples and each
   ``--finetune`` conversion (made from the pretrained CNN, without recalibration) on a fresh
   ``--points``-point Sobol scramble per batch, cross-entropy at the label coordinates; then
   evaluate as in 3.

Scores are the repo's segmentation metrics (``inrnet.lightning.segmentation``): torchmetrics'
macro ``MulticlassJaccardIndex`` (mIoU) and micro ``MulticlassAccuracy`` (pixel accuracy),
void ignored, accumulated over all test scenes. Results go to ``--json`` cell by cell
(atomically); a rerun skips the cells that are there. Prints a Markdown table and the wall
times. Usage::

    OMP_NUM_THREADS=1 python experiments/conversion/table_e3.py

About 30 minutes cold on one shared CPU thread: about 20 fitting the 400 SIRENs (3 s each) and
4.5 pretraining the segmenter, both cached in ``.cache/table_e3``; the evaluations and the
fine-tuning take about 4.
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
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qmc_analysis import train  # noqa: E402
from qmc_recipes import RECIPES  # noqa: E402

from inrnet.convert import from_torch  # noqa: E402
from inrnet.datasets import get_dataset, load_fashion_mnist_images  # noqa: E402
from inrnet.datasets.labelmaps import IGNORE_INDEX  # noqa: E402
from inrnet.datasets.parts import build_report  # noqa: E402
from inrnet.datasets.scenes import CLASSES, build_scenes, make_scenes  # noqa: E402
from inrnet.field import Field, PointSet  # noqa: E402
from inrnet.inr import sample  # noqa: E402
from inrnet.lightning.segmentation import logits_at  # noqa: E402
from inrnet.nn import recalibrate_norms  # noqa: E402
from inrnet.sampling import sobol  # noqa: E402

SHAPE = (64, 64)
K = len(CLASSES)
SOURCE = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent
PRETRAIN_OFFSET = 100_000
"""Pretraining scenes are train scenes ``100000 + i``: disjoint from the SIREN train scenes."""


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Segmenter(nn.Module):
    """A small encoder-decoder: 64 -> 32 -> 16 -> 8 pixels (16/32/64/64 channels, two 3x3
    conv-BN-ReLU per level, the first of levels 2-4 strided), then back up, each level a
    bilinear upsampling to the skip's size, ``torch.cat`` with it and a 3x3 conv-BN-ReLU; a
    ``1 x 1`` head. ``forward(x Tensor[B, 1, 64, 64]) -> logits Tensor[B, K, 64, 64]``."""

    def __init__(self, classes: int = K):
        super().__init__()
        self.enc1 = nn.Sequential(_cbr(1, 16), _cbr(16, 16))
        self.enc2 = nn.Sequential(_cbr(16, 32, 2), _cbr(32, 32))
        self.enc3 = nn.Sequential(_cbr(32, 64, 2), _cbr(64, 64))
        self.enc4 = nn.Sequential(_cbr(64, 64, 2), _cbr(64, 64))
        self.dec3, self.dec2, self.dec1 = _cbr(128, 64), _cbr(96, 32), _cbr(48, 16)
        self.head = nn.Conv2d(16, classes, 1)

    @staticmethod
    def _up_cat(x, skip):
        return torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)

    def forward(self, x):
        x1 = self.enc1(x)  # (B, 16, 64, 64)
        x2 = self.enc2(x1)  # (B, 32, 32, 32)
        x3 = self.enc3(x2)  # (B, 64, 16, 16)
        x4 = self.enc4(x3)  # (B, 64, 8, 8)
        y = self.dec3(self._up_cat(x4, x3))  # (B, 64, 16, 16)
        y = self.dec2(self._up_cat(y, x2))  # (B, 32, 32, 32)
        y = self.dec1(self._up_cat(y, x1))  # (B, 16, 64, 64)
        return self.head(y)  # (B, K, 64, 64)


class AtLabels(nn.Module):
    """A converted segmenter read at the label coordinates: ``forward(field) -> logits Tensor[B, K, M]``
    (the output Field resampled at ``query``, M points), the layout ``F.cross_entropy`` takes."""

    def __init__(self, inet: nn.Module, query: PointSet):
        super().__init__()
        self.inet, self.query = inet, query

    def forward(self, field: Field):
        return self.inet(field, self.query).values.transpose(1, 2)  # (B, K, M)


class Scores:
    """mIoU and pixel accuracy as ``INRSegmenter`` logs them, accumulated over batches."""

    def __init__(self):
        self.miou = MulticlassJaccardIndex(K, average="macro", ignore_index=IGNORE_INDEX)
        self.pixacc = MulticlassAccuracy(K, average="micro", ignore_index=IGNORE_INDEX)

    def update(self, logits, target) -> None:
        """``logits`` Tensor[B, K, M], ``target`` Tensor[B, M]."""
        pred = logits.argmax(1)  # (B, M)
        self.miou.update(pred, target)
        self.pixacc.update(pred, target)

    def result(self) -> dict:
        return {"miou": float(self.miou.compute()), "pixacc": float(self.pixacc.compute())}


def pretrained(cache: Path, steps: int, batch: int, lr: float, seed: int) -> nn.Module:
    """The segmenter trained on ``steps`` batches of ``batch`` fresh pixel train scenes, cached."""
    path = cache / f"segmenter_{steps}_{batch}_{lr:g}_{seed}.pt"
    model = Segmenter()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    torch.manual_seed(seed)
    pool, pool_labels = load_fashion_mnist_images("train", SOURCE)

    def batches(step):
        a = PRETRAIN_OFFSET + step * batch
        x, y = make_scenes(pool, pool_labels, a, a + batch, seed=seed, split="train")
        return x, y.long()  # (B, 1, 64, 64) in [0, 1], (B, 64, 64)
    tic = time.time()
    train(model, batches, steps, lr)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    print(f"  segmenter: {steps} steps of {batch} pixel scenes in {time.time() - tic:.0f}s", flush=True)
    return model.eval()


def pixel_scores(cnn: nn.Module, n: int, seed: int) -> dict:
    """The CNN on the test canvases themselves (the pixels the SIRENs were fitted to)."""
    pool, pool_labels = load_fashion_mnist_images("test", SOURCE)
    x, y = make_scenes(pool, pool_labels, 0, n, seed=seed, split="test")
    s = Scores()
    with torch.no_grad():
        for i in range(0, n, 50):
            s.update(cnn(x[i:i + 50]).flatten(2), y[i:i + 50].flatten(1).long())
    return s.result()


def scene_data(cache: Path, split: str, count: int, seed: int):
    """The SIREN scenes of ``split`` (fitted if needed, resumable) as a label-map dataset."""
    root = cache / "scenes"
    tic = time.time()
    build_scenes(root, split, count, source_root=SOURCE, seed=seed, chunk_size=50, progress=False)
    if time.time() - tic > 1:
        print(f"  fitted {split} scenes in {time.time() - tic:.0f}s", flush=True)
    return get_dataset("fashion_mnist_scenes", split, root)


def fields(inrs, points: PointSet) -> Field:
    """INR samples with values mapped from the family's value range to [0, 1] (as the CNN's pixels)."""
    lo, hi = inrs.family.value_range
    f = sample(inrs, points)
    return f.replace((f.values - lo) * (1.0 / (hi - lo)))  # (B, N, 1)


def images(field: Field) -> torch.Tensor:
    """Grid samples as images Tensor[B, 1, 64, 64]."""
    return field.values.transpose(1, 2).reshape(-1, 1, *SHAPE)


def points_for(density, seed: int) -> PointSet:
    return PointSet.grid(SHAPE) if density == "grid" else PointSet(sobol(int(density), 2, seed=seed))


def cnn_logits(cnn: nn.Module, query: PointSet):
    """The CNN on grid samples, its logits at the label coordinates: ``Field -> Tensor[B, K, M]``."""
    return lambda field: logits_at(cnn(images(field)), query).transpose(1, 2)


@torch.no_grad()
def evaluate(forward, inputs: list[tuple[Field, torch.Tensor]]) -> dict:
    s = Scores()
    for field, target in inputs:
        s.update(forward(field), target)
    return s.result()


def test_inputs(data, n: int, points: PointSet, batch: int = 50) -> list[tuple[Field, torch.Tensor]]:
    """The first ``n`` test SIRENs sampled at ``points``, with their labels at the label grid, in batches."""
    out = []
    for i in range(0, n, batch):
        inrs, labels = data.batch(range(i, min(n, i + batch)))
        out.append((fields(inrs, points), labels.flatten(1)))  # (B, N, 1), (B, 4096)
    return out


def train_order(n: int, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(1 + count // n)])[:count]


def recalibrate(model: nn.Module, data, density, batches: int, batch: int, seed: int) -> None:
    order = train_order(len(data), batches * batch, seed)
    gen = (fields(data.batch(order[k * batch:(k + 1) * batch])[0], points_for(density, 50_000 + k))
           for k in range(batches))
    recalibrate_norms(model, gen)


def finetune(cnn: nn.Module, recipe: str, data, query: PointSet, args):
    """A copy of the CNN (``recipe == "cnn"``, grid samples) or its ``recipe`` conversion (fresh Sobol
    scrambles) fine-tuned; returns ``(Field -> logits Tensor[B, K, M], seconds)``."""
    order = train_order(len(data), args.finetune_steps * args.finetune_batch, args.seed)
    b = args.finetune_batch

    def batches(step, points):
        inrs, labels = data.batch(order[step * b:(step + 1) * b])
        return fields(inrs, points(step)), labels  # (B, N, 1), (B, 64, 64)
    tic = time.time()
    if recipe == "cnn":
        tuned = copy.deepcopy(cnn)
        grid = PointSet.grid(SHAPE)
        train(tuned, lambda s: (lambda f, y: (images(f), y))(*batches(s, lambda _: grid)), args.finetune_steps,
              args.finetune_lr)
        return cnn_logits(tuned, query), time.time() - tic
    model = AtLabels(from_torch(cnn, SHAPE, **RECIPES[recipe]), query)
    train(model, lambda s: (lambda f, y: (f, y.flatten(1)))(*batches(s, lambda k: points_for(args.points, 20_000 + k))),
          args.finetune_steps, args.finetune_lr)
    return model, time.time() - tic


def save(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def table(results: dict, args) -> str:
    def cells(r: dict | None) -> list[str]:
        out = []
        for d in ("grid", "sobol"):
            out += [f"{r[d]['miou']:.3f}", f"{r[d]['pixacc']:.1%}"] if r and d in r else ["—", "—"]
        return out

    p = args.points
    head = ["model / recipe", "grid mIoU", "grid pix. acc.", f"{p} Sobol mIoU", f"{p} Sobol pix. acc.",
            "fine-tuned: grid mIoU", "grid pix. acc.", f"{p} Sobol mIoU", f"{p} Sobol pix. acc."]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    rows = [("CNN", "cnn")] + [(f"converted, `{r}`{' + recal' if rc else ''}", f"{r}{'+recal' if rc else ''}")
                               for r in args.recipes for rc in (False, True)]
    for name, key in rows:
        before = {d: results[f"eval|{key}|{d}"] for d in ("grid", "sobol") if f"eval|{key}|{d}" in results}
        lines.append("| " + " | ".join([name] + cells(before) + cells(results.get(f"finetune|{key}"))) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=HERE / "table_e3.json")
    parser.add_argument("--cache", type=Path, default=HERE.parent.parent / ".cache" / "table_e3")
    parser.add_argument("--recipes", nargs="+", default=["plain", "lattice+basis", "pixels"], choices=list(RECIPES))
    parser.add_argument("--finetune", nargs="*", default=["plain", "lattice+basis", "pixels"],
                        choices=list(RECIPES))
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--pretrain-batch", type=int, default=16)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--recal-batches", type=int, default=25)
    parser.add_argument("--recal-batch", type=int, default=16)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--finetune-batch", type=int, default=8)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "cache", "recipes", "finetune")}
    results = json.loads(args.json.read_text()) if args.json.exists() else {"settings": settings}
    if results["settings"] != settings:
        raise SystemExit(f"{args.json} holds results of other settings {results['settings']}; use another --json")
    t0 = time.time()

    def record(key, compute):
        if key in results:
            return
        tic = time.time()
        results[key] = {**compute(), "seconds": round(time.time() - tic, 1)}
        print(f"[{time.time() - t0:5.0f}s] {key}: {results[key]}", flush=True)
        save(args.json, results)

    cnn = pretrained(args.cache, args.pretrain_steps, args.pretrain_batch, args.pretrain_lr, args.seed)
    record("eval|cnn|pixels", lambda: pixel_scores(cnn, args.n_test, args.seed))
    train_data = scene_data(args.cache, "train", args.n_train, args.seed)
    test_data = scene_data(args.cache, "test", args.n_test, args.seed)
    for split, data in (("train", train_data), ("test", test_data)):
        record(f"scenes|{split}", lambda data=data, split=split: {
            "count": len(data), "psnr_grid": float(data.quality["psnr_grid"].mean()),
            "psnr_offgrid": float(data.quality["psnr_offgrid"].mean()),
            "fit_seconds": build_report(args.cache / "scenes" / split)["fit_seconds"]})
    query = PointSet.grid(SHAPE)
    inputs = {"grid": test_inputs(test_data, args.n_test, points_for("grid", 0)),
              "sobol": test_inputs(test_data, args.n_test, points_for(args.points, 1000 + args.seed))}
    record("eval|cnn|grid", lambda: evaluate(cnn_logits(cnn, query), inputs["grid"]))
    for recipe in args.recipes:
        for recal in (False, True):
            for d in ("grid", "sobol"):
                def run(recipe=recipe, recal=recal, d=d):
                    model = AtLabels(from_torch(cnn, SHAPE, **RECIPES[recipe]), query).eval()
                    if recal:
                        recalibrate(model, train_data, "grid" if d == "grid" else args.points, args.recal_batches,
                                    args.recal_batch, args.seed)
                    return evaluate(model, inputs[d])
                record(f"eval|{recipe}{'+recal' if recal else ''}|{d}", run)
    for recipe in ["cnn"] + args.finetune:
        def tune(recipe=recipe):
            forward, seconds = finetune(cnn, recipe, train_data, query, args)
            out = {d: evaluate(forward, inputs[d]) for d in (("grid",) if recipe == "cnn" else ("grid", "sobol"))}
            return {**out, "train_seconds": round(seconds, 1)}
        record(f"finetune|{recipe}", tune)
    print(f"\n{args.n_test} SIREN test scenes; CNN on the test canvases' pixels: mIoU "
          f"{results['eval|cnn|pixels']['miou']:.3f}, pixel accuracy {results['eval|cnn|pixels']['pixacc']:.1%}\n")
    print(table(results, args))
    print("\nwall times (s): " + ", ".join(f"{k} {v['seconds']}" for k, v in results.items() if "seconds" in v))
    print(f"this run: {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
