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
from pgolf.submit.export import (
    bundle_order,
    byte_literal,
    check_unique_names,
    compact_bytes,
    export_script,
    exported_code_bytes,
    intra_imports,
    module_path,
    readable_bundle,
    submission_config,
)


def test_bundle_rules_hold_for_the_whole_package():
    modules = bundle_order()
    assert len(modules) == len(set(modules))
    assert {
        "submit.submission",
        "model.gpt",
        "train.trainer",
        "submit.finalize",
        "quant.schemes",
        "quant.pack",
        "eval.scoring",
        "quant.container",
    } <= set(modules)
    for i, name in enumerate(modules):  # every module comes after the modules it imports at top level
        top, _ = intra_imports(ast.parse(module_path(name).read_text(encoding="utf-8")))
        assert top <= set(modules[:i]), (name, top - set(modules[:i]))
    check_unique_names(modules)
    assert "cli.main" not in modules and "bench.proxy" not in modules  # the command line is not shipped


def test_readable_bundle_has_no_package_imports_and_parses():
    text = readable_bundle(naive_baseline())
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("pgolf"), ast.unparse(node)
    assert "# ---- pgolf/model/gpt.py ----" in text and text.rstrip().endswith("submission_main()")


def test_compact_size_is_the_literal_file_size(tmp_path):
    cfg = frontier()
    n = export_script(submission_config(cfg), tmp_path / "train_gpt.py")
    assert n == (tmp_path / "train_gpt.py").stat().st_size == exported_code_bytes(cfg)
    assert n < len(readable_bundle(submission_config(cfg)).encode())
    assert compact_bytes("x = 1\n").startswith(b"# -*- coding: latin-1 -*-\n")


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
    text = readable_bundle(submission_config(frontier()))
    for absent in (
        "def download_variant",
        "def plot_table",
        "def describe",
        "def build_shards",
        "def main(",
        "def bench_proxy",
        "scipy",
        "matplotlib",
        "huggingface_hub",
    ):
        assert absent not in text, absent
    tree = ast.parse(text)
    required = next(
        n for n in tree.body if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "REQUIRED_MODULES"
    )
    mods = ast.literal_eval(required.value)
    assert {"torch", "numpy", "sentencepiece", "safetensors", "zstandard", "brotli"} <= set(mods)


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
