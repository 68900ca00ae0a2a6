"""Pretrained CNNs as registered INR-Nets: ``create_model("convert", source=..., input_shape=...)``.

The model ``convert`` loads a timm or torchvision CNN with its weights
([`load_cnn`][inrnet.convert.pretrained.load_cnn]), optionally keeps only its first layers
(``truncate``) and puts a new classifier on them (``head``), adapts its first convolution to
the INRs' channels, puts the input normalisation its weights expect in front, and converts
the whole with [`from_torch`][inrnet.convert.from_torch]. So a config can fine-tune a
pretrained CNN on INRs::

    model:
      class_path: inrnet.lightning.INRClassifier
      init_args:
        model: convert
        model_kwargs: {source: torchvision/efficientnet_b0, input_shape: [28, 28], weights: effnet_b0.pth,
                       in_channels: 1, truncate: "features[:3]", head: linear, num_classes: 10}

The paper's INR-Net-EN (Table E.2) is the one above: EfficientNet-B0's ``features[:3]``
(the stem and the first two MBConv stages: 24 channels at stride 4), global average
pooling and a new linear layer. The CNN that is converted is

    nn.Sequential(normalize=ImageNormalize(mean, std), cnn=<the CNN, or its kept parts>, head=<the new head>)

so the converted model's parameters are ``cnn.<the CNN's own names>`` (``cnn.features.0.0.weight``),
``head.fc.weight`` and the buffers ``normalize.mean`` / ``normalize.std``. On
``grid(input_shape)`` samples of images in ``[0, 1]`` (the range
[`INRDataModule`][inrnet.lightning.datamodule.INRDataModule] maps INR values to) it equals the CNN
on the normalised images.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from inrnet.convert import from_torch
from inrnet.convert.pretrained import NoNetworkError, input_normalization, load_cnn, split_source
from inrnet.models._registry import register_model

__all__ = ["convert", "ImageNormalize", "truncate_cnn", "adapt_input_channels"]

_PART = re.compile(r"^([A-Za-z_]\w*)(?:\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\])?$")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_GLOBAL_POOLS = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class ImageNormalize(nn.Module):
    """``(images - mean) / std`` per channel: the input normalisation of a pretrained CNN.

    The converter turns it into the same map of a field's values (a subtraction and a
    division by tensors constant in space), so it is exact on any points.

    Args:
        mean: one value per channel.
        std: one positive value per channel.
        dim: the spatial dimension of the images.

    Shapes:
        ``Tensor[B, C, *S] -> Tensor[B, C, *S]`` with ``len(S) == dim``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], dim: int = 2):
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got mean {list(mean)} and std {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        shape = (len(mean),) + (1,) * dim  # (C, 1, ..., 1) broadcasts against (B, C, *S)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(shape))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(shape))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def truncate_cnn(cnn: nn.Module, parts: str | Sequence[str]) -> nn.Sequential:
    """The parts of ``cnn`` to keep, run one after the other.

    Args:
        cnn: the CNN.
        parts: top-level submodule names of ``cnn``, each optionally sliced like a
            ``nn.Sequential`` (``"features[:3]"``, ``"blocks[1:4]"``), e.g. ``"features[:3]"`` for
            torchvision's EfficientNet, ``["conv_stem", "bn1", "blocks[:2]"]`` for timm's,
            ``["conv1", "bn1", "act1", "maxpool", "layer1"]`` for timm's ResNet. The CNN's own
            forward between them is not used: each part's output is the next one's input.

    Returns:
        ``nn.Sequential`` of the parts under their names (a slice keeps its children's names,
        so parameters keep the CNN's: ``features.0.0.weight``).

    Raises:
        ValueError: a malformed or unknown part, a slice of a module that is not a
            ``nn.Sequential``, a part named twice, or an empty result.
    """
    parts = [parts] if isinstance(parts, str) else list(parts)
    children = dict(cnn.named_children())
    kept: OrderedDict[str, nn.Module] = OrderedDict()
    for part in parts:
        match = _PART.match(str(part).strip())
        if match is None:
            raise ValueError(f"truncate part {part!r} is not '<name>' or '<name>[i:j]' (a top-level submodule of "
                             f"{type(cnn).__name__}, optionally sliced)")
        name, start, stop = match.groups()
        if name not in children:
            raise ValueError(f"truncate part {part!r}: {type(cnn).__name__} has no submodule {name!r}; its "
                             f"top-level submodules are {', '.join(children)}")
        if name in kept:
            raise ValueError(f"truncate names {name!r} twice; slice it once")
        module = children[name]
        if "[" in str(part):
            if not isinstance(module, nn.Sequential):
                raise ValueError(f"truncate part {part!r}: {name} is a {type(module).__name__}, not a nn.Sequential "
                                 "that can be sliced")
            module = module[slice(int(start) if start else None, int(stop) if stop else None)]
            if not len(module):
                raise ValueError(f"truncate part {part!r} keeps nothing of {name} ({len(children[name])} modules)")
        kept[name] = module
    if not kept:
        raise ValueError("truncate names no part of the CNN")
    return nn.Sequential(kept)


def adapt_input_channels(cnn: nn.Module, in_channels: int) -> nn.Module:
    """Make the first convolution of ``cnn`` (in module order) take ``in_channels`` channels, in place.

    Its weights are adapted as timm adapts pretrained stems (``timm.models.adapt_input_conv``):
    for 1 channel, the sum of the weights over the original channels, so the CNN computes on a
    gray image what it computed on that image repeated in every channel; for more channels,
    the weights repeated over the channels and scaled by ``C_old / C_new``. Nothing changes if
    it already takes ``in_channels``.

    Args:
        cnn: the CNN; its first convolution must be the one that reads the input.
        in_channels: the channels the INRs have.

    Returns:
        ``cnn``.

    Raises:
        ValueError: the CNN has no convolution, or a grouped first convolution.
    """
    path, conv = next(((p, m) for p, m in cnn.named_modules() if isinstance(m, _CONVS)), (None, None))
    if conv is None:
        raise ValueError(f"{type(cnn).__name__} has no convolution whose input channels could be adapted")
    old = conv.in_channels
    if old == in_channels:
        return cnn
    if conv.groups != 1:
        raise ValueError(f"cannot adapt the grouped first convolution '{path}' ({conv}) to {in_channels} channels")
    new = type(conv)(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     bias=conv.bias is not None, padding_mode=conv.padding_mode,
                     dtype=conv.weight.dtype, device=conv.weight.device)
    with torch.no_grad():
        weight = conv.weight  # (C_out, C_old, *k)
        if in_channels == 1:
            weight = weight.sum(1, keepdim=True)  # (C_out, 1, *k)
        else:
            repeats = -(-in_channels // old)
            weight = weight.repeat(1, repeats, *(1,) * (weight.dim() - 2))[:, :in_channels] * (old / in_channels)
        new.weight.copy_(weight)  # (C_out, in_channels, *k)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, name = path.rpartition(".")
    setattr(cnn.get_submodule(parent), name, new)
    return cnn


def _normalization(normalize: bool | dict | None, source: str, weights: Any, channels: int
                   ) -> tuple[list[float], list[float]] | None:
    """The ``(mean, std)`` of ``channels`` values that ``normalize`` asks for, or None for none."""
    if normalize is None or normalize is False:
        return None
    if normalize is True:
        mean, std = input_normalization(source, weights)
        if len(mean) != channels:
            if channels != 1:
                raise ValueError(f"the weights of {source} expect {len(mean)}-channel inputs (mean {list(mean)}), the "
                                 f"model takes {channels}; give normalize={{'mean': [...], 'std': [...]}} with "
                                 f"{channels} values each, or normalize=False")
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]  # a gray input: the channels' averages
        return list(mean), list(std)
    if not isinstance(normalize, dict) or set(normalize) != {"mean", "std"}:
        raise ValueError(f"normalize must be True (the weights' statistics), False, or {{'mean': [...], 'std': "
                         f"[...]}}; got {normalize!r}")
    stats = []
    for key in ("mean", "std"):
        values = normalize[key]
        values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        if len(values) not in (1, channels):
            raise ValueError(f"normalize.{key} needs 1 or {channels} values (one per input channel), got {values}")
        stats.append(values * channels if len(values) == 1 else values)
    return stats[0], stats[1]


def _feature_channels(body: nn.Module, in_channels: int, input_shape: tuple[int, ...]) -> int:
    """C of the feature map Tensor[1, C, *S] that ``body`` returns on one zero image of ``input_shape``."""
    was_training = body.training
    ref = next(body.parameters(), None)
    dummy = torch.zeros(1, in_channels, *input_shape, dtype=ref.dtype if ref is not None else torch.float32)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = body.eval()(dummy)
    finally:
        body.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 + len(input_shape):
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"head='linear' pools a feature map [B, C, *S], but the truncated CNN returns {what}")
    return out.shape[1]


@register_model("convert")
def convert(source: str, input_shape: Sequence[int], weights: str | os.PathLike | None = "pretrained",
            in_channels: int | None = None, num_classes: int | None = None, truncate: str | Sequence[str] | None = None,
            head: str | None = None, normalize: bool | dict | None = True, **cnn_kwargs: Any) -> fx.GraphModule:
    """A pretrained timm or torchvision CNN as an INR-Net (see the module docstring).

    Args:
        source: ``"timm/<name>"`` or ``"torchvision/<name>"``, e.g. ``"timm/resnet18"``,
            ``"torchvision/efficientnet_b0"``.
        input_shape: the image size ``(H, W)`` the CNN's pixel spacing is taken from
            (``[28, 28]`` for Fashion-MNIST), as in [`from_torch`][inrnet.convert.from_torch].
        weights: ``None`` or ``"none"``: random initialisation. ``"pretrained"`` (or a
            torchvision weights name, ``"IMAGENET1K_V1"``): the hub's weights, from its cache
            or the network; without either this raises the loaders' clear error. A path ending
            in ``.pt``, ``.pth``, ``.bin`` or ``.safetensors``: a local state dict of the CNN
            as the library builds it (read without running code: ``torch.load(weights_only=True)``
            or safetensors). The weights are loaded before truncation. A task module rebuilt
            from a checkpoint does not need them (see
            [`TaskModule`][inrnet.lightning.base.TaskModule]).
        in_channels: the INRs' channels; if the CNN takes another number its first
            convolution is adapted ([`adapt_input_channels`][inrnet.models.converted.adapt_input_channels]:
            for 1 channel, its weights summed over RGB). Default: the CNN's.
        num_classes: classes to predict. With ``head="linear"``: the new head's outputs
            (required). With the whole CNN: timm replaces its classifier by a new one
            (``reset_classifier``) if the weights have another class count; torchvision builds
            it with ``num_classes`` outputs, which pretrained weights must have (a new class
            count needs ``truncate`` and ``head="linear"``). A truncated CNN without a head
            returns its feature map and takes no ``num_classes``.
        truncate: ``None``: the whole CNN. Else the parts to keep, as in
            [`truncate_cnn`][inrnet.models.converted.truncate_cnn]: ``"features[:3]"``.
        head: ``None``: what the (kept part of the) CNN returns: logits, or a feature map
            (the converted model then returns a [`Field`][inrnet.field.Field]). ``"linear"``: a
            new head on the kept parts' feature map: global average pooling and
            ``nn.Linear(C, num_classes)`` (PyTorch's default initialisation).
        normalize: ``True``: ``(x - mean) / std`` with the statistics the weights expect
            ([`input_normalization`][inrnet.convert.pretrained.input_normalization]; the same
            whatever ``weights`` is, so random and pretrained initialisations share the
            architecture); for 1 input channel and 3-channel statistics, their averages (a
            gray image normalised once, instead of an RGB image normalised per channel).
            ``{"mean": [...], "std": [...]}``: these (1 value or one per input channel).
            ``False`` or ``None``: none.
        cnn_kwargs: passed to the library's constructor (``drop_rate=``, ``dropout=``, ...).

    Returns:
        The converted model (train mode), ``forward(field, query=None)``: a Field with values
        Tensor[B, N, in_channels] in ``[0, 1]`` on points of ``[-1, 1]^d`` -> logits
        Tensor[B, num_classes] (or a Field of the feature map). Its ``input_shape`` and
        ``in_channels`` attributes are set.

    Raises:
        ValueError: an unknown source, part, head or normalisation; ``num_classes`` missing
            for ``head="linear"`` or given for a truncated CNN without a head.
        WeightsUnavailableError: the weights cannot be had (no network, missing file).
    """
    library, _ = split_source(source)
    input_shape = tuple(int(s) for s in input_shape)
    if head not in (None, "linear"):
        raise ValueError(f"head must be None (the CNN's own output) or 'linear' (global average pooling and a new "
                         f"linear layer), got {head!r}")
    if head == "linear" and truncate is None:
        raise ValueError("head='linear' goes on the feature map of a truncated CNN: name the layers to keep with "
                         "truncate (e.g. truncate='features' for torchvision's EfficientNet)")
    if head == "linear" and not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"head='linear' needs num_classes (a positive integer), got {num_classes!r}")
    if truncate is not None and head is None and num_classes is not None:
        raise ValueError(f"a truncated CNN without a head returns its feature map, not {num_classes} classes: add "
                         "head='linear', or drop num_classes")
    if library == "torchvision" and truncate is None and num_classes is not None:
        cnn_kwargs["num_classes"] = num_classes
    try:
        cnn = load_cnn(source, weights, **cnn_kwargs)
    except NoNetworkError as e:
        e.add_note("create_model('convert', ...) and configs take that file as weights='path/to/file' "
                   "(model_kwargs.weights)")
        raise
    if truncate is None:
        if library == "timm" and num_classes is not None and num_classes != cnn.num_classes:
            cnn.reset_classifier(num_classes)
        body: nn.Module = cnn
    else:
        body = truncate_cnn(cnn, truncate)
    if in_channels is not None:
        adapt_input_channels(body, int(in_channels))
    channels = next(m for m in body.modules() if isinstance(m, _CONVS)).in_channels
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    stats = _normalization(normalize, source, weights, channels)
    if stats is not None:
        parts["normalize"] = ImageNormalize(*stats, dim=len(input_shape))
    parts["cnn"] = body
    if head == "linear":
        width = _feature_channels(body, channels, input_shape)
        parts["head"] = nn.Sequential(OrderedDict(pool=_GLOBAL_POOLS[len(input_shape)](1), flatten=nn.Flatten(1),
                                                  fc=nn.Linear(width, num_classes)))
    return from_torch(nn.Sequential(parts).train(), input_shape)
