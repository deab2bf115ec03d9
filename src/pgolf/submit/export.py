"""`pgolf export`: bundle the package into the one self-contained `train_gpt.py` the rules count.

An ast-based bundler: starting from pgolf.submit.submission it collects every pgolf module it imports
(at module top or inside functions), orders them so each module's top-level dependencies come
first, drops the intra-package imports, hoists third-party imports to the top and concatenates
the module bodies under `# ---- pgolf/x.py ----` banners, ending with the submission's main().
The run config is embedded as a literal (the fields that differ from the defaults); only the
top-level definitions the entry point reaches are kept, and what ships is then specialised to
that config (pgolf.submit.specialize). Two forms:

- readable: the specialised bundle as plain Python (`readable_bundle(cfg)` without
  specialisation keeps the comments and module banners);
- compact (default, what the size counts): minified by python-minifier, compressed with the
  smaller of lzma and brotli, stored as raw bytes in a latin-1 string literal in a stub that
  decompresses it, registers it in linecache (so tracebacks and inspect.getsource, which Triton
  needs, still work) and execs it.

Rules that keep this trivial: top-level names unique across bundled modules (checked here),
no import-time side effects, optional dependencies imported lazily inside functions.
"""

from __future__ import annotations

import ast
import hashlib
import json
import lzma
import os
import pprint
import sys
from functools import lru_cache
from pathlib import Path

from pgolf.core.config import RunConfig, apply_mapping, config_to_dict
from pgolf.core.errors import PgolfError
from pgolf.submit.specialize import bound_names, reachable_statements, specialize, used_names

PACKAGE = "pgolf"
ENTRY_MODULE = "submit.submission"
ENTRY_CALL = "submission_main()"
EMBED_MARKER = "EMBEDDED_CONFIG: dict = {}"
REQUIRED_MARKER = "REQUIRED_MODULES: dict = {}"
# Import name -> PyPI name of the third-party modules a bundle may import.
PIP_NAMES = {
    "sentencepiece": "sentencepiece",
    "numpy": "numpy",
    "torch": "torch",
    "safetensors": "safetensors",
    "zstandard": "zstandard",
    "brotli": "brotli",
    "huggingface_hub": "huggingface_hub",
    "scipy": "scipy",
    "rich": "rich",
    "matplotlib": "matplotlib",
    "flash_attn": "flash-attn",
    "flash_attn_interface": "flash-attn-3",
}
SCRIPT_NAME = "train_gpt.py"


class ExportError(PgolfError, ValueError):
    """The package breaks a bundling rule (duplicate top-level name, missing module, ...)."""


def package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def module_path(name: str) -> Path:
    """'quant.pack' -> <package>/quant/pack.py (imports name modules, never subpackages)."""
    path = package_dir().joinpath(*name.split(".")).with_suffix(".py")
    if not path.is_file():
        raise ExportError(f"bundled module pgolf.{name} not found at {path}")
    return path


def intra_imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(modules imported at top level, modules imported inside functions), both pgolf-internal."""
    top, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE + "."):
            (top if node in tree.body else lazy).add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import) and any(a.name.startswith(PACKAGE) for a in node.names):
            raise ExportError(f"use `from pgolf.x import name`, not `import {node.names[0].name}`")
    return top, lazy


def bundle_order(entry: str = ENTRY_MODULE) -> list[str]:
    """Every module reachable from entry, each after its top-level dependencies."""
    order: list[str] = []
    visiting: set[str] = set()
    pending: list[str] = [entry]  # lazily imported modules only need to be present, not ordered

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ExportError(f"top-level import cycle through pgolf.{name}")
        visiting.add(name)
        top, lazy = intra_imports(ast.parse(module_path(name).read_text(encoding="utf-8")))
        for dep in sorted(top):
            visit(dep)
        visiting.discard(name)
        order.append(name)
        pending.extend(sorted(lazy))

    while pending:
        visit(pending.pop(0))
    return order


def top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def check_unique_names(modules: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in modules:
        for ident in top_level_names(ast.parse(module_path(name).read_text(encoding="utf-8"))):
            if ident in seen:
                raise ExportError(f"top-level name {ident!r} is defined in both pgolf.{seen[ident]} and pgolf.{name}")
            seen[ident] = name


def _strip_module(text: str, external: list[str]) -> str:
    """Module text without its docstring, __future__ import and imports; third-party imports are
    appended to `external`, function-level pgolf imports become `pass`."""
    tree = ast.parse(text)
    lines = text.splitlines()
    drop: dict[int, str | None] = {}  # 0-based line -> replacement (None = delete)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        drop.update({i: None for i in range(body[0].lineno - 1, body[0].end_lineno)})
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        internal = isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + ".")
        if node in body:
            if not internal and not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                external.append(ast.get_source_segment(text, node))
            drop.update({i: None for i in range(node.lineno - 1, node.end_lineno)})
        elif internal:
            indent = lines[node.lineno - 1][: node.col_offset]
            drop.update({i: None for i in range(node.lineno - 1, node.end_lineno)})
            drop[node.lineno - 1] = indent + "pass"
    kept = [drop.get(i, line) for i, line in enumerate(lines)]
    return "\n".join(line for line in kept if line is not None).strip("\n")


def _stmt_source(lines: list[str], node: ast.stmt) -> str:
    """The statement's full lines, with its decorators and the comment lines right above it."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return "\n".join(lines[first : node.end_lineno])


def third_party_modules(tree: ast.AST) -> list[str]:
    """Top-level names of every non-stdlib, non-pgolf module the code imports (anywhere)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return sorted(n for n in out if n not in sys.stdlib_module_names and n not in (PACKAGE, "__future__"))


def config_changes(cfg: RunConfig) -> dict:
    """cfg as the nested mapping of the fields that differ from RunConfig()'s defaults (applied to
    a fresh RunConfig it gives cfg back)."""
    base, full = config_to_dict(RunConfig()), json.loads(json.dumps(config_to_dict(cfg)))
    out: dict = {}
    for key, value in full.items():
        if isinstance(value, dict):
            diff = {k: v for k, v in value.items() if base[key][k] != v}
            if diff:
                out[key] = diff
        elif base[key] != value:
            out[key] = value
    return out


def readable_bundle(cfg: RunConfig, specialized: bool = False) -> str:
    """The program as one readable Python file, with cfg embedded: only the definitions the
    submission's entry point reaches, in dependency order, and the third-party imports they use.
    specialized: fold cfg's frozen values in and drop what the run cannot reach (submit.specialize;
    the text is then ast.unparse'd, without comments or module banners)."""
    modules = bundle_order()
    check_unique_names(modules)
    external: list[str] = []
    texts = {}
    for name in modules:
        text = module_path(name).read_text(encoding="utf-8")
        if name == ENTRY_MODULE:
            if EMBED_MARKER not in text:
                raise ExportError(f"pgolf.{ENTRY_MODULE} lacks the line {EMBED_MARKER!r}")
            literal = pprint.pformat(config_changes(cfg), width=100, sort_dicts=True)
            text = text.replace(EMBED_MARKER, "EMBEDDED_CONFIG: dict = " + literal)
        texts[name] = _strip_module(text, external)
    kept = reachable_statements(texts, {ENTRY_CALL.split("(")[0]})
    parts = []
    for name in modules:
        lines = texts[name].splitlines()
        body = "\n\n\n".join(_stmt_source(lines, n) for n in kept[name])
        if body:
            parts.append(f"# ---- pgolf/{name.replace('.', '/')}.py ----\n" + body)
    code = "\n\n\n".join(parts)
    if specialized:
        code = specialize(code, cfg, {ENTRY_CALL.split("(")[0]})
    used = used_names(ast.parse(code))
    imports = [i for i in dict.fromkeys(external) if bound_names(ast.parse(i).body[0]) & used]
    required = third_party_modules(ast.parse("\n".join(imports) + "\n" + code))
    code = code.replace(REQUIRED_MARKER, "REQUIRED_MODULES: dict = " + repr({m: PIP_NAMES.get(m, m) for m in required}))
    head = (
        f'"""Parameter Golf submission generated by pgolf export (preset {cfg.preset}).\n'
        f'Run: torchrun --standalone --nproc_per_node=8 {SCRIPT_NAME}"""\n'
        "from __future__ import annotations\n\n" + "\n".join(imports)
    )
    tail = f'\n\nif __name__ == "__main__":\n    {ENTRY_CALL}\n'
    return head + "\n\n\n" + code + tail


def minified_source(readable: str) -> str:
    """The bundle minified by python-minifier: docstrings, comments and argument annotations
    dropped, locals and top-level functions/variables renamed (the bundle is one module, nothing
    looks a global up by its name); class names kept, so errors and reprs read as in the package;
    literals not hoisted into shared names (that compresses worse)."""
    import python_minifier

    classes = [n.name for n in ast.parse(readable).body if isinstance(n, ast.ClassDef)]
    return python_minifier.minify(
        readable,
        remove_literal_statements=True,
        rename_globals=True,
        rename_locals=True,
        hoist_literals=False,
        preserve_globals=classes,
    )


def byte_literal(payload: bytes) -> str:
    """`payload` as the body of a triple-quoted str literal in a latin-1 source file: every byte is
    one character except backslash, quote, CR and NUL, which are escaped (about 1.5% overhead;
    base85 costs 25%)."""
    out = []
    for b in payload:
        ch = chr(b)
        if ch in '\\"':
            out.append("\\" + ch)
        elif b == 13:
            out.append("\\r")
        elif b == 0:
            out.append("\\x00")
        else:
            out.append(ch)
    return "".join(out)


def _stub(codec: str, payload: bytes) -> bytes:
    body = byte_literal(payload)
    return (
        "# -*- coding: latin-1 -*-\n"
        f"import {codec},linecache as L\n"
        f's={codec}.decompress("""{body}""".encode("latin-1")).decode()\n'
        f"L.cache['<{SCRIPT_NAME}>']=(len(s),None,s.splitlines(True),'<{SCRIPT_NAME}>')\n"
        f"exec(compile(s,'<{SCRIPT_NAME}>','exec'))\n"
    ).encode("latin-1")


def compact_bytes(readable: str) -> bytes:
    """The minified source, compressed with the smaller of lzma and brotli, as raw bytes in a
    latin-1 stub that decompresses it, registers it with linecache (tracebacks and
    inspect.getsource, which Triton needs, keep working) and execs it."""
    import brotli

    src = minified_source(readable).encode("utf-8")
    stubs = [
        _stub("lzma", lzma.compress(src, preset=9 | lzma.PRESET_EXTREME)),
        _stub("brotli", brotli.compress(src, quality=11, lgwin=24)),
    ]
    return min(stubs, key=len)


def export_script(cfg: RunConfig, out: str | Path, readable: bool = False) -> int:
    """Write train_gpt.py (compact unless readable); returns its literal byte size."""
    text = readable_bundle(cfg, specialized=True)
    data = text.encode("utf-8") if readable else compact_bytes(text)
    Path(out).write_bytes(data)
    return len(data)


def submission_config(cfg: RunConfig) -> RunConfig:
    """The config as shipped: machine-specific fields reset to the official defaults (data under
    ./data, run id from RUN_ID or generated, device auto) so the script runs on any 8xH100 box."""
    out = RunConfig()
    apply_mapping(out, json.loads(json.dumps(config_to_dict(cfg))), "config")
    vocab = out.model.vocab_size
    out.run_id, out.device, out.out_dir = "", "auto", "runs"
    out.data.data_path = f"./data/datasets/fineweb10B_sp{vocab}"
    out.data.tokenizer_path = f"./data/tokenizers/fineweb_{vocab}_bpe.model"
    return out


@lru_cache(maxsize=8)
def _compact_size(cfg_json: str) -> int:
    """Exporting takes ~10 s, so sizes are also kept on disk (~/.cache/pgolf/export-sizes, or
    $PGOLF_CACHE_DIR), keyed by the config and every input of the export: the package's sources,
    the Python version and the minifier's and compressors' versions."""
    path = _size_cache_dir() / hashlib.sha256((cfg_json + _export_inputs()).encode()).hexdigest()
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        pass
    cfg = RunConfig()
    apply_mapping(cfg, json.loads(cfg_json), "config")
    size = len(compact_bytes(readable_bundle(cfg, specialized=True)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(str(size))
        tmp.replace(path)
    except OSError:  # a read-only home: no cache, same answer
        pass
    return size


def _size_cache_dir() -> Path:
    return Path(os.environ.get("PGOLF_CACHE_DIR") or Path.home() / ".cache" / "pgolf") / "export-sizes"


@lru_cache(maxsize=1)
def _export_inputs() -> str:
    from importlib import metadata

    digest = hashlib.sha256()
    for path in sorted(package_dir().rglob("*.py")):
        digest.update(str(path.relative_to(package_dir())).encode() + b"\0" + path.read_bytes())
    versions = []
    for dist in ("python-minifier", "brotli"):
        try:
            versions.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            versions.append("-")
    return f"{digest.hexdigest()} {sys.version} {' '.join(versions)}"


def exported_code_bytes(cfg: RunConfig) -> int:
    """Literal bytes of the compact train_gpt.py this config exports to (what the cap counts)."""
    return _compact_size(json.dumps(config_to_dict(submission_config(cfg)), sort_keys=True))
