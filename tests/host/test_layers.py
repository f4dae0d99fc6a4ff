"""The shape of the toolchain, checked: layers import only downward, no import
cycles, imports at module top (optional dependencies excepted), the product never
imports the development tools, and no module grows past its size limit."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT


TOOLCHAIN = ROOT / "toolchain"
# Bottom to top. A module may import its own layer and the layers below it.
LAYERS = ("core", "events", "frontend", "ir", "backends", "refvm", "symbols", "api",
          "build", "boards", "deploy", "cli")
# Imported where first used: optional or platform-specific (termios, tty), or heavy
# and needed only when a kernel image is read (capstone: ~0.12 s of CPU to import,
# pyelftools: ~0.07 s), so that `ktap compile` without a vmlinux does not pay for them.
OPTIONAL_IMPORTS = {"termios", "tty", "capstone", "elftools"}
PY_MAX_LINES = 500
C_MAX_LINES = 900
# The interpreter's dispatch loop is one function by design (threaded dispatch).
C_SIZE_EXEMPT = {"ktap_interp.c"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(TOOLCHAIN.rglob("*.py")):
        rel = path.relative_to(TOOLCHAIN).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


MODULES = modules()


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "ktap" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1])


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, at module top?, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from ktap.x import y` may name a submodule y
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        for name in names:
            out.append((name, id(node) in top, node.lineno))
    return out


def test_every_package_is_a_known_layer():
    for module in MODULES:
        if module.startswith("ktap."):
            assert module.split(".")[1] in LAYERS, f"{module}: add its package to LAYERS"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("ktap.")])
def test_layers_import_only_downward(module):
    mine = layer(module)
    for name, _, line in imports(MODULES[module]):
        if name.startswith("ktapdev"):
            pytest.fail(f"{module}:{line} imports the development tools ({name})")
        theirs = layer(name)
        if theirs is not None:
            assert theirs <= mine, (f"{module}:{line} ({LAYERS[mine]}) imports {name} "
                                    f"({LAYERS[theirs]}), a layer above it")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_are_at_module_top(module):
    for name, at_top, line in imports(MODULES[module]):
        if not at_top and name.split(".")[0] not in OPTIONAL_IMPORTS:
            pytest.fail(f"{module}:{line} imports {name} inside a function or block")


def test_no_import_cycles():
    graph = {m: {n for n, _, _ in imports(p) if n in MODULES and n != m}
             for m, p in MODULES.items()}
    # A package's __init__ is imported by its submodules implicitly; only edges
    # written in the code count, which is what the graph holds.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_python_modules_stay_small():
    big = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    over = {m: n for m, n in big.items() if n > PY_MAX_LINES}
    assert not over, f"modules over {PY_MAX_LINES} lines: {over}"


def test_c_files_stay_small():
    sources = [p for p in (ROOT / "kmod").rglob("*") if p.suffix in (".c", ".h", ".j2")]
    assert sources
    over = {str(p.relative_to(ROOT)): n for p in sources
            if (n := len(p.read_text().splitlines())) > C_MAX_LINES
            and p.name not in C_SIZE_EXEMPT}
    assert not over, f"C files over {C_MAX_LINES} lines: {over}"
