"""Segmentation smoke run on Fashion-MNIST scenes: INR-Net-3 (Alg. 2) and its twin FCN-3.

INR-Net-3 trains on 2048 Sobol points per step; its output INR is scored at the 64x64 label
coordinates. Test settings: 4096 Sobol points and the 64x64 grid, and the 32x32 grid, where
the input is sampled at half the label resolution so every label is a sub-pixel query. The
FCN samples the 64x64 (and 32x32) grid; its logits are interpolated to the same labels::

    python experiments/segmentation_smoke.py --max-steps 300 --out runs/segmentation_smoke

Writes ``OUT/segmentation.json`` and ``OUT/segmentation.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_and_test, stamp, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist_scenes")
    parser.add_argument("--root", default=None)
    parser.add_argument("--models", nargs="+", default=["inrnet3", "fcn3"], choices=["inrnet3", "fcn3"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/segmentation_smoke")
    args = parser.parse_args(argv)
    results = {}
    for model in args.models:
        over = ["--data.dataset", args.dataset, "--trainer.max_steps", str(args.max_steps), "--seed_everything",
                str(args.seed), "--data.seed", str(args.seed), "--trainer.enable_progress_bar", "false"]
        over += ["--data.root", args.root] if args.root else []
        over += ["--data.limit_train", str(args.limit)] if args.limit else []
        over += ["--data.limit_test", str(args.limit_test)] if args.limit_test else []
        r = fit_and_test(f"fashion_mnist_scenes/{model}.yaml", over, max_minutes=args.max_minutes, out=args.out)
        r.pop("model")
        results[model] = r
        print(model, r["steps"], {k: round(v, 4) for k, v in r["metrics"].items()}, flush=True)
    lines = ["| model | input sampled at | mIoU | pixel accuracy | steps |", "|---|---|---:|---:|---:|"]
    for model, r in results.items():
        for key in sorted(k for k in r["metrics"] if k.startswith("test/miou/")):
            setting = key.rsplit("/", 1)[1]
            lines.append(f"| {model} | {setting} | {r['metrics'][key]:.3f} | "
                         f"{r['metrics'][f'test/pixacc/{setting}']:.1%} | {r['steps']} |")
    info = stamp()
    info.update(command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    write_json(Path(args.out) / "segmentation.json", {"info": info, "results": results})
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n"
    (Path(args.out) / "segmentation.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
