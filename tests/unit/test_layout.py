"""The shape of the code: every subpackage says what it owns, and no import cycle.

Module-level imports only (an import inside a function is how a late binding is written on
purpose); ``if TYPE_CHECKING:`` blocks are not run, so they do not count either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def test_tests_live_in_their_room() -> None:
    """Test modules sit in ``tests/unit``, ``tests/integration`` or ``tests/e2e``, and a unit
    test starts no real peer (see ``PEER_WORDS`` in ``tests/conftest.py``)."""
    from tests.conftest import PEER_WORDS, ROOMS

    tests = ROOT / "tests"
    homeless = sorted(str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py")
                      if p.parent.parent != tests or p.parent.name not in ROOMS)
    assert homeless == []
    with_peers = {str(p.relative_to(ROOT)): [w for w in PEER_WORDS if w in p.read_text()]
                  for p in (tests / "unit").glob("test_*.py")}
    assert {k: v for k, v in with_peers.items() if v} == {}
