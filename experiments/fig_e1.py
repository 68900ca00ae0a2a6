"""Fig. E.1 on Fashion-MNIST INRs: how far an INR-Net's output moves from its output on the
28x28 grid when the test INRs are sampled at other resolutions, on grids vs QMC points.

For each resolution r the INRs are sampled on the r x r grid and on r^2 scrambled Sobol
points; the distance is the relative L2 distance of the logits from the 28x28-grid logits,
``||z_r - z_grid28|| / ||z_grid28||``, averaged over the test INRs (QMC: also over
``--draws`` scrambles). Uses a checkpoint from ``table_e1.py`` (or any INR classifier)::

    python experiments/fig_e1.py --ckpt runs/table_e1/qmc.ckpt --out docs/fig_e1.png

Writes the figure and ``<out>.json`` with the numbers (``--replot JSON`` redraws a figure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import stamp, write_json  # noqa: E402

from inrnet.inr import sample  # noqa: E402
from inrnet.lightning import load_task, open_dataset  # noqa: E402
from inrnet.sampling import Sampler  # noqa: E402

RESOLUTIONS = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112)


@torch.no_grad()
def logits(model, inrs, sampler, chunk: int = 32) -> torch.Tensor:
    """Logits Tensor[B, K] of the INRs sampled at the sampler's points (values mapped to [0, 1])."""
    lo, hi = inrs.family.value_range
    points = sampler()
    out = []
    for start in range(0, len(inrs), chunk):
        field = sample(inrs[start:start + chunk], points, chunk_size=chunk)
        out.append(model(field.replace((field.values - lo) / (hi - lo))))
    return torch.cat(out)


def plot(resolutions: list[int], curves: dict[str, list[float]], out: str | Path) -> None:
    """The figure: distance from the 28x28-grid logits against the resolution, grid vs QMC."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, marker, label in (("grid", "s", "grid (r x r points)"), ("QMC", "o", "QMC (r^2 Sobol points)")):
        ax.plot(resolutions, curves[name], marker=marker, label=label)
    ax.axvline(28, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("sampling resolution r")
    ax.set_ylabel("relative distance from the 28x28-grid logits")
    ax.set_ylim(0, min(1.5, max(max(c) for c in curves.values()) * 1.05))
    ax.legend()
    ax.set_title("Output stability as the resolution grows (Fig. E.1)", fontsize=9)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="an INRClassifier checkpoint")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=256, help="test INRs to average over")
    parser.add_argument("--draws", type=int, default=3, help="Sobol scrambles per resolution")
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(RESOLUTIONS))
    parser.add_argument("--chunk", type=int, default=32, help="INRs per forward pass (bounds the memory)")
    parser.add_argument("--out", default="docs/fig_e1.png")
    parser.add_argument("--replot", default=None, help="only redraw the figure from a JSON this script wrote")
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        plot(saved["resolutions"], {k: saved[k] for k in ("grid", "QMC")}, args.out)
        return {k: saved[k] for k in ("grid", "QMC")}
    if not args.ckpt:
        parser.error("--ckpt is required (or --replot)")
    task = load_task(args.ckpt).eval()
    data = open_dataset(args.dataset, args.split, args.root)
    inrs, _ = data.batch(torch.arange(min(args.limit, len(data))))
    ref = logits(task, inrs, Sampler("grid", shape=(28, 28)), args.chunk)

    def dist(z: torch.Tensor) -> float:
        return float(((z - ref).norm(dim=1) / ref.norm(dim=1)).mean())

    curves = {"grid": [], "QMC": []}
    for r in args.resolutions:
        curves["grid"].append(dist(logits(task, inrs, Sampler("grid", shape=(r, r)), args.chunk)))
        curves["QMC"].append(sum(dist(logits(task, inrs, Sampler("sobol", r * r, seed=s, rescramble=False),
                                             args.chunk)) for s in range(args.draws)) / args.draws)
        print(f"r={r}: grid {curves['grid'][-1]:.4f}  QMC {curves['QMC'][-1]:.4f}", flush=True)

    plot(args.resolutions, curves, args.out)
    info = stamp()
    info.update(command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
                items=len(inrs))
    write_json(Path(args.out).with_suffix(".json"), {"info": info, "resolutions": args.resolutions, **curves})
    return curves


if __name__ == "__main__":
    main()
