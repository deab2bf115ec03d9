"""The bundler behind `pgolf export`: the package's modules, each under its own name, in one file.

Every pgolf module the entry point reaches is kept as its own module source; a small import
finder at the top of the file serves them to Python's `import` machinery by name, so a module is
written like any Python module (no package-wide naming rules) and runs unchanged inside the
bundle: its own globals, its own imports, lazy imports inside functions, the registry's plugin
discovery (`pgolf.__bundled_modules__`), tracebacks and `inspect.getsource` (each module's source
is registered in linecache under `<pgolf.x.y>`).

Reachability pruning: starting from the entry point, a top-level statement is kept when a kept
statement uses a name it defines (following `from pgolf.x import name` into module x), and a
class keeps the members kept code names as attributes, the dunders, and the overrides of methods
a base class outside pgolf defines (torch calls `forward`); module-level statements that are not
definitions run on import and are kept, as are the classes of the `scheme_*`/`codec_*` plugin
modules (pgolf.quant.registry finds them by name; defining one registers it). `import pgolf.x as
m` keeps all of module x.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.core.errors import PgolfError

PACKAGE = "pgolf"
PLUGIN_PREFIXES = ("scheme_", "codec_")
PLUGIN_REGISTRY = "pgolf.quant.registry"  # finds the plugin modules by name at run time


class BundleError(PgolfError, ValueError):
    """A module the bundle needs is missing, or uses an import form the bundler refuses."""


def package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path:
    """'pgolf.quant.pack' -> <package>/quant/pack.py (or its package's __init__.py)."""
    parts = name.split(".")[1:]
    path = package_dir().joinpath(*parts).with_suffix(".py")
    if path.is_file():
        return path
    init = package_dir().joinpath(*parts, "__init__.py")
    if init.is_file():
        return init
    raise BundleError(f"bundled module {name} not found at {path}")


@dataclass
class Unit:
    """A top-level statement, or one method of a top-level class."""

    node: ast.stmt
    defines: set[str]  # names it binds (a method: its own name)
    uses: set[str]  # names it loads
    attrs: set[str]  # attribute names it reads (x.attr)
    imports: dict[str, tuple[str, str | None]]  # alias -> (pgolf module, name; None for the module)
    lazy: list[tuple[str, str | None]]  # pgolf imports inside it (function-level)
    root: bool = False  # runs on import: kept whenever its module is
    members: list[Unit] = field(default_factory=list)  # a class: its methods, kept one by one


@dataclass
class Module:
    name: str
    text: str
    units: list[Unit]


def _bound(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    out = set()
    for t in targets:
        out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def _pgolf_import(node: ast.AST) -> list[tuple[str, str, str | None]]:
    """(alias, module, name) of a pgolf import statement; name None for `import pgolf.x as m`."""
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE and not node.level:
        if any(a.name == "*" for a in node.names):
            raise BundleError(f"`from {node.module} import *` cannot be bundled: name the imports")
        return [(a.asname or a.name, node.module, a.name) for a in node.names]
    if isinstance(node, ast.Import):
        out = []
        for a in node.names:
            if a.name.split(".")[0] == PACKAGE:
                if not a.asname:
                    raise BundleError(f"`import {a.name}`: write `import {a.name} as name` or `from ... import`")
                out.append((a.asname, a.name, None))
        return out
    return []


def _annotations(root: ast.AST) -> list[ast.AST]:
    """Annotation expressions inside `root`: never evaluated under `from __future__ import
    annotations` (every pgolf module has it), so the names they hold need no definition."""
    out = []
    for n in ast.walk(root):
        if isinstance(n, ast.arg) and n.annotation is not None:
            out.append(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            out.append(n.returns)
        elif isinstance(n, ast.AnnAssign):
            out.append(n.annotation)
    return out


# dataclasses resolves these names in a field's string annotation through the module's globals
DATACLASS_MARKERS = {"ClassVar", "InitVar", "typing", "dataclasses"}


def _scan(nodes: list[ast.AST], skip: ast.AST | None = None) -> tuple[set[str], set[str], list]:
    """(names loaded, attributes read, pgolf imports) anywhere inside `nodes`, annotations aside."""
    uses, attrs, lazy = set(), set(), []
    for root in nodes:
        hints = {id(x) for a in _annotations(root) for x in ast.walk(a)}
        for n in ast.walk(root):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                if id(n) not in hints or n.id in DATACLASS_MARKERS:
                    uses.add(n.id)
            elif isinstance(n, ast.Attribute):
                if id(n) not in hints:
                    attrs.add(n.attr)
            elif n is not skip and isinstance(n, (ast.Import, ast.ImportFrom)):
                lazy.extend((mod, name) for _, mod, name in _pgolf_import(n))
    return uses, attrs, lazy


def _unit(node: ast.stmt) -> Unit:
    is_import = isinstance(node, (ast.Import, ast.ImportFrom))
    imports = {alias: (mod, name) for alias, mod, name in _pgolf_import(node)}
    defines = _bound(node) | ({a.asname or a.name.split(".")[0] for a in node.names} if is_import else set())
    if isinstance(node, ast.ClassDef):
        methods = [b for b in node.body if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))]
        rest = [b for b in node.body if b not in methods]
        uses, attrs, lazy = _scan([*node.bases, *node.keywords, *node.decorator_list, *rest])
        members = []
        for m in methods:
            m_uses, m_attrs, m_lazy = _scan([m])
            members.append(Unit(m, {m.name}, m_uses, m_attrs, {}, m_lazy))
        return Unit(node, defines, uses, attrs, imports, lazy, members=members)
    uses, attrs, lazy = _scan([node], skip=node)
    definition = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
        isinstance(node, (ast.Assign, ast.AnnAssign)) and bool(defines)
    )
    future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
    docstring = (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    )
    return Unit(node, defines, uses, attrs, imports, lazy, root=future or not (definition or is_import or docstring))


def parse_module(name: str, text: str) -> Module:
    return Module(name, text, [_unit(n) for n in ast.parse(text).body])


def plugin_module_names() -> list[str]:
    """Every scheme_*/codec_* module of the package (pgolf.quant.registry's plugins)."""
    out = []
    for path in sorted(package_dir().rglob("*.py")):
        if path.stem.startswith(PLUGIN_PREFIXES):
            rel = path.relative_to(package_dir()).with_suffix("")
            out.append(".".join((PACKAGE, *rel.parts)))
    return out


def _external_members(module: str, cls: str) -> set[str]:
    """Member names a class inherits from bases defined outside pgolf (framework hooks: torch
    calls `forward`, `extra_repr`, ...)."""
    try:
        obj = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return set()
    out = set()
    for base in getattr(obj, "__mro__", ())[1:]:
        if not base.__module__.startswith(PACKAGE):
            out |= set(vars(base))
    return out


class Reach:
    """The fixed point of what the entry point reaches: kept statements and kept class methods."""

    def __init__(
        self, entry_module: str, entry_name: str, texts: dict[str, str] | None = None, plugins: set[str] | None = None
    ):
        self.texts = texts or {}  # module name -> text to use instead of its file (the export's literals)
        self.plugins = plugins  # the plugin modules to ship (None: every one)
        self.modules: dict[str, Module] = {}
        self.kept: dict[str, set[int]] = {}  # module -> indexes of kept statements
        self.kept_members: set[tuple[str, int, int]] = set()
        self.classes: list[tuple[str, int]] = []  # kept classes, whose methods are decided later
        self.names: list[tuple[str, str]] = [(entry_module, entry_name)]
        self.seen: set[tuple[str, str]] = set()
        self.attrs: set[str] = set()
        self.uses: dict[str, set[str]] = {}  # module -> names its kept code loads
        self._external: dict[tuple[str, str], set[str]] = {}

    def module(self, name: str) -> Module:
        if name not in self.modules:
            text = self.texts.get(name) or module_file(name).read_text(encoding="utf-8")
            mod = self.modules[name] = parse_module(name, text)
            self.kept[name], self.uses[name] = set(), set()
            for i, unit in enumerate(mod.units):
                if unit.root:
                    self.keep(name, i)
            if name == PLUGIN_REGISTRY:  # defining a plugin's class registers it
                for plugin in plugin_module_names():
                    if self.plugins is not None and plugin not in self.plugins:
                        continue
                    for i, unit in enumerate(self.module(plugin).units):
                        if isinstance(unit.node, ast.ClassDef):
                            self.keep(plugin, i)
        return self.modules[name]

    def whole(self, name: str) -> None:
        for i in range(len(self.module(name).units)):
            self.keep(name, i)

    def _take(self, name: str, unit: Unit) -> None:
        self.attrs |= unit.attrs
        self.uses[name] |= unit.uses
        self.names.extend((name, used) for used in unit.uses)
        for mod, target in unit.lazy:
            if target is None:
                self.whole(mod)
            else:
                self.names.append((mod, target))

    def keep(self, name: str, i: int) -> None:
        if i in self.kept[name]:
            return
        self.kept[name].add(i)
        unit = self.modules[name].units[i]
        self._take(name, unit)
        if unit.members:
            self.classes.append((name, i))

    def resolve(self, name: str, ident: str) -> None:
        for i, unit in enumerate(self.module(name).units):
            if ident in unit.defines:
                self.keep(name, i)
                if ident in unit.imports:
                    target_mod, target = unit.imports[ident]
                    self.whole(target_mod) if target is None else self.names.append((target_mod, target))

    def member_needed(self, name: str, i: int, member: Unit) -> bool:
        (m,) = member.defines
        if (m.startswith("__") and m.endswith("__")) or m in self.attrs or m in self.uses[name]:
            return True
        key = (name, self.modules[name].units[i].node.name)
        if key not in self._external:
            self._external[key] = _external_members(*key)
        return m in self._external[key]

    def run(self) -> Reach:
        changed = True
        while changed:
            while self.names:
                name, ident = self.names.pop()
                if (name, ident) not in self.seen:
                    self.seen.add((name, ident))
                    self.resolve(name, ident)
            changed = False
            for name, i in list(self.classes):
                for k, member in enumerate(self.modules[name].units[i].members):
                    if (name, i, k) not in self.kept_members and self.member_needed(name, i, member):
                        self.kept_members.add((name, i, k))
                        self._take(name, member)
                        changed = True
        return self


def _segment(lines: list[str], node: ast.stmt) -> tuple[int, int]:
    """0-based [first, last) lines of a statement, with its decorators and the comments above it."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return first, node.end_lineno


def _import_line(node: ast.ImportFrom | ast.Import, needed: set[str], line: str) -> str:
    """A pgolf import statement keeping only the aliases kept code uses (indentation kept)."""
    indent = line[: len(line) - len(line.lstrip())]
    keep = [a for a in node.names if (a.asname or a.name) in needed]
    if isinstance(node, ast.Import):
        return indent + "import " + ", ".join(f"{a.name} as {a.asname}" for a in keep)
    names = ", ".join(a.name if not a.asname else f"{a.name} as {a.asname}" for a in keep)
    return f"{indent}from {node.module} import {names}"


def module_text(reach: Reach, name: str) -> str:
    """The kept statements of a module in source order, with their comments; top-level pgolf
    imports cut to the names kept code uses; unreached class methods dropped."""
    mod = reach.modules[name]
    lines = mod.text.splitlines()
    out = []
    for i in sorted(reach.kept[name]):
        unit = mod.units[i]
        first, last = _segment(lines, unit.node)
        chunk = lines[first:last]
        if unit.imports:
            needed = {a for a in unit.imports if a in reach.uses[name]}
            if not needed:
                continue
            head = lines[first : unit.node.lineno - 1]
            chunk = head + [_import_line(unit.node, needed, lines[unit.node.lineno - 1])]
        dropped = [k for k in range(len(unit.members)) if (name, i, k) not in reach.kept_members]
        for k in reversed(dropped):
            a, b = _segment(lines, unit.members[k].node)
            del chunk[a - first : b - first]
        if dropped and len(dropped) == len(unit.node.body):  # nothing left in the class body
            chunk.append(" " * (unit.node.body[0].col_offset) + "pass")
        out.append("\n".join(chunk))
    return "\n\n\n".join(out) + "\n"


def _raw_literal(text: str) -> str:
    """A Python literal for `text`: a raw triple-quoted string when one holds it exactly (no such
    triple quote inside, no backslash right before a quote or at the end), else repr()."""
    for q in ("'''", '"""'):
        c = q[0]
        if q not in text and not text.endswith(("\\", c)) and "\\" + c not in text:
            return f"r{q}{text}{q}"
    return repr(text)


LOADER = '''
import importlib.abc
import importlib.util
import linecache
import sys


class PgolfBundle(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Serves the pgolf modules of this file to `import` by name (pgolf export)."""

    def __init__(self, sources):
        self.sources = sources
        self.packages = {m.rsplit(".", k)[0] for m in sources for k in range(1, m.count(".") + 1)}

    def find_spec(self, name, path=None, target=None):
        if name in self.sources or name in self.packages:
            return importlib.util.spec_from_loader(name, self, is_package=name in self.packages)
        return None

    def is_package(self, name):
        return name in self.packages

    def get_source(self, name):
        return self.sources.get(name, "")

    def get_code(self, name):
        source, filename = self.get_source(name), f"<{name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        return compile(source, filename, "exec", dont_inherit=True)

    def exec_module(self, module):
        if module.__name__ == "pgolf":
            module.__bundled_modules__ = sorted(self.sources)
        exec(self.get_code(module.__name__), module.__dict__)


sys.meta_path.insert(0, PgolfBundle(SOURCES))
'''


def emit(sources: dict[str, str], header: str, entry: str, readable: bool) -> str:
    """The bundle file: header, the sources as literals, the loader, then the entry call (the
    loader and the call minified too unless `readable`)."""
    mod, _, fn = entry.rpartition(".")
    code = LOADER.strip("\n") + f'\n\n\nif __name__ == "__main__":\n    from {mod} import {fn}\n\n    {fn}()\n'
    if not readable:
        code = minify(code, set(), keep_names=False)
    parts = [header, "SOURCES = {}"]
    for name, text in sources.items():
        parts.append(f"SOURCES[{name!r}] = " + _raw_literal(text))
    parts.append(code)
    return "\n\n".join(parts)


def third_party_modules(sources: dict[str, str]) -> list[str]:
    """Top-level names of every non-stdlib, non-pgolf module the sources import (anywhere)."""
    out = set()
    for text in sources.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                out.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module.split(".")[0])
    return sorted(n for n in out if n not in sys.stdlib_module_names and n not in (PACKAGE, "__future__"))


COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp)  # inlined by PEP 709 (generators are not)


def sibling_comprehension_hazard(text: str) -> str | None:
    """CPython 3.12.0-3.12.3 (gh-118513, PEP 709 inlining) raise UnboundLocalError when, in one
    function, a name is bound by one comprehension and read as a global inside a sibling one;
    minified names make that likely (a GPU image's Python 3.12.3 failed so). Returns the first
    case as "function: name"."""
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        local = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and not _in_comprehension(fn, n):
                local.add(n.id)
        comps = [c for c in ast.walk(fn) if isinstance(c, COMPREHENSIONS)]
        bound = {n for c in comps for n in _comp_targets(c)}
        for c, visible in _comprehensions(fn, frozenset()):
            loads = {n.id for n in ast.walk(c) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            nested = {
                n for x in ast.walk(c) if isinstance(x, (*COMPREHENSIONS, ast.GeneratorExp)) for n in _comp_targets(x)
            }
            clash = (loads - nested - visible - local) & bound
            if clash:
                return f"{getattr(fn, 'name', 'lambda')}: {sorted(clash)[0]}"
    return None


def _comp_targets(c: ast.AST) -> set[str]:
    return {n.id for g in c.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}


def _comprehensions(node: ast.AST, visible: frozenset):
    """(comprehension, names bound by the comprehensions enclosing it) for every inlined one."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (*COMPREHENSIONS, ast.GeneratorExp)):
            if isinstance(child, COMPREHENSIONS):
                yield child, visible
            yield from _comprehensions(child, visible | _comp_targets(child))
        elif not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield from _comprehensions(child, visible)


def _in_comprehension(fn: ast.AST, target: ast.Name) -> bool:
    for c in ast.walk(fn):
        if isinstance(c, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            if any(target is n for n in ast.walk(c)):
                return True
    return False


def imported_names(reach: Reach) -> dict[str, set[str]]:
    """Module -> the names kept code of other modules imports from it (they keep their names when
    the module is minified; every other module-level name may be renamed)."""
    out: dict[str, set[str]] = {name: set() for name in reach.modules}
    for name, idxs in reach.kept.items():
        units = [reach.modules[name].units[i] for i in idxs]
        units += [
            u.members[k]
            for u in units
            for (m, i, k) in reach.kept_members
            if m == name and u is reach.modules[name].units[i]
        ]
        for unit in units:
            for mod, target in [*unit.imports.values(), *unit.lazy]:
                if target and mod in out:
                    out[mod].add(target)
    return out


def minify(text: str, preserve: set[str] | None = None, keep_names: bool = True) -> str:
    """python-minifier on one module: docstrings and annotations out, locals renamed, module-level
    names renamed too except `preserve` (None: keep them all) and classes (errors and reprs read as
    in the package); literals not hoisted (compresses worse). A module whose renamed names would
    hit gh-118513 (sibling_comprehension_hazard) keeps its names."""
    import python_minifier

    classes = {n.name for n in ast.parse(text).body if isinstance(n, ast.ClassDef)} if keep_names else set()
    keep = set(preserve or ()) | classes
    keep |= set(dir(builtins))  # aliasing builtins to short globals is what collided on 3.12.3
    kw = dict(remove_literal_statements=True, hoist_literals=False)
    for rename_globals, rename_locals in ((preserve is not None, True), (False, True), (False, False)):
        out = python_minifier.minify(
            text, rename_globals=rename_globals, rename_locals=rename_locals, preserve_globals=sorted(keep), **kw
        )
        if not sibling_comprehension_hazard(out):
            return out
    return out
