"""``inrnet demo``: train an INR-Net classifier and its pixel CNN twin for a fixed number of steps.

On the Fashion-MNIST SIRENs embedded in the package (nothing to download), it trains
INR-Net-2 in the library's recipe for every density (`MODEL_KWARGS`: a latent lattice and
whole-basis B-spline supports) on scrambled Sobol points (a fresh scramble each step),
trains the matching CNN-2 on the same items' 28x28 pixels, and reports test accuracy at the
training resolution, at 2x and at 4x:

* INR-Net: on the 28x28 / 56x56 / 112x112 grids and on 784 / 3136 / 12544 Sobol points (the
  test INRs are sampled there: the INR-Net never sees pixels);
* CNN: on the 28x28 test images, and at 2x / 4x on the images bilinearly upsampled to 56x56 /
  112x112 (a pixel model has nothing finer to look at).

Where the package ships trained weights for the dataset (``create_model("inrnet4",
pretrained="fashion_mnist")``, trained on all 60000 training SIRENs), they are scored on the
same test INRs too, without training, so the report shows what more data and steps buy.

Both train for a fixed number of steps (``--steps``, default 6000 each: about 8 minutes with the tests on
2 CPU cores), and both are tested with their batch norms re-estimated at each test
setting's points (`RecalibrateNorms`, 20 training batches), so the scores do not depend on how loaded the machine is; ``--max-minutes``
adds an optional cap on the total time, and the report then says whether it cut training
short. It writes ``results.json``, CSV training logs and ``demo.png`` (test INRs rendered at
4x, one step's Sobol points, predictions, and accuracy against resolution for both models)
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from inrnet.field import Field, PointSet
from inrnet.inr import sample
from inrnet.lightning.callbacks import RecalibrateNorms
from inrnet.lightning.classification import INRClassifier, PixelClassifier
from inrnet.lightning.data import InMemoryINRDataset, SubsetINRDataset, open_dataset, random_subset
from inrnet.lightning.datamodule import INRDataModule
from inrnet.lightning.pixel import PixelDataModule
from inrnet.models.pretrained import list_pretrained
from inrnet.sampling import grid, sobol

__all__ = ["run_demo", "main", "pixel_images"]

FASHION_CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")
INR_SETTINGS = ("grid:28x28", "sobol:784", "grid:56x56", "sobol:3136", "grid:112x112", "sobol:12544")
CNN_SETTINGS = ("grid:28x28", "grid:56x56", "grid:112x112")
SCALES = (("1x", "grid:28x28", "sobol:784"), ("2x", "grid:56x56", "sobol:3136"), ("4x", "grid:112x112", "sobol:12544"))
"""``(name, grid, Sobol setting)`` of each test resolution."""
MODEL_KWARGS = {"latent": "lattice", "support_extent": "basis"}
"""The INR-Net's recipe for every density (docs/results.md, "A latent lattice and whole-basis supports")."""
TRAIN_SAMPLER = "sobol:784"
"""The INR-Net's training points per step."""
SHIPPED = ("inrnet4", "fashion_mnist")
"""Shipped weights scored beside the demo's models on Fashion-MNIST data, if the package has them."""
RECALIBRATION_BATCHES = 20
"""Training batches with which both models' batch norms are re-estimated at each test setting."""


def pixel_images(dataset: Any, name: str | None = None, split: str | None = None,
                 shape: tuple[int, int] = (28, 28)) -> tuple[torch.Tensor, str]:
    """The pixel images of an INR dataset's items, for the pixel baseline.

    The embedded default (``name="fashion_mnist_default"``) stores the images its INRs were
    fitted to ([`inrnet.datasets.fashion_mnist.default_images`][inrnet.datasets.default_images]); so may any dataset
    (``dataset.images``). Otherwise the INRs are rendered at the cell centres of ``shape``.

    Args:
        dataset: an INR dataset, or a [`SubsetINRDataset`][inrnet.lightning.data.SubsetINRDataset] of one.
        name: the dataset's name, if it has one.
        split: the dataset's split, if it has one.

    Returns:
        Images Tensor[n, C, *shape] in ``[0, 1]``, and a phrase saying where they came from.
    """
    base, index = (dataset.base, dataset.indices) if isinstance(dataset, SubsetINRDataset) else (dataset, None)
    stored = getattr(base, "images", None)
    if stored is None and name == "fashion_mnist_default":
        from inrnet.datasets.fashion_mnist import default_images
        stored = default_images(split)[0]
    if stored is not None and not callable(stored):
        images = torch.as_tensor(stored)
        images = images if index is None else images[index]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (images.unsqueeze(1) if images.dim() == 3 else images), "the images the INRs were fitted to"
    inrs, _ = dataset.batch(torch.arange(len(dataset)))
    lo, hi = inrs.family.value_range
    values = (sample(inrs, grid(shape), chunk_size=256).values - lo) / (hi - lo)  # (n, P, C)
    images = values.clamp(0, 1).transpose(1, 2).reshape(len(dataset), -1, *shape)  # (n, C, H, W)
    return images, f"the INRs rendered on the {shape[0]}x{shape[1]} grid (the dataset stores no images)"


def _trainer(out: Path, name: str, steps: int, seconds: float | None, progress: bool):
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger
    cap = None if seconds is None else timedelta(seconds=max(seconds, 1.0))
    # Batch norms are re-estimated at each test setting's points first (RecalibrateNorms).
    return Trainer(max_steps=steps, max_time=cap, max_epochs=-1, accelerator="auto", devices=1,
                   callbacks=[RecalibrateNorms(num_batches=RECALIBRATION_BATCHES, stages=("test",))],
                   logger=CSVLogger(out, name=name), enable_checkpointing=False, enable_progress_bar=progress,
                   enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=10)


def _top1(results: list[dict[str, float]], setting: str) -> float:
    key = f"test/top1/{setting.replace(':', '_')}"
    return next(r[key] for r in results if key in r)


def run_demo(out: str | Path = "inrnet-demo", max_minutes: float | None = None, seed: int = 0,
             dataset: str = "fashion_mnist_default", root: str | None = None, model: str = "inrnet2",
             baseline: str = "cnn2", limit_train: int | None = None, limit_test: int | None = None,
             batch_size: int = 64, progress: bool = True, steps: int = 6000,
             baseline_steps: int | None = None, train_sampler: str = TRAIN_SAMPLER,
             shipped: bool = True) -> dict[str, Any]:
    """Train ``model`` on INRs and ``baseline`` on their pixels for a fixed number of steps; evaluate both.

    Args:
        out: output folder.
        max_minutes: an optional cap on the total time; when set, about 55% of what is left
            after loading may train the INR-Net and 12% the CNN, and the results record
            whether the cap stopped either before its steps (then the scores depend on the
            machine's speed and load). Default: no cap.
        seed: seed of everything.
        dataset: a dataset name, or a folder with ``train/`` and ``test/`` INR datasets.
        root: where named datasets live.
        model: the INR-Net (``inrnet2`` or ``inrnet4``).
        baseline: its pixel twin (``cnn2`` or ``cnn4``).
        limit_train: use this many training items (default all).
        limit_test: use this many test items (default all).
        batch_size: training batch size of both models.
        progress: show progress bars.
        steps: training steps of the INR-Net.
        baseline_steps: training steps of the CNN (default: ``steps``, so both see as many
            training items).
        train_sampler: the INR-Net's training points per step (default `TRAIN_SAMPLER`).
        shipped: also score the shipped weights `SHIPPED` on the test INRs, where they fit
            the data (a Fashion-MNIST dataset: 1 channel, 10 classes) and the package has them.

    Returns:
        The results also written to ``out/results.json``.
    """
    from lightning.pytorch import seed_everything
    start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed, verbose=False)
    data = {}
    for split, limit in (("train", limit_train), ("test", limit_test)):
        data[split] = random_subset(open_dataset(dataset, split, root), limit, seed)
    family = data["train"].family
    num_classes = int(max(int(data[s].labels.max()) for s in data)) + 1
    kwargs = {"in_channels": family.out_features, "num_classes": num_classes, "base_resolution": 28}
    baseline_steps = steps if baseline_steps is None else baseline_steps
    left = None if max_minutes is None else max_minutes * 60 - (time.monotonic() - start)

    dm = INRDataModule(dict(data), batch_size=batch_size, eval_batch_size=256, train_sampler=train_sampler,
                       test_samplers=list(INR_SETTINGS), seed=seed)
    inr_net = INRClassifier(model, {**kwargs, **MODEL_KWARGS})
    trainer = _trainer(out, model, steps, None if left is None else 0.55 * left, progress)
    trainer.fit(inr_net, dm)
    inr_steps = trainer.global_step
    inr_results = trainer.test(inr_net, dm, verbose=False)

    pixels = {s: pixel_images(data[s], dataset, s) for s in data}
    pixel_data = {s: InMemoryINRDataset.from_images(pixels[s][0], data[s].labels) for s in data}
    pdm = PixelDataModule(pixel_data, batch_size=batch_size, eval_batch_size=256, test_samplers=list(CNN_SETTINGS),
                          seed=seed)
    cnn = PixelClassifier(baseline, {k: v for k, v in kwargs.items() if k != "base_resolution"})
    trainer = _trainer(out, baseline, baseline_steps, None if left is None else 0.12 * left, progress)
    trainer.fit(cnn, pdm)
    cnn_steps = trainer.global_step
    cnn_results = trainer.test(cnn, pdm, verbose=False)

    results = {
        "dataset": dataset, "train_items": len(data["train"]), "test_items": len(data["test"]),
        "inr_family": repr(family), "seed": seed,
        "max_minutes": max_minutes,
        model: {"steps": inr_steps, "planned_steps": steps, "train_sampler": train_sampler, **MODEL_KWARGS,
                **{s: _top1(inr_results, s) for s in INR_SETTINGS}},
        baseline: {"steps": cnn_steps, "planned_steps": baseline_steps, "pixels": pixels["train"][1],
                   **{s: _top1(cnn_results, s) for s in CNN_SETTINGS}},
    }
    if shipped and _has_shipped(dataset, family.out_features, num_classes):
        name, tag = SHIPPED
        trainer = _trainer(out, f"{name}_{tag}", 1, None, progress)
        shipped_results = trainer.test(INRClassifier(name, {"pretrained": tag}), dm, verbose=False)
        results["shipped"] = {"model": name, "pretrained": tag, **{s: _top1(shipped_results, s) for s in INR_SETTINGS}}
    figure = save_figure(out / "demo.png", inr_net, data, seed, results, model, baseline)
    results["figure"] = str(figure)
    results["minutes"] = (time.monotonic() - start) / 60
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(report(results, model, baseline))
    return results


def _has_shipped(dataset: Any, channels: int, classes: int) -> bool:
    """Whether the shipped weights `SHIPPED` exist and fit this data (a Fashion-MNIST dataset by name)."""
    return (isinstance(dataset, str) and dataset.startswith("fashion_mnist") and (channels, classes) == (1, 10)
            and SHIPPED in list_pretrained())


GAP_AT_1X = 0.03
"""How far (top-1) the demo's INR-Net may trail its CNN twin at 1x before the report explains it."""


def report(results: dict[str, Any], model: str, baseline: str) -> str:
    """The demo's results as a small text table (1x / 2x / 4x where measured)."""
    inr, cnn = results[model], results[baseline]
    pct = "{:6.1%}".format
    scales = [(n, g, s) for n, g, s in SCALES if g in inr and s in inr and g in cnn]
    sizes = {g: g.split(":")[1] for _, g, _ in scales}
    cell = lambda r, key: f"{pct(r[key]) if key in r else '':>14}"  # noqa: E731
    shipped = results.get("shipped")
    lines = [
        f"Test top-1 accuracy on {results['test_items']} test INRs of {results['dataset']!r} "
        f"({results['train_items']} training items, {results['minutes']:.1f} min in all)",
        f"{'':44}" + "".join(f"{f'{n} ({sizes[g]})':>14}" for n, g, _ in scales),
        f"{model + ', grid':44}" + "".join(cell(inr, g) for _, g, _ in scales),
        f"{model + ', Sobol (' + ' / '.join(s.split(':')[1] for _, _, s in scales) + ' points)':44}"
        + "".join(cell(inr, s) for _, _, s in scales),
        f"{baseline + ', pixels':44}" + "".join(cell(cnn, g) for _, g, _ in scales),
    ]
    if shipped:
        name = f"{shipped['model']} pretrained={shipped['pretrained']!r}"
        lines += [f"{name + ', grid':44}" + "".join(cell(shipped, g) for _, g, _ in scales),
                  f"{name + ', Sobol':44}" + "".join(cell(shipped, s) for _, _, s in scales)]
    sampler = inr.get("train_sampler", "sobol:784").split(":")[1]
    lines += [
        f"{model} trained {inr['steps']} steps on {sampler} Sobol points per step; {baseline} trained "
        f"{cnn['steps']} steps on {cnn['pixels']}.",
        f"At 2x and 4x the CNN sees the 28x28 images bilinearly upsampled. Figure: {results['figure']}",
    ]
    gap = cnn["grid:28x28"] - inr["grid:28x28"]
    if gap > GAP_AT_1X:
        why = (f"{model} trails {baseline} by {gap:.1%} at 1x: it trains on scattered Sobol points, whose quadrature "
               f"noise the CNN's sums over pixels do not have, and {inr['steps']} steps on {results['train_items']} "
               "items do not close that gap.")
        if shipped:
            why += (f" The shipped {shipped['model']} (trained on all 60000 training SIRENs) scores "
                    f"{shipped['grid:28x28']:.1%} on the 28x28 grid of the same test INRs.")
        lines.append(why)
    short = [name for name, r in ((model, inr), (baseline, cnn)) if r["steps"] < r.get("planned_steps", r["steps"])]
    if short:
        lines.append(f"The {results.get('max_minutes')}-minute cap stopped {' and '.join(short)} before the planned "
                     "steps: these scores depend on this machine's speed and load (rerun without --max-minutes).")
    return "\n".join(lines)


@torch.no_grad()
def save_figure(path: Path, classifier: INRClassifier, data: dict[str, Any], seed: int,
                results: dict[str, Any] | None = None, model: str = "", baseline: str = "") -> Path:
    """Test INRs rendered at 112x112, one step's 784 Sobol points, predictions at 56x56, and
    (given ``results``) top-1 against resolution for the INR-Net, its CNN twin and the shipped weights."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = data["test"]
    n = min(8, len(test))
    inrs, labels = test.batch(torch.arange(n))
    lo, hi = inrs.family.value_range
    fine = (sample(inrs, grid((112, 112))).values - lo) / (hi - lo)  # (n, P, C)
    fine = fine[..., 0].reshape(n, 112, 112)  # (n, 112, 112)
    coarse = (sample(inrs, grid((56, 56))).values - lo) / (hi - lo)  # (n, 3136, C)
    classifier.eval()
    pred = classifier(Field(coarse.to(classifier.device), PointSet.grid((56, 56), device=classifier.device)))
    pred = pred.argmax(1).cpu()
    names = FASHION_CLASSES if classifier.num_classes == 10 else tuple(map(str, range(classifier.num_classes)))
    pts = sobol(784, 2, seed=seed)
    at_pts = ((sample(inrs[:1], pts).values - lo) / (hi - lo))[0, :, 0]  # (784,)

    fig = plt.figure(figsize=(12, 5.6))
    spec = fig.add_gridspec(2, 6)
    for i in range(min(4, n)):
        ax = fig.add_subplot(spec[0, i])
        ax.imshow(fine[i], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"INR {i} at 112x112\n({names[int(labels[i])]})", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(spec[0, 4:])
    ax.scatter(pts[:, 1], -pts[:, 0], c=at_pts, s=6, cmap="gray", vmin=0, vmax=1, edgecolors="none")
    ax.set_facecolor("#4060a0")
    ax.set_aspect("equal")
    ax.set_title("INR 0 at one step's 784 scrambled Sobol points", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    for i in range(min(4, n)):
        ax = fig.add_subplot(spec[1, i])
        ax.imshow(coarse[i, :, 0].reshape(56, 56), cmap="gray", vmin=0, vmax=1)
        ok = int(pred[i]) == int(labels[i])
        ax.set_title(f"pred {names[int(pred[i])]}\ntrue {names[int(labels[i])]}", fontsize=8,
                     color="green" if ok else "red")
        ax.axis("off")
    if results is not None:
        _accuracy_plot(fig.add_subplot(spec[1, 4:]), results, model, baseline)
    fig.suptitle("INR-Net on INRs: renders, sample points, predictions at 2x (56x56 grid), accuracy against "
                 "resolution", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _accuracy_plot(ax, results: dict[str, Any], model: str, baseline: str) -> None:
    """Top-1 (%) at 1x / 2x / 4x: the INR-Net on grids and on Sobol points, the CNN on (upsampled) pixels,
    and the shipped weights where scored."""
    curves = [(f"{model} (grid)", results[model], 1, "C0", "-"), (f"{model} (Sobol)", results[model], 2, "C0", "--"),
              (f"{baseline} (pixels)", results[baseline], 1, "C3", "-")]
    if results.get("shipped"):
        name = f"{results['shipped']['model']} pretrained"
        curves += [(f"{name} (grid)", results["shipped"], 1, "C2", "-"),
                   (f"{name} (Sobol)", results["shipped"], 2, "C2", "--")]
    for label, scores, column, color, style in curves:
        xs = [i for i, scale in enumerate(SCALES) if scale[column] in scores]
        ax.plot(xs, [100 * scores[SCALES[i][column]] for i in xs], style, color=color, marker="o", label=label)
    ax.set_xticks(range(len(SCALES)), [f"{n}\n{g.split(':')[1]}" for n, g, _ in SCALES], fontsize=7)
    ax.set_ylabel("test top-1 (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower left")
    ax.set_title("accuracy against resolution", fontsize=8)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``inrnet demo [--out DIR] [--steps N] [--max-minutes M] [--seed S] ...``."""
    parser = argparse.ArgumentParser(prog="inrnet demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="inrnet-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=6000,
                        help="training steps of the INR-Net (default: %(default)s, about 8 minutes in all on 2 CPU cores)")
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="training steps of the CNN (default: as many as the INR-Net)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="optional cap on the total time; capped scores depend on the machine's load")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default: %(default)s)")
    parser.add_argument("--dataset", default="fashion_mnist_default",
                        help="dataset name or directory with train/ and test/ INR datasets (default: %(default)s)")
    parser.add_argument("--root", default=None, help="where named datasets live")
    parser.add_argument("--model", default="inrnet2", choices=["inrnet2", "inrnet4"])
    parser.add_argument("--baseline", default="cnn2", choices=["cnn2", "cnn4"])
    parser.add_argument("--train-sampler", default=TRAIN_SAMPLER,
                        help="the INR-Net's training points per step (default: %(default)s)")
    parser.add_argument("--no-shipped", action="store_true", help="do not score the shipped pretrained weights")
    parser.add_argument("--limit-train", type=int, default=None, help="use this many training items")
    parser.add_argument("--limit-test", type=int, default=None, help="use this many test items")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        parser.error(f"--max-minutes must be positive, got {args.max_minutes}")
    for name, value in (("--steps", args.steps), ("--baseline-steps", args.baseline_steps)):
        if value is not None and value < 1:
            parser.error(f"{name} must be a positive number of steps, got {value}")
    return run_demo(args.out, args.max_minutes, args.seed, args.dataset, args.root, args.model, args.baseline,
                    args.limit_train, args.limit_test, progress=not args.no_progress, steps=args.steps,
                    baseline_steps=args.baseline_steps, train_sampler=args.train_sampler,
                    shipped=not args.no_shipped)
