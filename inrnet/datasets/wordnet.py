"""The WordNet hierarchy as ImageNet ships it, and superclasses by ancestry.

Two layouts are read: ImageNet's ``wordnet.is_a.txt`` (one ``parent child`` pair of
WordNet ids per line, with ``words.txt``, ``wnid<TAB>names``, beside it for names) and
the ILSVRC2012 devkit's ``data/meta.mat`` (``synsets`` with ``WNID``, ``words`` and
``children`` given as 1-based ``ILSVRC2012_ID``s).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["WordNet", "read_wordnet"]


class WordNet:
    """A WordNet is-a DAG.

    Args:
        parents: ``{child wnid: {parent wnids}}``.
        names: ``{wnid: "name, synonym, ..."}`` (optional).
    """

    def __init__(self, parents: Mapping[str, set[str]], names: Mapping[str, str] | None = None):
        self.parents = {k: set(v) for k, v in parents.items()}
        self.names = dict(names or {})

    def __contains__(self, wnid: str) -> bool:
        return wnid in self.parents or wnid in self.names or any(wnid in p for p in self.parents.values())

    def ancestors(self, wnid: str) -> dict[str, int]:
        """Every ancestor of ``wnid`` (itself included, at 0) and its shortest is-a distance."""
        dist = {wnid: 0}
        queue = deque([wnid])
        while queue:
            node = queue.popleft()
            for parent in self.parents.get(node, ()):
                if parent not in dist:
                    dist[parent] = dist[node] + 1
                    queue.append(parent)
        return dist

    def superclass(self, wnid: str, superclasses: Sequence[str]) -> int | None:
        """The index of the most specific of ``superclasses`` that ``wnid`` descends from.

        The rule: among the superclasses that are ancestors of ``wnid`` (or ``wnid``
        itself), drop each that is an ancestor of another of them (so a dog, also a
        carnivore, is a dog); of those left, take the nearest by is-a distance, then the
        first in ``superclasses``. None if no superclass is an ancestor.
        """
        up = self.ancestors(wnid)
        hits = [i for i, s in enumerate(superclasses) if s in up]
        specific = [i for i in hits
                    if not any(j != i and superclasses[i] in self.ancestors(superclasses[j]) for j in hits)]
        if not specific:
            return None
        return min(specific, key=lambda i: (up[superclasses[i]], i))


def _read_is_a(path: Path) -> WordNet:
    parents: dict[str, set[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not all(f.startswith("n") for f in fields):
            raise ValueError(f"{str(path)!r} line {n}: expected 'parent_wnid child_wnid', got {line!r}")
        parents.setdefault(fields[1], set()).add(fields[0])
    names = {}
    words = path.parent / "words.txt"
    if words.is_file():
        for line in words.read_text().splitlines():
            wnid, _, name = line.partition("\t")
            if name:
                names[wnid.strip()] = name.strip()
    return WordNet(parents, names)


def _read_meta_mat(path: Path) -> WordNet:
    from scipy.io import loadmat

    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{str(path)!r} is not an ImageNet devkit meta.mat with 'synsets': {e}") from e
    synsets = np.atleast_1d(synsets)
    wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    parents: dict[str, set[str]] = {}
    names = {}
    for s in synsets:
        names[str(s["WNID"])] = str(s["words"])
        for child in np.atleast_1d(s["children"]).astype(int).tolist():
            if child not in wnid_of:
                raise ValueError(f"{str(path)!r}: synset {s['WNID']} lists unknown child id {child}")
            parents.setdefault(wnid_of[child], set()).add(str(s["WNID"]))
    return WordNet(parents, names)


def read_wordnet(path: str | os.PathLike) -> WordNet:
    """Read the hierarchy from ``wordnet.is_a.txt``, a devkit ``meta.mat``, or a folder holding either.

    Raises:
        FileNotFoundError: nothing readable at ``path`` (naming what was looked for).
        ValueError: a malformed file.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "wordnet.is_a.txt", path / "meta.mat", path / "data" / "meta.mat"):
            if candidate.is_file():
                return read_wordnet(candidate)
        raise FileNotFoundError(f"no wordnet.is_a.txt, meta.mat or data/meta.mat in {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"WordNet hierarchy file {str(path)!r} does not exist")
    return _read_meta_mat(path) if path.suffix == ".mat" else _read_is_a(path)
