"""Table 1 on Fashion-MNIST INRs: INR-Net-2/4 vs CNN-2/4, trained on SIRENs, tested on
Gaussian Fourier-feature INRs at 28x28 (784 points) and 56x56 (3136 points), top-1 and top-3.

INR-Nets are trained on 784 scrambled Sobol points per step and tested on the 28x28 and
56x56 grids and on 784 / 3136 Sobol points; CNNs sample the INRs on the 28x28 grid and are
tested on the 28x28 and 56x56 grids. Runs on whatever size of the dataset exists
(``--limit``), within a time budget per model::

    python experiments/table1.py --out runs/table1 --limit 60000 --max-steps 6000 --max-minutes 20
    python experiments/table1.py --dataset fashion_mnist_default --max-minutes 5    # the embedded subset

Writes ``OUT/table1.json`` and ``OUT/table1.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_and_test, stamp, write_json  # noqa: E402

MODELS = ("inrnet2", "cnn2", "inrnet4", "cnn4")
NAMES = {"inrnet2": "INR-Net-2", "inrnet4": "INR-Net-4", "cnn2": "CNN-2", "cnn4": "CNN-4"}


def overrides(args: argparse.Namespace, model: str) -> list[str]:
    """Command-line overrides shared by every model of the table."""
    out = ["--data.dataset", args.dataset, "--data.val_size", "0", "--trainer.max_steps", str(args.max_steps),
           "--trainer.check_val_every_n_epoch", "1000000", "--seed_everything", str(args.seed),
           "--data.seed", str(args.seed), "--data.test_split", args.test_split,
           "--trainer.enable_progress_bar", str(args.progress).lower()]
    if args.root:
        out += ["--data.root", args.root]
    if args.limit:
        out += ["--data.limit_train", str(args.limit)]
    if args.limit_test:
        out += ["--data.limit_test", str(args.limit_test)]
    return out + list(args.extra)


def table(results: dict[str, dict], info: dict) -> str:
    """Markdown table: rows = models, columns = top-1 / top-3 at 1x and 2x."""
    lines = ["| model | points / grid | top-1 28x28 | top-1 56x56 | 1x -> 2x | top-3 28x28 | top-3 56x56 | steps |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, r in results.items():
        m = r["metrics"]
        settings = [("grid_28x28", "grid_56x56", "grid")]
        if model.startswith("inrnet"):
            settings.append(("sobol_784", "sobol_3136", "Sobol 784 / 3136"))
        for one, two, label in settings:
            t1, t2 = m[f"test/top1/{one}"], m[f"test/top1/{two}"]
            lines.append(f"| {NAMES[model]} | {label} | {t1:.1%} | {t2:.1%} | {100 * (t2 - t1):+.1f} pts | "
                         f"{m[f'test/top3/{one}']:.1%} | {m[f'test/top3/{two}']:.1%} | {r['steps']} |")
    meta = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return "\n".join(lines) + f"\n\n{meta}\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--test-split", default="test_fourier")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--limit", type=int, default=None, help="training INRs to use (default all)")
    parser.add_argument("--limit-test", type=int, default=None, help="test INRs to use (default all)")
    parser.add_argument("--max-steps", type=int, default=6000)
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/table1")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--save", action="store_true", help="save each trained model as OUT/<model>.ckpt")
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. --trainer.accelerator=gpu")
    args = parser.parse_args(argv)
    results = {}
    for model in args.models:
        r = fit_and_test(f"fashion_mnist/{model}.yaml", overrides(args, model), max_minutes=args.max_minutes,
                         out=args.out, checkpoint=Path(args.out) / f"{model}.ckpt" if args.save else None)
        r.pop("model")
        results[model] = r
        print(f"{model}: {r['steps']} steps in {r['fit_minutes']:.1f} min; " +
              ", ".join(f"{k}={v:.4f}" for k, v in sorted(r["metrics"].items()) if "/top" in k), flush=True)
    info = stamp()
    info.update(command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    write_json(Path(args.out) / "table1.json", {"info": info, "results": results})
    (Path(args.out) / "table1.md").write_text(table(results, info))
    print(table(results, info))
    return results


if __name__ == "__main__":
    main()
