"""The shape of the code: every subpackage says what it owns, and no import cycle.

Module-level imports only (an import inside a function is how a late binding is written on
purpose); ``if TYPE_CHECKING:`` blocks are not run, so they do not count either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "quant", "dicom_templates")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:  # module level only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if not isinstance(node, (ast.FunctionDef,
                                                              ast.AsyncFunctionDef,
                                                              ast.ClassDef)) else []:
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
    return {target for target in found if target in known and target != name}


def test_every_subpackage_says_what_it_owns() -> None:
    missing = []
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            if init.parent.name == "__pycache__":
                continue
            doc = ast.get_docstring(ast.parse(init.read_text()))
            if not doc or len(doc.split()) < 8:
                missing.append(str(init.relative_to(ROOT)))
    assert missing == []


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle with them
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], " | ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_are_small(package: str) -> None:
    """No module above ~400 lines (LINE_LIMIT leaves room for a docstring or two)."""
    large = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
             if (n := len(p.read_text().splitlines())) > LINE_LIMIT}
    assert large == {}


LINE_LIMIT = 425
