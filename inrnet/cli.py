"""The ``inrnet`` command: LightningCLI subcommands with YAML configs, and ``inrnet demo``.

Usage::

    inrnet fit --config experiments/configs/fashion_mnist/inrnet2.yaml
    inrnet test --config experiments/configs/fashion_mnist/inrnet2.yaml --ckpt_path runs/.../last.ckpt
    inrnet fit --config CONFIG --trainer.accelerator auto --trainer.devices 2 --trainer.strategy ddp
    inrnet fit --print_config          # every option, with its default
    inrnet demo --out demo --steps 6000
    inrnet import my_sirens/ --out my_dataset --labels folders   # per-image state dicts -> INR dataset
    inrnet import --functa base.pth latents.pt --out my_functa   # a functa base + latents -> INR dataset
    inrnet show fashion_mnist_default --split test --out grid.png # a PNG grid of renders, labels, PSNRs

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's: the model is any task
module of [`inrnet.lightning`][inrnet.lightning] (``model: {class_path: INRClassifier, init_args: ...}``)
and the data any of its DataModules. Runs log to CSV under ``runs/`` unless the config
names another logger. Bad configs (an unknown model or dataset, INRs that do not fit the
model, a checkpoint of another architecture) stop with a message before any training.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

import inrnet.lightning  # noqa: F401  (registers the task modules and DataModules for short class names)
from inrnet.datasets.show import main as show_main
from inrnet.inr.importer import main as import_main
from inrnet.lightning.base import _jsonable
from inrnet.lightning.demo import main as demo_main

__all__ = ["main", "build", "InrnetCLI", "TRAINER_DEFAULTS"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
}
"""What ``inrnet`` changes in Lightning's Trainer defaults: CSV logs under ``runs/``."""

DESCRIPTION = ("Train and evaluate INR-Nets (Lightning). Subcommands: fit, validate, test, predict "
               "(LightningCLI, YAML configs in experiments/configs), demo (inrnet demo --help) and import "
               "(inrnet import --help: a folder of per-image SIREN state dicts, or a functa base and latents, into an "
               "INR dataset) and show (inrnet show --help: a PNG grid of a dataset's renders).")


def _architecture(model: Any) -> dict[str, Any] | None:
    """``{"class": ..., "model": ..., "model_kwargs": ...}`` of a parsed model config (None if unset)."""
    if model is None or getattr(model, "class_path", None) is None:
        return None
    args = model.get("init_args") or model.get("dict_kwargs") or {}
    args = args.as_dict() if hasattr(args, "as_dict") else dict(args)
    kwargs = args.get("model_kwargs") or {}
    return {"class": str(model.class_path).rsplit(".", 1)[-1], "model": args.get("model"),
            "model_kwargs": _jsonable(kwargs.as_dict() if hasattr(kwargs, "as_dict") else dict(kwargs))}


class InrnetCLI(LightningCLI):
    """LightningCLI that refuses ``--ckpt_path`` of another architecture than the config's.

    Lightning rebuilds the model from a checkpoint's hyper-parameters (so ``inrnet test
    --ckpt_path X`` needs no model config); when the config *does* name a model, and the
    checkpoint holds another task, backbone or backbone arguments, this stops with both
    named instead of silently training the checkpoint's architecture. ``--ckpt_path`` is
    read with ``torch.load(weights_only=True)`` (``--weights_only`` defaults to true), so a
    crafted checkpoint cannot run code.
    """

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            parser.set_defaults(weights_only=True)  # Lightning leaves it None: torch's default, which an env var flips
        return parser

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        asked = _architecture(self.config[sub].get("model")) if sub else None
        super()._parse_ckpt_path()
        saved = _architecture(self.config[sub].get("model")) if sub else None
        if asked is not None and saved is not None and asked != saved:
            raise ValueError(f"--ckpt_path {self.config[sub].get('ckpt_path')!r} holds {saved}, but the config "
                             f"asks for {asked}; drop the model from the config to use the checkpoint's, or "
                             "point to a checkpoint of the same architecture")


def _cli(args: Sequence[str] | None, run: bool) -> LightningCLI:
    argv = sys.argv
    if args is not None:  # arguments from Python: the process's own argv (e.g. pytest's) is not ours
        sys.argv = sys.argv[:1]
    try:
        return InrnetCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         trainer_defaults=TRAINER_DEFAULTS, save_config_kwargs={"overwrite": True},
                         auto_configure_optimizers=False, args=None if args is None else list(args), run=run,
                         parser_kwargs={"description": DESCRIPTION} if run else None)
    finally:
        sys.argv = argv


def build(args: Sequence[str]) -> tuple[Any, LightningModule, LightningDataModule]:
    """Parse a run's config like the command line does, without running it.

    Args:
        args: command-line style arguments without a subcommand, e.g.
            ``["--config", "experiments/configs/fashion_mnist/inrnet2.yaml", "--data.limit_train", "512"]``.

    Returns:
        ``(trainer, model, datamodule)``, ready for ``trainer.fit(model, datamodule)``.
    """
    cli = _cli(args, run=False)
    return cli.trainer, cli.model, cli.datamodule


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``inrnet`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "demo":
        demo_main(args[1:])
        return
    if args and args[0] == "import":
        import_main(args[1:])
        return
    if args and args[0] == "show":
        show_main(args[1:])
        return
    _cli(None if argv is None else args, run=True)


if __name__ == "__main__":
    main()
