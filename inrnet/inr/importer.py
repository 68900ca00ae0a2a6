"""Bring your own INRs: import a folder of per-image SIREN state dicts as an INR dataset.

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
from inrnet.inr.siren import SirenFamily
from inrnet.inr.store import save_inrs

__all__ = ["import_inrs", "load_state_dict", "main", "LAYOUTS", "SUFFIXES", "IMPORT_RECORD"]

LAYOUTS: dict[str, re.Pattern] = {
    "siren-modules": re.compile(r"^(?:net\.)?net\.(\d+)\.0\.(weight|bias)$"),
    "siren-notebook": re.compile(r"^net\.(\d+)\.(?:linear\.)?(weight|bias)$"),
    "sequential": re.compile(r"^(\d+)\.(weight|bias)$"),
}
"""The recognised state-dict layouts: a key pattern giving (layer index, ``weight`` or ``bias``)."""

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


def main(argv: list[str] | None = None) -> INRDataset:
    """``inrnet import FOLDER --out OUT [--family siren] [--labels folders|CSV] [--omega-0 30] ...``.

    A bad folder, file or label CSV stops with its message (exit status 2).
    """
    parser = argparse.ArgumentParser(prog="inrnet import", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="folder of per-INR .pth / .pt / .safetensors state dicts")
    parser.add_argument("--out", required=True, help="the new INR dataset directory")
    parser.add_argument("--family", default=None, choices=["siren"],
                        help="the INR family (inferred from the SIREN layouts; needed for a plain nn.Sequential)")
    parser.add_argument("--labels", default=None, help="'folders' (parent folder names) or a CSV of file,label rows")
    parser.add_argument("--omega-0", type=float, default=30.0, help="hidden layers' omega_0 (default: %(default)s)")
    parser.add_argument("--first-omega-0", type=float, default=None, help="first layer's omega_0 (default: --omega-0)")
    parser.add_argument("--shard-size", type=int, default=None, help="INRs per shard (default: one shard)")
    parser.add_argument("--outermost-linear", action="store_true", default=None,
                        help="the last layer is linear (needed for the siren-modules and sequential layouts, "
                             "whose keys do not show it)")
    args = parser.parse_args(argv)
    try:
        ds = import_inrs(args.folder, args.out, family=args.family, labels=args.labels, omega_0=args.omega_0,
                         first_omega_0=args.first_omega_0, shard_size=args.shard_size,
                         outermost_linear=args.outermost_linear)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        parser.error(str(e))
    print(f"imported {len(ds)} INRs of {ds.family!r} into {args.out}")
    return ds
