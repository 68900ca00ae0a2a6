"""Ship a trained checkpoint as package weights: ``create_model(name, pretrained=TAG)``.

    python experiments/ship_pretrained.py runs/.../checkpoints/last.ckpt --tag fashion_mnist \\
        --test-metrics runs/.../version_1/metrics.csv --config experiments/configs/fashion_mnist/inrnet4_lattice.yaml \\
        --command "inrnet fit --config ... ; inrnet test --config ... --ckpt_path ..." --data "60000 SIRENs -> 10000 Fourier INRs"

Reads the task checkpoint with ``load_task`` (tensors only, nothing unpickled), takes the
test scores (``test/<metric>/<setting>``) from the test run's CSV log, and writes
``inrnet/models/weights/<model>.<tag>.safetensors`` with the model's config, the recipe
(the config file's text, the command, the data, the steps trained), the scores and the
provenance (commit, date, machine) in its metadata (`inrnet.models.pretrained.save_pretrained`).

``--from-pretrained MODEL:TAG`` re-ships weights the package already has, evaluated with other
``--model-kwargs`` (the same tensors, e.g. under another quadrature): the recipe and the training
provenance are kept, the scores are replaced by ``--test-metrics`` (an ``experiments/retest.py
--pretrained TAG`` run of the rebuilt model), and the re-shipping is recorded beside them::

    python experiments/ship_pretrained.py --from-pretrained inrnet_unet:fashion_mnist_scenes \\
        --model-kwargs '{"estimator": "tap_quadratic"}' --test-metrics retest.log
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from inrnet.lightning import load_task
from inrnet.models.pretrained import save_pretrained


def read_test_scores(path: str | Path) -> dict[str, float]:
    """``{"top1/sobol_784": 0.89, ...}``: the last logged value of every ``test/...`` column of a
    CSVLogger file, or the ``metrics`` of the last JSON line of an ``experiments/retest.py`` output."""
    if str(path).endswith((".json", ".jsonl", ".log")):
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.startswith("{")]
        metrics = json.loads(lines[-1]).get("metrics", {}) if lines else {}
        scores = {k[len("test/"):]: round(float(v), 6) for k, v in metrics.items() if k.startswith("test/")}
        if not scores:
            raise ValueError(f"{path} holds no retest.py line with test/... metrics")
        return scores
    scores: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key.startswith("test/") and value not in ("", None):
                    scores[key[len("test/"):]] = round(float(value), 6)
    if not scores:
        raise ValueError(f"{path} holds no test/... metrics; pass the metrics.csv of an `inrnet test` run")
    return scores


def _commit(args: argparse.Namespace) -> str:
    """``--commit``, or this checkout's HEAD."""
    return args.commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="the task checkpoint (.ckpt) to ship")
    p.add_argument("--from-pretrained", default=None, metavar="MODEL:TAG",
                   help="re-ship the package's weights MODEL:TAG with --model-kwargs instead of a checkpoint")
    p.add_argument("--tag", default=None, help="what it was trained on, e.g. fashion_mnist (checkpoints)")
    p.add_argument("--test-metrics", required=True, help="metrics.csv of the `inrnet test` run of this checkpoint, "
                   "or the output of `experiments/retest.py` (its last JSON line)")
    p.add_argument("--model-kwargs", default=None, help="JSON of model arguments that change how the weights are "
                   "evaluated, not what they are, e.g. '{\"estimator\": \"tap_mean\"}' (the model is rebuilt "
                   "with them and the weights loaded strictly; the scores must come from that model's retest)")
    p.add_argument("--config", default=None, help="the training config (its text is stored in the recipe)")
    p.add_argument("--command", default=None, help="the commands that trained and tested it")
    p.add_argument("--data", default=None, help="what it was trained and tested on")
    p.add_argument("--machine", default=f"{platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}", help="where it ran")
    p.add_argument("--commit", default=None, help="the commit the run trained on (default: this checkout's HEAD)")
    p.add_argument("--out", default=None, help="folder (default: the package's weights folder)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.from_pretrained is None):
        p.error("give a checkpoint or --from-pretrained MODEL:TAG (one of them)")
    if args.from_pretrained is not None:
        return reship(args)
    missing = [f"--{k}" for k in ("tag", "config", "command", "data") if getattr(args, k) is None]
    if missing:
        p.error(f"shipping a checkpoint needs {', '.join(missing)}")
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    task = load_task(args.checkpoint).eval()
    model = task.model
    if args.model_kwargs:
        from inrnet.models import create_model, model_config
        config = {**model_config(model), **json.loads(args.model_kwargs)}
        rebuilt = create_model(**config)
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        model = rebuilt.eval()
    commit = _commit(args)
    recipe = {"config": Path(args.config).read_text(), "command": args.command, "data": args.data,
              "global_step": int(ckpt.get("global_step", -1)), "epoch": int(ckpt.get("epoch", -1))}
    if args.model_kwargs:
        recipe["evaluated_with"] = json.loads(args.model_kwargs)
    provenance = {"commit": commit or "unknown", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "machine": args.machine, "checkpoint": str(args.checkpoint)}
    path = save_pretrained(model, args.tag, recipe=recipe, scores=read_test_scores(args.test_metrics),
                           provenance=provenance, root=args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


def reship(args: argparse.Namespace) -> int:
    """``--from-pretrained``: the package's weights, rebuilt with ``--model-kwargs`` and re-scored."""
    from inrnet.models import create_model
    from inrnet.models.pretrained import pretrained_info
    name, _, tag = args.from_pretrained.partition(":")
    if not tag or not args.model_kwargs:
        raise SystemExit("--from-pretrained MODEL:TAG needs --model-kwargs (what changes in how they are evaluated)")
    kwargs = json.loads(args.model_kwargs)
    info = pretrained_info(name, tag)
    model = create_model(name, pretrained=tag, **kwargs).eval()  # only evaluation kwargs may differ
    recipe = {**info["recipe"], "evaluated_with": {**info["recipe"].get("evaluated_with", {}), **kwargs}}
    commit = _commit(args)
    provenance = {**info["provenance"], "reshipped": {
        "commit": commit or "unknown", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": args.machine, "evaluated_with": kwargs, "scores_from": str(args.test_metrics)}}
    path = save_pretrained(model, tag, recipe=recipe, scores=read_test_scores(args.test_metrics),
                           provenance=provenance, root=args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
