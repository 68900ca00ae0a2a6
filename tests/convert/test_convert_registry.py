"""The rule table fills at the package's front door; only timm's and torchvision's rules wait for their loader."""

import ast
import subprocess
import sys
from pathlib import Path

import timm.layers
import torchvision
from torch import nn

import inrnet.convert
from inrnet.convert import load_zoo_rules
from inrnet.convert.registry import RULES, find_rule

CONVERT = Path(inrnet.convert.__file__).parent


def test_importing_the_package_registers_every_torch_nn_rule():
    """In a fresh interpreter: the torch.nn rules are there after ``import inrnet.convert``, timm is not imported."""
    code = """
import sys
from torch import nn
import inrnet.convert
from inrnet.convert.registry import RULES, find_rule
from inrnet.convert.window_rules import _conv
assert find_rule(nn.Conv2d(3, 8, 3)) is _conv is RULES[nn.Conv2d]
missing = [t.__name__ for t in (nn.Conv1d, nn.Conv3d, nn.BatchNorm2d, nn.LayerNorm, nn.Linear, nn.ReLU, nn.MaxPool2d,
                                nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Upsample, nn.Dropout2d)
           if t not in RULES]
assert not missing, missing
assert "timm" not in sys.modules, "import inrnet.convert imported timm"
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_the_zoo_loader_registers_timm_and_torchvision_rules_once():
    load_zoo_rules()
    before = dict(RULES)
    load_zoo_rules()
    assert RULES == before
    for t in (timm.layers.BatchNormAct2d, timm.layers.Conv2dSame, timm.layers.LayerNorm2d,
              torchvision.models.convnext.LayerNorm2d, torchvision.ops.StochasticDepth):
        assert t in RULES, t.__name__
    assert find_rule(timm.layers.Linear(4, 2)) is RULES[nn.Linear]


def _function_level_imports(path: Path) -> list[tuple[str, str]]:
    """``(enclosing top-level function, imported module)`` of each import inside a function of ``path``."""
    found = []
    for top in ast.parse(path.read_text()).body:
        if not isinstance(top, (ast.FunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                found += [(top.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                found.append((top.name, "." * node.level + (node.module or "")))
    return found


def test_no_module_of_the_converter_imports_another_lazily():
    """Function-level imports in inrnet.convert are of third-party packages only, and in the rule
    modules only the zoo loader has them."""
    lazy = {path.name: _function_level_imports(path) for path in sorted(CONVERT.glob("*.py"))}
    ours = [(name, fn, mod) for name, found in lazy.items() for fn, mod in found
            if mod.startswith(".") or mod.split(".")[0] == "inrnet"]
    assert not ours, ours
    rule_modules = [name for name in lazy if name.endswith("_rules.py") or name == "registry.py"]
    assert {(name, fn) for name in rule_modules for fn, _ in lazy[name]} == {("zoo_rules.py", "load_zoo_rules")}
