"""Model registry: build any INR-Net or pixel baseline by name, rebuild it from a checkpoint.

Like timm's ``register_model`` / ``create_model``: a builder registers under a name, and
the model it returns remembers its name and keyword arguments (``model.config``) so a
checkpoint that stores the config rebuilds the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

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


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; it keeps ``{"name": name, **kwargs}`` as ``.config``."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    model.config = {"name": name, **kwargs}
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``{"name": ..., **kwargs}`` a registered model was built with."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{type(model).__name__} was not built by inrnet.models.create_model, so it has no config")
    return dict(config)
