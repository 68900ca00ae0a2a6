"""The catalogue of what the converter supports, rendered from its rule tables.

[`supported_markdown`][inrnet.convert.catalog.supported_markdown] lists every module type of
`inrnet.convert.registry.RULES` (after [`load_zoo_rules`][inrnet.convert.load_zoo_rules]) and every
function and Tensor method of `inrnet.convert.function_rules.FUNCTION_RULES`, one row per rule,
with the first paragraph of the rule's docstring. The section *Supported modules and functions*
of ``docs/conversion.md`` is this text, between the markers `BEGIN` and `END`:

```text
python -m inrnet.convert.catalog --write docs/conversion.md   # regenerate the section
python -m inrnet.convert.catalog --check docs/conversion.md   # exit 1 if it is stale
python -m inrnet.convert.catalog                              # print it
```
"""

from __future__ import annotations

import argparse
import difflib
import functools
import inspect
import operator
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from inrnet.convert.function_rules import FUNCTION_RULES
from inrnet.convert.registry import RULES
from inrnet.convert.zoo_rules import load_zoo_rules

__all__ = ["BEGIN", "END", "REGENERATE", "supported_markdown", "read_section", "write_section", "main"]

BEGIN = "<!-- supported:begin -->"
"""The line before the generated section of a Markdown file."""

END = "<!-- supported:end -->"
"""The line after the generated section of a Markdown file."""

REGENERATE = "python -m inrnet.convert.catalog --write {path}"
"""The command that regenerates the section of the file ``path``."""

_LIBRARIES = ("torch", "torchvision", "timm")
_NO_DOCSTRING = "—"
_OPERATORS = {operator.add: "+", operator.iadd: "+=", operator.sub: "-", operator.isub: "-=", operator.mul: "*",
              operator.imul: "*=", operator.truediv: "/", operator.itruediv: "/=", operator.floordiv: "//",
              operator.ifloordiv: "//=", operator.mod: "%", operator.imod: "%=", operator.pow: "**",
              operator.ipow: "**=", operator.matmul: "@", operator.imatmul: "@=", operator.neg: "-x",
              operator.pos: "+x"}
_NAMESPACES = (("F", F), ("torch", torch), ("operator", operator))
_LINK = re.compile(r"\[([^\[\]]+)\]\[[^\[\]]*\]")


def _shortest_path(obj: Any) -> str | None:
    """``obj``'s name in the shortest package of its ``__module__`` path that exports it, if any."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        found = sys.modules.get(".".join(parts[:i]))
        for name in qualname.split("."):
            found = getattr(found, name, None)
        if found is obj:
            return ".".join([*parts[:i], qualname])
    return f"{module}.{qualname}"


def _type_name(cls: type) -> str:
    """A module type's public qualified name (``torch.nn.Conv2d``, not ``torch.nn.modules.conv.Conv2d``)."""
    return _shortest_path(cls) or repr(cls)


def _target_name(target: Any) -> str:
    """How a function rule's target is written: ``+``, ``torch.cat``, ``F.relu``, ``Tensor.view``, ``getattr``."""
    if isinstance(target, tuple):
        if len(target) == 2 and target[0] == "method":
            return f"Tensor.{target[1]}"
        return repr(target)
    if isinstance(target, str):
        return repr(target)
    try:
        if target in _OPERATORS:
            return _OPERATORS[target]
    except TypeError:  # unhashable targets are not in the table either
        pass
    name = getattr(target, "__name__", None)
    if isinstance(name, str):
        for prefix, namespace in _NAMESPACES:
            if getattr(namespace, name, None) is target:
                return f"{prefix}.{name}"
        if getattr(target, "__module__", None) == "builtins":
            return name
    return _shortest_path(target) or type(target).__name__


def _rule_function(rule: Callable) -> Callable:
    """The function behind a rule (a ``functools.partial``'s function)."""
    return rule.func if isinstance(rule, functools.partial) else rule


def _rule_name(rule: Callable) -> str:
    """The rule as Markdown: ``pointwise_rules.elementwise``, or where a lambda is defined."""
    fn = _rule_function(rule)
    path = _shortest_path(fn) if hasattr(fn, "__qualname__") else None
    if path is None:
        path = f"{type(fn).__module__}.{type(fn).__qualname__}"
    path = path.removeprefix("inrnet.convert.")
    if path.endswith(".<locals>.<lambda>"):
        return f"lambda in `{path.removesuffix('.<locals>.<lambda>')}`"
    if path.endswith("<lambda>"):
        return f"lambda in `{path.removesuffix('.<lambda>')}`"
    name = f"`{path}`"
    return f"`functools.partial` of {name}" if fn is not rule else name


def _summary(rule: Callable) -> str:
    """The first paragraph of the rule's docstring on one line (cross-reference links as their text)."""
    doc = getattr(_rule_function(rule), "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return _NO_DOCSTRING
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return _cell(_LINK.sub(r"\1", " ".join(paragraph.split())))


def _cell(text: str) -> str:
    """``text`` safe in a Markdown table cell."""
    return text.replace("|", "\\|")


def _library(cls: type) -> str:
    """The top-level package a module type comes from."""
    return str(getattr(cls, "__module__", "") or "").split(".")[0] or "builtins"


def _rows(table: dict[Any, Callable], name: Callable[[Any], str]) -> list[tuple[list[str], Callable]]:
    """One ``(sorted names of the keys, rule)`` per rule of ``table``, sorted by the names."""
    by_rule: dict[int, tuple[list[str], Callable]] = {}
    for key, rule in table.items():
        by_rule.setdefault(id(rule), ([], rule))[0].append(name(key))
    rows = [(sorted(set(names)), rule) for names, rule in by_rule.values()]
    return sorted(rows, key=lambda row: (row[0], _rule_name(row[1])))


def _table(header: str, rows: Iterable[tuple[list[str], Callable]]) -> list[str]:
    lines = [f"| {header} | Rule | Summary |", "|---|---|---|"]
    for names, rule in rows:
        lines.append(f"| {', '.join(f'`{_cell(n)}`' for n in names)} | {_rule_name(rule)} | {_summary(rule)} |")
    return lines


def supported_markdown() -> str:
    """The Markdown catalogue of the module types, functions and Tensor methods the converter supports.

    Runs [`load_zoo_rules`][inrnet.convert.load_zoo_rules] first, so torchvision's and timm's module types
    are listed. Module types are grouped by the library they come from (``torch``,
    ``torchvision``, ``timm``, then any other, sorted), one row per rule and library; functions
    and methods one row per rule. The output depends only on the rule tables (sorted throughout).

    Returns:
        Markdown (level-3 headings and tables), ending with a newline.
    """
    load_zoo_rules()
    groups: dict[str, dict[type, Callable]] = {}
    for cls, rule in RULES.items():
        groups.setdefault(_library(cls), {})[cls] = rule
    order = sorted(groups, key=lambda lib: (_LIBRARIES.index(lib) if lib in _LIBRARIES else len(_LIBRARIES), lib))
    lines = [f"{len(RULES)} module types and {len(FUNCTION_RULES)} functions and Tensor methods have a rule. "
             "A subclass of a listed type uses its rule if it keeps its `forward`. Summary: the first paragraph "
             f"of the rule's docstring ({_NO_DOCSTRING} where the rule has none).", ""]
    for lib in order:
        lines += [f"### Modules from `{lib}`", ""]
        lines += _table("Module types", _rows(groups[lib], _type_name))
        lines.append("")
    lines += ["### Functions and Tensor methods on feature maps", "",
              "`F` is `torch.nn.functional`; `Tensor.name` is the method `x.name(...)` of a feature map `x`.", ""]
    lines += _table("Functions and methods", _rows(FUNCTION_RULES, _target_name))
    return "\n".join(lines) + "\n"


def _bounds(text: str) -> tuple[int, int]:
    """Where the section between the markers starts and ends in ``text``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"expected one {BEGIN} and one {END} line, found {text.count(BEGIN)} and {text.count(END)}")
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    if stop < start:
        raise ValueError(f"{END} comes before {BEGIN}")
    return start, stop


def read_section(text: str) -> str:
    """The generated section of a Markdown file.

    Args:
        text: the file's text, with one `BEGIN` and one `END` marker.

    Returns:
        The text between the markers without its leading and trailing blank lines, ending with a
        newline (what [`supported_markdown`][inrnet.convert.catalog.supported_markdown] returns when
        it is current).

    Raises:
        ValueError: if the markers are missing, repeated or out of order.
    """
    start, stop = _bounds(text)
    return text[start:stop].strip("\n") + "\n"


def write_section(text: str, content: str) -> str:
    """Replace the generated section of a Markdown file; the rest of the file is kept as it is.

    Args:
        text: the file's text, with one `BEGIN` and one `END` marker.
        content: the new section (Markdown).

    Returns:
        The file's new text, with blank lines around ``content`` inside the markers.

    Raises:
        ValueError: if the markers are missing, repeated or out of order.
    """
    start, stop = _bounds(text)
    body = content.strip("\n")
    return f"{text[:start]}\n\n{body}\n\n{text[stop:]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the catalogue, or write it into a Markdown file, or check that the file has it.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``): none (print), ``--write PATH`` or
            ``--check PATH``.

    Returns:
        The exit status: 0, 1 if ``--check`` finds the section stale, 2 if the file has no
        well-formed section.
    """
    parser = argparse.ArgumentParser(prog="python -m inrnet.convert.catalog",
                                     description="The converter's supported modules and functions, as Markdown.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="PATH", type=Path, help="rewrite the section between the markers in PATH")
    mode.add_argument("--check", metavar="PATH", type=Path, help="exit 1 if the section in PATH is stale")
    args = parser.parse_args(argv)
    content = supported_markdown()
    path = args.write or args.check
    if path is None:
        sys.stdout.write(content)
        return 0
    text = path.read_text()
    try:
        current = read_section(text)
    except ValueError as e:
        print(f"{path}: no generated section ({e}); add the lines {BEGIN} and {END} where it goes", file=sys.stderr)
        return 2
    if args.check:
        if current == content:
            return 0
        diff = list(difflib.unified_diff(current.splitlines(), content.splitlines(), "in the file", "generated",
                                         lineterm="", n=0))
        shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
        print(f"{path}: the supported modules and functions section is stale (the rule tables changed).\n"
              f"Regenerate it with: {REGENERATE.format(path=path)}\n{shown}", file=sys.stderr)
        return 1
    if current != content:
        path.write_text(write_section(text, content))
        print(f"{path}: section updated")
    else:
        print(f"{path}: section up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
