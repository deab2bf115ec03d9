"""`pgolf doctor` on CPU: every check that applies runs, a healthy tiny config is GO, and each
planted fault turns its own row FAIL with a one-line reason (missing shard, tokenizer of another
vocabulary, a cap too small for the plan, an evaluation over its budget, a missing package)."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import tiny_config
from pgolf.bench import doctor
from pgolf.bench.doctor import FAIL, render, run_checks
from pgolf.core.runtime import Runtime

CPU = Runtime(False, 0, 0, 1, torch.device("cpu"))


def doc_cfg(tiny_dataset, **eval_kw):
    """The tiny config with a document evaluation (score-first TTT, a budget) as the frontier has."""
    cfg = tiny_config(*tiny_dataset)
    e = cfg.eval
    e.doc_aware, e.context, e.doc_batch, e.ttt, e.ttt_rank, e.ttt_chunk, e.time_budget_s = (
        True,
        32,
        8,
        True,
        4,
        8,
        600.0,
    )
    for k, v in eval_kw.items():
        setattr(e, k, v)
    cfg.out_dir = str(tiny_dataset[0].parent / "runs")
    return cfg


def rows_by_check(rows):
    return {r.check: r for r in rows}


def one_failure(rows, check: str):
    failed = [r for r in rows if r.status == FAIL]
    assert [r.check for r in failed] == [check], render(rows)
    assert "\n" not in failed[0].value and failed[0].value
    return failed[0]


def test_a_healthy_config_is_go(tiny_dataset):
    rows = run_checks(doc_cfg(tiny_dataset), CPU)
    by = rows_by_check(rows)
    assert set(by) == {"machine", "attention", "train", "eval", "size", "data", "script", "disk"}
    assert all(r.status != FAIL for r in rows), render(rows)
    assert "ms fwd+bwd" in by["attention"].value and "ms/step" in by["train"].value
    assert by["eval"].value.startswith("predicted ") and "of 600 s" in by["eval"].value
    assert render(rows).splitlines()[-1] == "doctor: GO"


def test_a_missing_shard_fails_the_data_row(tiny_dataset, tmp_path):
    data, tok = tiny_dataset
    copy = tmp_path / "shards"
    shutil.copytree(data, copy)
    for p in copy.glob("fineweb_train_*.bin"):
        p.unlink()
    cfg = doc_cfg(tiny_dataset)
    cfg.data.data_path = str(copy)
    rows = run_checks(cfg, CPU)
    assert rows_by_check(rows)["data"].status == FAIL
    assert render(rows).splitlines()[-1].startswith("doctor: NO-GO")


def test_a_tokenizer_of_another_vocabulary_fails_the_data_row(tiny_dataset, sp1024_paths):
    cfg = doc_cfg(tiny_dataset)
    cfg.data.tokenizer_path = str(sp1024_paths[1])  # vocab 1024 against shards and a model of 320
    row = rows_by_check(run_checks(cfg, CPU))["data"]
    assert row.status == FAIL and "1024" in row.value


def test_a_cap_too_small_fails_the_size_row(tiny_dataset):
    cfg = doc_cfg(tiny_dataset)
    cfg.quant.size_cap_bytes = 1_000
    one_failure(run_checks(cfg, CPU), "size")


def test_an_evaluation_over_its_budget_fails_the_eval_row(tiny_dataset):
    row = one_failure(run_checks(doc_cfg(tiny_dataset, time_budget_s=1e-6), CPU), "eval")
    assert "over eval.time_budget_s" in row.value


def test_a_missing_package_fails_the_script_row(tiny_dataset, monkeypatch):
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda n, *a: None if n == "zstandard" else real(n, *a))
    row = one_failure(run_checks(doc_cfg(tiny_dataset), CPU), "script")
    assert "zstandard" in row.value and row.todo == "pip install zstandard"


@pytest.mark.slow
def test_the_cli_prints_the_table_and_exits_by_verdict(tiny_dataset, tmp_path, monkeypatch, capsys):
    from pgolf.cli.main import main

    monkeypatch.chdir(tmp_path)
    data, tok = tiny_dataset
    args = ["doctor", "--preset", "naive-baseline-cpu-proxy", "--data", str(data), "--tokenizer", str(tok)]
    args += ["--set", "model.vocab_size=320", "--set", "threads=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| check | value | status | what to do |" in out and out.rstrip().endswith("doctor: GO")
    assert main([*args, "--set", "quant.size_cap_bytes=1000"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("doctor: NO-GO (1 failure)")
