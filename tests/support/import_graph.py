"""The import graph of airflow_repro, read from its source (``ast``), and the cycles in a graph."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_repro

ROOT = Path(airflow_repro.__file__).parent


def _modules() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(statements: list[ast.stmt], *, nested: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run: module level (in ``if``/``try`` blocks too, never under
    ``if TYPE_CHECKING:``), and with ``nested`` those inside functions and classes as well."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if getattr(node.test, "id", getattr(node.test, "attr", None)) != "TYPE_CHECKING":
                found += _imports(node.body, nested=nested) + _imports(node.orelse, nested=nested)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                found += _imports(block, nested=nested)
        elif isinstance(node, ast.With):
            found += _imports(node.body, nested=nested)
        elif nested and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found += [inner for inner in ast.walk(node) if isinstance(inner, ast.Import | ast.ImportFrom)]
    return found


def import_graph(*, nested: bool) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from pkg import module`` names the module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text()).body, nested=nested):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif node.module:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.add(submodule if submodule in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
