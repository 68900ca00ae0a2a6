"""Model registry: build any INR-Net or pixel baseline by name, rebuild it from a checkpoint.

Like timm's ``register_model`` / ``create_model``: a builder registers under a name, and
the model it returns remembers its name and keyword arguments (``model.config``) so a
checkpoint that stores the config rebuilds the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from inrnet.models._config import model_config
from inrnet.models.pretrained import load_pretrained, resolve_kwargs

__all__ = ["register_model", "create_model", "list_models", "model_config"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Decorator: register a builder ``(**kwargs) -> nn.Module`` under ``name``."""
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = builder
        return builder
    return wrap


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, pretrained: str | None = None, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; it keeps ``{"name": name, **kwargs}`` as ``.config``.

    Args:
        name: a registered name ([`list_models`][inrnet.models._registry.list_models]).
        pretrained: a tag of shipped weights (``"fashion_mnist"``; see
            [`inrnet.models.pretrained`][inrnet.models.pretrained]): the model is built with the
            keyword arguments the weights were trained with and loads them, batch-norm
            statistics included. ``None``: random initialisation.
        **kwargs: the builder's keyword arguments; with ``pretrained``, any that are given
            must agree with the stored ones.

    Raises:
        ValueError: an unknown name, unknown weights, or keyword arguments that contradict them.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    if pretrained is not None:
        kwargs = resolve_kwargs(name, pretrained, kwargs)
    model = _MODELS[name](**kwargs)
    if pretrained is not None:
        load_pretrained(model, name, pretrained)
    model.config = {"name": name, **kwargs, **({"pretrained": pretrained} if pretrained is not None else {})}
    return model
