"""vsr_engine/io is a tree: no import cycle between its modules (every import counts, including ones inside
functions and under TYPE_CHECKING), and each module's opening comment names its engine stage."""
import ast
import os

import pytest

IO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vsr_engine", "io")
STAGES = ("decode", "stage", "step", "unstage", "encode", "all stages")


def _modules():
    return sorted(f[:-3] for f in os.listdir(IO) if f.endswith(".py"))


def _io_imports(name: str, tree: ast.AST) -> set:
    """Modules of vsr_engine.io that module ``name`` imports, however it spells the import."""
    mods = set(_modules())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:                       # from .x import y / from . import x
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.level == 0 and (node.module or "").startswith("vsr_engine.io"):
                rest = node.module.split(".")[2:]
                if rest:
                    out.add(rest[0])
                else:
                    out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vsr_engine.io."):
                    out.add(a.name.split(".")[2])
    return {m for m in out if m in mods and m != name}


def _graph():
    g = {}
    for m in _modules():
        with open(os.path.join(IO, m + ".py")) as f:
            g[m] = _io_imports(m, ast.parse(f.read()))
    return g


def _cycle(g):
    """One import cycle of ``g`` as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .decode import X\n" \
          "def f():\n    from vsr_engine.io.sinks import S\n    from . import frames\n    from ..pipeline import P\n"
    assert _io_imports("common", ast.parse(src)) == {"decode", "sinks", "frames"}


def test_no_import_cycle_inside_vsr_engine_io():
    g = _graph()
    assert len(g) >= 8
    c = _cycle(g)
    assert c is None, "import cycle in vsr_engine/io: " + " -> ".join(c)
    assert g["common"] == set(), "io/common is the leaf module"
    assert g["accounting"] == set()


@pytest.mark.parametrize("mod", [m for m in _modules() if m != "__init__"])
def test_module_says_its_stage(mod):
    with open(os.path.join(IO, mod + ".py")) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    first = doc.split(":")[0].lower()
    assert any(s in first for s in STAGES), f"io/{mod}.py: the opening comment does not name its stage: {first!r}"
