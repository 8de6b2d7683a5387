"""The runtime's modules form no import cycle (issue 8: ``device`` and ``facts`` imported each other).

Every import counts: module level, ``TYPE_CHECKING`` blocks and imports inside functions, because each of
them couples the two modules (a type-only import is a cycle for mypy and for a reader too). ``facts``
reads a :class:`~edge_runtime.facts.FactsSource` protocol instead of importing ``device``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "edge_runtime"


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PKG.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for f in PKG.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    names = [node.module] if node.module else [a.name for a in node.names]
                    deps.update(n.split(".")[0] for n in names if n)
                elif node.module and node.module.split(".")[0] == "edge_runtime":
                    parts = node.module.split(".")
                    deps.add(parts[1] if len(parts) > 1 else "__init__")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[0] == "edge_runtime":
                        deps.add(parts[1] if len(parts) > 1 else "__init__")
        graph[f.stem] = (deps & modules) - {f.stem}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                found.append([*path[path.index(dep):], dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_facts_does_not_import_device() -> None:
    assert "device" not in _graph()["facts"]
    assert "__init__" not in _graph()["facts"]  # the package imports device


def test_runtime_modules_have_no_import_cycle() -> None:
    # __init__ re-exports the public surface; a module importing the package is checked through __init__'s deps
    assert _cycles(_graph()) == []
