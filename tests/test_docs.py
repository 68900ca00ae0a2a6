"""The docs work: the user guide's examples run (every ```python block of a page, in order, in
one namespace), its command lines run as written, and the API reference builds from docstrings
the renderer parses without a warning."""

import ast
import csv
import io
import logging
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import griffe
import pytest
import torch
import yaml

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide"
PAGES = sorted(GUIDE.glob("*.md"))


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_the_guide_has_examples():
    assert sum(len(_blocks(p)) for p in PAGES) >= 8


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_guide_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(_blocks(page)):
        exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)


# --- the API reference: docstrings the renderer understands, and a build with no warning ---

ROOT = Path(__file__).resolve().parents[1]
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const|ref):`[^`]*`")


def _docstrings(tree: ast.Module):
    """Yield ``(line, text)`` of every module, class, function and attribute docstring."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield body[0].lineno, doc
        for prev, stmt in zip(body, body[1:]):  # attribute docstrings: a string after an assignment
            if (isinstance(prev, (ast.Assign, ast.AnnAssign)) and isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                yield stmt.lineno, stmt.value.value


def test_no_sphinx_role_in_any_docstring():
    """mkdocstrings shows ``:class:`X``` as raw text: cross-references are ``[`X`][inrnet.path.X]``."""
    found = [f"{path.relative_to(ROOT)}:{line}: {match.group(0)}"
             for path in sorted((ROOT / "inrnet").rglob("*.py"))
             for line, doc in _docstrings(ast.parse(path.read_text(), str(path)))
             for match in SPHINX_ROLE.finditer(doc)]
    assert not found, "Sphinx roles in docstrings:\n" + "\n".join(found)


def test_no_sphinx_attribute_comment():
    """griffe ignores Sphinx's ``#:`` comments: a constant is documented by a string right after it."""
    found = [f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string}"
             for path in sorted((ROOT / "inrnet").rglob("*.py"))
             for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
             if tok.type == tokenize.COMMENT and tok.string.startswith("#:")]
    assert not found, "#: comments (invisible in the API pages):\n" + "\n".join(found)


def test_every_docstring_parses_without_a_warning():
    """griffe (what the API pages are rendered with) parses every docstring of the package,
    private ones included, with the options of mkdocs.yml, and logs nothing: no
    ``Failed to get 'name: description' pair``, no grouped ``a, b:`` arguments (they render
    as one unknown argument with a wrong "required" default), no argument the signature lacks."""
    options = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    python = next(p["mkdocstrings"] for p in options["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    docstring_options = python["handlers"]["python"]["options"]["docstring_options"]
    assert docstring_options.get("warn_unknown_params", True), "mkdocs.yml must warn on unknown arguments"
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("griffe"), Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        package = griffe.load("inrnet", search_paths=[str(ROOT)], docstring_parser="google",
                              docstring_options=docstring_options, resolve_aliases=False)
        objects = [package]
        while objects:
            obj = objects.pop()
            if obj.is_alias:
                continue
            if obj.docstring is not None:
                obj.docstring.parsed  # parsing logs its warnings
            objects.extend(obj.members.values())
    finally:
        logger.removeHandler(handler)
    assert not messages, "docstring warnings:\n" + "\n".join(messages)


def test_the_docs_build_strictly_without_a_warning(tmp_path):
    """``mkdocs build --strict`` (as CI runs it) succeeds and prints no warning: every
    cross-reference resolves, every docstring renders."""
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "WARNING" not in output, output
    api = "".join(p.read_text() for p in (tmp_path / "site" / "api").rglob("*.html"))
    assert not SPHINX_ROLE.search(api)
    assert api.count('class="autorefs autorefs-internal"') >= 100  # the cross-references became links


# --- the guide's command line: `inrnet test --ckpt_path .../last.ckpt` finds what `fit` saved ---

CONFIGS = ROOT / "experiments" / "configs"


@pytest.mark.parametrize("config", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_every_experiment_config_saves_last_ckpt(config):
    callbacks = yaml.safe_load((CONFIGS / config).read_text())["trainer"].get("callbacks") or []
    assert any(c["class_path"].endswith("ModelCheckpoint") and c.get("init_args", {}).get("save_last")
               for c in callbacks), f"{config} saves no last.ckpt (ModelCheckpoint save_last)"


def test_the_guides_test_command_finds_the_checkpoint_fit_saved(tmp_path, monkeypatch):
    """Run the guide's ``inrnet fit`` / ``inrnet test`` lines as written (on a tiny data set, for
    two steps): the test command's ``--ckpt_path`` is the ``last.ckpt`` the fit wrote."""
    from inrnet.cli import main
    from inrnet.inr import PixelINR, save_inrs

    lines = re.search(r"## The command line\n\n```text\n(.*?)```", (GUIDE / "training.md").read_text(), re.S)
    commands = [line.split("#")[0].split() for line in lines.group(1).splitlines()]
    fit = next(c for c in commands if c[:2] == ["inrnet", "fit"] and "--config" in c and len(c) == 4)
    test = next(c for c in commands if c[:2] == ["inrnet", "test"] and "--ckpt_path" in c)
    assert fit[3] == test[3], "the guide fits and tests different configs"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("test", 8), ("test_fourier", 8)):
        save_inrs(tmp_path / "data" / split, PixelINR(torch.rand(n, 1, 28, 28, generator=g), "linear"),
                  torch.arange(n) % 10)
    tiny = ["--data.dataset", str(tmp_path / "data"), "--data.val_size", "4",
            "--model.init_args.model_kwargs.widths", "[4, 8]", "--data.test_samplers", "[sobol:784]",
            "--data.batch_size", "8", "--data.eval_batch_size", "8", "--trainer.max_steps", "2",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    monkeypatch.chdir(tmp_path)  # the guide's paths are relative to the repository root
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    ckpt = Path(test[test.index("--ckpt_path") + 1])  # runs/<name>/version_0/checkpoints/last.ckpt
    main([*fit[1:], *tiny])
    assert ckpt.is_file(), f"fit saved {sorted(p.name for p in ckpt.parent.glob('*'))}, not {ckpt.name}"
    main([*test[1:], *tiny])
    tested = list(csv.DictReader(open(ckpt.parents[2] / "version_1" / "metrics.csv")))
    assert "test/top1/sobol_784" in tested[0]
