"""Lipschitz-constrained INR-Nets on Fashion-MNIST: clean against certified accuracy (issue 18, item 5).

Trains INR-Net-2 in the demo's recipe (``inrnet demo``: ``latent="lattice"``,
``support_extent="basis"``, 784 freshly scrambled Sobol points per step, batch 64, AdamW at
1e-3 with weight decay 1e-2, here with a cosine schedule) on the 4000 embedded training
SIRENs, once unconstrained and once per ``lipschitz_target`` (``INRNetClassifier``'s option:
no batch norms, every conv and linear layer normalised to a per-stage budget, so that
``lipschitz_bound`` is at most the target on any point set), with the library's own
``INRClassifier`` / ``INRDataModule`` and a Lightning ``Trainer``. Each run checkpoints every
``--every`` steps (``last.ckpt``) and resumes from there; a finished run keeps ``final.ckpt``.

Then each model is certified on the 1000 embedded test SIRENs exactly as ``certify.py``
certifies the shipped one (the unconstrained model's batch norms recalibrated at the test
points first), on ``sobol:784`` and the 28 x 28 grid: ``L = lipschitz_bound``, clean accuracy,
certified accuracy at a few radii (including the median SIREN-Fourier and SIREN-bilinear
distances), and the fractions certified across the change of parameterisation. For the
constrained models it checks ``L <= lipschitz_target``. Results go to ``--json``
(resumable, atomic writes), the figure to ``--figure``.

    OMP_NUM_THREADS=1 python experiments/lipschitz/train_constrained.py

One thread, 3500 steps: about 6 CPU minutes for the unconstrained model (0.1 s a step), 3 to 4 for
each constrained one (no batch norms), plus about 10 seconds to certify each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import stamp  # noqa: E402
from certify import (HERE, ROOT, SETTINGS, certify, eval_points, load_data, plot, read_json,  # noqa: E402
                     recalibrate, write_json)

from inrnet.lightning import INRClassifier, INRDataModule, load_task  # noqa: E402
from inrnet.lipschitz import certified_accuracy, lipschitz_bound  # noqa: E402
from inrnet.nn.norm import BatchNorm  # noqa: E402

MODEL_KWARGS = {"in_channels": 1, "num_classes": 10, "base_resolution": 28, "latent": "lattice",
                "support_extent": "basis"}
"""The demo's INR-Net recipe (``inrnet.lightning.demo.MODEL_KWARGS`` with the data's sizes)."""
RUNS = {"inrnet2": None, "inrnet2_L10": 10.0, "inrnet2_L100": 100.0, "inrnet2_L1000": 1000.0}
"""Run name -> lipschitz_target (None: the unconstrained model)."""
EPS_TABLE = (0.001, 0.01, 0.03, 0.1)
"""Radii the table reports besides the median distances."""


def train(name: str, target: float | None, out: Path, steps: int, every: int, seed: int,
          lr: float = 1e-3) -> tuple[Path, dict]:
    """Train (or resume, or skip when finished) one run; returns its final checkpoint and timing."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    folder = out / f"{name}_{steps}steps"
    final = folder / "final.ckpt"
    if final.is_file():
        return final, {"resumed": False, "trained_now": False}
    seed_everything(seed, verbose=False)
    kwargs = dict(MODEL_KWARGS, **({} if target is None else {"lipschitz_target": target}))
    task = INRClassifier("inrnet2", kwargs, lr=lr, weight_decay=1e-2, scheduler="cosine")
    dm = INRDataModule("fashion_mnist_default", batch_size=64, eval_batch_size=256, train_sampler="sobol:784",
                       test_samplers=["sobol:784"], seed=seed)
    checkpoint = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, every_n_train_steps=every)
    trainer = Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1, callbacks=[checkpoint],
                      logger=CSVLogger(out, name=name), enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, log_every_n_steps=50)
    last = folder / "last.ckpt"
    resumed = last.is_file()
    start = time.monotonic()
    trainer.fit(task, dm, ckpt_path=str(last) if resumed else None)
    minutes = (time.monotonic() - start) / 60
    trainer.save_checkpoint(final)
    return final, {"resumed": resumed, "trained_now": True, "fit_minutes": round(minutes, 2),
                   "steps": trainer.global_step}


def certify_run(path: Path, target: float | None, data: dict[str, Any]) -> dict[str, Any]:
    """Certify one trained model on each test setting (batch norms, if any, recalibrated there first)."""
    model = load_task(path).model.eval()
    out: dict[str, Any] = {}
    for spec in SETTINGS:
        points = eval_points(spec)
        if any(isinstance(m, BatchNorm) for m in model.modules()):
            recalibrate(model, data["train"], points)
        bound = lipschitz_bound(model, points)
        r = certify(model, points, data, bound)
        r["bound_within_target"] = None if target is None else bool(bound.total <= target)
        radius = torch.tensor(r["radii"], dtype=torch.float64)
        correct = torch.tensor(r["correct"], dtype=torch.bool)
        eps = {f"{e:g}": e for e in EPS_TABLE}
        for key in ("fourier", "bilinear"):
            eps[f"median d(SIREN, {key})"] = r[key]["distance"]["median"]
        r["certified_at"] = {k: float(certified_accuracy(radius, correct, v)) for k, v in eps.items()}
        out[spec] = r
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--every", type=int, default=250, help="checkpoint every this many steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the unconstrained model")
    parser.add_argument("--constrained-lr", type=float, default=1e-3, help="... and of the constrained ones")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "lipschitz")
    parser.add_argument("--json", type=Path, default=HERE / "constrained.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "lipschitz_constrained.png")
    args = parser.parse_args(argv)
    results = read_json(args.json)
    data = None
    for name in args.runs:
        target = RUNS[name]
        if name in results and results[name].get("steps_planned") == args.steps:
            print(f"{name}: done")
            continue
        lr = args.lr if target is None else args.constrained_lr
        path, timing = train(name, target, args.out, args.steps, args.every, args.seed, lr)
        data = load_data() if data is None else data
        start = time.monotonic()
        entry = {"lipschitz_target": target, "steps_planned": args.steps, "lr": lr, "checkpoint": str(path),
                 **timing}
        entry.update(certify_run(path, target, data))
        entry["certify_seconds"] = round(time.monotonic() - start, 1)
        entry.update(stamp())
        results[name] = entry
        write_json(args.json, results)
        for spec in SETTINGS:
            r = entry[spec]
            print(f"{name} {spec}: L = {r['L']:.4g}, clean {r['accuracy']:.3f}, certified "
                  + ", ".join(f"{k}: {v:.3f}" for k, v in r["certified_at"].items())
                  + f"; across Fourier {r['fourier']['certified']:.3f}, bilinear {r['bilinear']['certified']:.3f}")
    curves = [(f"{n} {spec}", results[n][spec]) for n in RUNS if n in results for spec in ("sobol:784",)]
    if curves:
        plot(curves, args.figure, "INR-Net-2 on 4000 embedded SIRENs: unconstrained and Lipschitz-constrained "
             "(sobol:784)")
        print(f"figure: {args.figure}")
    return results


if __name__ == "__main__":
    main()
