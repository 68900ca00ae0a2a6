"""The supported-modules section of docs/conversion.md is the rule tables, and stays so."""

import builtins
import operator
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from inrnet.convert import load_zoo_rules
from inrnet.convert.catalog import BEGIN, END, REGENERATE, main, read_section, supported_markdown, write_section
from inrnet.convert.function_rules import FUNCTION_RULES
from inrnet.convert.registry import RULES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conversion.md"
SYMBOLS = {"+": operator.add, "+=": operator.iadd, "-": operator.sub, "-=": operator.isub, "*": operator.mul,
           "*=": operator.imul, "/": operator.truediv, "/=": operator.itruediv, "//": operator.floordiv,
           "//=": operator.ifloordiv, "%": operator.mod, "%=": operator.imod, "**": operator.pow,
           "**=": operator.ipow, "@": operator.matmul, "@=": operator.imatmul, "-x": operator.neg, "+x": operator.pos}


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Per ``###`` heading, the rows of its table as lists of cells."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading = line[4:]
            tables[heading] = []
        elif line.startswith("| ") and heading is not None and not line.startswith("| Module types |") \
                and not line.startswith("| Functions and methods |"):
            tables[heading].append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return tables


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _module_rows(markdown: str) -> dict[str, list[list[type]]]:
    """Per library heading, each row's module types, resolved from the names the row shows."""
    return {h: [[pkgutil.resolve_name(n) for n in _names(row[0])] for row in rows]
            for h, rows in _tables(markdown).items() if h.startswith("Modules from")}


def _target(name: str):
    """The FUNCTION_RULES key a name in the functions table stands for."""
    if name in SYMBOLS:
        return SYMBOLS[name]
    if name.startswith("Tensor."):
        return ("method", name.removeprefix("Tensor."))
    if name.startswith("F."):
        return getattr(F, name.removeprefix("F."))
    if "." not in name:
        return getattr(builtins, name)
    return pkgutil.resolve_name(name)


def test_the_doc_section_is_the_rule_tables():
    """The drift check: docs/conversion.md shows what the rule tables hold now."""
    text = DOC.read_text()
    assert text.index("## Supported modules and functions") < text.index(BEGIN) < text.index(END)
    assert read_section(text) == supported_markdown(), (
        f"docs/conversion.md's 'Supported modules and functions' section is stale (a rule was added, removed or "
        f"re-documented); regenerate it with: {REGENERATE.format(path='docs/conversion.md')}")


def test_every_module_type_is_listed_once_under_its_library_with_its_rule():
    load_zoo_rules()
    markdown = supported_markdown()
    rows = _module_rows(markdown)
    listed = [cls for group in rows.values() for row in group for cls in row]
    assert sorted(map(repr, listed)) == sorted(map(repr, RULES)), "the module tables are not RULES' types"
    assert len(listed) == len(set(listed))
    for heading, group in rows.items():
        library = re.search(r"`(\w+)`", heading).group(1)
        for row in group:
            assert {cls.__module__.split(".")[0] for cls in row} == {library}, heading
            assert len({id(RULES[cls]) for cls in row}) == 1, f"one row, several rules: {row}"
        assert len({id(RULES[row[0]]) for row in group}) == len(group), f"a rule split over rows in {heading}"
    assert list(rows)[:3] == ["Modules from `torch`", "Modules from `torchvision`", "Modules from `timm`"]
    tables = _tables(markdown)
    relu = next(r for r in tables["Modules from `torch`"] if "`torch.nn.ReLU`" in r[0])
    depth = next(r for r in tables["Modules from `torchvision`"] if "`torchvision.ops.StochasticDepth`" in r[0])
    assert relu[1:] == depth[1:] == ["`pointwise_rules.elementwise`",
                                     "An elementwise module, copied (with ``inplace`` off) into `Pointwise`."]


def test_every_function_and_method_is_listed_once_with_its_rule():
    markdown = supported_markdown()
    table = _tables(markdown)["Functions and Tensor methods on feature maps"]
    rows = [[_target(n) for n in _names(row[0])] for row in table]
    listed = [t for row in rows for t in row]
    assert len(listed) == len(FUNCTION_RULES) and all(t in FUNCTION_RULES for t in listed)
    assert set(map(repr, listed)) == set(map(repr, FUNCTION_RULES))
    for row in rows:
        assert len({id(FUNCTION_RULES[t]) for t in row}) == 1, f"one row, several rules: {row}"
    assert len({id(FUNCTION_RULES[row[0]]) for row in rows}) == len(rows)
    for name in ("`torch.cat`", "`+`", "`Tensor.permute`", "`F.interpolate`"):
        assert name in markdown


def test_new_rules_show_up_and_undocumented_ones_say_so(monkeypatch):
    class Custom(nn.Module):
        def forward(self, x):
            return x

    def custom_rule(m, site):
        """Custom: the identity.

        More text that is not the summary."""
        return None, site.points

    def undocumented(call):
        return None

    monkeypatch.setitem(RULES, Custom, custom_rule)
    monkeypatch.setitem(FUNCTION_RULES, ("method", "frobnicate"), undocumented)
    tables = _tables(supported_markdown())
    library = Custom.__module__.split(".")[0]
    assert list(tables)[-2:] == [f"Modules from `{library}`", "Functions and Tensor methods on feature maps"]
    assert tables[f"Modules from `{library}`"] == [
        [f"`{Custom.__module__}.{Custom.__qualname__}`",
         f"`{custom_rule.__module__}.{custom_rule.__qualname__}`", "Custom: the identity."]]
    row = next(r for r in tables["Functions and Tensor methods on feature maps"] if r[0] == "`Tensor.frobnicate`")
    assert row[2] == "—" and "undocumented" in row[1]


def test_the_output_does_not_depend_on_registration_order():
    load_zoo_rules()
    before = supported_markdown()
    saved_rules, saved_functions = dict(RULES), dict(FUNCTION_RULES)
    try:
        for table, saved in ((RULES, saved_rules), (FUNCTION_RULES, saved_functions)):
            table.clear()
            table.update(reversed(list(saved.items())))
        assert supported_markdown() == before
    finally:
        for table, saved in ((RULES, saved_rules), (FUNCTION_RULES, saved_functions)):
            table.clear()
            table.update(saved)


def test_check_fails_on_a_stale_copy_and_write_fixes_only_the_section(tmp_path, capsys):
    doc = tmp_path / "conversion.md"
    fresh = write_section(DOC.read_text(), supported_markdown())
    before, after = fresh[:fresh.index(BEGIN)], fresh[fresh.index(END):]
    stale = fresh.replace("`torch.nn.Upsample`", "`torch.nn.Upsampler`")
    assert stale != fresh
    doc.write_text(stale)
    assert main(["--check", str(doc)]) == 1
    err = capsys.readouterr().err
    assert "stale" in err and f"--write {doc}" in err and "torch.nn.Upsampler" in err
    assert doc.read_text() == stale, "--check wrote the file"
    assert main(["--write", str(doc)]) == 0
    assert doc.read_text() == fresh
    assert doc.read_text().startswith(before) and doc.read_text().endswith(after)
    assert main(["--check", str(doc)]) == 0


def test_the_command_line_exits_non_zero_on_a_stale_or_unmarked_file(tmp_path):
    stale, unmarked = tmp_path / "stale.md", tmp_path / "unmarked.md"
    stale.write_text(f"# Title\n\n{BEGIN}\nold\n{END}\n\nLater text.\n")
    unmarked.write_text("# Title\n")
    command = [sys.executable, "-m", "inrnet.convert.catalog"]
    run = subprocess.run([*command, "--check", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Regenerate it with: python -m inrnet.convert.catalog --write" in run.stderr
    run = subprocess.run([*command, "--write", str(stale)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert stale.read_text() == f"# Title\n\n{BEGIN}\n\n{supported_markdown()}\n{END}\n\nLater text.\n"
    assert main(["--check", str(unmarked)]) == 2


def test_torch_and_torchvision_names_are_public_paths():
    load_zoo_rules()
    markdown = supported_markdown()
    assert "`torch.nn.Conv2d`" in markdown and "torch.nn.modules" not in markdown
    assert "`torchvision.ops.StochasticDepth`" in markdown
    assert pkgutil.resolve_name("torchvision.ops.StochasticDepth") is torchvision.ops.StochasticDepth
    assert "`torch.cat`" in markdown and torch.cat in FUNCTION_RULES
