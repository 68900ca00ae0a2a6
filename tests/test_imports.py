"""inrnet's imports run one way: no module of inrnet imports another inside a function.

A function-level import hides an arrow of the dependency graph, usually one that runs back
up and dodges an import circle. The few that remain are listed below, each with its
reason. Lazy imports of heavy third-party packages (timm, torchvision, matplotlib) are not
inrnet imports and are not restricted here.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "inrnet"

ALLOWED = {
    ("inrnet.lightning.data", "inrnet.datasets"):
        "inrnet.lightning opens a named dataset only when asked to; if inrnet.datasets fails to import, "
        "open_dataset says so instead of `import inrnet.lightning` failing",
    ("inrnet.lightning.demo", "inrnet.datasets.fashion_mnist"):
        "the same boundary: the demo reads the embedded default's images only for that dataset",
}
"""``(importing module, imported module) -> why the import is inside a function``."""


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The inrnet modules ``node`` names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "inrnet"]
    if node.level:
        parts = module.split(".")
        base = parts[: len(parts) - node.level + is_package]
        return [".".join(base + ([node.module] if node.module else []))]
    return [node.module] if node.module and node.module.split(".")[0] == "inrnet" else []


def lazy_imports(root: Path = PACKAGE) -> list[tuple[str, int, str, str]]:
    """``(module, line, imported module, enclosing function)`` of every inrnet import inside a function
    in the package at ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

        def visit(node: ast.AST, function: str | None) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    visit(child, getattr(child, "name", "<lambda>"))
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)) and function is not None:
                    found.extend((module, child.lineno, target, function)
                                 for target in _imported(child, module, path.name == "__init__.py"))
                visit(child, function)

        visit(ast.parse(path.read_text(), str(path)), None)
    return found


def test_the_scan_finds_lazy_imports(tmp_path):
    """The scanner itself: top-level and third-party imports pass, nested and relative ones are found."""
    pkg = tmp_path / "inrnet" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("import torch\nfrom inrnet.field import Field\n\n\n"
                                "def f():\n    import timm\n    from inrnet.nn import conv\n\n\n"
                                "class A:\n    def g(self):\n        if True:\n            from . import other\n")
    found = lazy_imports(tmp_path / "inrnet")
    assert found == [
        ("inrnet.sub.mod", 7, "inrnet.nn", "f"), ("inrnet.sub.mod", 13, "inrnet.sub", "g")]


def test_no_lazy_inrnet_imports_outside_the_allowlist():
    found = lazy_imports()
    unexpected = [f"{m} line {line}: {fn}() imports {target}"
                  for m, line, target, fn in found if (m, target) not in ALLOWED]
    assert not unexpected, ("function-level inrnet imports (import at the top of the module; if that makes a "
                            "circle, move the shared code down):\n" + "\n".join(unexpected))
    stale = set(ALLOWED) - {(m, target) for m, _, target, _ in found}
    assert not stale, f"allowlist entries with no such import any more: {sorted(stale)}"
