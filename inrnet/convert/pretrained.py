"""Pretrained CNNs from timm and torchvision, converted: [`from_pretrained`][inrnet.convert.from_pretrained].

Weights come from the library's cache when present, else from the network (timm: the
Hugging Face Hub; torchvision: ``download.pytorch.org``), or from a local ``checkpoint``
file (a state dict, ``.pth`` or ``.safetensors``), which never touches the network.

Without a network both hubs would retry for a long time (timm about 46 s) and fail deep
inside their clients. Here a missing network is detected first (``HF_HUB_OFFLINE=1`` is
respected for both sources; otherwise a TCP connection to the hub is tried for at most a
few seconds) and weights not in the cache raise a `RuntimeError` that says there is
no network and how to pass a local checkpoint.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from inrnet.convert.graph import from_torch

__all__ = ["load_timm", "load_torchvision", "from_pretrained", "network_available", "PROBE_TIMEOUT"]

PROBE_TIMEOUT = 3.0
"""Seconds a connectivity probe may take."""

_TRUE = {"1", "true", "yes", "on"}


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def network_available(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included).

    Always ``False`` when ``HF_HUB_OFFLINE=1``.
    """
    if _offline_flag():
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores the socket timeout
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _no_network(what: str, where: str, example: str) -> RuntimeError:
    return RuntimeError(f"cannot download the pretrained weights of {what}: there is no network connection to "
                        f"{where} (or HF_HUB_OFFLINE=1) and they are not in the local cache. Download the weights "
                        f"elsewhere and pass the file: {example}")


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_timm(name: str, *, checkpoint: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)``, failing fast without a network.

    Args:
        name: a timm model name, e.g. ``"resnet18"`` or ``"efficientnet_b0.ra_in1k"``.
        checkpoint: a local state dict to load instead of the Hub's weights.

    Raises:
        RuntimeError: the weights are neither cached nor downloadable (no network).
    """
    import timm
    if checkpoint is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}, **kwargs)
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    example = f"inrnet.convert.pretrained.load_timm({name!r}, checkpoint='path/to/{name}.safetensors')"
    online = network_available("huggingface.co")
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or not online  # offline: the cache only, no retries
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except LocalEntryNotFoundError as e:
        raise _no_network(f"timm model {name!r}", "the Hugging Face Hub", example) from e
    except OSError as e:
        if online:
            raise
        raise _no_network(f"timm model {name!r}", "the Hugging Face Hub", example) from e
    finally:
        constants.HF_HUB_OFFLINE = previous


def load_torchvision(name: str, weights: str = "DEFAULT", *, checkpoint: str | os.PathLike | None = None,
                     **kwargs) -> nn.Module:
    """``torchvision.models.get_model(name, weights=weights, **kwargs)``, failing fast without a network.

    Args:
        name: a torchvision model name, e.g. ``"resnet18"``, ``"efficientnet_b0"``.
        weights: a weight enum member name (``"IMAGENET1K_V1"``) or ``"DEFAULT"``.
        checkpoint: a local state dict to load instead.

    Raises:
        RuntimeError: the weights are neither in torch hub's cache nor downloadable.
    """
    import torchvision
    if checkpoint is not None:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        model.load_state_dict(_read_state_dict(checkpoint))
        return model
    enum = torchvision.models.get_model_weights(name)[weights]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum.url).path)
    example = f"inrnet.convert.pretrained.load_torchvision({name!r}, checkpoint='path/to/{cached.name}')"
    if not cached.is_file() and not network_available(urlparse(enum.url).hostname):
        raise _no_network(f"torchvision model {name!r} ({enum})", urlparse(enum.url).hostname, example)
    try:
        return torchvision.models.get_model(name, weights=enum, **kwargs)
    except OSError as e:  # urllib's URLError is an OSError
        raise _no_network(f"torchvision model {name!r} ({enum})", urlparse(enum.url).hostname, example) from e


def from_pretrained(name: str, input_shape: Sequence[int], *, source: str = "timm",
                    checkpoint: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """Load a pretrained CNN ([`load_timm`][inrnet.convert.load_timm] or [`load_torchvision`][inrnet.convert.load_torchvision]) and convert it.

    Args:
        name: the model name in ``source``.
        input_shape: passed to [`inrnet.convert.from_torch`][inrnet.convert.from_torch].
        source: ``"timm"`` or ``"torchvision"``.
        checkpoint: a local state dict instead of downloaded weights.
        kwargs: passed to the loader (e.g. ``weights="IMAGENET1K_V1"``, ``num_classes=``).

    Returns:
        The converted model (eval mode).
    """
    if source == "timm":
        cnn = load_timm(name, checkpoint=checkpoint, **kwargs)
    elif source == "torchvision":
        cnn = load_torchvision(name, checkpoint=checkpoint, **kwargs)
    else:
        raise ValueError(f"source must be 'timm' or 'torchvision', got {source!r}")
    return from_torch(cnn.eval(), input_shape)
