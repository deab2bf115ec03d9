"""Export: the bundle is self-contained, keeps the bundling rules, and trains exactly like the package."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import tiny_config
from pgolf.core.presets import frontier, naive_baseline
from pgolf.submit.bundle import Reach, emit, minify, module_text, sibling_comprehension_hazard
from pgolf.submit.export import (
    bundle_sources,
    byte_literal,
    compact_bytes,
    compact_source,
    export_script,
    exported_code_bytes,
    readable_bundle,
    submission_config,
)


def test_bundle_keeps_the_modules_the_run_reaches_and_not_the_cli():
    texts, exported = bundle_sources(submission_config(frontier()))
    assert {
        "pgolf.submit.submission",
        "pgolf.model.gpt",
        "pgolf.train.trainer",
        "pgolf.finish.finalize",
        "pgolf.finish.artifact",
        "pgolf.quant.schemes",
        "pgolf.quant.pack",
        "pgolf.eval.scoring",
        "pgolf.quant.container",
        "pgolf.quant.scheme_mixed",  # the configured scheme's plugin, found by the registry at run time
        "pgolf.quant.codec_brotli",
    } <= set(texts)
    assert "pgolf.quant.scheme_int8" not in texts  # frontier quantizes with mixed
    assert not any(m.startswith(("pgolf.cli", "pgolf.bench")) for m in texts)  # the command line is not shipped
    for text in texts.values():
        ast.parse(text)  # each kept module is valid Python on its own
    assert "submission_main" in exported["pgolf.submit.submission"]


def test_modules_keep_their_own_namespaces(tmp_path):
    """Two modules may define the same top-level name and import each other's by name: the bundle
    runs them as separate modules (no package-wide naming rule), dropping what nothing reaches."""
    texts = {
        "pgolf.fake_a": "LIMIT = 1\n\n\ndef helper():\n    return LIMIT\n\n\ndef unused():\n    return 0\n",
        "pgolf.fake_b": (
            "from pgolf.fake_a import helper as other\n\nLIMIT = 10\n\n\ndef helper():\n    return LIMIT\n\n\n"
            "class Box:\n    def used(self):\n        return 1\n\n    def never(self):\n        return 2\n\n\n"
            "def main():\n    print(helper() + other(), Box().used())\n"
        ),
    }
    reach = Reach("pgolf.fake_b", "main", texts).run()
    sources = {name: module_text(reach, name) for name in sorted(reach.modules) if reach.kept[name]}
    assert "unused" not in sources["pgolf.fake_a"] and "never" not in sources["pgolf.fake_b"]
    for readable in (True, False):
        kept = sources if readable else {n: minify(t, {"helper", "main"}) for n, t in sources.items()}
        script = tmp_path / f"bundle_{readable}.py"
        script.write_text(emit(kept, '"""test bundle"""', "pgolf.fake_b.main", readable))
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "11 1", out.stderr


def test_the_python_3_12_comprehension_hazard_is_found_and_never_shipped():
    """gh-118513: on CPython 3.12.0-3.12.3 a name bound by one comprehension and read as a global
    in a sibling one raises UnboundLocalError (a GPU image's 3.12.3 failed on a minified bundle
    whose renamer gave a comprehension variable the name of a global). minify() checks its output
    and renames less when it finds the pattern."""
    import python_minifier

    bad = "B = int\n\n\ndef f(J, H):\n    C = {B: A for (B, A) in J.items()}\n    return [B(A) for A in H], C\n"
    assert sibling_comprehension_hazard(bad) == "f: B"
    good = "def f(J, H):\n    C = {B: A for (B, A) in J.items()}\n    return [int(A) for A in H], C\n"
    assert sibling_comprehension_hazard(good) is None
    src = (
        "def helper(x):\n    return x\n\n\n"
        "def f(pairs, items):\n    table = {key: val for (key, val) in pairs.items() if val}\n"
        "    return [helper(v) for v in items], table\n"
    )
    assert sibling_comprehension_hazard(src) is None
    aggressive = python_minifier.minify(src, rename_globals=True, preserve_globals=["f"])
    assert sibling_comprehension_hazard(aggressive)  # what renaming alone produces
    assert sibling_comprehension_hazard(minify(src, {"f"})) is None


def test_no_package_module_has_the_comprehension_hazard():
    from pgolf.submit.bundle import package_dir

    for path in sorted(package_dir().rglob("*.py")):
        assert sibling_comprehension_hazard(path.read_text(encoding="utf-8")) is None, path


@pytest.mark.slow
def test_no_shipped_module_has_the_comprehension_hazard():
    for name, text in compact_sources(frontier()).items():
        assert sibling_comprehension_hazard(text) is None, name


def compact_sources(cfg):
    texts, exported = bundle_sources(submission_config(cfg))
    return {n: minify(t, exported[n]) for n, t in texts.items()}


def test_readable_bundle_parses_and_runs_the_entry_point():
    text = readable_bundle(naive_baseline())
    tree = ast.parse(text)
    assert any(isinstance(n, ast.ClassDef) and n.name == "PgolfBundle" for n in tree.body)
    assert "SOURCES['pgolf.model.gpt'] = r" in text and text.rstrip().endswith("submission_main()")


@pytest.mark.slow
def test_compact_size_is_the_literal_file_size(tmp_path):
    cfg = frontier()
    n = export_script(submission_config(cfg), tmp_path / "train_gpt.py")
    assert n == (tmp_path / "train_gpt.py").stat().st_size == exported_code_bytes(cfg)
    assert n < len(readable_bundle(submission_config(cfg)).encode())
    assert compact_bytes("x = 1\n").startswith(b"# -*- coding: latin-1 -*-\n")
    assert len(compact_source(submission_config(cfg)).encode()) > n


def test_the_stub_carries_any_bytes_exactly(tmp_path):
    """Every byte value survives the latin-1 literal (backslash, quote, CR, NUL escaped)."""
    payload = bytes(range(256)) * 3 + b'"""' + b"\\" + b"\r\n" + b"\x00" + b'"'
    src = f'# -*- coding: latin-1 -*-\nx = """{byte_literal(payload)}""".encode("latin-1")\n'.encode("latin-1")
    (tmp_path / "m.py").write_bytes(src)
    ns: dict = {}
    exec(compile(src, str(tmp_path / "m.py"), "exec"), ns)
    assert ns["x"] == payload and len(src) < 1.02 * len(payload) + 100


def losses(out: str) -> list[str]:
    return re.findall(r"(step:\d+/\d+ (?:train_loss|val_loss):[0-9.]+)", out) + re.findall(
        r"final_\w+_exact val_loss:[0-9.]+ val_bpb:[0-9.]+", out
    )


@pytest.mark.slow
def test_exported_script_trains_exactly_like_the_package(tiny_dataset, tmp_path):
    data, tok = tiny_dataset
    cfg = tiny_config(data, tok, iterations=4)
    cfg.threads = 1
    script = tmp_path / "train_gpt.py"
    export_script(cfg, script)  # embeds the tiny config (paths included)
    env = dict(os.environ, OMP_NUM_THREADS="1", RUN_ID="bundle")
    env.pop("PYTHONPATH", None)
    bundle = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert bundle.returncode == 0, bundle.stderr[-3000:]
    pkg = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgolf",
            "train",
            "--run-id",
            "pkg",
            "--data",
            str(data),
            "--tokenizer",
            str(tok),
            "--set",
            "threads=1",
            "--config",
            str(write_cfg(cfg, tmp_path)),
        ],
        cwd=tmp_path,
        env=dict(env, RUN_ID=""),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pkg.returncode == 0, pkg.stderr[-3000:]
    got, want = losses(bundle.stdout), losses(pkg.stdout)
    assert got and got == want
    assert f"Code size: {script.stat().st_size} bytes" in bundle.stdout


def frontier_shaped(data, tok):
    """Every technique `frontier` uses (recurrence, lanes, XSA, smear, sparse gate, skip gates,
    document mask, LeakyReLU^2, partial RoPE, LN scale, EMA, the frontier optimizer, GPTQ + LQER
    mixed packing with auto coding) at a shape that trains in seconds."""
    from pgolf.core.presets import frontier

    cfg = frontier()
    base = tiny_config(data, tok, iterations=4)
    cfg.data, cfg.device, cfg.threads = base.data, "cpu", 1
    m, t, q = cfg.model, cfg.train, cfg.quant
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = base.model.vocab_size, 6, 32, 2, 1
    m.recur_layers, m.recur_loops, m.parallel_from, m.rope_dims, m.attn_gate_dims = "2-3", 2, 4, 8, 8
    t.train_seq_len, t.train_batch_tokens, t.iterations, t.warmup_steps = 32, 512, 4, 1
    t.max_wallclock_seconds, t.val_loss_every, t.train_log_every, t.ema_decay = 0.0, 0, 1, 0.9
    cfg.eval.eval_seq_len, cfg.eval.stride, cfg.eval.val_batch_size, cfg.eval.batch_seqs = 32, 16, 4096, 8
    q.keep_float_max_numel, q.gptq_time_budget_s, q.gptq_calib_batches, q.lqer_top_k = 64, 0.0, 2, 2
    return cfg


@pytest.mark.slow
def test_exported_frontier_shaped_script_matches_the_package_bit_for_bit(tiny_dataset, tmp_path):
    """Losses and the artifact's bytes are identical whether the minified bundle or the package
    runs the frontier-shaped config."""
    import hashlib

    data, tok = tiny_dataset
    cfg = frontier_shaped(data, tok)
    script = tmp_path / "train_gpt.py"
    export_script(cfg, script)
    env = dict(os.environ, OMP_NUM_THREADS="1", RUN_ID="bundle")
    env.pop("PYTHONPATH", None)
    bundle = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert bundle.returncode == 0, bundle.stderr[-3000:]
    pkg = subprocess.run(
        [sys.executable, "-m", "pgolf", "train", "--run-id", "pkg", "--config", str(write_cfg(cfg, tmp_path))],
        cwd=tmp_path,
        env=dict(env, RUN_ID=""),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pkg.returncode == 0, pkg.stderr[-3000:]
    got, want = losses(bundle.stdout), losses(pkg.stdout)
    assert got and got == want and "recurrence:on" in bundle.stdout
    digest = {
        run: hashlib.sha256((tmp_path / "runs" / run / "final_model.mixed.pglf").read_bytes()).hexdigest()
        for run in ("bundle", "pkg")
    }
    assert digest["bundle"] == digest["pkg"]


def test_bundle_ships_only_what_the_run_reaches_and_checks_its_libraries():
    texts, _ = bundle_sources(submission_config(frontier()))
    text = "\n".join(texts.values())
    for absent in (
        "def download_variant",
        "def plot_table",
        "def describe(",
        "def build_shards",
        "def main(",
        "def bench_proxy",
        "def predict_table",
        "scipy",
        "matplotlib",
        "huggingface_hub",
    ):
        assert absent not in text, absent
    tree = ast.parse(texts["pgolf.submit.submission"])
    required = next(
        n for n in tree.body if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "REQUIRED_MODULES"
    )
    mods = ast.literal_eval(required.value)
    assert {"torch", "numpy", "sentencepiece", "safetensors", "zstandard", "brotli"} <= set(mods)


@pytest.mark.slow
def test_exported_script_fails_fast_on_a_missing_library(tmp_path):
    """A missing library is reported before any work (it used to fail only when saving)."""
    script = tmp_path / "train_gpt.py"
    export_script(submission_config(naive_baseline()), script)
    hide = tmp_path / "sitecustomize.py"  # a fresh interpreter that cannot find zstandard
    hide.write_text(
        "import importlib.util, sys\n"
        "_real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'zstandard' else _real(n, *a)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0 and "missing Python packages: zstandard" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "logs").exists()  # nothing was run


def write_cfg(cfg, tmp_path):
    import json

    from pgolf.core.config import config_to_dict

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config_to_dict(cfg)))
    return path


@pytest.mark.slow
def test_pgolf_run_writes_a_record_folder(tiny_dataset, tmp_path):
    """The main job's last stage: README, submission.json, the literal train_gpt.py it counted, the log."""
    import json

    data, tok = tiny_dataset
    cfg = tiny_config(data, tok, iterations=3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgolf",
            "run",
            "--config",
            str(write_cfg(cfg, tmp_path)),
            "--run-id",
            "rec",
            "--seed",
            "7",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    folder = next((tmp_path / "records" / "track_non_record_16mb").glob("*_rec"))  # no wall-clock cap: non-record
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size
    assert sub["bytes_total"] > sub["bytes_code"] and sub["seeds"] == [7] and sub["val_bpb"] > 0
    assert (folder / "train_seed7.log").read_text().count("final_int8_zlib_roundtrip_exact") == 1
    assert (
        "Reproduce" in (folder / "README.md").read_text()
        and "nproc_per_node=8" not in (folder / "README.md").read_text()
    )


@pytest.mark.slow
def test_code_size_cache_is_keyed_and_survives_a_bad_entry(tmp_path, monkeypatch):
    """Sizes are cached on disk by config + package sources; an unreadable entry is recomputed."""
    from pgolf.submit import export

    monkeypatch.setenv("PGOLF_CACHE_DIR", str(tmp_path))
    export._compact_size.cache_clear()
    cfg = naive_baseline()
    size = exported_code_bytes(cfg)
    (entry,) = (tmp_path / "export-sizes").iterdir()
    assert int(entry.read_text()) == size
    entry.write_text("not a number")
    export._compact_size.cache_clear()
    assert exported_code_bytes(cfg) == size and int(entry.read_text()) == size
    other = naive_baseline()
    other.seed += 1
    export._compact_size.cache_clear()
    exported_code_bytes(other)
    assert len(list((tmp_path / "export-sizes").iterdir())) == 2  # another config, another key
    export._compact_size.cache_clear()
