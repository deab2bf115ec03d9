"""Size accounting and planning: the planner lands within 3% of real packing for three configs;
the measured table adds up to the file; over-cap artifacts are refused, saying by how much."""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch

from pgolf.cli.size import register_size_commands
from pgolf.core.config import ModelConfig, QuantConfig, RunConfig
from pgolf.model.gpt import GPT
from pgolf.model.inventory import quant_groups_for, quant_layout
from pgolf.quant.pack import SizeCapError, pack
from pgolf.quant.plan import (
    GENNORM_BETA,
    format_table,
    measure_table,
    plot_table,
    predict_from_weights,
    predict_range,
    predict_table,
    weight_betas,
)
from pgolf.quant.schemes import quantize
from pgolf.submit.dryrun import cap_fit_plan, describe

PLAN_TOLERANCE = 0.03


def synthetic_trained_state(cfg: ModelConfig, seed: int, beta: float | None = None) -> dict[str, torch.Tensor]:
    """Weights whose per-row statistics follow what the planner was fitted on: matrix rows drawn
    from the generalized normal of their group (GENNORM_BETA, fitted to the trained benchmark
    model) with per-row scales spread over 4x; control tensors at their init plus small noise.
    Random rather than trained so the test is fast and covers shapes no CPU run reaches; the
    benchmark checks the planner on really trained weights. `beta` replaces every group's shape."""
    from scipy.stats import gennorm

    rng = np.random.default_rng(seed)
    state = {}
    groups = quant_groups_for(cfg)
    for name, t in GPT(cfg).state_dict().items():
        if t.ndim == 2 and groups[name] != "control":
            shape = beta or GENNORM_BETA[groups[name]]
            w = gennorm.rvs(shape, size=tuple(t.shape), random_state=rng) * rng.uniform(
                0.01, 0.04, size=(t.shape[0], 1)
            )
            state[name] = torch.from_numpy(w.astype(np.float32))
        else:
            state[name] = t + 0.01 * torch.from_numpy(rng.standard_normal(tuple(t.shape)).astype(np.float32))
    return state


PLAN_CASES = [
    (
        "2x128 int6/int6/int7 sdclip",
        ModelConfig(num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2),
        QuantConfig(scheme="mixed", compressor="auto", keep_float_max_numel=4096),
    ),
    (
        "3x192 mlp3 int5/int4/int8 sdclip + LQER",
        ModelConfig(num_layers=3, model_dim=192, num_heads=4, num_kv_heads=2, mlp_mult=3.0, vocab_size=512),
        QuantConfig(
            scheme="mixed",
            compressor="auto",
            keep_float_max_numel=4096,
            attn_bits=5,
            mlp_bits=4,
            embed_bits=8,
            attn_clip_sigmas=9.0,
            mlp_clip_sigmas=6.0,
            embed_clip_sigmas=20.0,
            lqer_rank=4,
            lqer_top_k=2,
        ),
    ),
    (
        "2x256 int6 percentile, fp16 embeddings",
        ModelConfig(num_layers=2, model_dim=256, num_heads=4, num_kv_heads=4, vocab_size=256),
        QuantConfig(scheme="mixed", compressor="auto", keep_float_max_numel=4096, embed_bits=16, clip="percentile"),
    ),
]


@pytest.mark.parametrize("label,mcfg,qcfg", PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_planner_within_3_percent_of_real_packing(tmp_path, label, mcfg, qcfg):
    state = synthetic_trained_state(mcfg, seed=len(label))
    real = pack(quantize(state, quant_groups_for(mcfg), qcfg), asdict(mcfg), qcfg, tmp_path / "a.pglf").bytes
    predicted = predict_table(mcfg, quant_layout(mcfg), qcfg).artifact_bytes
    assert abs(predicted - real) / real <= PLAN_TOLERANCE, f"{label}: predicted {predicted} real {real}"


def small_artifact(tmp_path, qcfg: QuantConfig | None = None):
    mcfg = ModelConfig(num_layers=1, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=128)
    qcfg = qcfg or QuantConfig(scheme="mixed", compressor="zlib", keep_float_max_numel=256)
    res = pack(
        quantize(synthetic_trained_state(mcfg, 0), quant_groups_for(mcfg), qcfg),
        asdict(mcfg),
        qcfg,
        tmp_path / "m.pglf",
    )
    return mcfg, qcfg, res


def test_measured_table_adds_up_to_the_file(tmp_path):
    mcfg, _, res = small_artifact(tmp_path)
    table = measure_table(res.path, quant_groups_for(mcfg), code_bytes=1234)
    assert table.artifact_bytes == res.bytes and table.total == res.bytes + 1234
    assert abs(table.header_bytes + sum(r.bytes for r in table.rows) - res.bytes) < 1e-6 * res.bytes + 1
    assert table.params == sum(p.numel() for p in GPT(mcfg).parameters())
    assert {r.group for r in table.rows} == {"embed", "attn", "mlp", "control"}
    text = format_table(table)
    assert "measured_artifact_bytes:" in text and "fits" in text
    png = plot_table(table, tmp_path / "size.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_over_cap_artifact_is_refused_saying_by_how_much(tmp_path):
    mcfg = ModelConfig(num_layers=1, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=128)
    qcfg = QuantConfig(scheme="mixed", compressor="zlib", keep_float_max_numel=256, size_cap_bytes=1000)
    qs = quantize(synthetic_trained_state(mcfg, 0), quant_groups_for(mcfg), qcfg)
    with pytest.raises(SizeCapError, match=r"bytes over the cap of 1,000") as exc:
        pack(qs, asdict(mcfg), qcfg, tmp_path / "m.pglf", code_bytes=500)
    assert not (tmp_path / "m.pglf").exists() and (tmp_path / "m.pglf.over_cap").exists()
    size = (tmp_path / "m.pglf.over_cap").stat().st_size
    assert f"{size + 500 - 1000:,} bytes over" in str(exc.value)
    ok = pack(
        qs,
        asdict(mcfg),
        QuantConfig(**{**qcfg.__dict__, "size_cap_bytes": 16_000_000}),
        tmp_path / "ok.pglf",
        code_bytes=500,
    )
    assert (tmp_path / "ok.pglf").stat().st_size == ok.bytes


def size_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pgolf")
    register_size_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_size_cli_measures_and_plans(tmp_path, capsys):
    _, _, res = small_artifact(tmp_path)
    assert size_cli(["size", str(res.path), "--code-bytes", "100", "--png", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert f"measured_artifact_bytes:{res.bytes} code_bytes:100" in out and (tmp_path / "s.png").is_file()
    assert size_cli(["size", str(res.path), "--code-bytes", "16000000"]) == 1  # over the cap: exit 1
    assert "OVER by" in capsys.readouterr().out
    assert (
        size_cli(
            [
                "size",
                "--plan",
                "--preset",
                "naive-baseline",
                "--code-bytes",
                "0",
                "--set",
                "quant.scheme=mixed",
                "--set",
                "model.num_layers=2",
            ]
        )
        == 0
    )
    assert "predicted_artifact_bytes:" in capsys.readouterr().out
    with pytest.raises(ValueError):
        size_cli(["size"])


@pytest.mark.slow
def test_dry_run_report_uses_the_planner():
    cfg = RunConfig()
    cfg.quant.scheme = "mixed"
    text = describe(cfg)
    assert "predicted_artifact_bytes:" in text and "bits/param" in text
    line = next(t for t in text.splitlines() if t.startswith("predicted_range_bytes:"))
    low, high = map(int, line.split()[0].split(":")[1].split("-"))
    point = int(text.split("predicted_artifact_bytes:")[1].split()[0])
    assert low < point < high and f"point:{point}" in line
    levers = next(t for t in text.splitlines() if t.startswith("levers:"))
    assert "train.muon_weight_decay+0.005:" in levers and "quant.mlp_clip_sigmas+0.5:" in levers


@pytest.mark.slow
def test_dry_run_says_whether_cap_fitting_can_fit():
    """Over the target, the plan says how much pruning it expects (point and range high end) and
    whether that is within quant.prune_max_frac; a bound too tight to fit reads False."""
    from pgolf.core.presets import frontier

    cfg = frontier()
    text = describe(cfg)
    plan = next(t for t in text.splitlines() if t.startswith("cap_fit:"))
    point, high = (float(x.rstrip("%")) / 100 for x in re.findall(r"([0-9.]+)%", plan)[:2])
    assert plan.startswith("cap_fit:planned") and 0 < point < high and "fits_after_cap_fit:True" in plan
    pred, code = (int(re.search(rf"{k}:(\d+)", text).group(1)) for k in ("predicted_artifact_bytes", "code_bytes"))
    groups = {"mlp": 23_068_672, "attn": 8_650_752, "embed": 4_194_304, "control": 31_943}
    cfg.quant.prune_max_frac = point / 2
    assert "fits_after_cap_fit:False" in cap_fit_plan(pred, code, groups, cfg.quant, pred)


SHAPE_MCFG = ModelConfig(num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2)
SHAPE_QCFG = QuantConfig(scheme="mixed", compressor="brotli", keep_float_max_numel=4096)
WEIGHT_PLAN_TOLERANCE = 0.02


def test_weight_driven_prediction_tracks_packed_bytes(tmp_path):
    """Heavy-tailed weights (beta 1.2, near the record's effective shape) pack smaller than
    Gaussian ones at the same SDClip k; the prediction from the weights' own statistics lands
    within 2% of each packed artifact and moves with the shape (at least half the real saving;
    the constant-shape point estimate does not move at all)."""
    groups, layout = quant_groups_for(SHAPE_MCFG), quant_layout(SHAPE_MCFG)
    real, pred = {}, {}
    for beta in (2.0, 1.2):
        state = synthetic_trained_state(SHAPE_MCFG, seed=3, beta=beta)
        real[beta] = pack(
            quantize(state, groups, SHAPE_QCFG), asdict(SHAPE_MCFG), SHAPE_QCFG, tmp_path / "a.pglf"
        ).bytes
        pred[beta] = predict_from_weights(SHAPE_MCFG, layout, SHAPE_QCFG, state, groups).artifact_bytes
        assert abs(pred[beta] - real[beta]) / real[beta] <= WEIGHT_PLAN_TOLERANCE, (beta, pred[beta], real[beta])
    saved_real, saved_pred = real[2.0] - real[1.2], pred[2.0] - pred[1.2]
    assert saved_real > 0 and 0.5 * saved_real <= saved_pred <= 1.5 * saved_real, (saved_real, saved_pred)


def test_weight_betas_recover_the_shape_and_heavier_tails_predict_fewer_bytes():
    groups, layout = quant_groups_for(SHAPE_MCFG), quant_layout(SHAPE_MCFG)
    preds = {}
    for beta in (2.0, 1.5, 1.0):
        state = synthetic_trained_state(SHAPE_MCFG, seed=5, beta=beta)
        fitted = weight_betas(state, groups, SHAPE_QCFG)
        assert set(fitted) == {"attn", "mlp", "embed"}
        assert all(abs(b - beta) <= 0.15 for b in fitted.values()), (beta, fitted)
        preds[beta] = predict_from_weights(SHAPE_MCFG, layout, SHAPE_QCFG, state, groups).artifact_bytes
    assert preds[1.0] < preds[1.5] < preds[2.0]


def test_range_contains_the_point_estimate():
    for label, mcfg, qcfg in PLAN_CASES:
        layout = quant_layout(mcfg)
        low, high = predict_range(mcfg, layout, qcfg)
        point = predict_table(mcfg, layout, qcfg).artifact_bytes
        assert low < point < high, label
    int8 = QuantConfig(scheme="int8")
    assert (
        predict_range(SHAPE_MCFG, quant_layout(SHAPE_MCFG), int8)[0]
        == predict_table(SHAPE_MCFG, quant_layout(SHAPE_MCFG), int8).artifact_bytes
    )
