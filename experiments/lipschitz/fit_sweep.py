"""Lipschitz-regularised fitting on Fashion-MNIST: quality against smoothness, over the strength.

Fits the first ``--count`` Fashion-MNIST test images (the IDX files, read with
``inrnet.datasets.idx.read_idx``) with the families and fit settings of the repository's
Fashion-MNIST datasets (``inrnet.datasets.fashion_mnist``: SIREN 2-32-32-1, omega_0 30, 100
Adam steps at 3e-3; Fourier features 32 x sigma 2, ReLU 64-32-32-1, 300 steps at 3e-3):

* ``plain``: ``fit(...)``;
* ``liu``: ``lipschitz=LiuRegularizer(alpha)`` for each ``--alphas``;
* ``k-uniform`` / ``k-nonuniform`` / ``k-adaptive``: ``lipschitz=KLipschitz(margin=m,
  allocation=...)`` for each ``--margins`` (the budget: ``m`` times each image's
  finite-difference Lipschitz constant, in the family's value units).

For each cell: mean on-grid and off-grid PSNR (dB, ``fit``'s quality), mean certified bound
(``quality["lipschitz_bound"]``, from the weights) and mean empirical constant (the largest
gradient norm over the 112 x 112 grid plus 4096 random points of ``[-1, 1]^2``, by autograd),
in the family's value units per unit of the ``[-1, 1]^2`` coordinates (SIREN values span
[-1, 1], Fourier [0, 1]: SIREN constants are twice the image's in [0, 1] units).

Results go to ``--out`` (JSON, rewritten atomically after every cell; a rerun skips the
cells it holds), the table is printed as Markdown, and ``--plot`` gets off-grid PSNR and the
empirical constant (with the bound, dotted) against alpha and against the margin.

    OMP_NUM_THREADS=1 python experiments/lipschitz/fit_sweep.py --count 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from inrnet.datasets import fashion_mnist as fm  # noqa: E402
from inrnet.datasets.idx import read_idx  # noqa: E402
from inrnet.inr import fit  # noqa: E402
from inrnet.inr.smoothness import KLipschitz, LiuRegularizer, empirical_lipschitz, image_lipschitz  # noqa: E402
from inrnet.sampling import grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {"siren": (fm.SIREN, fm.FIT), "fourier": (fm.FOURIER, fm.FIT_FOURIER)}
ALLOCATIONS = ("uniform", "nonuniform", "adaptive")


def load_images(source: Path, count: int) -> torch.Tensor:
    """The first ``count`` test images, Tensor[count, 1, 28, 28] in [0, 1]."""
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")  # (10000, 28, 28) uint8
    return images[:count, None].float().div_(255.0)


def dense_points(seed: int = 0) -> torch.Tensor:
    """The 112 x 112 grid and 4096 uniform points of [-1, 1]^2: Tensor[16640, 2]."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([grid((112, 112)), 2 * torch.rand(4096, 2, generator=g) - 1])


def cells(alphas: list[float], margins: list[float]) -> list[tuple[str, str, str, float, Any]]:
    """``(key, family, method, strength, lipschitz option)`` of every cell, in order."""
    out = []
    for name in FAMILIES:
        out.append((f"{name}/plain", name, "plain", 0.0, None))
        out += [(f"{name}/liu/{a:g}", name, "liu", a, LiuRegularizer(a)) for a in alphas]
        out += [(f"{name}/k-{alloc}/{m:g}", name, f"k-{alloc}", m, KLipschitz(margin=m, allocation=alloc))
                for alloc in ALLOCATIONS for m in margins]
    return out


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_cell(images: torch.Tensor, name: str, option: Any, points: torch.Tensor) -> dict[str, float]:
    family, settings = FAMILIES[name]
    t0 = time.perf_counter()
    inrs, quality = fit(images, family, **settings, progress=False, lipschitz=option)
    fit_s = time.perf_counter() - t0
    emp = empirical_lipschitz(family, inrs.params, points)  # (N,)
    bound = quality["lipschitz_bound"]
    assert bool((emp <= bound * (1 + 1e-5)).all()), f"{name} {option}: an empirical constant exceeds its bound"
    return {"psnr_grid": quality["psnr_grid"].mean().item(), "psnr_offgrid": quality["psnr_offgrid"].mean().item(),
            "bound": bound.mean().item(), "empirical": emp.mean().item(),
            "bound_over_empirical": (bound / emp).mean().item(), "fit_seconds": fit_s,
            "seconds": time.perf_counter() - t0}


def table(results: dict[str, dict]) -> str:
    lines = ["| family | fit | strength | PSNR grid (dB) | PSNR off-grid (dB) | bound | empirical | bound / emp. |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results.values():
        strength = "" if r["method"] == "plain" else (f"alpha {r['strength']:g}" if r["method"] == "liu"
                                                       else f"margin {r['strength']:g}")
        lines.append(f"| {r['family']} | {r['method']} | {strength} | {r['psnr_grid']:.2f} | {r['psnr_offgrid']:.2f} "
                     f"| {r['bound']:.1f} | {r['empirical']:.1f} | {r['bound_over_empirical']:.1f} |")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), sharex="col", constrained_layout=True)
    for j, (name, kind) in enumerate([(n, k) for n in FAMILIES for k in ("liu", "k")]):
        plain = results.get(f"{name}/plain")
        methods = ["liu"] if kind == "liu" else [f"k-{a}" for a in ALLOCATIONS]
        for method in methods:
            rows = sorted((r for r in results.values() if r["family"] == name and r["method"] == method),
                          key=lambda r: r["strength"])
            if not rows:
                continue
            x = [r["strength"] for r in rows]
            line, = axes[0, j].plot(x, [r["psnr_offgrid"] for r in rows], "o-", label=method)
            axes[1, j].plot(x, [r["empirical"] for r in rows], "o-", color=line.get_color(), label=method)
            axes[1, j].plot(x, [r["bound"] for r in rows], "s:", color=line.get_color(), ms=3)
        if plain is not None:
            axes[0, j].axhline(plain["psnr_offgrid"], color="k", ls="--", lw=1, label="plain")
            axes[1, j].axhline(plain["empirical"], color="k", ls="--", lw=1, label="plain")
            axes[1, j].axhline(plain["bound"], color="k", ls=":", lw=1)
        axes[0, j].set_title(f"{name}, {'Liu et al.' if kind == 'liu' else 'K-Lipschitz'}")
        axes[1, j].set_xlabel("alpha (stronger ->)" if kind == "liu" else "budget margin (<- stronger)")
        for ax in axes[:, j]:
            ax.set_xscale("log", base=10 if kind == "liu" else 2)
            ax.grid(alpha=0.3)
        axes[1, j].set_yscale("log")
        axes[0, j].legend(fontsize=7)
        axes[1, j].legend(fontsize=7)
    axes[0, 0].set_ylabel("off-grid PSNR (dB)")
    axes[1, 0].set_ylabel("Lipschitz constant\n(solid: empirical, dotted: bound)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=64, help="test images fitted (the first COUNT)")
    p.add_argument("--source", type=Path, default=Path(fm.DEBIAN_ROOT), help="folder with the IDX files")
    p.add_argument("--alphas", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3, 1e-2])
    p.add_argument("--margins", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "lipschitz" / "fit_sweep.json")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "lipschitz_fit_sweep.png")
    args = p.parse_args(argv)
    meta = {"count": args.count, "fit": {k: v for k, (_, v) in FAMILIES.items()},
            "families": {k: f.to_dict() for k, (f, _) in FAMILIES.items()}}
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"meta": meta, "results": {}}
    if data["meta"]["count"] != args.count or data["meta"]["fit"] != json.loads(json.dumps(meta["fit"])):
        raise SystemExit(f"{args.out} holds results for other settings ({data['meta']}); pass another --out")
    images = load_images(args.source, args.count)
    points = dense_points()
    for name, (family, _) in FAMILIES.items():
        scale = family.value_range[1] - family.value_range[0]
        data["meta"][f"{name}_image_lipschitz"] = (scale * image_lipschitz(images)).mean().item()
    start = time.perf_counter()
    for key, name, method, strength, option in cells(args.alphas, args.margins):
        if key in data["results"]:
            continue
        r = run_cell(images, name, option, points)
        data["results"][key] = {"family": name, "method": method, "strength": strength, **r}
        data["meta"].update(machine=f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch "
                            f"{torch.__version__}", date=date.today().isoformat())
        write_atomic(args.out, data)
        print(f"{key}: grid {r['psnr_grid']:.2f} dB, off-grid {r['psnr_offgrid']:.2f} dB, bound {r['bound']:.1f}, "
              f"empirical {r['empirical']:.1f} ({r['seconds']:.1f} s)", flush=True)
    print(f"\n{args.count} images; image finite-difference constant (value units): siren "
          f"{data['meta']['siren_image_lipschitz']:.1f}, fourier {data['meta']['fourier_image_lipschitz']:.1f}; "
          f"this run {time.perf_counter() - start:.0f} s\n")
    print(table(data["results"]))
    plot(data["results"], args.plot)
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
