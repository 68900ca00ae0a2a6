"""The shared LightningModule: a registered backbone, its optimiser, checks and checkpoints.

A task module holds one model built by name ([`inrnet.models.create_model`][inrnet.models._registry.create_model]); its
hyper-parameters are the name and keyword arguments, so a checkpoint rebuilds the same
architecture (``INRClassifier.load_from_checkpoint(path)``, or [`load_task`][inrnet.lightning.base.load_task] for any
task). Loading the weights of another architecture into it (``fit --ckpt_path``) fails
before training with both configs named. Before any step, `TaskModule.setup` checks
the model against the DataModule's INRs: coordinate dimension, channels, label kind and
range.

A backbone that starts from pretrained weights (``model: convert``,
[`inrnet.models.converted`][inrnet.models.converted]) names them in its arguments, and a checkpoint
keeps those arguments; the checkpoint's state dict supersedes the weights, so rebuilding
the task from it (``load_task``, ``inrnet test --ckpt_path``) works where they are not
available (the file is gone, no network).
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import Metric

from inrnet.convert.pretrained import WeightsUnavailableError
from inrnet.field import Field, PointSet
from inrnet.lightning.callbacks import CheckpointRNG
from inrnet.models import create_model, model_config
from inrnet.nn.conv import ContinuousConv
from inrnet.sampling import sobol

__all__ = ["TaskModule", "model_input", "num_outputs", "load_task"]

_PIXEL_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def model_input(model: nn.Module) -> tuple[str, int, int]:
    """What a backbone takes, from its first convolution.

    Returns:
        ``(kind, d, C)``: kind ``"field"`` (a continuous conv comes first) or ``"image"``
        (a ``nn.Conv{1,2,3}d``), the coordinate dimension and the input channels.

    Raises:
        ValueError: the model has no convolution to tell from.
    """
    for module in model.modules():
        if isinstance(module, ContinuousConv):
            return "field", module.dim, module.in_channels
        if type(module) in _PIXEL_CONVS:
            return "image", _PIXEL_CONVS[type(module)], module.in_channels
    raise ValueError(f"cannot tell what {type(model).__name__} takes: it has no continuous or pixel convolution")


_DRY_RUN_POINTS = 256  # Sobol points of the dummy Field: some survive every stride of the usual backbones
_DRY_RUN_PIXELS = 32  # pixels per axis of the dummy image: what a CIFAR-sized CNN needs at least


def _dry_run(model: nn.Module, kind: str, dim: int, channels: int) -> Any:
    """The model's output on one all-zeros input of the kind it takes: a Field
    values Tensor[1, 256, C] on Sobol points of ``[-1, 1]^d``, or an image Tensor[1, C, 32, ...].

    Runs in eval mode without gradients, then puts every submodule back in its own mode
    and the global RNG where it was.

    Args:
        model: the backbone.
        kind: ``"field"`` or ``"image"``, as [`model_input`][inrnet.lightning.base.model_input] tells.
        dim: the coordinate dimension d.
        channels: the input channels C.
    """
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, None)
    if kind == "field":
        points = PointSet(sobol(_DRY_RUN_POINTS, dim, seed=0, dtype=dtype, device=device))
        dummy = Field(torch.zeros(1, points.n, channels, dtype=dtype, device=device), points)
    else:
        dummy = torch.zeros(1, channels, *(_DRY_RUN_PIXELS,) * dim, dtype=dtype, device=device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            return model(dummy)
    finally:
        for m, training in modes:
            m.training = training


def num_outputs(model: nn.Module) -> int:
    """Classes a backbone predicts: its ``num_classes`` attribute where it declares one (> 0), else
    the channels of what it returns on a dummy input (logits Tensor[B, K] or Tensor[B, K, H, W],
    or a Field [B, M, K]).

    Args:
        model: the backbone; it runs once, on one dummy input, unless it declares ``num_classes``.

    Raises:
        ValueError: the model fails on the dummy input, or returns something without a class axis.
    """
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    name = type(model).__name__
    takes = model_input(model)
    try:
        out = _dry_run(model, *takes)
    except Exception as e:
        raise ValueError(f"cannot tell how many classes {name} predicts: it fails on a dummy input "
                         f"({type(e).__name__}: {e}); give the model a num_classes attribute") from e
    if isinstance(out, Field):
        return out.values.shape[-1]
    if isinstance(out, Tensor) and out.ndim >= 2:
        return out.shape[1]
    what = f"a Tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
    raise ValueError(f"cannot tell how many classes {name} predicts: it returns {what}, not logits [B, K, ...] or "
                     "a Field [B, M, K]; give the model a num_classes attribute")


class TaskModule(LightningModule):
    """Base of the task modules: builds the backbone by name and checks it can run.

    Args:
        model: a registered model name (``inrnet.models.list_models()``).
        model_kwargs: its keyword arguments (``in_channels``, ``num_classes``, ...).
        lr: learning rate (paper: AdamW at 1e-3).
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        scheduler: ``"constant"`` or ``"cosine"`` (cosine decay over ``trainer.max_steps``).
        optimizer: ``"adamw"`` (the paper's) or ``"sgd"`` (momentum 0.9).

    Pretrained weights a backbone cannot get (its builder raises a
    [`WeightsUnavailableError`][inrnet.convert.pretrained.WeightsUnavailableError]: the weights
    file does not exist, no network) do not stop the task from being built, since a checkpoint
    may supply them: the backbone is then built with ``weights=None`` (randomly initialised),
    keeps the asked-for arguments as its config, and raises that error on its first forward
    unless a checkpoint is loaded first (``load_from_checkpoint``,
    ``Trainer.fit/test(..., ckpt_path=...)``).

    Raises:
        ValueError: an unknown model name, or a model of the wrong kind for the task
            (a pixel CNN in an INR task or the reverse).
    """

    takes: ClassVar[str] = "field"
    """``"field"`` for INR-Net tasks, ``"image"`` for pixel baselines."""
    labels: ClassVar[str] = "classes"
    """``"classes"`` (labels Tensor[B]) or ``"maps"`` (label maps Tensor[B, H, W])."""

    def __init__(self, model: str = "inrnet2", model_kwargs: dict[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-2, scheduler: str = "constant", optimizer: str = "adamw"):
        super().__init__()
        if scheduler not in ("constant", "cosine"):
            raise ValueError(f"scheduler must be 'constant' or 'cosine', got {scheduler!r}")
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        self.save_hyperparameters()
        self.model, missing = _build_backbone(model, dict(model_kwargs or {}))
        kind, self.input_dim, self.in_channels = model_input(self.model)
        if kind != self.takes:
            other = {"field": "an INR-Net (it takes Fields)", "image": "a pixel model (it takes images)"}
            raise ValueError(f"{type(self).__name__} needs {other[self.takes]}, but {model!r} is {other[kind]}; "
                             f"use the {'Pixel' if kind == 'image' else 'INR'} variant of this task")
        self.num_classes = num_outputs(self.model)
        self.metrics = nn.ModuleDict()
        self._missing_weights = missing
        self._missing_weights_hook = None if missing is None else self.model.register_forward_pre_hook(
            self._weights_missing)

    def _weights_missing(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook of a backbone built without its weights: no checkpoint has supplied them."""
        raise self._missing_weights

    # checks ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "input_spec"):
            self.check_input(datamodule.input_spec())

    def check_input(self, spec: dict[str, Any]) -> None:
        """Raise ``ValueError`` unless data described by ``spec`` (see
        [`INRDataModule.input_spec`][inrnet.lightning.datamodule.INRDataModule.input_spec]) fits the model."""
        name = self.hparams.model
        if spec["dim"] != self.input_dim:
            raise ValueError(f"model {name!r} takes {self.input_dim}-d coordinates but the dataset's INRs take "
                             f"d={spec['dim']} (coords [N, {spec['dim']}] vs [N, {self.input_dim}])")
        if spec["channels"] != self.in_channels:
            raise ValueError(f"model {name!r} takes {self.in_channels} input channel(s) but the dataset's INRs "
                             f"output {spec['channels']} (values [B, N, {spec['channels']}] vs "
                             f"[B, N, {self.in_channels}]); set model_kwargs.in_channels={spec['channels']}")
        want = 0 if self.labels == "classes" else self.input_dim
        if spec["label_dims"] != want:
            what = {0: "class labels [B]", self.input_dim: f"label maps [B, {', '.join('HWD'[:self.input_dim])}]"}
            raise ValueError(f"{type(self).__name__} needs {what.get(want)}, but the dataset has labels with "
                             f"{spec['label_dims']} extra dim(s); use the "
                             f"{'segmenter' if self.labels == 'classes' else 'classifier'} task instead")
        if spec["max_label"] >= self.num_classes:
            raise ValueError(f"model {name!r} predicts {self.num_classes} classes but the dataset has label "
                             f"{spec['max_label']}; set model_kwargs.num_classes={spec['max_label'] + 1}")

    def configure_callbacks(self) -> list[CheckpointRNG]:
        """[`CheckpointRNG`][inrnet.lightning.callbacks.CheckpointRNG], so that ``fit(ckpt_path=...)``
        restores the RNGs dropout and augmentations draw from."""
        return [CheckpointRNG()]

    # optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        if self.hparams.scheduler == "constant":
            return opt
        steps = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        if steps is None:
            raise ValueError("scheduler='cosine' needs trainer.max_steps")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # metrics --------------------------------------------------------------------------
    def log_metric(self, stage: str, setting: str, name: str, build, *update: Tensor, **log_kwargs: Any) -> None:
        """Update the metric ``name`` of one stage and evaluation setting (built on first use
        by ``build()``) with ``update`` and log it as ``{stage}/{name}/{setting}``."""
        key = f"{stage}__{setting}__{name}".replace(".", "_")
        if key not in self.metrics:
            self.metrics[key] = build().to(self.device)
        metric: Metric = self.metrics[key]
        metric.update(*update)
        self.log(f"{stage}/{name}/{setting}", metric, metric_attribute=f"metrics.{key}", add_dataloader_idx=False,
                 **log_kwargs)

    # checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["inrnet"] = {"task": type(self).__name__, "model": model_config(self.model)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check that the checkpoint holds this task and architecture; its weights supersede the backbone's
        pretrained ones (those it could not load are no longer missing)."""
        saved = checkpoint.get("inrnet")
        if saved is None:
            raise ValueError("this checkpoint was not written by an inrnet task module (no 'inrnet' entry)")
        mine = {"task": type(self).__name__, "model": _jsonable(model_config(self.model))}
        theirs = {"task": saved["task"], "model": _jsonable(saved["model"])}
        if mine != theirs:
            raise ValueError(f"checkpoint holds {theirs['task']} with model {theirs['model']}, but this run "
                             f"builds {mine['task']} with model {mine['model']}; use a config of the same "
                             f"architecture, or inrnet.lightning.load_task(path) to rebuild the saved one")
        if self._missing_weights_hook is not None:
            self._missing_weights_hook.remove()
            self._missing_weights_hook = self._missing_weights = None


def _build_backbone(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, WeightsUnavailableError | None]:
    """``create_model(name, **kwargs)``, or, if its pretrained weights are unavailable, the same
    model with ``weights=None`` (its config still ``kwargs``) and the error."""
    try:
        return create_model(name, **kwargs), None
    except WeightsUnavailableError as e:
        error = e
    model = create_model(name, **{**kwargs, "weights": None})
    config = {k: v for k, v in model.config.items() if k != "weights"}
    model.config = {**config, **({"weights": kwargs["weights"]} if "weights" in kwargs else {})}  # as asked for
    error.add_note(f"model {name!r} was built without these weights (randomly initialised) so that a checkpoint "
                   "could supply them, but none was loaded before its first forward")
    return model, error


def _jsonable(value: Any) -> Any:
    """Tuples as lists, recursively (YAML gives lists where Python code gave tuples)."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _task_classes(base: type = TaskModule) -> list[type]:
    """inrnet's task modules: the subclasses of ``base`` defined in inrnet, recursively.

    ``inrnet.lightning`` imports every task module, so they are all defined by the time
    anything from it is called; subclasses defined outside inrnet are not listed.
    """
    found = []
    for cls in base.__subclasses__():
        if cls.__module__.split(".")[0] == "inrnet":
            found.append(cls)
        found.extend(_task_classes(cls))
    return found


def load_task(path: str | os.PathLike, map_location: Any = "cpu") -> TaskModule:
    """Rebuild the task module saved in a checkpoint, whatever its task and architecture.

    The file is read with ``torch.load(weights_only=True)``, by this function and by
    Lightning's ``load_from_checkpoint`` after it: only tensors and plain containers are
    unpickled, so a crafted checkpoint cannot run code (a checkpoint written by an inrnet
    task holds nothing else).

    Args:
        path: the ``.ckpt`` file.
        map_location: where to put its tensors, as in ``torch.load``.

    Raises:
        ValueError: the checkpoint holds pickled objects other than tensors and plain
            containers, or was not written by an inrnet task module.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|$)", str(e), re.MULTILINE)
        raise ValueError(f"checkpoint {str(path)!r} holds pickled objects other than tensors and plain containers "
                         f"({found.group(1) if found else e}); inrnet.lightning.load_task refuses to unpickle them, "
                         "since unpickling them could run arbitrary code") from None
    saved = checkpoint.get("inrnet") if isinstance(checkpoint, dict) else None
    tasks = {cls.__name__: cls for cls in _task_classes()}
    if not isinstance(saved, dict) or saved.get("task") not in tasks:
        raise ValueError(f"{str(path)!r} is not a checkpoint of an inrnet task module (no 'inrnet' entry naming "
                         f"one of the tasks {sorted(tasks)})")
    return tasks[saved["task"]].load_from_checkpoint(path, map_location=map_location, weights_only=True)
