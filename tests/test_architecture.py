"""The package's shape, read from its real imports (ast, every import anywhere in a module, lazy
ones included): subpackages form layers, no import runs upward, and no two modules import each
other even indirectly. ARCHITECTURE.md draws the same order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgolf

PACKAGE_DIR = Path(pgolf.__file__).resolve().parent
# Bottom to top: a module may import its own layer and the layers below it, never above.
LAYERS = ("core", "data", "model", "quant", "eval", "train", "finish", "submit", "bench", "cli")
TOP_LEVEL = {"pgolf": -1, "pgolf.__main__": len(LAYERS)}  # the package docstring; `python -m pgolf`


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every pgolf module a file imports, at top level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use `from pgolf.x.y import name`")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pgolf":
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pgolf")
    return out


def layer(module: str) -> int:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    sub = module.split(".")[1]
    if sub not in LAYERS:
        raise AssertionError(f"{module}: not in a layer subpackage {LAYERS}")
    return LAYERS.index(sub)


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {}
    for name, path in modules.items():
        deps = imports_of(path)
        unknown = deps - set(modules)
        assert not unknown, f"{name} imports {sorted(unknown)}, which are not modules of the package"
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_every_module_sits_in_a_layer_and_no_import_runs_upward():
    upward = [
        f"{m} (layer {LAYERS[layer(m)] if 0 <= layer(m) < len(LAYERS) else m}) imports {d}"
        for m, deps in import_graph().items()
        for d in sorted(deps)
        if layer(d) > layer(m)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles_lazy_imports_included():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_subpackage_inits_say_what_they_own_and_hold_no_code():
    for sub in LAYERS:
        tree = ast.parse((PACKAGE_DIR / sub / "__init__.py").read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        assert doc and len(doc) > 80, f"pgolf/{sub}/__init__.py needs a paragraph saying what it owns"
        assert len(tree.body) == 1, f"pgolf/{sub}/__init__.py must hold only its docstring (no re-exports)"


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The two rules fail on a deliberately broken graph (so the tests above can fail)."""
    graph = import_graph()
    broken = {k: set(v) for k, v in graph.items()}
    broken["pgolf.quant.pack"].add("pgolf.model.gpt")
    broken["pgolf.model.gpt"].add("pgolf.quant.pack")
    assert find_cycle(broken) is not None
    assert layer("pgolf.finish.finalize") > layer("pgolf.train.trainer")
    assert layer("pgolf.submit.export") > layer("pgolf.finish.finalize")
    with pytest.raises(AssertionError):
        layer("pgolf.nowhere.x")


def test_architecture_doc_lists_the_layers_in_order():
    text = (PACKAGE_DIR.parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8")
    positions = [text.find(f"pgolf/{sub}/") for sub in LAYERS]
    assert all(p >= 0 for p in positions), "ARCHITECTURE.md must name every layer"
    assert len(text.splitlines()) <= 80
