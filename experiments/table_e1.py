"""Table E.1 on Fashion-MNIST INRs: INR-Net-2 trained with one sampling scheme (QMC, grid,
shrunk) and tested with each, all nine train -> test pairs, top-1 accuracy.

QMC is 784 scrambled Sobol points (a fresh scramble each training step), grid the 28x28
cell centres, shrunk the Sobol points pulled to the centre (x -> x|x|, App. E.1)::

    python experiments/table_e1.py --out runs/table_e1 --limit 20000 --max-steps 3000 --max-minutes 15

``--config fashion_mnist/inrnet4_lattice.yaml`` trains the shipped classifier's recipe (INR-Net-4
on a latent lattice, whole-basis supports, batch norms recalibrated per test setting) with each
scheme instead, and ``--shipped`` adds the row of the shipped weights themselves
(``create_model("inrnet4", pretrained="fashion_mnist")``, trained on mixed-density QMC), tested
with each scheme and not trained further. On the real SIREN -> Fourier data::

    python experiments/table_e1.py --root .cache/fashion_mnist --test-split test_fourier \
        --config fashion_mnist/inrnet4_lattice.yaml --max-steps 3000 --shipped --out runs/table_e1_fourier

Writes ``OUT/table_e1.json``, ``OUT/table_e1.md`` and each scheme's checkpoint
``OUT/<scheme>.ckpt`` (Fig. E.1 reuses them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fit_and_test, stamp, write_json  # noqa: E402

SCHEMES = {"QMC": "sobol:784", "Grid": "grid:28x28", "Shrunk": "shrunk:784"}


def table(acc: dict[str, dict[str, float]], info: dict) -> str:
    """Markdown: one row per train -> test pair (as the paper), and the 3x3 matrix."""
    lines = ["| train -> test | top-1 |", "|---|---:|"]
    for train, row in acc.items():
        for test, value in row.items():
            lines.append(f"| {train} -> {test} | {value:.1%} |")
    lines += ["", "| train / test | " + " | ".join(SCHEMES) + " |", "|---|" + "---:|" * len(SCHEMES)]
    lines += [f"| {train} | " + " | ".join(f"{row[t]:.1%}" for t in SCHEMES) + " |" for train, row in acc.items()]
    meta = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return "\n".join(lines) + f"\n\n{meta}\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--model", default="inrnet2", choices=["inrnet2", "inrnet4"])
    parser.add_argument("--config", default=None,
                        help="config under experiments/configs (default fashion_mnist/<model>.yaml)")
    parser.add_argument("--shipped", action="store_true",
                        help="also test the shipped inrnet4 weights (pretrained='fashion_mnist') with each scheme")
    parser.add_argument("--test-split", default="test", help="default: the SIREN test split")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget per scheme")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/table_e1")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    acc, steps = {}, {}
    config = args.config or f"fashion_mnist/{args.model}.yaml"
    runs = list(SCHEMES.items()) + ([("Shipped (mixed QMC)", None)] if args.shipped else [])
    for train, spec in runs:
        over = ["--data.dataset", args.dataset, "--data.val_size", "0", "--data.train_sampler", spec or "sobol:784",
                "--data.test_samplers", "[" + ",".join(SCHEMES.values()) + "]", "--data.test_split", args.test_split,
                "--trainer.max_steps", str(args.max_steps), "--trainer.check_val_every_n_epoch", "1000000",
                "--seed_everything", str(args.seed), "--data.seed", str(args.seed),
                "--trainer.enable_progress_bar", str(args.progress).lower()]
        over += ["--data.root", args.root] if args.root else []
        over += ["--data.limit_train", str(args.limit)] if args.limit else []
        over += ["--data.limit_test", str(args.limit_test)] if args.limit_test else []
        if spec is None:  # the shipped weights: no training step, only recalibration if the config asks
            over += ["--model.init_args.model", "inrnet4", "--model.init_args.model_kwargs.pretrained", "fashion_mnist"]
        r = fit_and_test(config, over, max_minutes=args.max_minutes, out=args.out, fit=spec is not None)
        if spec is not None:
            r["model"].trainer.save_checkpoint(Path(args.out) / f"{train.lower()}.ckpt")
        m = r["metrics"]
        acc[train] = {test: m[f"test/top1/{s.replace(':', '_')}"] for test, s in SCHEMES.items()}
        steps[train] = r["steps"]
        print(f"trained on {train} ({r['steps']} steps, {r['fit_minutes']:.1f} min): {acc[train]}", flush=True)
    info = stamp()
    info.update(command="python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
                steps=steps, config=config)
    write_json(Path(args.out) / "table_e1.json", {"info": info, "top1": acc})
    (Path(args.out) / "table_e1.md").write_text(table(acc, info))
    print(table(acc, info))
    return acc


if __name__ == "__main__":
    main()
