"""Specialise the exported bundle to its embedded config: what the run can never execute is not shipped.

The exporter knows every config value the submission will run with, except the ones the official
env vars (RUN_ID, SEED, DATA_PATH, NUM_LAYERS, ...) may still change. This pass

1. types expressions statically: function parameters annotated with a config class (or any
   bundled class whose fields are annotated), single-assignment locals, `self.attr` set once from
   a typed value, attribute chains (`cfg.model` is a ModelConfig);
2. replaces each read of a frozen scalar field (`cfg.model.xsa_layers`, `q.lqer_rank`) by its
   value; a field is frozen unless an env knob names it, code anywhere assigns an attribute of
   that name, or a `replace(obj, field=...)` call rewrites it;
3. folds constant tests (`not`, `and`/`or`, comparisons, `is None`, conditional expressions) and
   drops the branches that cannot run, and the statements after a `return`/`raise`;
4. drops methods no code can call (their name appears nowhere as an attribute or a string and
   is not a framework hook) and the top-level definitions the entry point no longer reaches;
5. propagates what that exposes: a parameter every call site leaves at one literal, a local
   assigned once from a literal, a call of a function whose body folded to `return <literal>`;
   then repeats from 3 until a round changes nothing.

A config class the bundle constructs more than its one RunConfig (and that RunConfig's sections)
is not folded at all, and `replace(...)` keywords stay dynamic, so a frozen value is the value at
run time; behaviour is unchanged for the embedded config (tests train the package and the bundle
and compare losses and the artifact's sha256).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, get_type_hints

from pgolf.core.config import ENV_KNOBS, SECTIONS, RunConfig

SCALARS = (bool, int, float, str, type(None))
# Methods a framework calls by name (nn.Module, autograd.Function, optimizers, pickling, context managers).
HOOKS = frozenset(
    {
        "forward",
        "backward",
        "setup_context",
        "step",
        "zero_grad",
        "state_dict",
        "load_state_dict",
        "extra_repr",
        "reset_parameters",
        "train",
        "eval",
    }
)


def frozen_values(cfg: RunConfig, code: ast.Module) -> dict[str, dict[str, Any]]:
    """Config class name -> {field: value} for every scalar field the running script cannot change."""
    dynamic: dict[str, set[str]] = {}
    for dotted in ENV_KNOBS.values():
        section, _, name = dotted.rpartition(".")
        dynamic.setdefault(section, set()).add(name)
    stored = {n.attr for n in ast.walk(code) if isinstance(n, ast.Attribute) and not isinstance(n.ctx, ast.Load)}
    stored |= {
        k.arg for n in ast.walk(code) if isinstance(n, ast.Call) and _call_name(n) == "replace" for k in n.keywords
    }
    built: dict[str, int] = {}  # config class -> constructor calls in the bundle
    for n in ast.walk(code):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            built[n.func.id] = built.get(n.func.id, 0) + 1
    out = {}
    for section, obj in [("", cfg)] + [(s, getattr(cfg, s)) for s in SECTIONS]:
        name = type(obj).__name__
        if built.get(name, 0) > (0 if section else 1):  # another instance could hold other values
            out[name] = {}
            continue
        out[name] = {
            f.name: getattr(obj, f.name)
            for f in dataclasses.fields(obj)
            if isinstance(getattr(obj, f.name), SCALARS)
            and f.name not in dynamic.get(section, set())
            and f.name not in stored
        }
    return out


def frozen_options(values: dict[str, dict[str, Any]]) -> set[str]:
    """Dotted names ('model.xsa_layers', 'seed') of the frozen fields."""
    prefix = {type(getattr(RunConfig(), s)).__name__: s + "." for s in SECTIONS} | {"RunConfig": ""}
    return {prefix[cls] + name for cls, fields in values.items() for name in fields}


def prune_option_tables(code: ast.Module, frozen: set[str]) -> None:
    """Top-level dict displays keyed by dotted option names (e.g. RANGES) keep only the options the
    running script can still change: the others were checked when the script was exported."""
    options = {f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(RunConfig(), s))}
    options |= {f.name for f in dataclasses.fields(RunConfig)}
    for node in code.body:
        d = getattr(node, "value", None)
        if (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and isinstance(d, ast.Dict)
            and d.keys
            and all(isinstance(k, ast.Constant) and k.value in options for k in d.keys)
        ):
            pairs = [(k, v) for k, v in zip(d.keys, d.values) if k.value not in frozen]
            d.keys, d.values = [k for k, _ in pairs], [v for _, v in pairs]


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _annotation_class(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
        return node.value
    return None


def field_types(code: ast.Module) -> dict[str, dict[str, str]]:
    """Bundled class -> {attribute: class name} from annotated class fields and from `self.x = param`
    in a method whose parameter is annotated (only attributes assigned exactly once)."""
    types: dict[str, dict[str, str]] = {"RunConfig": {s: get_type_hints(RunConfig)[s].__name__ for s in SECTIONS}}
    stores: dict[str, int] = {}  # attribute name -> assignments anywhere in the bundle
    for node in ast.walk(code):
        for target in _store_targets(node):
            if isinstance(target, ast.Attribute):
                stores[target.attr] = stores.get(target.attr, 0) + 1
    for cls in (n for n in code.body if isinstance(n, ast.ClassDef)):
        own = types.setdefault(cls.name, {})
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                ann = _annotation_class(node.annotation)
                if ann:
                    own[node.target.id] = ann
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            params = {a.arg: _annotation_class(a.annotation) for a in fn.args.args + fn.args.kwonlyargs}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Name):
                    t = node.targets[0]
                    if (
                        isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Name)
                        and t.value.id == "self"
                        and params.get(node.value.id)
                        and stores[t.attr] == 1
                    ):
                        own.setdefault(t.attr, params[node.value.id])
    return types


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    a = fn.args
    return {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}


def _store_counts(fn: ast.AST) -> dict[str, int]:
    """Name -> how many times `fn` (nested scopes included) assigns it."""
    counts: dict[str, int] = {}
    for node in ast.walk(fn):
        for target in _store_targets(node):
            if isinstance(target, ast.Name):
                counts[target.id] = counts.get(target.id, 0) + 1
    return counts


def _nested_bindings(fn: ast.AST) -> set[str]:
    """Names a nested function or lambda binds as a parameter, or `global`/`nonlocal` declares:
    a read of such a name inside `fn` may not be `fn`'s own variable."""
    out = {n for sub in ast.walk(fn) if isinstance(sub, (ast.Global, ast.Nonlocal)) for n in sub.names}
    return out | {
        p
        for sub in ast.walk(fn)
        if sub is not fn and isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for p in _params(sub)
    }


def _store_targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return [t for tgt in node.targets for t in ast.walk(tgt)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return list(ast.walk(node.target))
    if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        return list(ast.walk(node.target))
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return list(ast.walk(node.optional_vars))
    if isinstance(node, ast.NamedExpr):
        return [node.target]
    return []


class Folder(ast.NodeTransformer):
    """Replaces frozen config reads by constants and removes the code constant tests rule out."""

    def __init__(self, values: dict[str, dict[str, Any]], types: dict[str, dict[str, str]]):
        self.values, self.types = values, types
        self.scopes: list[dict[str, str]] = [{}]
        self.classes: list[str] = []

    # -- typing
    def type_of(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.scopes[-1].get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self.type_of(node.value)
            return self.types.get(owner, {}).get(node.attr) if owner else None
        return None

    def _local_types(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, str]:
        local = {
            a.arg: c
            for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
            if (c := _annotation_class(a.annotation)) and c in self.types
        }
        if self.classes and fn.args.args and fn.args.args[0].arg == "self":
            local["self"] = self.classes[-1]
        counts = _store_counts(fn)
        params = {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
        local = {n: c for n, c in local.items() if not counts.get(n)}  # a reassigned parameter loses its type
        self.scopes.append(local)
        for node in ast.walk(fn):  # single-assignment locals from a typed expression
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                typ = self.type_of(node.value)
                if typ and counts.get(name) == 1 and name not in params:
                    local[name] = typ
        self.scopes.pop()
        return local

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.scopes.append(self._local_types(node))
        node.body = self.block(node.body)
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        self.scopes.pop()
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.scopes.append({})
        self.generic_visit(node)
        self.scopes.pop()
        return node

    # -- constants
    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.ctx, ast.Load):
            owner = self.type_of(node.value)
            frozen = self.values.get(owner or "", {})
            if node.attr in frozen:
                return ast.copy_location(ast.Constant(frozen[node.attr]), node)
        self.generic_visit(node)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and (t := truth(node.operand)) is not None:
            return ast.copy_location(ast.Constant(not t), node)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        is_and = isinstance(node.op, ast.And)
        values = list(node.values)
        while len(values) > 1 and truth(values[0]) is is_and:  # `True and x` -> x, `False or x` -> x
            values.pop(0)
        if truth(values[0]) is (not is_and):  # `False and x` -> False, `True or x` -> True
            return values[0]
        if len(values) == 1:
            return values[0]
        node.values = values
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        operands = [node.left] + node.comparators
        if all(_literal(o) for o in operands) and not any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            try:
                value = eval(compile(ast.Expression(node), "<fold>", "eval"), {"__builtins__": {}})  # literals only
            except Exception:  # noqa: BLE001 - leave what cannot be evaluated to run time
                return node
            return ast.copy_location(ast.Constant(value), node)
        if (
            len(node.ops) == 1
            and isinstance(node.ops[0], (ast.Is, ast.IsNot))
            and all(
                isinstance(o, ast.Constant) and o.value in (None, True, False) and type(o.value) in (bool, type(None))
                for o in operands
            )
        ):
            same = node.left.value is node.comparators[0].value
            return ast.copy_location(ast.Constant(same if isinstance(node.ops[0], ast.Is) else not same), node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if (
            isinstance(node.func, ast.Name)
            and node.func.id == "bool"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Constant)
        ):
            return ast.copy_location(ast.Constant(bool(node.args[0].value)), node)
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        t = truth(node.test)
        return node if t is None else (node.body if t else node.orelse)

    # -- statements
    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            new = self.visit(stmt)
            out.extend(new if isinstance(new, list) else [new] if new is not None else [])
            if out and isinstance(out[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                break
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if (
                isinstance(stmts, list)
                and stmts
                and isinstance(stmts[0], ast.stmt)
                and not isinstance(node, ast.Module)
            ):
                setattr(node, name, self.block(stmts) or ([ast.Pass()] if name == "body" else []))
        for name, value in ast.iter_fields(node):
            if name in ("body", "orelse", "finalbody") and not isinstance(node, ast.Module):
                continue
            if isinstance(value, list):
                new_list = []
                for item in value:
                    if isinstance(item, ast.AST):
                        item = self.visit(item)
                        if item is None:
                            continue
                        if isinstance(item, list):
                            new_list.extend(item)
                            continue
                    new_list.append(item)
                value[:] = new_list
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt]:
        node.test = self.visit(node.test)
        t = truth(node.test)
        if t is None:
            node.body = self.block(node.body) or [ast.Pass()]
            node.orelse = self.block(node.orelse)
            return node
        kept = self.block(node.body if t else node.orelse)
        return kept or [ast.Pass()]


def truth(node: ast.AST) -> bool | None:
    """The truth value of a constant expression, None when it depends on run time."""
    if isinstance(node, ast.Constant):
        return bool(node.value)
    return None


def _literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_literal(e) for e in node.elts)
    return False


def prune_methods(code: ast.Module) -> int:
    """Drop methods whose name no code mentions (attribute or string) and no framework calls."""
    mentioned = {n.attr for n in ast.walk(code) if isinstance(n, ast.Attribute)}
    mentioned |= {n.value for n in ast.walk(code) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    dropped = 0
    for cls in (n for n in ast.walk(code) if isinstance(n, ast.ClassDef)):
        keep = []
        for node in cls.body:
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not node.name.startswith("__")
                and node.name not in HOOKS
                and node.name not in mentioned
            ):
                dropped += 1
                continue
            keep.append(node)
        cls.body = keep or [ast.Pass()]
    return dropped


def bound_names(node: ast.stmt) -> set[str]:
    """Top-level names a statement defines (def/class names, assignment targets, import aliases)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = (
        node.targets
        if isinstance(node, ast.Assign)
        else [node.target]
        if isinstance(node, (ast.AnnAssign, ast.AugAssign))
        else []
    )
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _scope_stores(fn: ast.AST) -> set[str]:
    """Names a function itself binds (not its nested functions, lambdas or comprehensions)."""
    out: set[str] = set()
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
            continue
        if isinstance(n, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, ast.alias):
            out.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        todo.extend(ast.iter_child_nodes(n))
    return out


def used_names(node: ast.AST) -> set[str]:
    """Global names a statement reads. Not counted: a function's own parameters and locals (a
    parameter called `resume` does not keep the top-level `resume`), and function annotations
    (never evaluated: the bundle has `from __future__ import annotations`, and the minifier drops
    them); class-level field annotations count (dataclasses and get_type_hints read them)."""
    out: set[str] = set()

    def visit(n: ast.AST, local: frozenset[str]) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = n.args
            for d in a.defaults + [d for d in a.kw_defaults if d is not None] + getattr(n, "decorator_list", []):
                visit(d, local)
            declared = {g for s in ast.walk(n) if isinstance(s, (ast.Global, ast.Nonlocal)) for g in s.names}
            inner = local | ((_params(n) | _scope_stores(n)) - declared)
            for s in n.body if isinstance(n.body, list) else [n.body]:
                visit(s, inner)
            return
        if isinstance(n, ast.AnnAssign) and local:  # a local variable's annotation
            for child in (n.target, n.value):
                if child is not None:
                    visit(child, local)
            return
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local:
            out.add(n.id)
        for child in ast.iter_child_nodes(n):
            visit(child, local)

    visit(node, frozenset())
    return out


def reachable_statements(texts: dict[str, str], roots: set[str]) -> dict[str, list[ast.stmt]]:
    """Per module (name -> source), the top-level statements the roots reach, in source order."""
    return reachable_nodes({m: ast.parse(t) for m, t in texts.items()}, roots)


def reachable_nodes(trees: dict[str, ast.Module], roots: set[str]) -> dict[str, list[ast.stmt]]:
    """Per module, the top-level statements the roots reach: a definition is kept when a kept
    statement names it (calls, references, annotations, decorators, default values), so a
    function nothing in the run can call is not shipped. Statements that define nothing (a
    top-level `if`, an expression) are always kept. Conservative: a local variable that shares a
    top-level name keeps that definition too."""
    defines: dict[str, list[tuple[str, ast.stmt]]] = {}
    kept: dict[str, list[ast.stmt]] = {m: [] for m in trees}
    todo = set(roots)
    for m, tree in trees.items():
        for node in tree.body:
            names = bound_names(node)
            for n in names:
                defines.setdefault(n, []).append((m, node))
            if not names:
                kept[m].append(node)
                todo |= used_names(node)
    seen: set[int] = {id(n) for ns in kept.values() for n in ns}
    while todo:
        name = todo.pop()
        for m, node in defines.get(name, []):
            if id(node) not in seen:
                seen.add(id(node))
                kept[m].append(node)
                todo |= used_names(node)
    order = {id(n): i for tree in trees.values() for i, n in enumerate(tree.body)}
    return {m: sorted(ns, key=lambda n: order[id(n)]) for m, ns in kept.items()}


def prune_unreached(tree: ast.Module, roots: set[str]) -> None:
    """Keep only the top-level statements the roots reach (in their order)."""
    kept = {id(n) for n in reachable_nodes({"": tree}, roots)[""]}
    tree.body = [n for n in tree.body if id(n) in kept]


def call_constants(code: ast.Module) -> dict[str, dict[str, Any]]:
    """Top-level function -> {parameter: value} for parameters every call site leaves at the same
    literal (passed or defaulted). Only functions referenced solely as the callee of plain calls
    (no `*args`/`**kwargs` at the call) qualify; parameters the body reassigns are left alone."""
    funcs = {n.name: n for n in code.body if isinstance(n, ast.FunctionDef)}
    calls: dict[str, list[ast.Call]] = {name: [] for name in funcs}
    callees = set()
    for node in ast.walk(code):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs:
            callees.add(id(node.func))
            calls[node.func.id].append(node)
    escaped = {n.id for n in ast.walk(code) if isinstance(n, ast.Name) and n.id in funcs and id(n) not in callees}
    out: dict[str, dict[str, Any]] = {}
    for name, fn in funcs.items():
        a = fn.args
        if name in escaped or not calls[name] or a.vararg or a.kwarg or a.posonlyargs:
            continue
        if any(isinstance(x, ast.Starred) for c in calls[name] for x in c.args) or any(
            k.arg is None for c in calls[name] for k in c.keywords
        ):
            continue
        positional = [x.arg for x in a.args]
        defaults = dict(zip(positional[len(positional) - len(a.defaults) :], a.defaults))
        defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        reassigned = set(_store_counts(fn)) | _nested_bindings(fn)
        const: dict[str, Any] = {}
        for param in positional + [x.arg for x in a.kwonlyargs]:
            seen = {}
            for c in calls[name]:
                given = dict(zip(positional, c.args)) | {k.arg: k.value for k in c.keywords}
                value = given.get(param, defaults.get(param))
                key = (type(value.value).__name__, repr(value.value)) if isinstance(value, ast.Constant) else None
                seen[key] = value.value if key else None
            if len(seen) == 1 and None not in seen and param not in reassigned:
                const[param] = next(iter(seen.values()))
        if const:
            out[name] = const
    return out


def fold_parameters(code: ast.Module, consts: dict[str, dict[str, Any]]) -> None:
    """Inside each top-level function, reads of its constant parameters become the constant."""
    for fn in code.body:
        values = consts.get(getattr(fn, "name", ""), {})
        if isinstance(fn, ast.FunctionDef) and values:
            _replace_names(fn, values)


def _replace_names(fn: ast.AST, values: dict[str, Any]) -> None:
    for sub in ast.walk(fn):
        for field, child in ast.iter_fields(sub):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and child.id in values:
                setattr(sub, field, ast.copy_location(ast.Constant(values[child.id]), child))
            elif isinstance(child, list):
                child[:] = [
                    ast.copy_location(ast.Constant(values[c.id]), c)
                    if isinstance(c, ast.Name) and isinstance(c.ctx, ast.Load) and c.id in values
                    else c
                    for c in child
                ]


class LocalConstants(ast.NodeTransformer):
    """A local assigned exactly once, from a literal, is that literal wherever the function reads it
    (`checkpoint = False` after folding, then `if checkpoint:` folds too)."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)  # nested functions first
        counts, blocked = _store_counts(node), _nested_bindings(node) | _params(node)
        consts = {
            sub.targets[0].id: sub.value.value
            for sub in ast.walk(node)
            if isinstance(sub, ast.Assign)
            and len(sub.targets) == 1
            and isinstance(sub.targets[0], ast.Name)
            and isinstance(sub.value, ast.Constant)
            and counts.get(sub.targets[0].id) == 1
            and sub.targets[0].id not in blocked
        }
        if consts:
            _replace_names(node, consts)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef


def _pure(node: ast.AST) -> bool:
    return all(isinstance(n, (ast.Name, ast.Attribute, ast.Constant, ast.Load, ast.Tuple)) for n in ast.walk(node))


class ConstantCalls(ast.NodeTransformer):
    """A call, with side-effect-free arguments, of a top-level function whose whole body is
    `return <literal>` (after folding) is that literal."""

    def __init__(self, code: ast.Module):
        self.values = {
            n.name: n.body[-1].value.value
            for n in code.body
            if isinstance(n, ast.FunctionDef)
            and not n.decorator_list
            and isinstance(n.body[-1], ast.Return)
            and isinstance(n.body[-1].value, ast.Constant)
            and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in n.body[:-1])
        }

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in self.values
            and all(_pure(a) for a in node.args)
            and all(_pure(k.value) for k in node.keywords)
        ):
            return ast.copy_location(ast.Constant(self.values[node.func.id]), node)
        return node


def specialize(code: str, cfg: RunConfig, roots: set[str], rounds: int = 4) -> str:
    """`code` (the bundle's module bodies) with cfg's frozen values folded in and what `roots` no
    longer reach removed; repeated, since each pass can make new parameters constant."""
    tree = ast.parse(code)
    values = frozen_values(cfg, tree)
    prune_option_tables(tree, frozen_options(values))
    size = -1
    for _ in range(rounds):
        if size == (size := sum(1 for _ in ast.walk(tree))):  # the last round changed nothing
            break
        tree.body = Folder(values, field_types(tree)).block(tree.body)
        prune_unreached(tree, roots)
        prune_methods(tree)  # once per round: the next round catches methods only dropped ones named
        fold_parameters(tree, call_constants(tree))
        tree = LocalConstants().visit(tree)
        tree = ConstantCalls(tree).visit(tree)
    tree.body = Folder(values, field_types(tree)).block(tree.body)
    prune_unreached(tree, roots)
    return ast.unparse(ast.fix_missing_locations(tree))
