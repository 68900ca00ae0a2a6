"""The config a registered model remembers: ``{"name": ..., **kwargs}`` (shared by the registry and the
pretrained weights, which store it)."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["model_config"]


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``{"name": ..., **kwargs}`` a registered model was built with."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{type(model).__name__} was not built by inrnet.models.create_model, so it has no config")
    return dict(config)
