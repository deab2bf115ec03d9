"""Export: the bundle is self-contained, keeps the bundling rules, and trains exactly like the package."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import tiny_config
from pgolf.submit.export import (
    bundle_order,
    check_unique_names,
    compact_bundle,
    export_script,
    exported_code_bytes,
    intra_imports,
    module_path,
    readable_bundle,
    submission_config,
)
from pgolf.core.presets import frontier, naive_baseline


def test_bundle_rules_hold_for_the_whole_package():
    modules = bundle_order()
    assert len(modules) == len(set(modules))
    assert {"submit.submission", "model.gpt", "train.trainer", "submit.finalize", "quant.schemes", "quant.pack",
            "eval.scoring", "quant.container"} <= set(modules)
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
    assert compact_bundle("x = 1\n").startswith("import lzma")


def losses(out: str) -> list[str]:
    return re.findall(r"(step:\d+/\d+ (?:train_loss|val_loss):[0-9.]+)", out) + re.findall(r"final_\w+_exact val_loss:[0-9.]+ val_bpb:[0-9.]+", out)


@pytest.mark.slow
def test_exported_script_trains_exactly_like_the_package(tiny_dataset, tmp_path):
    data, tok = tiny_dataset
    cfg = tiny_config(data, tok, iterations=4)
    cfg.threads = 1
    script = tmp_path / "train_gpt.py"
    export_script(cfg, script)  # embeds the tiny config (paths included)
    env = dict(os.environ, OMP_NUM_THREADS="1", RUN_ID="bundle")
    env.pop("PYTHONPATH", None)
    bundle = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert bundle.returncode == 0, bundle.stderr[-3000:]
    pkg = subprocess.run([sys.executable, "-m", "pgolf", "train", "--run-id", "pkg", "--data", str(data), "--tokenizer", str(tok),
                          "--set", "threads=1", "--config", str(write_cfg(cfg, tmp_path))],
                         cwd=tmp_path, env=dict(env, RUN_ID=""), capture_output=True, text=True, timeout=600)
    assert pkg.returncode == 0, pkg.stderr[-3000:]
    got, want = losses(bundle.stdout), losses(pkg.stdout)
    assert got and got == want
    assert f"Code size: {script.stat().st_size} bytes" in bundle.stdout


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
    res = subprocess.run([sys.executable, "-m", "pgolf", "run", "--config", str(write_cfg(cfg, tmp_path)), "--run-id", "rec",
                          "--seed", "7"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    folder = next((tmp_path / "records" / "track_10min_16mb").glob("*_rec"))
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size
    assert sub["bytes_total"] > sub["bytes_code"] and sub["seeds"] == [7] and sub["val_bpb"] > 0
    assert (folder / "train_seed7.log").read_text().count("final_int8_zlib_roundtrip_exact") == 1
    assert "Reproduce" in (folder / "README.md").read_text()
