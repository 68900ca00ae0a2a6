"""Certified robustness of an INR-Net classifier to the INR itself (issue 18, item 4).

For a classifier ``T`` in eval mode on the point set ``P`` it samples its input on,
``L = lipschitz_bound(T, P)`` bounds ``||T(f) - T(g)||_2 <= L ||f - g||`` (quadrature L2 on ``P``),
so each test INR ``f`` keeps its class for every ``g`` with ``||f - g|| < r(f) = margin / (sqrt(2) L)``
(``inrnet.lipschitz.certified_radius``). This script measures, for the shipped
``create_model("inrnet4", pretrained="fashion_mnist")`` on the embedded Fashion-MNIST test
split (1000 SIRENs):

* ``L`` on the 784-point Sobol set of its recipe's ``sobol:784`` test setting (the
  DataModule's test sampler: seed 1, unscrambled between batches) and on the 28 x 28 grid,
  with the batch norms recalibrated there on 50 batches of 64 training SIRENs (what its
  recorded scores used), and also with the stored statistics;
* the radii of the test SIRENs and the certified accuracy curve (``certified_accuracy``);
* ``||SIREN - Fourier INR||`` of the same image (the 500 ``test_fourier`` items, paired by their
  Fashion-MNIST index) and ``||SIREN - bilinear PixelINR of the image||``, measured with
  ``field_distance`` on the same points *after the value mapping the model sees* (each
  family's ``value_range`` to ``[0, 1]``: SIREN ``(v + 1) / 2``, Fourier and pixels as they are),
  and the fraction of test items whose radius exceeds that distance: certified to keep
  their class across the change of parameterisation. Beside it, the fraction that does keep
  it (the empirical agreement), and the largest observed ``||T(f) - T(g)|| / (L ||f - g||)``
  (at most 1, or the bound would be wrong).

Results go to ``--json`` (resumable: finished settings are kept and skipped; atomic
writes), the figure to ``--figure``. The functions are shared with ``train_constrained.py``.

    OMP_NUM_THREADS=1 python experiments/lipschitz/certify.py

About 1.5 minutes on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import stamp  # noqa: E402

from inrnet.datasets.fashion_mnist import default_images  # noqa: E402
from inrnet.field import Field, PointSet  # noqa: E402
from inrnet.inr import PixelINR, sample  # noqa: E402
from inrnet.lightning.data import open_dataset, parse_sampler  # noqa: E402
from inrnet.lipschitz import certified_accuracy, certified_radius, field_distance, lipschitz_bound  # noqa: E402
from inrnet.models import create_model  # noqa: E402
from inrnet.nn import recalibrate_norms  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATASET = "fashion_mnist_default"
SETTINGS = ("sobol:784", "grid:28x28")
TEST_SAMPLER_SEED = 1
"""The INRDataModule's test samplers are seeded ``seed + 1`` (seed 0 in the shipped recipe)."""
RECAL_BATCHES, RECAL_BATCH = 50, 64
EPS = [0.0] + [float(f"{10 ** (k / 10):.4g}") for k in range(-60, 11)]
"""The radii of the certified accuracy curve: 0, then 1e-6 ... 10, ten per decade."""


# --- data ------------------------------------------------------------------------------------

def eval_points(spec: str) -> PointSet:
    """The fixed points of a test setting, as the DataModule's test sampler draws them."""
    return parse_sampler(spec, 2, seed=TEST_SAMPLER_SEED, rescramble=False)()


def mapped(inrs, points: PointSet) -> Field:
    """INRs sampled on ``points`` with their values mapped from the family's ``value_range`` to ``[0, 1]``
    (what the INRDataModule feeds the model): values Tensor[B, N, C]."""
    field = sample(inrs, points, chunk_size=256)
    lo, hi = inrs.family.value_range
    return field.replace((field.values - lo) * (1.0 / (hi - lo)))


def load_data() -> dict[str, Any]:
    """The test SIRENs, their labels, the Fourier INRs paired with them, and the images as bilinear PixelINRs."""
    test, fourier = open_dataset(DATASET, "test"), open_dataset(DATASET, "test_fourier")
    sirens, labels = test.batch(torch.arange(len(test)))
    four, four_labels = fourier.batch(torch.arange(len(fourier)))
    position = {int(k): i for i, k in enumerate(test.index)}
    pair = torch.tensor([position[int(k)] for k in fourier.index])  # (500,): the SIREN of each Fourier INR's image
    if not torch.equal(labels[pair], four_labels):
        raise RuntimeError("paired SIREN and Fourier INRs have different labels")
    images, image_labels = default_images("test")
    if not torch.equal(image_labels, labels):
        raise RuntimeError("the test images are not in the test SIRENs' order")
    pixels = PixelINR(images.float().unsqueeze(1) / 255.0, "linear")  # (1000, 1, 28, 28), values in [0, 1]
    return {"sirens": sirens, "labels": labels, "fourier": four, "pair": pair, "pixels": pixels,
            "train": open_dataset(DATASET, "train")}


def recalibrate(model: nn.Module, train, points: PointSet, batches: int = RECAL_BATCHES, size: int = RECAL_BATCH,
                seed: int = 0) -> int:
    """Re-estimate the batch norms on ``points`` from seeded batches of training INRs (as ``RecalibrateNorms``)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))

    def gen():
        for i in range(min(batches, -(-len(train) // size))):
            inrs, _ = train.batch(order[i * size:(i + 1) * size].sort().values)
            yield mapped(inrs, points)
    return recalibrate_norms(model, gen())


def logits_of(model: nn.Module, field: Field, chunk: int = 250) -> Tensor:
    """Logits Tensor[B, K] in chunks of items, without gradients."""
    with torch.no_grad():
        return torch.cat([model(Field(field.values[i:i + chunk], field.points))
                          for i in range(0, field.values.shape[0], chunk)])


# --- measurements ----------------------------------------------------------------------------

def _summary(x: Tensor) -> dict[str, float]:
    x = x.double()
    q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"min": float(x.min()), "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2]),
            "max": float(x.max()), "mean": float(x.mean())}


def _round(x: Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in x.double().tolist()]


def certify(model: nn.Module, points: PointSet, data: dict[str, Any], bound=None) -> dict[str, Any]:
    """Radii, certified accuracy and the certified fractions across changes of parameterisation.

    Args:
        model: the classifier, in eval mode (its batch norms as they should be for ``points``).
        points: the input points.
        data: from `load_data`.
        bound: its ``LipschitzBound`` on ``points`` (computed if None).

    Returns:
        A JSON-able dict (per-item radii and distances included, for the figure).
    """
    start = time.monotonic()
    bound = lipschitz_bound(model, points) if bound is None else bound
    bound_s = time.monotonic() - start
    siren = mapped(data["sirens"], points)  # (1000, N, 1)
    four = mapped(data["fourier"], points)  # (500, N, 1)
    pixels = mapped(data["pixels"], points)  # (1000, N, 1)
    labels, pair = data["labels"], data["pair"]
    z = logits_of(model, siren)
    correct = z.argmax(1) == labels
    radius = certified_radius(z, bound)  # (1000,)
    curve = certified_accuracy(radius, correct, torch.tensor(EPS, dtype=radius.dtype))
    out: dict[str, Any] = {
        "points": points.n, "L": bound.total, "bound_seconds": round(bound_s, 2),
        "stages": {s.name: s.factor for s in bound.layers}, "accuracy": float(correct.float().mean()),
        "radius": _summary(radius), "eps": EPS, "certified_accuracy": _round(curve),
        "radii": _round(radius), "correct": correct.int().tolist(),
    }
    for name, other, items in (("fourier", four, pair), ("bilinear", pixels, torch.arange(len(labels)))):
        base = Field(siren.values[items], points)
        dist = field_distance(base, other)  # (n,)
        zo = logits_of(model, other)
        change = (zo - z[items]).norm(dim=1)
        r = radius[items]
        out[name] = {
            "items": len(items), "distance": _summary(dist), "distances": _round(dist),
            "certified": float((r > dist).float().mean()),
            "certified_and_correct": float(((r > dist) & correct[items]).float().mean()),
            "agree": float((zo.argmax(1) == z[items].argmax(1)).float().mean()),
            "accuracy_other": float((zo.argmax(1) == labels[items]).float().mean()),
            "accuracy_siren": float(correct[items].float().mean()),
            "max_change_over_bound": float((change / (bound.total * dist).clamp_min(1e-30)).max()),
            "radius_over_distance": _summary(r / dist.clamp_min(1e-30)),
            "certified_accuracy_at_median": float(certified_accuracy(r, correct[items], float(dist.median()))),
        }
    out["seconds"] = round(time.monotonic() - start, 1)
    return out


# --- results file and figure -----------------------------------------------------------------

def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a temporary file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot(curves: list[tuple[str, dict[str, Any]]], path: Path, title: str) -> None:
    """Certified accuracy against eps (log axis) per curve, with the median SIREN-Fourier and
    SIREN-bilinear distances of each as vertical lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for k, (label, r) in enumerate(curves):
        color = f"C{k}"
        eps, acc = r["eps"][1:], r["certified_accuracy"][1:]
        ax.semilogx(eps, acc, color=color, label=f"{label}: L = {r['L']:.3g}, clean {r['accuracy']:.1%}")
        for key, style in (("fourier", "--"), ("bilinear", ":")):
            ax.axvline(r[key]["distance"]["median"], color=color, linestyle=style, linewidth=1)
    ax.plot([], [], "k--", linewidth=1, label="median ||SIREN - Fourier INR||")
    ax.plot([], [], "k:", linewidth=1, label="median ||SIREN - bilinear pixels||")
    ax.set_xlabel("eps (quadrature L2 distance of INRs, values in [0, 1])")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=HERE / "certify.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "lipschitz_certified.png")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = parser.parse_args(argv)
    results = read_json(args.json)
    data = None
    for spec in args.settings:
        for recal in (True, False):
            key = f"inrnet4_fashion_mnist/{spec}/{'recalibrated' if recal else 'stored_bn'}"
            if key in results:
                print(f"{key}: done (L = {results[key]['L']:.4g})")
                continue
            data = load_data() if data is None else data
            model = create_model("inrnet4", pretrained="fashion_mnist").eval()
            points = eval_points(spec)
            if recal:
                recalibrate(model, data["train"], points)
            r = certify(model, points, data)
            r.update(setting=spec, batch_norms="recalibrated on 50 x 64 training SIRENs" if recal else "stored",
                     **stamp())
            results[key] = r
            write_json(args.json, results)
            print(f"{key}: L = {r['L']:.4g}, acc {r['accuracy']:.3f}, median radius {r['radius']['median']:.3g}, "
                  f"median d(SIREN, Fourier) {r['fourier']['distance']['median']:.3g} -> certified "
                  f"{r['fourier']['certified']:.3f}, d(SIREN, bilinear) {r['bilinear']['distance']['median']:.3g} "
                  f"-> certified {r['bilinear']['certified']:.3f} ({r['seconds']} s)")
    curves = [(f"inrnet4 {k.split('/')[1]}", results[k]) for k in results if k.endswith("/recalibrated")]
    if curves:
        plot(curves, args.figure, "Shipped inrnet4 (pretrained='fashion_mnist'), 1000 embedded test SIRENs")
        print(f"figure: {args.figure}")
    return results


if __name__ == "__main__":
    main()
