"""Trained weights shipped inside the package, by model name and tag (timm's ``pretrained=``).

``create_model("inrnet4", pretrained="fashion_mnist")`` builds the model with the keyword
arguments it was trained with and loads the weights that produced the scores recorded
with them. Each entry is one safetensors file, ``inrnet/models/weights/<name>.<tag>.safetensors``
(never a pickle: loading executes no code), whose header metadata holds, as JSON strings:

* ``config``: the model's ``{"name": ..., **kwargs}`` ([`model_config`][inrnet.models._config.model_config]);
* ``recipe``: how it was trained (data, sampler, steps, optimiser, the command);
* ``scores``: what it scored, per test setting, and on which data;
* ``provenance``: commit, date and machine of the run.

[`save_pretrained`][inrnet.models.pretrained.save_pretrained] writes such a file from a model (atomically),
[`pretrained_info`][inrnet.models.pretrained.pretrained_info] reads the metadata without building anything,
[`list_pretrained`][inrnet.models.pretrained.list_pretrained] lists what ships.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from inrnet.models._config import model_config

__all__ = ["WEIGHTS_DIR", "list_pretrained", "pretrained_info", "pretrained_path", "load_pretrained",
           "save_pretrained", "resolve_kwargs"]

WEIGHTS_DIR = Path(__file__).with_name("weights")
"""Where the shipped weights live (package data)."""
_FIELDS = ("config", "recipe", "scores", "provenance")


def _check_part(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or "." in value or "/" in value or os.sep in value:
        raise ValueError(f"a pretrained {what} is a plain name without '.' or '/', got {value!r}")
    return value


def pretrained_path(name: str, tag: str, root: str | os.PathLike | None = None) -> Path:
    """The file of ``name``'s weights tagged ``tag``.

    Args:
        name: a registered model name (``"inrnet4"``).
        tag: what the weights were trained on (``"fashion_mnist"``).
        root: folder to look in (default [`WEIGHTS_DIR`][inrnet.models.pretrained.WEIGHTS_DIR]).

    Raises:
        ValueError: no such weights; the message lists the tags there are for ``name``.
    """
    folder = Path(WEIGHTS_DIR if root is None else root)
    path = folder / f"{_check_part(name, 'model name')}.{_check_part(tag, 'tag')}.safetensors"
    if not path.is_file():
        tags = [t for n, t in list_pretrained(folder) if n == name]
        have = f"tags for {name!r}: {', '.join(map(repr, tags))}" if tags else f"no weights for {name!r}"
        raise ValueError(f"no pretrained weights {name!r} tagged {tag!r} (looked for {path}); {have}")
    return path


def list_pretrained(root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """``(model name, tag)`` of every shipped set of weights, sorted."""
    folder = Path(WEIGHTS_DIR if root is None else root)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("*.safetensors"):
        parts = p.name[: -len(".safetensors")].split(".")
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return sorted(out)


def pretrained_info(name: str, tag: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The metadata of ``name``'s ``tag`` weights: ``config``, ``recipe``, ``scores``, ``provenance``.

    Reads the file's header only.

    Raises:
        ValueError: no such weights, or a header without the four JSON fields.
    """
    path = pretrained_path(name, tag, root)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    missing = [k for k in _FIELDS if k not in meta]
    if missing:
        raise ValueError(f"{path} is not an inrnet pretrained file: its metadata lacks {missing}")
    try:
        info = {k: json.loads(meta[k]) for k in _FIELDS}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata field is not JSON ({e})") from e
    if not isinstance(info["config"], dict) or info["config"].get("name") != name:
        raise ValueError(f"{path} holds weights of {info['config'].get('name')!r}, not {name!r}")
    return info


def load_pretrained(model: nn.Module, name: str, tag: str, root: str | os.PathLike | None = None) -> nn.Module:
    """Load ``name``'s ``tag`` weights into ``model`` (every key and shape must match).

    Returns:
        ``model``, with its weights and batch-norm statistics replaced.

    Raises:
        ValueError: no such weights, or keys / shapes that do not match the model.
    """
    path = pretrained_path(name, tag, root)
    state = load_file(str(path))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shape mismatches {sorted(bad)[:5]}")
    model.load_state_dict(state)
    return model


def save_pretrained(model: nn.Module, tag: str, *, recipe: dict, scores: dict, provenance: dict,
                    root: str | os.PathLike | None = None) -> Path:
    """Write a registered model's weights and metadata as ``<name>.<tag>.safetensors``, atomically.

    Args:
        model: built by [`create_model`][inrnet.models._registry.create_model] (its config is stored).
        tag: what it was trained on, e.g. ``"fashion_mnist"``.
        recipe: how it was trained (JSON-serialisable).
        scores: what it scored, per test setting (JSON-serialisable).
        provenance: commit, date, machine (JSON-serialisable).
        root: folder to write to (default [`WEIGHTS_DIR`][inrnet.models.pretrained.WEIGHTS_DIR]).

    Returns:
        The written file.
    """
    config = model_config(model)
    config.pop("pretrained", None)
    name = _check_part(config["name"], "model name")
    folder = Path(WEIGHTS_DIR if root is None else root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{_check_part(tag, 'tag')}.safetensors"
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(config, sort_keys=True), "recipe": json.dumps(recipe, sort_keys=True),
            "scores": json.dumps(scores, sort_keys=True), "provenance": json.dumps(provenance, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # package data, readable by all (mkstemp makes it private)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _as_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config's keyword arguments (JSON turns tuples into lists; builders take either)."""
    return {k: v for k, v in config.items() if k != "name"}


EVALUATION_KWARGS = ("estimator",)
"""Model arguments that change how the weights are evaluated, not what they are: a caller may
override the stored value (the stored scores are for the stored value)."""


def resolve_kwargs(name: str, tag: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments to build ``name`` with for ``tag``'s weights: the stored ones,
    with the caller's on top where they agree (or where the keyword is one of
    `EVALUATION_KWARGS`, e.g. ``estimator="sum"`` for weights shipped with ``"tap_mean"``).

    Raises:
        ValueError: the caller asks for an architecture other than the one the weights fit
            (a keyword with another value), naming the keyword and both values.
    """
    stored = _as_kwargs(pretrained_info(name, tag)["config"])
    for k, v in kwargs.items():
        if k in stored and k not in EVALUATION_KWARGS and _norm(stored[k]) != _norm(v):
            raise ValueError(f"pretrained={tag!r} weights of {name!r} are a model with {k}={stored[k]!r}, "
                             f"got {k}={v!r}; leave {k} out to use the weights")
    return {**stored, **kwargs}


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v
