"""Bring your own INRs: import a folder of per-image SIREN state dicts, or a functa dataset, as an INR dataset.

Every ``*.pth`` / ``*.pt`` (read with ``torch.load(weights_only=True)``, so loading runs no
code) or ``*.safetensors`` file under the folder holds the state dict of one INR. The
items are ordered by relative path (POSIX, sorted); that order and the class names are
recorded in ``import.json`` beside the manifest. Three key layouts are recognised:

- ``siren-modules``, the vsitzmann/siren ``modules.py`` ``SingleBVPNet`` (or its
  ``FCBlock`` alone): layer ``i`` is ``net.net.{i}.0.weight`` / ``.bias`` (``net.{i}.0.*``);
  the family is SIREN.
- ``siren-notebook``, the ``Siren`` class of the ``explore_siren`` notebook: layer ``i``
  is ``net.{i}.linear.weight`` / ``.bias``, the last (linear) layer ``net.{i}.weight`` /
  ``.bias``; the family is SIREN.
- ``sequential``, a plain ``nn.Sequential`` of ``nn.Linear`` and activation modules:
  ``{i}.weight`` / ``.bias`` (gaps in ``i`` are the activations); ``family`` must say
  which.

Every layer is ``h <- sin(omega_0 * (W h + b))`` except the last, which is linear: the
reference code's convention and [`SirenFamily`][inrnet.inr.siren.SirenFamily]'s, so the
weights are copied unchanged. The layer widths are inferred from the shapes and checked:
every key is used exactly once, each layer has a 2-d weight and a matching bias, each
layer's input width is the previous one's output width, and the hidden layers share one
width; anything else is a ``ValueError`` naming the file and the parameter.

[`import_functa`][inrnet.inr.importer.import_functa] imports a functa-style dataset instead: one state dict
of the shared base (a SIREN in one of the layouts above, plus the latent-to-shift map
``nn.Linear(latent_dim, (depth - 1) * width)`` under a name holding ``modulation``,
``latent`` or ``shift``, e.g. ``latent_to_modulation.weight`` / ``.bias``) and one tensor
file of the per-item latents [n, latent_dim], into a [`FunctaFamily`][inrnet.inr.functa.FunctaFamily] dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from inrnet.inr.base import INRBatch
from inrnet.inr.dataset import INRDataset
from inrnet.inr.functa import FunctaFamily
from inrnet.inr.siren import SirenFamily
from inrnet.inr.store import save_inrs

__all__ = ["import_inrs", "import_functa", "load_state_dict", "load_tensor", "main", "LAYOUTS", "SUFFIXES",
           "IMPORT_RECORD", "MODULATION_KEY"]

LAYOUTS: dict[str, re.Pattern] = {
    "siren-modules": re.compile(r"^(?:net\.)?net\.(\d+)\.0\.(weight|bias)$"),
    "siren-notebook": re.compile(r"^net\.(\d+)\.(?:linear\.)?(weight|bias)$"),
    "sequential": re.compile(r"^(\d+)\.(weight|bias)$"),
}
"""The recognised state-dict layouts: a key pattern giving (layer index, ``weight`` or ``bias``)."""

MODULATION_KEY = re.compile(r"^(?:.*\.)?[^.]*(?:modulation|latent|shift)[^.]*(?:\.linear|\.0)?\.(weight|bias)$")
"""The keys of a functa base's latent-to-shift map (``latent_to_modulation.weight``, ``shift.bias``, ...)."""

SUFFIXES = (".pth", ".pt", ".safetensors")
"""The file suffixes read as one INR each."""

IMPORT_RECORD = "import.json"
"""The file beside the manifest naming the source folder, layout, files in item order and classes."""

_FAMILY_OF_LAYOUT = {"siren-modules": "siren", "siren-notebook": "siren", "sequential": None}


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of one state-dict file, without executing any code.

    Raises:
        ValueError: naming the file: it cannot be read, or is not a flat ``{name: Tensor}``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"cannot read the state dict {str(path)!r}: {e}") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict {{name: Tensor}}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{str(path)!r}: the entries {bad} are not tensors (a nested checkpoint? save "
                         "model.state_dict() itself)")
    return dict(state)


def _layers(state: Mapping[str, Tensor], where: str) -> tuple[str, list[tuple[Tensor, Tensor]]]:
    """The layout of ``state`` and its ``(weight [out, in], bias [out])`` layers, in order, checked."""
    layout = max(LAYOUTS, key=lambda name: sum(bool(LAYOUTS[name].match(k)) for k in state))
    pattern = LAYOUTS[layout]
    unexpected = sorted(k for k in state if not pattern.match(k))
    if not state or len(unexpected) == len(state):
        raise ValueError(f"{where}: no key fits a known layout ({', '.join(LAYOUTS)}); keys: {sorted(state)}")
    if unexpected:
        raise ValueError(f"{where}: unexpected parameters {unexpected} for the {layout!r} layout")
    found: dict[int, dict[str, tuple[str, Tensor]]] = {}
    for k, v in state.items():
        index, kind = pattern.match(k).groups()
        found.setdefault(int(index), {})[kind] = (k, v)
    layers = []
    for i in sorted(found):
        for kind in ("weight", "bias"):
            if kind not in found[i]:
                other = found[i]["bias" if kind == "weight" else "weight"][0]
                raise ValueError(f"{where}: layer {i} has {other!r} but no {kind}")
        (wk, w), (bk, b) = found[i]["weight"], found[i]["bias"]
        if w.dim() != 2:
            raise ValueError(f"{where}: {wk!r} must be a 2-d weight [out, in], got {tuple(w.shape)}")
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"{where}: {bk!r} must be [{w.shape[0]}] to match {wk!r} {tuple(w.shape)}, "
                             f"got {tuple(b.shape)}")
        if layers and w.shape[1] != layers[-1][0].shape[0]:
            raise ValueError(f"{where}: {wk!r} takes {w.shape[1]} inputs but the layer before gives "
                             f"{layers[-1][0].shape[0]}")
        layers.append((w, b))
    if len(layers) < 2:
        raise ValueError(f"{where}: a SIREN needs at least 2 linear layers, got {len(layers)}")
    hidden = sorted({w.shape[0] for w, _ in layers[:-1]})
    if len(hidden) != 1:
        raise ValueError(f"{where}: hidden layers of different widths {[w.shape[0] for w, _ in layers[:-1]]}; "
                         "inrnet's SIREN family has one width")
    return layout, layers


def _labels(files: list[str], labels: str | os.PathLike | None) -> tuple[Tensor, list[str] | None]:
    """``(Tensor[n] of int64, class names or None)`` for the files (relative POSIX paths)."""
    if labels is None:
        return torch.full((len(files),), -1, dtype=torch.long), None
    if labels == "folders":
        names = []
        for f in files:
            if "/" not in f:
                raise ValueError(f"labels='folders' needs every file in a class folder, but {f!r} is not")
            names.append(f.rsplit("/", 1)[0])
    else:
        path = Path(labels)
        if not path.is_file():
            raise FileNotFoundError(f"label CSV {str(path)!r} does not exist")
        table: dict[str, str] = {}
        with open(path, newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or (n == 1 and [c.strip() for c in row] == ["file", "label"]):
                    continue
                if len(row) != 2:
                    raise ValueError(f"label CSV {str(path)!r} line {n}: expected 'file,label', got {row}")
                name = row[0].strip().replace("\\", "/")
                if name in table:
                    raise ValueError(f"label CSV {str(path)!r} line {n}: {name!r} is listed twice")
                table[name] = row[1].strip()
        missing, extra = [f for f in files if f not in table], sorted(set(table) - set(files))
        if missing or extra:
            raise ValueError(f"label CSV {str(path)!r} does not match the files: no label for {missing}, "
                             f"rows for files that are not there: {extra}")
        names = [table[f] for f in files]
        if all(re.fullmatch(r"-?\d+", s) for s in names):
            return torch.tensor([int(s) for s in names], dtype=torch.long), None
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[s] for s in names], dtype=torch.long), classes


def _check_last_layer(state: Mapping[str, Tensor], layout: str, outermost_linear: bool | None, where: str) -> None:
    """Raise ``ValueError`` unless the last layer is known to be linear (see ``import_inrs``)."""
    if outermost_linear is False:
        raise ValueError(f"{where}: a SIREN whose last layer is a sine layer (outermost_linear=False) cannot be "
                         "imported: inrnet's SIREN family ends in a linear layer")
    if layout == "siren-notebook":
        last = max(int(LAYOUTS[layout].match(k).group(1)) for k in state)
        if f"net.{last}.linear.weight" in state:
            raise ValueError(f"{where}: its last layer 'net.{last}.linear' is a sine layer (outermost_linear=False); "
                             "inrnet's SIREN family ends in a linear layer")
    elif outermost_linear is None:
        raise ValueError(f"{where}: the keys of the {layout!r} layout do not show whether the last layer is linear "
                         "or a sine layer; pass outermost_linear=True (--outermost-linear) if it is linear, as in "
                         "the reference code's image fitting (a sine last layer is not supported)")


def import_inrs(folder: str | os.PathLike, out: str | os.PathLike, *, family: str | None = None,
                labels: str | os.PathLike | None = None, omega_0: float = 30.0,
                first_omega_0: float | None = None, shard_size: int | None = None,
                outermost_linear: bool | None = None) -> INRDataset:
    """Import a folder of per-INR state dicts (see the module docstring) into an INR dataset.

    Args:
        folder: searched recursively for ``*.pth``, ``*.pt`` and ``*.safetensors`` files.
        out: the new dataset directory (written with [`save_inrs`][inrnet.inr.store.save_inrs]).
        family: ``"siren"``; inferred from the SIREN layouts, needed for a plain ``nn.Sequential``.
        labels: ``"folders"`` (each file's parent folder, relative to ``folder``, is its
            class; classes sorted to 0, 1, ...), a CSV of ``file,label`` rows (the file's
            path relative to ``folder``; integer labels are kept, names are sorted to
            integers), or None (every label -1).
        omega_0: the frequency factor of the hidden sine layers (30 in the reference code).
        first_omega_0: that of the first layer (default: ``omega_0``).
        shard_size: INRs per shard (default: one shard).
        outermost_linear: whether the last layer is linear (the reference code's
            ``outermost_linear=True``, the only kind inrnet's SIREN family has). The
            ``siren-notebook`` keys show it (a sine last layer is ``net.{i}.linear.*`` and is
            refused); the ``siren-modules`` and ``sequential`` keys do not, so for them it must
            be given as True: a sine last layer would import without error as another function.

    Returns:
        The imported dataset: ``len`` = number of files, item ``i`` the ``i``-th file in
        sorted relative-path order, labels Tensor[n].

    Raises:
        ValueError: naming the file and parameter: an unknown layout, an unexpected, missing
            or mis-shaped parameter, a broken layer chain, files of different shapes; or a
            label CSV that misses or adds files, or an unsupported ``family``.
        FileNotFoundError: ``folder`` or the label CSV does not exist, or holds no INR file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {str(root)!r} to import INRs from")
    if family not in (None, "siren"):
        raise ValueError(f"cannot import into INR family {family!r}: the importer supports 'siren' "
                         "(sine MLPs; the Fourier family's embedding has no standard state-dict layout)")
    paths = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES),
                   key=lambda p: p.relative_to(root).as_posix())
    if not paths:
        raise FileNotFoundError(f"{str(root)!r} holds no {', '.join(SUFFIXES)} files")
    files = [p.relative_to(root).as_posix() for p in paths]
    targets, classes = _labels(files, labels)
    first = omega_0 if first_omega_0 is None else first_omega_0
    inr_family: SirenFamily | None = None
    layout0 = None
    params: dict[str, list[Tensor]] = {}
    for path in paths:
        where = str(path)
        state = load_state_dict(path)
        layout, layers = _layers(state, where)
        name = family or _FAMILY_OF_LAYOUT[layout]
        if name is None:
            raise ValueError(f"{where}: a plain nn.Sequential state dict does not say its activation; "
                             "pass family='siren' (with omega_0)")
        _check_last_layer(state, layout, outermost_linear, where)
        candidate = SirenFamily(in_features=layers[0][0].shape[1], out_features=layers[-1][0].shape[0],
                                width=layers[0][0].shape[0], depth=len(layers), omega_0=omega_0,
                                first_omega_0=first)
        if inr_family is None:
            inr_family, layout0 = candidate, layout
        elif candidate != inr_family or layout != layout0:
            raise ValueError(f"{where}: a {layout!r} {candidate!r}, but {str(paths[0])!r} is a {layout0!r} "
                             f"{inr_family!r}; one dataset holds INRs of one architecture")
        for i, (w, b) in enumerate(layers):
            params.setdefault(f"weight{i}", []).append(w.detach().float())
            params.setdefault(f"bias{i}", []).append(b.detach().float())
    batch = INRBatch(inr_family, {k: torch.stack(v) for k, v in params.items()})  # (n, *shape)
    save_inrs(out, batch, targets, shard_size=shard_size)
    record = {"source": str(root), "layout": layout0, "files": files, "classes": classes}
    (Path(out) / IMPORT_RECORD).write_text(json.dumps(record, indent=1))
    return INRDataset(out)


def load_tensor(path: str | os.PathLike, key: str) -> Tensor:
    """The one tensor of a file (``.safetensors``, or ``.pt`` / ``.pth`` read with ``weights_only=True``).

    Args:
        path: a file holding a Tensor, or a ``{name: Tensor}`` with one entry or an entry ``key``.
        key: the entry to take from a file of several.

    Raises:
        ValueError: naming the file: it cannot be read, or holds no single tensor (nor ``key``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {str(path)!r}")
    try:
        data = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                 weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"cannot read the tensor file {str(path)!r}: {e}") from e
    if isinstance(data, Mapping):
        if key in data:
            data = data[key]
        elif len(data) == 1:
            (data,) = data.values()
        else:
            raise ValueError(f"{str(path)!r} holds the entries {sorted(data)}; expected one tensor or an entry {key!r}")
    if not isinstance(data, Tensor):
        raise ValueError(f"{str(path)!r} holds a {type(data).__name__}, not a Tensor")
    return data


def _functa_labels(labels, n: int) -> tuple[Tensor, list[str] | None]:
    """``(Tensor[n] of int64, class names or None)`` from import_functa's ``labels``."""
    if labels is None:
        return torch.full((n,), -1, dtype=torch.long), None
    classes = None
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if path.suffix in SUFFIXES:
            labels = load_tensor(path, "labels")
        else:
            if not path.is_file():
                raise FileNotFoundError(f"label file {str(path)!r} does not exist")
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if all(re.fullmatch(r"-?\d+", t) for t in names):
                labels = [int(t) for t in names]
            else:
                classes = sorted(set(names))
                labels = [classes.index(t) for t in names]
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"functa labels must be n integers, got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} latents; give one label per latent")
    return labels.long(), classes


def import_functa(base_path: str | os.PathLike, latents_path: str | os.PathLike, labels=None,
                  out: str | os.PathLike | None = None, *, omega_0: float = 30.0, first_omega_0: float | None = None,
                  value_range: tuple[float, float] = (-1.0, 1.0), shard_size: int | None = None) -> INRDataset:
    """Import a functa dataset (a shared base + per-item latents, see the module docstring).

    Args:
        base_path: a state dict of the base (``.pth`` / ``.pt``, read with
            ``weights_only=True``, or ``.safetensors``): SIREN layers in a layout of
            `LAYOUTS` (``nn.Linear`` weights [out, in], the last layer linear) and the shift
            map ``nn.Linear(latent_dim, (depth - 1) * width)`` (keys matching `MODULATION_KEY`),
            whose output is the shifts of the hidden layers in order, ``width`` each.
        latents_path: a tensor file of the latents Tensor[n, latent_dim] (a single tensor, or
            the entry ``latents``).
        labels: None (every label -1), a Tensor / sequence of n integers, a tensor file, or a
            text file with one label per line (integers kept; names sorted to 0, 1, ...).
        out: the new dataset directory.
        omega_0: the hidden sine layers' frequency factor.
        first_omega_0: the first layer's (default: ``omega_0``).
        value_range: the output range the base was trained to (default ``[-1, 1]``, the SIREN
            convention; the [`fit`][inrnet.inr.fitting.fit] and render mappings use it).
        shard_size: INRs per shard (default: one shard).

    Returns:
        The dataset: item ``i`` is latent ``i``, labels Tensor[n]; its family a
        [`FunctaFamily`][inrnet.inr.functa.FunctaFamily] with the base bound.

    Raises:
        ValueError: naming the file and parameter: an unknown layout, missing or several
            shift maps, a shift map or latents whose shape does not fit the base, labels of
            another count.
        FileNotFoundError: a file does not exist.
    """
    if out is None:
        raise ValueError("import_functa needs out=, the new dataset directory")
    base_path = Path(base_path)
    if not base_path.is_file():
        raise FileNotFoundError(f"no functa base state dict {str(base_path)!r}")
    where = str(base_path)
    state = load_state_dict(base_path)
    mod = {k: v for k, v in state.items() if MODULATION_KEY.match(k)}
    kinds = {MODULATION_KEY.match(k).group(1): k for k in mod}
    if len(mod) != 2 or set(kinds) != {"weight", "bias"}:
        raise ValueError(f"{where}: a functa base needs one shift map (a weight and a bias whose names hold "
                         f"'modulation', 'latent' or 'shift', e.g. 'latent_to_modulation.weight'); found {sorted(mod)}")
    layers_state = {k: v for k, v in state.items() if k not in mod}
    layout, layers = _layers(layers_state, where)
    _check_last_layer(layers_state, layout, True, where)
    mw, mb = state[kinds["weight"]], state[kinds["bias"]]
    width, depth = layers[0][0].shape[0], len(layers)
    shifts = (depth - 1) * width
    if mw.dim() != 2 or mw.shape[0] != shifts:
        raise ValueError(f"{where}: the shift map {kinds['weight']!r} must be [(depth - 1) * width = {shifts}, "
                         f"latent_dim] for the base's {depth - 1} sine layers of width {width}, got {list(mw.shape)}")
    if tuple(mb.shape) != (shifts,):
        raise ValueError(f"{where}: the shift map bias {kinds['bias']!r} must be [{shifts}], got {list(mb.shape)}")
    family = FunctaFamily(in_features=layers[0][0].shape[1], out_features=layers[-1][0].shape[0], width=width,
                          depth=depth, latent_dim=mw.shape[1], omega_0=omega_0,
                          first_omega_0=omega_0 if first_omega_0 is None else first_omega_0,
                          value_range=value_range)
    base = {"shift_weight": mw.float(), "shift_bias": mb.float()}
    for i, (w, b) in enumerate(layers):
        base[f"weight{i}"], base[f"bias{i}"] = w.float(), b.float()
    family = family.with_shared(base)
    latents = load_tensor(latents_path, "latents")
    if latents.dim() != 2 or latents.shape[1] != family.latent_dim or not latents.is_floating_point():
        raise ValueError(f"{str(latents_path)!r}: the latents must be floating [n, latent_dim={family.latent_dim}] "
                         f"(the width of the shift map {kinds['weight']!r} {list(mw.shape)}), got "
                         f"{latents.dtype} {list(latents.shape)}")
    if len(latents) == 0:
        raise ValueError(f"{str(latents_path)!r} holds no latents")
    targets, classes = _functa_labels(labels, len(latents))
    save_inrs(out, INRBatch(family, {"latent": latents.detach().float()}), targets, shard_size=shard_size)
    record = {"source": {"base": str(base_path), "latents": str(latents_path)}, "layout": f"functa+{layout}",
              "files": None, "classes": classes}
    (Path(out) / IMPORT_RECORD).write_text(json.dumps(record, indent=1))
    return INRDataset(out)


def main(argv: list[str] | None = None) -> INRDataset:
    """``inrnet import FOLDER --out OUT [--family siren] [--labels folders|CSV] [--omega-0 30] ...``,
    or ``inrnet import --functa BASE LATENTS --out OUT [--labels FILE]`` for a functa dataset.

    A bad folder, file or label CSV stops with its message (exit status 2).
    """
    parser = argparse.ArgumentParser(prog="inrnet import", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=None,
                        help="folder of per-INR .pth / .pt / .safetensors state dicts")
    parser.add_argument("--functa", nargs=2, metavar=("BASE", "LATENTS"), default=None,
                        help="import a functa dataset instead: the base's state dict and the latents [n, L] file")
    parser.add_argument("--out", required=True, help="the new INR dataset directory")
    parser.add_argument("--family", default=None, choices=["siren"],
                        help="the INR family (inferred from the SIREN layouts; needed for a plain nn.Sequential)")
    parser.add_argument("--labels", default=None,
                        help="'folders' (parent folder names) or a CSV of file,label rows; with --functa a "
                             "tensor file or a text file of one label per line")
    parser.add_argument("--omega-0", type=float, default=30.0, help="hidden layers' omega_0 (default: %(default)s)")
    parser.add_argument("--first-omega-0", type=float, default=None, help="first layer's omega_0 (default: --omega-0)")
    parser.add_argument("--shard-size", type=int, default=None, help="INRs per shard (default: one shard)")
    parser.add_argument("--outermost-linear", action="store_true", default=None,
                        help="the last layer is linear (needed for the siren-modules and sequential layouts, "
                             "whose keys do not show it)")
    args = parser.parse_args(argv)
    if (args.folder is None) == (args.functa is None):
        parser.error("give either a FOLDER of state dicts or --functa BASE LATENTS")
    try:
        if args.functa is not None:
            ds = import_functa(*args.functa, args.labels, args.out, omega_0=args.omega_0,
                               first_omega_0=args.first_omega_0, shard_size=args.shard_size)
        else:
            ds = import_inrs(args.folder, args.out, family=args.family, labels=args.labels, omega_0=args.omega_0,
                             first_omega_0=args.first_omega_0, shard_size=args.shard_size,
                             outermost_linear=args.outermost_linear)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        parser.error(str(e))
    print(f"imported {len(ds)} INRs of {ds.family!r} into {args.out}")
    return ds
