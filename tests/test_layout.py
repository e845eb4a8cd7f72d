"""The layout's rules (docs/design.md, "The layout, and which part may import which"), checked
from the source: every import, also inside functions, goes to the same part or an earlier one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xaudit"
#: the parts in data-flow order; a module may import its own part or an earlier one
ORDER = ["errors", "_version", "config", "core", "data", "models", "attribution", "analysis", "report", "stages",
         "workflows", "sample", "api", "cli", "__main__", "__init__"]
RANK = {part: k for k, part in enumerate(ORDER)}
SAME_RANK = {"data": "models", "models": "data"}  # data and models are one layer


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        base = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("xaudit.")}
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    target = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1] + ([target] if target else []))
                if target.startswith("xaudit.") or target == "xaudit":
                    found |= {f"{target}.{a.name}" if target == "xaudit" else target for a in node.names}
        edges[module] = found
    return edges


def test_every_import_goes_to_the_same_part_or_an_earlier_one():
    wrong = []
    for module, targets in _imports().items():
        here = _part(module)
        for target in targets:
            there = _part(target)
            if there in ("_version", "errors") or there == here or SAME_RANK.get(here) == there:
                continue
            if RANK.get(there, 99) > RANK.get(here, 99):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that run back up the layers:\n" + "\n".join(sorted(wrong))


def test_config_is_a_leaf_that_loads_no_heavy_package():
    for module, targets in _imports().items():
        if _part(module) == "config":
            assert all(_part(t) in ("config", "errors") for t in targets), (module, targets)
    probe = "import sys, xaudit.config; print(sorted(m for m in ('torch', 'monai', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_at_most_eight_modules_at_the_top():
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 8, top


def test_the_method_parameter_table_matches_the_registry():
    from xaudit.attribution import REGISTRY
    from xaudit.config.methods import NEEDS_LAYER, PARAMS

    assert {name: cls.Params for name, cls in REGISTRY.items()} == PARAMS
    assert {name for name, cls in REGISTRY.items() if cls.needs_layer} == NEEDS_LAYER
