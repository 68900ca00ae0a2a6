"""Table 2 on the Fashion-MNIST scenes: INR-Nets against their pixel twins, at 1x and 2x.

Three pairs, each trained with the same budget (steps, batch, optimiser, schedule) from the
configs in ``experiments/configs/fashion_mnist_scenes``: INR-Net-3 / FCN-3, INR-Net-5 /
FCN-5 (the paper's Table 2 models) and the multi-scale INR-Net (``inrnet_unet``, the
paper's Fig. 2 right: down/up-sampling with skip merges) / its pixel U-Net. Every model is
scored on the test scenes at the 64x64 label coordinates, mIoU (macro over the 11
classes) and pixel accuracy, with its input at 1x (64x64 grid; the INR-Nets also on 4096
Sobol points) and at 2x (128x128 grid, where the pixel models see the canvas upsampled;
the INR-Nets also on 16384 Sobol points), batch norms recalibrated per setting::

    python experiments/table2.py --root .cache/fashion_mnist_scenes --out runs/table2
    python experiments/table2.py --out runs/table2 --models inrnet_unet unet   # one pair
    python experiments/table2.py --out runs/table2 --table                     # print the table
    python experiments/table2.py --out runs/x --models inrnet3 -- --data.train_sampler=sobol:8192-16384

Resumable: each model trains into ``OUT/fashion_mnist_scenes_<model>/version_0`` and a rerun
continues from its ``last.ckpt``; a finished model's scores are in ``OUT/<model>.json``
(written atomically) and a rerun skips it. Several processes may train different models
of the same ``OUT`` at once. ``OUT/table2.md`` is rewritten from all finished models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CONFIGS, stamp, write_json  # noqa: E402

PAIRS = [("inrnet3", "fcn3", "INR-Net-3", "FCN-3"), ("inrnet5", "fcn5", "INR-Net-5", "FCN-5"),
         ("inrnet_unet", "unet", "multi-scale INR-Net (U-Net)", "pixel U-Net")]
MODELS = [m for pair in PAIRS for m in pair[:2]]
SETTINGS = [("grid_64x64", "1x", "64x64 grid"), ("sobol_4096", "1x", "4096 Sobol"),
            ("grid_128x128", "2x", "128x128 grid"), ("sobol_16384", "2x", "16384 Sobol")]


def run_model(model: str, args: argparse.Namespace) -> dict:
    """Fit (resuming from ``last.ckpt``) and test one model; returns its record."""
    from inrnet.cli import build

    out = Path(args.out)
    name = f"fashion_mnist_scenes_{model}"
    over = ["--config", str(CONFIGS / "fashion_mnist_scenes" / f"{model}.yaml"),
            "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.version", "0",
            "--trainer.enable_progress_bar", "false", "--seed_everything", str(args.seed),
            "--data.seed", str(args.seed)]
    over += ["--data.root", args.root] if args.root else []
    over += ["--trainer.max_steps", str(args.max_steps)] if args.max_steps else []
    over += ["--data.limit_train", str(args.limit)] if args.limit else []
    over += ["--data.limit_test", str(args.limit_test)] if args.limit_test else []
    over += list(args.extra)
    trainer, task, datamodule = build(over)
    last = out / name / "version_0" / "checkpoints" / "last.ckpt"
    start = time.monotonic()
    trainer.fit(task, datamodule, ckpt_path=str(last) if last.is_file() else None)
    fit_minutes = (time.monotonic() - start) / 60
    trainer.save_checkpoint(out / f"{model}.ckpt")
    start = time.monotonic()
    results = trainer.test(task, datamodule, verbose=False)
    metrics = {k: float(v) for r in results for k, v in r.items()}
    info = stamp()
    info.update(command="python " + " ".join(sys.argv), threads=os.environ.get("OMP_NUM_THREADS", "default"))
    return {"model": model, "steps": trainer.global_step, "fit_minutes_this_run": round(fit_minutes, 2),
            "test_minutes": round((time.monotonic() - start) / 60, 2), "metrics": metrics, "info": info}


def table(out: Path) -> str:
    """Markdown of every finished model in ``out``: mIoU / pixel accuracy per setting."""
    records = {m: json.loads((out / f"{m}.json").read_text()) for m in MODELS if (out / f"{m}.json").is_file()}
    head = "| model | steps | " + " | ".join(f"{s} ({scale}) mIoU / pix. acc." for _, scale, s in SETTINGS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(SETTINGS)]
    for inr, pix, inr_title, pix_title in PAIRS:
        for model, title in ((inr, inr_title), (pix, pix_title)):
            if model not in records:
                continue
            m = records[model]["metrics"]
            cells = [f"{m[f'test/miou/{key}']:.3f} / {m[f'test/pixacc/{key}']:.1%}" if f"test/miou/{key}" in m
                     else "—" for key, _, _ in SETTINGS]
            lines.append(f"| {title} (`{model}`) | {records[model]['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="folder holding the built scene splits (train/, test/)")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--out", default="runs/table2")
    parser.add_argument("--max-steps", type=int, default=None, help="override every config's max_steps")
    parser.add_argument("--limit", type=int, default=None, help="train on a seeded random subset")
    parser.add_argument("--limit-test", type=int, default=None, help="test on a seeded random subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="only print the table of the finished models")
    parser.add_argument("extra", nargs="*", help="more overrides for every model after '--', e.g. "
                        "-- --model.init_args.model_kwargs.stem_oversample=2")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for model in args.models:
            if (out / f"{model}.json").is_file():
                print(f"{model}: done, skipped ({out / f'{model}.json'})", flush=True)
                continue
            record = run_model(model, args)
            write_json(out / f"{model}.json", record)
            print(model, record["steps"], {k: round(v, 4) for k, v in record["metrics"].items()}, flush=True)
    text = table(out)
    (out / "table2.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
