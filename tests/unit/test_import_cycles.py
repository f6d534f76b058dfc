"""dlrun's modules import each other without cycles, counting imports inside functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dlrun"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], this: str | None = None) -> set[str]:
    """The dlrun modules that a file imports anywhere in it (top level, functions, conditionals).

    `from dlrun.x import y` counts as importing dlrun.x.y when that is a module, else dlrun.x;
    a package's __init__ is not counted for its submodules, since it imports none of them here.
    """
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    return {name for name in found if name in modules and name != this}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, group) for group in groups]


def describe(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle as `a -> b -> a`, with every module caught in the same loop when there are more."""
    lines = []
    for cycle in cycles(graph):
        caught = {name for group_member in cycle for name in _group_of(graph, group_member)}
        extra = sorted(caught - set(cycle))
        lines.append(" -> ".join(cycle) + (f"  (same loop: {', '.join(extra)})" if extra else ""))
    return lines


def _group_of(graph: dict[str, set[str]], node: str) -> set[str]:
    reach = _reachable(graph, node)
    return {other for other in reach if node in _reachable(graph, other)}


def _reachable(graph: dict[str, set[str]], node: str) -> set[str]:
    seen, todo = set(), [node]
    while todo:
        for successor in graph[todo.pop()]:
            if successor not in seen:
                seen.add(successor)
                todo.append(successor)
    return seen


def _one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & group):
                if successor == start:
                    return paths[node] + [start]
                if successor not in paths:
                    paths[successor] = paths[node] + [successor]
                    following.append(successor)
        frontier = following
    return sorted(group)


def test_the_package_has_no_import_cycle():
    found = describe(import_graph())
    assert not found, "import cycles in dlrun/ (break each: move the shared piece to a module both can import):\n" + "\n".join(found)


def test_the_cycle_check_finds_a_cycle_and_names_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_and_relative_imports_count(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from dlrun.errors import ConfigError\n    import dlrun.registry\n")
    modules = {"dlrun.errors", "dlrun.registry", "dlrun.mod"}
    assert imported_modules(source, modules, "dlrun.mod") == {"dlrun.errors", "dlrun.registry"}
    source.write_text("from . import errors\nfrom .registry import Registry\n")
    assert imported_modules(source, modules, "dlrun.mod") == {"dlrun.errors", "dlrun.registry"}


def test_standard_library_imports_sit_at_module_level():
    """Inside a function they save no start-up time and hide what a module depends on; only heavy
    third-party imports (torch, Lightning, MLflow, Optuna) are deferred."""

    inside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                if any(name.split(".")[0] in sys.stdlib_module_names for name in names):
                    inside.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not inside, "move these to the top of their module:\n" + "\n".join(inside)
