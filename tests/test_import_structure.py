"""The layering, read from the imports: no cycles, and the registry imports nothing above it.

Imports are read from the source with ``ast`` (never those under ``if TYPE_CHECKING:``). Inside
models/ and between the named layers, imports inside functions count too, so a cycle or an
upward reach hidden in a function-level import is found; across the whole package, module-level
imports must form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fracturescan"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, module_level: bool = False) -> set[str]:
    module = _module_name(path)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # "from pkg import module"
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph(prefix: str, module_level: bool = False) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        if name.startswith(prefix):
            graph[name] = {m for m in _imports(path, module_level)
                           if m in modules and m != name and m.startswith(prefix)}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_models_has_no_import_cycle() -> None:
    graph = _graph("fracturescan.models.")
    assert graph, "no modules found"
    assert _cycle(graph) is None


@pytest.mark.parametrize("low,high", [
    ("fracturescan.models.", "fracturescan.inference"),
    ("fracturescan.explain.", "fracturescan.inference"),
    ("fracturescan.inference", "fracturescan.service"),
    ("fracturescan.api.", "fracturescan.webapp"),
])
def test_lower_layers_do_not_reach_up(low: str, high: str) -> None:
    offenders = {m: sorted(i for i in deps if i.startswith(high))
                 for m, deps in _graph("fracturescan").items() if m.startswith(low)}
    assert not {m: d for m, d in offenders.items() if d}


def test_registry_imports_nothing_above_it() -> None:
    mine = {m for m in _imports(PACKAGE / "models" / "registry.py") if m.startswith("fracturescan")}
    assert mine <= {"fracturescan.errors", "fracturescan.errors.ConfigError"}


def test_the_package_has_no_module_level_import_cycle() -> None:
    assert _cycle(_graph("fracturescan", module_level=True)) is None


def test_checkpoint_inference_explain_and_export_form_no_cycle_even_inside_functions() -> None:
    graph = _graph("fracturescan")
    core = ("fracturescan.checkpoint", "fracturescan.inference", "fracturescan.export", "fracturescan.onnx_runtime",
            "fracturescan.explain", "fracturescan.models", "fracturescan.decision", "fracturescan.notices")
    assert _cycle({m: {d for d in deps if d.startswith(core)} for m, deps in graph.items() if m.startswith(core)}) is None
