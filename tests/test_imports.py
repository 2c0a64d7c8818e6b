"""The package's import graph, lazy imports included, has no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import protozoo

ROOT = Path(protozoo.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The protozoo modules a file imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # "from protozoo import hub" imports the module protozoo.hub
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules} - {name}


def graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once per back edge)."""
    found, state = [], dict.fromkeys(edges, 0)  # 0 unseen, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif state.get(nxt) == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in edges:
        if state[node] == 0:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_import_graph_sees_lazy_and_relative_imports() -> None:
    edges = graph()
    assert "protozoo.hub" in edges["protozoo.model"]  # a top-level import
    assert "protozoo.registry" in edges["protozoo"]  # inside __getattr__


def test_protozoo_has_no_import_cycles() -> None:
    assert cycles(graph()) == []
