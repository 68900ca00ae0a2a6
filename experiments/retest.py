"""Test a trained checkpoint under another evaluation setup: other test samplers, another quadrature.

The weights are loaded into the model the config and the overrides build (which must have
the same parameters: e.g. ``estimator`` changes how a conv integrates, not what it learns),
then ``trainer.test`` runs as ``inrnet test`` would (batch norms recalibrated per setting if
the config says so). ``inrnet test --ckpt_path`` refuses a config whose model differs from
the checkpoint's; this script is for measuring exactly such a change::

    python experiments/retest.py .cache/runs/table2/inrnet_unet.ckpt \\
        --config experiments/configs/fashion_mnist_scenes/inrnet_unet.yaml --root .cache/fashion_mnist_scenes \\
        -- --model.init_args.model_kwargs.estimator=tap_mean "--data.test_samplers=[sobol:4096, grid:64x64]"

``--pretrained TAG`` tests the package's shipped weights of the config's model instead of a
checkpoint (``create_model(name, pretrained=TAG)``), e.g. under another quadrature::

    python experiments/retest.py --pretrained fashion_mnist_scenes \\
        --config experiments/configs/fashion_mnist_scenes/inrnet_unet.yaml --root .cache/fashion_mnist_scenes \\
        -- --model.init_args.model_kwargs.estimator=tap_quadratic

Prints one JSON line: the test metrics, the overrides, the commit and the minutes taken.
The checkpoint is read with ``weights_only=True`` (no code runs); shipped weights are safetensors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="overrides for the config follow '--'")
    parser.add_argument("checkpoint", nargs="?", help="a task checkpoint (.ckpt) of the config's model")
    parser.add_argument("--pretrained", default=None, help="test the shipped weights of this tag instead")
    parser.add_argument("--config", required=True)
    parser.add_argument("--root", default=None, help="--data.root")
    parser.add_argument("--limit-test", type=int, default=None, help="test on a seeded random subset")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # everything after '--' goes to the config
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]
    if (args.checkpoint is None) == (args.pretrained is None):
        parser.error("give a checkpoint or --pretrained TAG (one of them)")
    from inrnet.cli import build

    over = ["--config", args.config, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    over += ["--data.root", args.root] if args.root else []
    over += ["--data.limit_test", str(args.limit_test)] if args.limit_test else []
    over += list(args.extra)
    trainer, task, datamodule = build(over)
    from lightning.pytorch.cli import SaveConfigCallback
    # a retest is no run: no config.yaml left in the working directory
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
    if args.pretrained is None:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state, strict=True)  # a mismatch in parameters is an error, not a partial load
    else:
        from inrnet.models import create_model, model_config
        name = model_config(task.model)["name"]
        task.model.load_state_dict(create_model(name, pretrained=args.pretrained).state_dict(), strict=True)
    start = time.monotonic()
    results = trainer.test(task, datamodule, verbose=False)
    metrics = {k: round(float(v), 4) for r in results for k, v in r.items()}
    print(json.dumps({"checkpoint": args.checkpoint or f"pretrained={args.pretrained}", "overrides": list(args.extra),
                      "metrics": metrics, "commit": commit(), "minutes": round((time.monotonic() - start) / 60, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
