"""Downstream: the shipped INR-Net classifier on smooth test INRs (issue 18, item 2).

The first ``--count`` Fashion-MNIST test images (the IDX files, ``inrnet.datasets.idx.read_idx``)
are fitted as six variants, with the families and fit settings of the repository's
Fashion-MNIST datasets (``inrnet.datasets.fashion_mnist``: SIREN 2-32-32-1, omega_0 30, 100 Adam
steps at 3e-3; Fourier features 32 x sigma 2, 300 steps at 3e-3; as ``fit_sweep.py``):

* ``siren/plain``, ``siren/liu/1e-05`` (the best off-grid alpha of the sweep),
  ``siren/k-adaptive/4`` (``KLipschitz(margin=4, allocation="adaptive")``);
* ``fourier/plain``, ``fourier/liu/0.0001``, ``fourier/k-adaptive/8``.

Each variant's mean on-grid / off-grid PSNR and certified bound come from ``fit``'s quality
dict. Then the shipped ``create_model("inrnet4", pretrained="fashion_mnist")`` (trained on plain
SIRENs, mixed 784-3136 Sobol densities) is tested on every variant at the 28 x 28 grid and at
1x, 2x and 4x density: 784, 3136 and 12544 scrambled Sobol points, each one fixed scramble (the
DataModule's test samplers: seed 1, no rescrambling, as ``certify.py``). The INR values are
mapped from the family's ``value_range`` to ``[0, 1]`` (what the INRDataModule feeds the model),
and the batch norms are recalibrated per point set on 50 batches of 64 training SIRENs of the
embedded ``fashion_mnist_default`` dataset (as the shipped model's recorded scores were). For
reference the embedded test SIRENs (the same images, fitted by the dataset builder) are tested
too, as the row ``embedded/siren``, when ``--count`` is at most their number (1000).

Resumable: every finished cell (a variant's fit, a variant at a point set) is written to
``--out`` at once (atomically) and skipped by a rerun. Fitted INRs are cached as safetensors
under ``.cache/lipschitz_downstream/<count>/`` and the recalibrated model states under
``.cache/lipschitz_downstream/bn/`` (loading executes no code).

    OMP_NUM_THREADS=1 python experiments/lipschitz/downstream.py --count 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from certify import eval_points, logits_of, mapped, read_json, recalibrate, write_json  # noqa: E402

from inrnet.datasets import fashion_mnist as fm  # noqa: E402
from inrnet.datasets.idx import read_idx  # noqa: E402
from inrnet.inr import fit  # noqa: E402
from inrnet.inr.base import INRBatch  # noqa: E402
from inrnet.inr.smoothness import KLipschitz, LiuRegularizer  # noqa: E402
from inrnet.lightning.data import open_dataset  # noqa: E402
from inrnet.models import create_model  # noqa: E402

FAMILIES = {"siren": (fm.SIREN, fm.FIT), "fourier": (fm.FOURIER, fm.FIT_FOURIER)}
VARIANTS: dict[str, tuple[str, Any]] = {
    "siren/plain": ("siren", None),
    "siren/liu/1e-05": ("siren", LiuRegularizer(1e-5)),
    "siren/k-adaptive/4": ("siren", KLipschitz(margin=4.0, allocation="adaptive")),
    "fourier/plain": ("fourier", None),
    "fourier/liu/0.0001": ("fourier", LiuRegularizer(1e-4)),
    "fourier/k-adaptive/8": ("fourier", KLipschitz(margin=8.0, allocation="adaptive")),
}
EMBEDDED = "embedded/siren"
SETTINGS = ("grid:28x28", "sobol:784", "sobol:3136", "sobol:12544")
CACHE = ROOT / ".cache" / "lipschitz_downstream"


def load_images(source: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images Tensor[count, 1, 28, 28] in [0, 1] and their labels Tensor[count]."""
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")[:count, None].float().div_(255.0)
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")[:count].long()
    return images, labels


def save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def fitted(key: str, images: torch.Tensor, count: int) -> tuple[INRBatch, dict[str, float] | None]:
    """The variant's INRs (from the cache, or fitted and cached) and, if fitted now, its fit summary."""
    name, option = VARIANTS[key]
    family, settings = FAMILIES[name]
    path = CACHE / str(count) / f"{key.replace('/', '_')}.safetensors"
    if path.is_file():
        state = load_file(str(path))
        params = {k[len("param."):]: v for k, v in state.items() if k.startswith("param.")}
        q = {k[len("quality."):]: v for k, v in state.items() if k.startswith("quality.")}
        return INRBatch(family, params), {"psnr_grid": q["psnr_grid"].mean().item(),
                                          "psnr_offgrid": q["psnr_offgrid"].mean().item(),
                                          "bound": q["lipschitz_bound"].mean().item(), "fit_seconds": None}
    t0 = time.perf_counter()
    inrs, quality = fit(images, family, **settings, progress=False, lipschitz=option)
    seconds = time.perf_counter() - t0
    save_atomic({**{f"param.{k}": v for k, v in inrs.params.items()},
                 **{f"quality.{k}": v for k, v in quality.items()}}, path)
    return inrs, {"psnr_grid": quality["psnr_grid"].mean().item(),
                  "psnr_offgrid": quality["psnr_offgrid"].mean().item(),
                  "bound": quality["lipschitz_bound"].mean().item(), "fit_seconds": round(seconds, 1)}


def recalibrated_model(spec: str, train) -> torch.nn.Module:
    """The shipped model with its batch norms recalibrated on ``spec``'s points (cached state)."""
    model = create_model("inrnet4", pretrained="fashion_mnist").eval()
    path = CACHE / "bn" / f"{spec.replace(':', '_')}.safetensors"
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
    else:
        recalibrate(model, train(), eval_points(spec))
        save_atomic(model.state_dict(), path)
    return model.eval()


def top1(model: torch.nn.Module, inrs, labels: torch.Tensor, spec: str) -> float:
    points = eval_points(spec)
    chunk = max(25, min(250, 250 * 784 // points.n))
    correct = 0
    for i in range(0, len(labels), 250):  # sample in slices: at most 250 x 12544 values at a time
        field = mapped(inrs[i:i + 250] if hasattr(inrs, "__getitem__") else inrs, points)
        correct += int((logits_of(model, field, chunk).argmax(1) == labels[i:i + 250]).sum())
    return correct / len(labels)


def table(data: dict[str, Any]) -> str:
    lines = ["| variant | PSNR grid (dB) | PSNR off-grid (dB) | bound | top-1 grid 28x28 | top-1 784 | top-1 3136 "
             "| top-1 12544 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in [*VARIANTS, EMBEDDED]:
        f = data["fits"].get(key)
        t = data["tests"].get(key, {})
        if f is None and not t:
            continue
        cols = [f"{f[k]:.2f}" if f and f.get(k) is not None else "" for k in ("psnr_grid", "psnr_offgrid")]
        cols.append(f"{f['bound']:.1f}" if f and f.get("bound") is not None else "")
        cols += [f"{100 * t[s]:.1f}" if s in t else "" for s in SETTINGS]
        lines.append(f"| {key} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1000, help="test images (the first COUNT)")
    p.add_argument("--source", type=Path, default=Path(fm.DEBIAN_ROOT), help="folder with the IDX files")
    p.add_argument("--variants", nargs="+", default=[*VARIANTS, EMBEDDED], choices=[*VARIANTS, EMBEDDED])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--fit-only", action="store_true", help="fit (and cache) the variants, test nothing")
    p.add_argument("--out", type=Path, default=HERE / "downstream.json")
    args = p.parse_args(argv)
    start = time.perf_counter()
    meta = {"count": args.count, "fit": {k: v for k, (_, v) in FAMILIES.items()},
            "variants": {k: repr(o) for k, (_, o) in VARIANTS.items()}, "settings": list(SETTINGS),
            "model": "create_model('inrnet4', pretrained='fashion_mnist')",
            "batch_norms": "recalibrated per setting on 50 x 64 embedded training SIRENs (seed 0)"}
    data = read_json(args.out) or {"meta": meta, "fits": {}, "tests": {}}
    if data["meta"]["count"] != args.count or data["meta"]["fit"] != json.loads(json.dumps(meta["fit"])):
        raise SystemExit(f"{args.out} holds results for other settings ({data['meta']}); pass another --out")
    images, labels = load_images(args.source, args.count)

    def stamp() -> None:
        data["meta"].update(machine=f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch "
                            f"{torch.__version__}", date=date.today().isoformat())
        write_json(args.out, data)

    inrs: dict[str, Any] = {}
    for key in args.variants:  # fit first: every variant is cached before any testing
        if key == EMBEDDED:
            continue
        inrs[key], summary = fitted(key, images, args.count)
        if key not in data["fits"]:  # fitted now, or cached by an interrupted run
            data["fits"][key] = {**summary, "count": args.count}
            stamp()
            print(f"fit {key}: grid {summary['psnr_grid']:.2f} dB, off-grid {summary['psnr_offgrid']:.2f} dB, "
                  f"bound {summary['bound']:.1f} ({summary['fit_seconds']} s)", flush=True)
    if EMBEDDED in args.variants:
        test = open_dataset("fashion_mnist_default", "test")
        if args.count <= len(test):
            emb, emb_labels = test.batch(torch.arange(args.count))
            embedded_images = fm.default_images("test")[0][:args.count].float().div(255.0)
            if not (torch.equal(emb_labels, labels) and torch.equal(embedded_images, images[:, 0])):
                raise RuntimeError("the embedded test SIRENs are not of the first test images")
            inrs[EMBEDDED] = emb
            if EMBEDDED not in data["fits"]:
                q = test.quality or {}
                data["fits"][EMBEDDED] = {k: (q[src][:args.count].double().mean().item() if src in q else None)
                                          for k, src in (("psnr_grid", "psnr_grid"), ("psnr_offgrid", "psnr_offgrid"),
                                                         ("bound", "lipschitz_bound"))}
                stamp()
    if args.fit_only:
        print(table(data))
        return data
    train = None
    for spec in args.settings:
        todo = [k for k in inrs if spec not in data["tests"].get(k, {})]
        if not todo:
            continue
        if train is None:
            train = open_dataset("fashion_mnist_default", "train")
        t0 = time.perf_counter()
        model = recalibrated_model(spec, lambda: train)
        recal_s = time.perf_counter() - t0
        for key in todo:
            t1 = time.perf_counter()
            acc = top1(model, inrs[key], labels, spec)
            data["tests"].setdefault(key, {})[spec] = acc
            data["tests"][key][f"{spec}/seconds"] = round(time.perf_counter() - t1, 1)
            stamp()
            print(f"test {key} @ {spec}: top-1 {acc:.4f} ({time.perf_counter() - t1:.1f} s; recalibration "
                  f"{recal_s:.1f} s)", flush=True)
    print(f"\n{args.count} images; this run {time.perf_counter() - start:.0f} s\n")
    print(table(data))
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
