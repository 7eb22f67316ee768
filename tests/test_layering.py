"""The house's layering (DESIGN.md): blobnet < servers < clients < bench, imports only downward,
no circle between modules, project imports at the top of each file, and the rules layer free of
torch and asyncio. Read from the source with ``ast``: nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("blobnet", "servers", "clients", "bench")  # each may import only from itself and those before it
PURE = ("blobnet.cards", "blobnet.rules", "blobnet.views", "blobnet.encode")  # no torch, no asyncio


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at the top level of the file) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a top-level ``if`` / ``try`` count as top-level
        if isinstance(node, ast.If | ast.Try):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            # ``from pkg import module`` imports the module; ``from module import name`` the module
            out += [(n if n in MODULES else node.module, node.lineno, id(node) in top) for n in names]
    return out


def _project(name: str) -> str | None:
    """The project module ``name`` refers to (itself or the package that holds it), else None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


GRAPH = {m: sorted({t for n, _, _ in _imports(p) if (t := _project(n)) and t != m}) for m, p in MODULES.items()}


def test_every_package_of_the_house_is_read():
    assert {m.split(".")[0] for m in MODULES} == set(LAYERS)
    assert "clients.cli" in MODULES and "servers.batcher" in MODULES and "blobnet.rules" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_only_downward(module):
    layer = LAYERS.index(module.split(".")[0])
    upward = [t for t in GRAPH[module] if LAYERS.index(t.split(".")[0]) > layer]
    assert not upward, f"{module} imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_project_imports_are_at_the_top_of_the_file(module):
    hidden = [(n, line) for n, line, top in _imports(MODULES[module]) if not top and _project(n)]
    assert not hidden, f"{module} imports project modules inside functions: {hidden}"


def test_no_module_imports_itself_through_a_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in GRAPH[m]:
            if state.get(t) == 1:
                circles.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("module", PURE)
def test_the_rules_layer_imports_neither_torch_nor_asyncio(module):
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for name, line, _ in _imports(MODULES[m]):
            root = name.split(".")[0]
            assert root not in ("torch", "asyncio"), f"{module} reaches {name} through {m} (line {line})"
        todo += GRAPH[m]


def test_the_checker_sees_an_upward_import_and_a_circle(tmp_path):
    """The checks above can fail: a hidden upward import and a two-module circle are both found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f():\n    from clients.cli import main\n")
    assert _imports(bad) == [("os", 1, True), ("clients.cli", 4, False)]
    assert _project("clients.cli.main") == "clients.cli" and _project("numpy") is None
    saved = dict(GRAPH)
    try:
        GRAPH["blobnet.cards"] = ["blobnet.rules"]
        with pytest.raises(AssertionError, match="blobnet.cards -> blobnet.rules"):
            test_no_module_imports_itself_through_a_circle()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
