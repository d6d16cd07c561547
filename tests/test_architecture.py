"""The house keeps its shape: imports point downwards (DESIGN.md's layers) and no modules
import each other in a circle. Module-level and function-level imports both count; a
package's ``__init__`` (the registration idiom) does not, nor does an import under
``if TYPE_CHECKING:`` (a type named in an annotation, never run: e.g. viz draws
explain's records without calling explain)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "cnnzoo"

NEVER: dict[str, set[str]] = {
    "layers": {"models", "registry", "rundir", "tasks", "data", "compress", "weights",
               "families", "explain", "workflows", "experiments", "cli", "viz"},
    "models": {"rundir", "tasks", "data", "compress", "families", "explain", "workflows",
               "experiments", "cli", "viz"},
    "weights": {"models", "registry", "rundir", "tasks", "data", "compress", "families",
                "explain", "workflows", "experiments", "cli", "viz"},
    "registry": {"explain", "rundir", "tasks", "data", "compress", "families", "workflows",
                 "experiments", "cli", "viz"},
    "rundir": {"tasks", "data", "compress", "families", "explain", "workflows", "experiments",
               "cli", "viz"},
    "data": {"models", "registry", "rundir", "tasks", "compress", "weights", "families",
             "explain", "workflows", "experiments", "cli", "viz"},
    "tasks": {"explain", "rundir", "data", "families", "workflows", "experiments", "cli"},
    "compress": {"explain", "rundir", "data", "families", "workflows", "experiments", "cli"},
    "viz": {"models", "registry", "rundir", "tasks", "data", "compress", "weights",
            "families", "explain", "workflows", "experiments", "cli"},
    "families": {"explain", "workflows", "experiments", "cli"},
    "workflows": {"experiments", "cli"},
    "experiments": {"cli"},
    "explain": {"workflows", "experiments", "cli"},
}  # fmt: skip
"""Layer -> the layers it must never import (DESIGN.md: cli > experiments > workflows >
explain > families > tasks, data, compress, weights, models > layers; rundir uses models;
viz imports nothing above it)."""


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(parts)] = path
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.rsplit(".", 1)[0] if not name.endswith("__init__") else name[:-9]
        tree = ast.parse(path.read_text())
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    edges[name].add(target)
                elif f"{target}.__init__" in modules:
                    edges[name].add(f"{target}.__init__")
    return edges


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cnnzoo"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ``__init__`` left out."""
    nodes = {n for n in edges if not n.endswith("__init__")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in nodes:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return out


def test_no_modules_import_each_other_in_a_circle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}) == [
        ["a.x", "a.y", "a.z"]
    ]


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_imports_point_downwards(layer):
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        if _layer(source) == layer
        for target in targets
        if _layer(target) in NEVER[layer]
    )
    assert wrong == []


def test_workflows_and_the_command_line_ask_the_family_not_the_task():
    """``if task == ...`` in a workflow or command means a family is missing a question."""
    import re

    asking = re.compile(
        r"""(\btask\s*(==|!=|\bin\b)|get\(\s*["']task["'][^)]*\)\s*(==|!=|\bin\b))"""
    )
    found = [
        f"{path.relative_to(SRC)}:{i}"
        for folder in ("workflows", "cli")
        for path in sorted((SRC / folder).glob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if asking.search(line)
    ]
    assert found == []
