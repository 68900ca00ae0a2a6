"""A converted CNN under QMC sampling (paper App. E.2, Figs. E.1/E.2, Table E.2) on Fashion-MNIST.

1. Train a small CNN on Fashion-MNIST pixels (mapped to [-1, 1]).
2. Fit one SIREN (2 -> 32 -> 32 -> 1, omega_0 = 30) per image of a train and a test subset
   with ``inrnet.inr.fit`` (cached), the Fashion-MNIST INR dataset of this experiment.
3. Convert the CNN with ``inrnet.convert.from_torch`` and check it on the grid.
4. Drift as the 784 sample points move from the 28 x 28 grid to scrambled Sobol points
   (``x(t) = (1 - t) grid + t sobol``, points matched by an optimal assignment within each
   downsampling level so that prefixes stay the strided sub-lattices; Fig. E.2), and as the
   number of Sobol points or the grid resolution changes (Fig. E.1).
5. Fine-tune the CNN on grid samples of the train INRs and the converted INR-Net on
   freshly scrambled Sobol samples, same budget (Table E.2).

Usage::

    python experiments/conversion/qmc_analysis.py --out docs --json docs/conversion_qmc.json

Runs in about 12 minutes on 2 CPU cores, 4 of them fitting SIRENs (cached for later runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from inrnet.convert import from_torch
from inrnet.datasets.idx import read_idx
from inrnet.field import PointSet
from inrnet.inr import INRBatch, PixelINR, SirenFamily, fit, load_inrs, sample, save_inrs
from inrnet.sampling import sobol

DATA = Path("/usr/share/datasets/fashion-mnist")
SHAPE = (28, 28)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images Tensor[N, 1, 28, 28] in [0, 1] and labels Tensor[N]."""
    images = read_idx(DATA / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(DATA / f"{split}-labels-idx1-ubyte.gz")
    return images.float().div(255).unsqueeze(1), labels.long()


def balanced(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    picks = [torch.nonzero(labels == c).squeeze(1) for c in range(10)]
    return torch.cat([p[torch.randperm(len(p), generator=g)[:per_class]] for p in picks])


def make_cnn() -> nn.Module:
    block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]  # noqa: E731
    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def train(model, batches, steps: int, lr: float) -> None:
    """Adam (cosine schedule) on the cross-entropy for ``steps`` steps; ``batches(step)`` gives (input, labels)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for step in range(steps):
        x, y = batches(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


@torch.no_grad()
def logits_of(model, make_input, n: int, batch: int = 250) -> torch.Tensor:
    return torch.cat([model(make_input(slice(i, i + batch))) for i in range(0, n, batch)])


def fitted_inrs(images: torch.Tensor, labels: torch.Tensor, cache: Path, steps: int) -> INRBatch:
    """SIRENs of ``images`` (values in [0, 1] -> [-1, 1]), cached under ``cache``."""
    if (cache / "manifest.json").exists():
        inrs, stored = load_inrs(cache)
        if torch.equal(stored, labels):
            return inrs
        raise RuntimeError(f"{cache} holds INRs of other images; delete it")
    family = SirenFamily(2, 1, width=32, depth=3, omega_0=30.0, first_omega_0=30.0)
    inrs, quality = fit(images, family, steps=steps, lr=1e-3, batch_size=500, points_per_step=392, progress=False)
    save_inrs(cache, inrs, labels, quality=quality)
    print(f"  fitted {len(images)} SIRENs: PSNR on the grid {quality['psnr_grid'].mean():.1f} dB, "
          f"off the grid {quality['psnr_offgrid'].mean():.1f} dB", flush=True)
    return inrs


def hierarchical_path(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid points and matched Sobol points, both ordered so that prefixes of 1/4 and 1/16 of
    the points are the stride-2 and stride-4 sub-lattices (grid) / Sobol prefixes."""
    n0, n1 = SHAPE
    grid = PointSet.grid(SHAPE, dtype=torch.float64).coords
    i, j = torch.meshgrid(torch.arange(n0), torch.arange(n1), indexing="ij")
    level = torch.where((i % 4 == 0) & (j % 4 == 0), 0, torch.where((i % 2 == 0) & (j % 2 == 0), 1, 2)).reshape(-1)
    order = torch.cat([torch.nonzero(level == k).squeeze(1) for k in range(3)])
    grid = grid[order]
    qmc = sobol(grid.shape[0], 2, seed=seed).double()
    matched = torch.empty_like(qmc)
    start = 0
    for k in range(3):
        stop = start + int((level == k).sum())
        cost = torch.cdist(grid[start:stop], qmc[start:stop]).square().numpy()
        rows, cols = linear_sum_assignment(cost)
        matched[start + rows] = qmc[start + cols]
        start = stop
    return grid, matched


def relative_drift(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((out - ref).norm(dim=1) / ref.norm(dim=1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the plots go")
    parser.add_argument("--json", type=Path, default=Path("docs/conversion_qmc.json"))
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "inrnet" / "conversion")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--siren-steps", type=int, default=150)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plots from --json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.json.read_text()), args.out)
        return
    torch.manual_seed(args.seed)
    t0 = time.time()
    results: dict = {"torch_threads": torch.get_num_threads()}

    def stage(name: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {name}", flush=True)

    # 1. pretrain on pixels ---------------------------------------------------------------
    stage("pretraining the CNN on Fashion-MNIST pixels")
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    cnn = make_cnn()
    perm = torch.randperm(len(x_train))
    train(cnn, lambda s: (x_train[perm[(s * 128) % 59904:(s * 128) % 59904 + 128]] * 2 - 1,
                          y_train[perm[(s * 128) % 59904:(s * 128) % 59904 + 128]]), args.pretrain_steps, 2e-3)
    acc = (logits_of(cnn, lambda s: x_test[s] * 2 - 1, len(x_test)).argmax(1) == y_test).float().mean()
    results["cnn_pixels_test_accuracy"] = float(acc)
    print(f"  CNN test accuracy on 10000 pixel images: {acc:.4f}", flush=True)

    # 2. the INR dataset -------------------------------------------------------------------
    stage("fitting (or loading) SIRENs")
    tr = balanced(y_train, args.train_per_class, args.seed)
    te = balanced(y_test, args.test_per_class, args.seed + 1)
    inr_train = fitted_inrs(x_train[tr], y_train[tr], args.cache / f"train_{len(tr)}_{args.siren_steps}",
                            args.siren_steps)
    inr_test = fitted_inrs(x_test[te], y_test[te], args.cache / f"test_{len(te)}_{args.siren_steps}",
                           args.siren_steps)
    ytr, yte = y_train[tr], y_test[te]

    # 3. convert and check on the grid ----------------------------------------------------------
    stage("converting")
    inet = from_torch(cnn, SHAPE)
    grid = PointSet.grid(SHAPE)
    pixels = x_test[te] * 2 - 1
    ref = logits_of(cnn, lambda s: pixels[s], len(te))
    out = logits_of(inet, lambda s: sample(PixelINR(pixels[s]), grid), len(te))
    results["grid_max_relative_error"] = float((out - ref).abs().max() / ref.abs().max())
    siren_grid = logits_of(inet, lambda s: sample(inr_test[s], grid), len(te))
    results["inrnet_siren_grid_accuracy"] = float((siren_grid.argmax(1) == yte).float().mean())
    results["cnn_pixels_subset_accuracy"] = float((ref.argmax(1) == yte).float().mean())
    print(f"  max relative error on the grid: {results['grid_max_relative_error']:.2e}; accuracy on the "
          f"{len(te)} test SIRENs sampled on the grid {results['inrnet_siren_grid_accuracy']:.4f}", flush=True)

    # 4a. drift from the grid to Sobol points (Fig. E.2) ---------------------------------------------
    stage("drift grid -> Sobol")
    sub = slice(0, min(len(te), 500))
    inr_sub, y_sub, base = inr_test[sub], yte[sub], siren_grid[sub]
    n_sub = len(y_sub)
    ts = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
    drift_t = {"t": ts, "drift": [], "agreement": [], "accuracy": [], "inrs": n_sub}
    seeds = [0, 1]
    for t in ts:
        d, a, c = [], [], []
        for seed in seeds:
            start, end = hierarchical_path(seed)
            points = PointSet(((1 - t) * start + t * end).float(), order="nested")  # prefixes are sub-lattices
            o = logits_of(inet, lambda s: sample(inr_sub[s], points), n_sub)
            d.append(relative_drift(o, base))
            a.append(float((o.argmax(1) == base.argmax(1)).float().mean()))
            c.append(float((o.argmax(1) == y_sub).float().mean()))
        for key, v in (("drift", d), ("agreement", a), ("accuracy", c)):
            drift_t[key].append(float(np.mean(v)))
        print(f"  t={t:.2f}: drift {drift_t['drift'][-1]:.4f} agreement {drift_t['agreement'][-1]:.3f} "
              f"accuracy {drift_t['accuracy'][-1]:.4f}", flush=True)
    results["drift_grid_to_sobol"] = drift_t

    # 4b. drift with the number of points (Fig. E.1) -----------------------------------------------
    stage("drift with N")
    few = slice(0, min(len(te), 100))
    inr_few, base = inr_test[few], siren_grid[few]
    n_few = base.shape[0]
    qmc_n = [196, 392, 784, 1568, 3136, 6272]
    grid_n = [14, 20, 28, 35, 42, 56, 70, 84]
    drift_n = {"sobol_n": qmc_n, "sobol_drift": [], "sobol_self": [], "grid_side": grid_n, "grid_drift": [],
               "inrs": n_few}
    qmc_out = {}
    for n in qmc_n:
        qmc_out[n] = [logits_of(inet, lambda s: sample(inr_few[s], PointSet(sobol(n, 2, seed=seed))), n_few,
                                batch=max(5, 250 * 784 // n)) for seed in seeds]
        drift_n["sobol_drift"].append(float(np.mean([relative_drift(o, base) for o in qmc_out[n]])))
        print(f"  Sobol N={n}: drift {drift_n['sobol_drift'][-1]:.4f}", flush=True)
    for n in qmc_n:  # nested Sobol prefixes of one scramble: distance to the largest N
        drift_n["sobol_self"].append(float(np.mean([relative_drift(o, ref) for o, ref in
                                                    zip(qmc_out[n], qmc_out[qmc_n[-1]])])))
    for side in grid_n:
        o = logits_of(inet, lambda s: sample(inr_few[s], PointSet.grid((side, side))), n_few,
                      batch=max(5, 250 * 784 // side ** 2))
        drift_n["grid_drift"].append(relative_drift(o, base))
        print(f"  grid {side}x{side}: drift {drift_n['grid_drift'][-1]:.4f}", flush=True)
    results["drift_with_n"] = drift_n

    # 5. fine-tuning (Table E.2) ------------------------------------------------------------
    stage("fine-tuning the CNN on grid samples of the train INRs")
    batch = 50
    steps = args.finetune_epochs * math.ceil(len(tr) / batch)
    with torch.no_grad():
        train_grid = torch.cat([sample(inr_train[i:i + 250], grid).values for i in range(0, len(tr), 250)])
    train_images = train_grid.transpose(1, 2).reshape(-1, 1, *SHAPE)  # (B, 1, 28, 28)
    test_images = torch.cat([sample(inr_test[i:i + 250], grid).values for i in range(0, len(te), 250)]
                            ).transpose(1, 2).reshape(-1, 1, *SHAPE)  # (B, 1, 28, 28)
    order = torch.cat([torch.randperm(len(tr)) for _ in range(args.finetune_epochs)])
    pick = lambda s: order[s * batch:(s + 1) * batch]  # noqa: E731
    table = {"cnn_before": float((logits_of(cnn, lambda s: test_images[s], len(te)).argmax(1) == yte).float().mean())}
    qmc_eval = [PointSet(sobol(784, 2, seed=1000 + k)) for k in range(3)]

    def qmc_accuracy(model) -> float:
        return float(np.mean([(logits_of(model, lambda s: sample(inr_test[s], p), len(te)).argmax(1) == yte)
                              .float().mean() for p in qmc_eval]))

    table["inrnet_before_grid"] = results["inrnet_siren_grid_accuracy"]
    table["inrnet_before_qmc"] = qmc_accuracy(inet)
    tic = time.time()
    train(cnn, lambda s: (train_images[pick(s)], ytr[pick(s)]), steps, 1e-3)
    table["cnn_seconds"] = time.time() - tic
    table["cnn_after"] = float((logits_of(cnn, lambda s: test_images[s], len(te)).argmax(1) == yte).float().mean())
    stage("fine-tuning the INR-Net on scrambled Sobol samples")
    tic = time.time()
    train(inet, lambda s: (sample(inr_train[pick(s)], PointSet(sobol(784, 2, seed=10_000 + s))), ytr[pick(s)]),
          steps, 1e-3)
    table["inrnet_seconds"] = time.time() - tic
    table["inrnet_after_qmc"] = qmc_accuracy(inet)
    table["inrnet_after_grid"] = float((logits_of(inet, lambda s: sample(inr_test[s], grid), len(te)).argmax(1)
                                        == yte).float().mean())
    table.update(steps=steps, batch=batch, train_inrs=len(tr), test_inrs=len(te))
    results["finetune"] = table
    for k, v in table.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}", flush=True)

    results["seconds"] = time.time() - t0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    plot(results, args.out)
    stage(f"done; results in {args.json}")


def plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    d = results["drift_grid_to_sobol"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(d["t"], d["drift"], "o-")
    ax[0].set(xlabel="t (0: 28x28 grid, 1: scrambled Sobol)", ylabel="relative logit drift from the grid",
              title="points moved from grid to Sobol")
    ax[1].plot(d["t"], d["agreement"], "o-", label="agreement with grid prediction")
    ax[1].plot(d["t"], d["accuracy"], "s-", label="accuracy")
    ax[1].set(xlabel="t", ylim=(0, 1.02))
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "conversion_drift_t.png", dpi=120)
    n = results["drift_with_n"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(n["sobol_n"], n["sobol_drift"], "o-", label="scrambled Sobol (N points) vs. 28x28 grid")
    ax.plot([s * s for s in n["grid_side"]], n["grid_drift"], "s-", label="grid (side x side) vs. 28x28 grid")
    ax.plot(n["sobol_n"][:-1], n["sobol_self"][:-1], "^--",
            label=f"scrambled Sobol (N points) vs. N={n['sobol_n'][-1]}")
    ax.axvline(784, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ticks = sorted(set(n["sobol_n"]))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlabel="number of sample points", ylabel="relative logit distance", title="output vs. sampling resolution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "conversion_drift_n.png", dpi=120)


if __name__ == "__main__":
    main()
