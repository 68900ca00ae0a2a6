"""Pretrained CNNs from timm and torchvision, converted: [`from_pretrained`][inrnet.convert.from_pretrained].

Weights come from the library's cache when present, else from the network (timm: the
Hugging Face Hub; torchvision: ``download.pytorch.org``), or from a local ``checkpoint``
file (a state dict, ``.pth`` or ``.safetensors``), which never touches the network.
[`load_cnn`][inrnet.convert.pretrained.load_cnn] names a CNN the way configs do
(``"timm/resnet18"``, ``"torchvision/efficientnet_b0"``) with its weights (the hub's, a
file, or none), and [`input_normalization`][inrnet.convert.pretrained.input_normalization]
gives the mean and standard deviation its pretrained weights expect of the inputs.

Without a network both hubs would retry for a long time (timm about 46 s) and fail deep
inside their clients. Here a missing network is detected first (``HF_HUB_OFFLINE=1`` is
respected for both sources; otherwise a TCP connection to the hub is tried for at most a
few seconds) and weights not in the cache raise a `RuntimeError` that says there is
no network and how to pass a local checkpoint. Weights that cannot be had (no network, or a
file that does not exist) raise a [`WeightsUnavailableError`][inrnet.convert.pretrained.WeightsUnavailableError].
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from inrnet.convert.graph import from_torch

__all__ = ["load_timm", "load_torchvision", "from_pretrained", "load_cnn", "input_normalization", "split_source",
           "network_available", "WeightsUnavailableError", "NoNetworkError", "WeightsFileNotFoundError",
           "PROBE_TIMEOUT", "WEIGHTS_FILE_SUFFIXES"]

PROBE_TIMEOUT = 3.0
"""Seconds a connectivity probe may take."""

WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
"""File names that [`load_cnn`][inrnet.convert.pretrained.load_cnn] reads as a local state dict."""

_TRUE = {"1", "true", "yes", "on"}


class WeightsUnavailableError(Exception):
    """Pretrained weights that cannot be had here: no network and not cached, or a file that does not exist."""


class NoNetworkError(WeightsUnavailableError, RuntimeError):
    """The weights are not in the hub's cache and there is no network to download them."""


class WeightsFileNotFoundError(WeightsUnavailableError, FileNotFoundError):
    """A local weights file (a state dict) that does not exist."""


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


def _no_network(what: str, where: str, example: str) -> NoNetworkError:
    return NoNetworkError(f"cannot download the pretrained weights of {what}: there is no network connection to "
                        f"{where} (or HF_HUB_OFFLINE=1) and they are not in the local cache. Download the weights "
                        f"elsewhere and pass the file: {example}")


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsFileNotFoundError(f"weights file {path} does not exist")
    return path


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = _existing(path)
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
        NoNetworkError: the weights are neither cached nor downloadable (a `RuntimeError`).
        WeightsFileNotFoundError: ``checkpoint`` does not exist (a `FileNotFoundError`).
    """
    import timm
    if checkpoint is not None:  # timm reads it with torch.load(weights_only=True) or safetensors
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(_existing(checkpoint))},
                                 **kwargs)
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
        NoNetworkError: the weights are neither in torch hub's cache nor downloadable (a `RuntimeError`).
        WeightsFileNotFoundError: ``checkpoint`` does not exist (a `FileNotFoundError`).
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


_LIBRARIES = ("timm", "torchvision")


def split_source(source: str) -> tuple[str, str]:
    """``"timm/resnet18"`` -> ``("timm", "resnet18")``; the library is ``timm`` or ``torchvision``.

    Raises:
        ValueError: the source does not start with ``timm/`` or ``torchvision/``.
    """
    library, _, name = str(source).partition("/")
    if library not in _LIBRARIES or not name:
        raise ValueError(f"source must be 'timm/<model name>' or 'torchvision/<model name>' (e.g. 'timm/resnet18', "
                         f"'torchvision/efficientnet_b0'), got {source!r}")
    return library, name


def _weights_kind(library: str, name: str, weights: str | os.PathLike | None) -> tuple[str, Any]:
    """``("none", None)``, ``("file", path)`` or ``("hub", torchvision enum name or None)`` for ``weights``."""
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("none", "null", "")):
        return "none", None
    if isinstance(weights, os.PathLike) or str(weights).lower().endswith(WEIGHTS_FILE_SUFFIXES):
        return "file", Path(weights)
    if weights == "pretrained":
        return "hub", "DEFAULT" if library == "torchvision" else None
    if library == "torchvision":
        import torchvision
        members = list(torchvision.models.get_model_weights(name).__members__)
        if weights in members:
            return "hub", weights
        torchvision_names = f", one of torchvision's weights of {name} ({', '.join(members)})"
    else:
        torchvision_names = ""
    raise ValueError(f"weights must be None (random initialisation), 'pretrained' (the hub's){torchvision_names}, "
                     f"or a local state dict file ({', '.join(WEIGHTS_FILE_SUFFIXES)}); got {weights!r}")


def load_cnn(source: str, weights: str | os.PathLike | None = "pretrained", **kwargs: Any) -> nn.Module:
    """The CNN ``source`` names, with ``weights``, as the library builds it (train mode).

    Args:
        source: ``"timm/<name>"`` (a timm name, optionally with its tag, ``"efficientnet_b0.ra_in1k"``)
            or ``"torchvision/<name>"``.
        weights: ``None`` (or ``"none"``): random initialisation, nothing is read.
            ``"pretrained"``: the hub's weights (timm's default tag, torchvision's ``DEFAULT``),
            from the cache or the network (see [`load_timm`][inrnet.convert.load_timm]); for
            torchvision also a weights name such as ``"IMAGENET1K_V1"``. A path ending in one of
            [`WEIGHTS_FILE_SUFFIXES`][inrnet.convert.pretrained.WEIGHTS_FILE_SUFFIXES]: a local
            state dict of this CNN (``torch.load(weights_only=True)`` or safetensors), loaded strictly.
        kwargs: passed to the library's constructor (``num_classes=``, timm's ``in_chans=``, ...).

    Raises:
        WeightsUnavailableError: no network for the hub's weights, or the file does not exist.
        ValueError: an unknown source or weights value.
    """
    library, name = split_source(source)
    kind, value = _weights_kind(library, name, weights)
    if library == "timm":
        import timm
        if kind == "none":
            return timm.create_model(name, pretrained=False, **kwargs)
        return load_timm(name, checkpoint=value, **kwargs)
    import torchvision
    if kind == "none":
        return torchvision.models.get_model(name, weights=None, **kwargs)
    if kind == "file":
        return load_torchvision(name, checkpoint=value, **kwargs)
    return load_torchvision(name, value, **kwargs)


def input_normalization(source: str, weights: str | os.PathLike | None = "pretrained"
                        ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel ``(mean, std)`` the pretrained weights of ``source`` expect of inputs in ``[0, 1]``.

    From the library's metadata, without reading or downloading weights: timm's
    ``pretrained_cfg`` of the model (its tag if ``source`` names one), or the
    ``transforms()`` of torchvision's weights enum (``weights`` if it names a member, else
    ``DEFAULT``). A local file or ``weights=None`` are taken to be (or stand in for) those
    weights.

    Args:
        source: ``"timm/<name>"`` or ``"torchvision/<name>"``.
        weights: as in [`load_cnn`][inrnet.convert.pretrained.load_cnn]; only a torchvision
            weights name changes the answer.

    Returns:
        ``(mean, std)``, one value per input channel of the pretrained CNN (3 for ImageNet).

    Raises:
        ValueError: the library has no statistics for this model.
    """
    library, name = split_source(source)
    if library == "timm":
        import timm
        cfg = timm.models.get_pretrained_cfg(name)
        mean, std = (getattr(cfg, "mean", None), getattr(cfg, "std", None)) if cfg is not None else (None, None)
    else:
        import torchvision
        kind, member = _weights_kind(library, name, weights)
        try:
            enum = torchvision.models.get_model_weights(name)
        except (ValueError, KeyError):
            enum = None
        transforms = enum[member if kind == "hub" else "DEFAULT"].transforms() if enum is not None else None
        mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    if mean is None or std is None:
        raise ValueError(f"{library} has no input mean and std for {name!r}; give them as normalize={{'mean': [...], "
                         "'std': [...]}, or normalize=False")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
