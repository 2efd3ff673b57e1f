"""The package's import graph: no cycles, and each layer imports only the layers below it.

Read from the source with ``ast`` (nothing is imported), so a lazy import inside a
function counts too; only imports under ``if TYPE_CHECKING:`` are left out. The layers
and their rules are drawn in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "hangguard"

#: layer -> the layers it may import ("face" is hangguard/__init__.py, the public API).
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "mcp": {"core", "mcp"},
    "tracing": {"core", "tracing"},
    "ray": {"core", "tracing", "ray"},
    "http": {"core", "http"},
    "testing": {"core", "mcp", "testing"},
    "cli": {"core", "face", "mcp", "tracing", "cli"},
    "face": {"core", "tracing", "face"},
}

#: Edges allowed across the layers, each for a reason: ``guarded_op`` (core) hands a Ray
#: op class to ``hangguard.ray`` with a lazy import, so decorating one without the ray
#: extra fails with the pip command, and nothing of Ray loads for other ops.
EXCEPTIONS: set[tuple[str, str]] = {("hangguard._op", "hangguard.ray._op")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "hangguard":
        return "face"
    second = parts[1]
    if second in ("_cli", "__main__"):
        return "cli"
    if second in ("mcp", "tracing", "ray", "http", "testing"):
        return second
    return "core"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The hangguard modules ``path`` imports (module-level and lazy)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "hangguard":
                        found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "hangguard":
                    continue
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in modules and m != me}


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


@pytest.fixture(scope="module")
def g() -> dict[str, set[str]]:
    """The graph, parsed once for every test of this module."""
    return graph()


def test_the_graph_is_read(g: dict[str, set[str]]) -> None:
    assert "hangguard._semconv" in g["hangguard._spans"]
    assert "hangguard._deadline" in g["hangguard._group"]


def test_there_is_no_import_cycle(g: dict[str, set[str]]) -> None:
    # Package faces import their own modules by design; a cycle through a face is one
    # only when a module imports a face that (transitively) imports it back.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            walk(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("source_layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(source_layer: str, g: dict[str, set[str]]) -> None:
    bad = [
        f"{src} -> {dst}"
        for src, targets in g.items()
        if layer(src) == source_layer
        for dst in targets
        if layer(dst) not in ALLOWED[source_layer] and (src, dst) not in EXCEPTIONS
    ]
    assert not bad, f"{source_layer} imports outside its layers: {bad}"
