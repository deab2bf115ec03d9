"""Proxy-track bookkeeping: interleaving, medians/spreads, ratios, the scaled cap."""

from __future__ import annotations

import pytest

from pgolf.bench.proxy import (
    OFFICIAL_CAP,
    OFFICIAL_NAIVE_MODEL_BYTES,
    RunResult,
    aggregate,
    markdown_table,
    run_order,
    train_command,
)


def fake(recipe, repeat, bpb, nbytes=1000):
    return RunResult(recipe, repeat, 1337 + repeat, 10, nbytes, 5, 5000, 10.0, bpb + 0.1, bpb + 0.01, bpb, 1.0, 12.0)


def test_runs_are_interleaved_and_alternate():
    assert run_order(["a", "b"], 3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]


def test_aggregate_medians_spreads_ratio_and_cap():
    res = [
        fake("base", 0, 2.0),
        fake("base", 1, 2.2),
        fake("base", 2, 2.1),
        fake("new", 0, 1.8, 1500),
        fake("new", 1, 1.9, 1500),
        fake("new", 2, 1.7, 1500),
    ]
    rows = {r["recipe"]: r for r in aggregate(res, "base")}
    assert rows["base"]["final_bpb"] == pytest.approx(2.1) and rows["base"]["final_bpb_spread"] == pytest.approx(0.2)
    assert rows["new"]["ratio_to_baseline"] == pytest.approx(1.8 / 2.1)
    assert rows["new"]["scaled_cap_bytes"] == pytest.approx(1000 * OFFICIAL_CAP / OFFICIAL_NAIVE_MODEL_BYTES)
    assert rows["base"]["fits_scaled_cap"] and not rows["new"]["fits_scaled_cap"]
    assert rows["new"]["tokens_per_s"] == pytest.approx(500.0)
    assert "| new |" in markdown_table(list(rows.values()))


def test_train_command_pins_threads_budget_and_seed(tmp_path):
    cmd = train_command("naive-baseline-cpu-proxy", 60, 7, "x", tmp_path, "/d", None, 2, ["eval.stride=0"])
    joined = " ".join(cmd)
    assert "--max-wallclock-seconds 60" in joined and "--seed 7" in joined and "threads=2" in joined
    assert "--data /d" in joined and "eval.stride=0" in joined


def test_recipe_specs_carry_overrides(tmp_path):
    from pgolf.bench.proxy import parse_recipe, run_label

    assert parse_recipe("frontier-cpu-proxy@model.xsa_layers=@model.smear_gate=0") == (
        "frontier-cpu-proxy",
        ["model.xsa_layers=", "model.smear_gate=0"],
    )
    cmd = " ".join(train_command("p@model.ln_scale=0", 1, 1, "x", tmp_path, None, None, 1, ["a.b=1"]))
    assert "--preset p " in cmd and "model.ln_scale=0 --set a.b=1" in cmd
    assert "@" not in run_label("p@model.ln_scale=0") and "=" not in run_label("p@a=1")
    assert run_label("p@a=1") != run_label("p@a_1")  # sanitising alone would merge these
    long_a, long_b = "p@data.data_path=" + "x" * 200 + "/a", "p@data.data_path=" + "x" * 200 + "/b"
    assert run_label(long_a) != run_label(long_b) and len(run_label(long_a)) <= 120
    assert run_label("naive-baseline-cpu-proxy") == "naive-baseline-cpu-proxy"
