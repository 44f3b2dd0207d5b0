"""The import drawing of the package runs one way: skins -> commands -> engine -> building blocks -> foundations.

Walks every module of ``braintumor`` with ``ast`` (imports inside functions count too: they are real edges) and
fails on an upward edge or on any circle. The checker is tested on made-up edges, so it can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "braintumor"

# Lower number: lower layer. A module may import its own layer or lower ones, never a higher one.
LAYERS = {
    "braintumor": 0, "errors": 0, "config": 0, "config_schema": 0, "runs": 0, "progress": 0,  # foundations
    "data": 1, "pipeline": 1, "dedup": 1, "metrics": 1, "plots": 1, "models": 1, "explain": 1,  # building blocks
    "distribute": 1, "ood": 1, "inference": 1, "nonbrain": 1, "scanners": 1, "decision": 1, "exported": 1,
    "input_checks": 1, "images": 1, "gate_head": 1,
    "guidance": 1, "volumes": 1, "tracking": 1, "confounds": 1, "eda": 1, "groups": 1, "report": 1, "binary": 1,
    "shifts": 1, "splits": 1, "counterfactual": 1, "operating_point": 1,
    "engine": 2,  # a run that owns its directory, the one scorer, the fit: what the commands are made of
    "commands": 3,  # one module per command: orchestration
    "cli": 4, "serve": 4,  # skins
}
LAYER_NAMES = {0: "foundation", 1: "building block", 2: "engine", 3: "command", 4: "skin"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (relative or absolute), anywhere in the file."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the sub-module when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import braintumor.x.y` with y a name: the module is braintumor.x
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    if key not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")
    return LAYERS[key]


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in graph.items():
        for b in sorted(targets):
            if layer_of(b) > layer_of(a):
                bad.append(f"{a} ({LAYER_NAMES[layer_of(a)]}) imports {b} ({LAYER_NAMES[layer_of(b)]})")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_every_module_has_a_layer():
    for name in package_modules():
        layer_of(name)


def test_imports_never_point_up_a_layer():
    assert upward_edges(import_graph()) == []


def test_imports_have_no_circle():
    assert find_cycle(import_graph()) is None


def test_the_graph_sees_real_edges():
    graph = import_graph()
    assert "braintumor.commands.train" in graph["braintumor.cli.train"]  # a function-level import counts
    assert "braintumor.errors" in graph["braintumor.config"]
    assert "braintumor.models.registry" in graph["braintumor.models"]


@pytest.mark.parametrize("edge", [("braintumor.runs", "braintumor.commands.kfold"),
                                  ("braintumor.metrics", "braintumor.cli.train"),
                                  ("braintumor.config", "braintumor.data"),
                                  ("braintumor.inference", "braintumor.engine.scorer"),
                                  ("braintumor.engine.trainer", "braintumor.commands.train")])
def test_checker_catches_an_upward_edge(edge):
    graph = import_graph()
    graph[edge[0]] = graph[edge[0]] | {edge[1]}
    assert any(edge[0] in line and edge[1] in line for line in upward_edges(graph))


def test_checker_catches_a_circle():
    graph = import_graph()
    graph["braintumor.errors"] = graph["braintumor.errors"] | {"braintumor.runs"}  # runs imports errors
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and {"braintumor.errors", "braintumor.runs"} <= set(cycle)


# Size limits (issue 23): a module over MAX_MODULE_LINES, or a command over MAX_COMMAND_LINES, holds several jobs.
# A function over MAX_FUNCTION_LINES (def to last line, docstring included) must say why in its docstring with
# the marker LONG_MARKER ("Long because it is one document read top to bottom ..."); otherwise split it.
MAX_MODULE_LINES, MAX_COMMAND_LINES, MAX_FUNCTION_LINES = 400, 250, 60
LONG_MARKER = "Long because"


def oversized_modules(modules: dict[str, Path]) -> list[str]:
    out = []
    for name, path in modules.items():
        limit = MAX_COMMAND_LINES if name.startswith("braintumor.commands.") else MAX_MODULE_LINES
        n = len(path.read_text().splitlines())
        if n > limit:
            out.append(f"{name}: {n} lines (limit {limit})")
    return out


def long_functions(source: str, where: str = "") -> list[str]:
    """Functions over MAX_FUNCTION_LINES whose docstring does not say why (LONG_MARKER)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and LONG_MARKER not in (ast.get_docstring(node) or ""):
                out.append(f"{where}{node.name} (line {node.lineno}): {n} lines")
    return out


def test_no_module_is_too_long():
    assert oversized_modules(package_modules()) == []


def test_a_long_function_says_why():
    bad = [line for name, path in package_modules().items() for line in long_functions(path.read_text(), name + ".")]
    assert bad == []


def test_size_checkers_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n    '''Short.'''\n{body}\n") == ["f (line 1): 62 lines"]
    assert long_functions(f"def f():\n    '''{LONG_MARKER} it is one table.'''\n{body}\n") == []
    assert long_functions(f"def f():\n{body[:-len(body.splitlines()[-1]) - 1]}\n") == []  # 60 lines: fine
    big = tmp_path / "big.py"
    big.write_text("x = 1\n" * (MAX_COMMAND_LINES + 1))
    assert oversized_modules({"braintumor.commands.big": big}) == [
        f"braintumor.commands.big: {MAX_COMMAND_LINES + 1} lines (limit {MAX_COMMAND_LINES})"]
    assert oversized_modules({"braintumor.big": big}) == []
