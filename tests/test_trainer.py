"""Training end to end on a tiny self-made dataset: official log lines, artifact, roundtrip,
determinism, resume after a kill, the wall-clock cap, NaN and over-cap refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from pgolf.finish.finalize import finalize
from pgolf.quant.pack import SizeCapError
from pgolf.train import trainer as trainer_mod
from pgolf.train.trainer import NonFiniteLossError, run_training


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # logs/ and runs/ land here
    return tmp_path


def train(cfg, resume=None):
    session, state = run_training(cfg, resume_from=resume)
    return session, state


def test_end_to_end_logs_artifact_and_roundtrip(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=8, val_loss_every=4)
    cfg.run_id, cfg.eval.stride = "e2e", 8
    session, state = train(cfg)
    summary = finalize(session, state, code_bytes=1234)
    log = (workdir / "logs" / "e2e.txt").read_text()
    for needle in (
        "model_params:",
        "step:4/8 val_loss:",
        "step:8/8 train_loss:",
        "train_time:",
        "step_avg:",
        "val_bytes:",
        "Code size: 1234 bytes",
        "Serialized model int8+zlib:",
        "Total submission size int8+zlib:",
        "final_int8_zlib_roundtrip_exact val_loss:",
        "final_sliding_window_exact val_loss:",
    ):
        assert needle in log, needle
    assert Path(summary.artifact_path).is_file() and summary.total_bytes == summary.artifact_bytes + 1234
    # int8 roundtrip of a tiny model costs almost nothing
    assert abs(summary.roundtrip["val_bpb"] - summary.pre_quant["val_bpb"]) < 0.01
    assert summary.sliding["tokens"] >= summary.roundtrip["tokens"]
    saved = json.loads((workdir / "runs" / "e2e" / "summary.json").read_text())
    assert saved["summary"]["steps"] == 8


def test_same_seed_same_result(tiny_dataset, workdir):
    losses = []
    for i in range(2):
        cfg = tiny_config(*tiny_dataset)
        cfg.run_id = f"det{i}"
        losses.append(train(cfg)[1].history[-1]["val_loss"])
    assert losses[0] == losses[1]


def test_resume_after_kill_matches_uninterrupted(tiny_dataset, workdir, monkeypatch):
    cfg = tiny_config(*tiny_dataset, iterations=6, ema_decay=0.9)
    cfg.run_id = "full"
    full, _ = train(cfg)
    want = {k: v.clone() for k, v in full.base.state_dict().items()}

    cfg = tiny_config(*tiny_dataset, iterations=6, ema_decay=0.9, checkpoint_every=3)
    cfg.run_id = "killed"
    real_step = trainer_mod.train_step

    def dying_step(s, st, lr_mul):
        if st.step == 4:
            raise KeyboardInterrupt  # killed after the step-3 checkpoint
        return real_step(s, st, lr_mul)

    monkeypatch.setattr(trainer_mod, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(trainer_mod, "train_step", real_step)
    ckpt = workdir / "runs" / "killed" / "checkpoint.safetensors"
    resumed, st = train(cfg, resume=ckpt)
    assert st.step == 6
    for k, v in resumed.base.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_wallclock_cap_stops_early(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=100000, max_wallclock_seconds=0.5)
    cfg.run_id = "cap"
    _, st = train(cfg)
    assert st.stop_after_step is not None and st.step < 100000
    assert "stopping_early: wallclock_cap" in (workdir / "logs" / "cap.txt").read_text()


def test_nan_loss_stops_with_clear_error(tiny_dataset, workdir, monkeypatch):
    real = trainer_mod.forward_loss
    monkeypatch.setattr(trainer_mod, "forward_loss", lambda s, x, y: real(s, x, y) * float("nan"))
    cfg = tiny_config(*tiny_dataset, warmup_steps=0)
    cfg.run_id = "nan"
    with pytest.raises(NonFiniteLossError, match="train_loss is nan at step 1"):
        train(cfg)


def test_over_cap_artifact_is_refused(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=2)
    cfg.run_id, cfg.quant.size_cap_bytes = "cap", 5000
    session, state = train(cfg)
    with pytest.raises(SizeCapError, match="bytes over the cap of 5,000"):
        finalize(session, state, code_bytes=100)
    assert not list((workdir / "runs" / "cap").glob("*.pglf"))


@pytest.mark.parametrize("cap", [0.0, 1.5])
def test_recurrence_switches_on_at_its_fraction(tiny_dataset, workdir, cap):
    """By step count without a cap; by the training clock (not only at validations) with one."""
    iters = 8 if cap == 0 else 100000
    cfg = tiny_config(*tiny_dataset, iterations=iters, max_wallclock_seconds=cap, val_loss_every=0)
    cfg.run_id = f"recur{cap}"
    cfg.model.recur_layers, cfg.model.recur_loops, cfg.model.recur_start_frac = "0-1", 2, 0.5
    session, st = train(cfg)
    log = (workdir / "logs" / f"recur{cap}.txt").read_text()
    assert st.recur_active and session.base.recur_active and "recurrence:on" in log
    switched = int(log.split("recurrence:on step:")[1].split()[0])
    assert 0 < switched < st.step
    if cap == 0:
        assert switched == 4


def test_mixed_gptq_lqer_pipeline_end_to_end(tiny_dataset, workdir):
    """Calibration on training batches -> GPTQ + LQER -> multi-stream artifact -> roundtrip, with
    the quantization gap logged."""
    cfg = tiny_config(*tiny_dataset, iterations=6)
    cfg.run_id = "mixed"
    q = cfg.quant
    q.scheme, q.compressor, q.gptq, q.gptq_calib_batches, q.lqer_rank, q.lqer_top_k = "mixed", "auto", True, 2, 2, 2
    q.attn_bits, q.mlp_bits, q.embed_bits, q.keep_float_max_numel = 6, 6, 8, 64
    session, state = train(cfg)
    summary = finalize(session, state, code_bytes=0)
    log = (workdir / "logs" / "mixed.txt").read_text()
    assert "gptq_calibration batches:2" in log and "quant_gap val_bpb:" in log
    assert "gptq_tensors:" in log and "gptq_tensors:0 " not in log
    assert abs(summary.roundtrip["quant_gap_bpb"]) < 0.05
    assert summary.artifact_bytes < (workdir / "runs" / "mixed" / "final_model.safetensors").stat().st_size / 3


def test_ema_weights_are_scored_before_packing(tiny_dataset, workdir):
    """With EMA the packed weights are the EMA ones, so the quantization gap is measured from
    their score (recomputed here from the final weights), not from the live weights' last one."""
    from pgolf.eval.scoring import evaluate

    cfg = tiny_config(*tiny_dataset, iterations=6, ema_decay=0.5)
    cfg.run_id = "ema"
    session, state = train(cfg)
    assert state.history[-1]["ema"] and not state.history[-2]["ema"]
    live, ema = state.history[-2], state.history[-1]
    assert live["step"] == ema["step"] == 6 and live["val_bpb"] != ema["val_bpb"]
    direct = evaluate(
        session.base, session.val.tokens, session.val.tables, window=cfg.train.train_seq_len, stride=0, batch_seqs=8
    )
    assert direct.val_bpb == pytest.approx(ema["val_bpb"], rel=1e-7)  # the model now holds the EMA weights
    summary = finalize(session, state, code_bytes=0)
    assert summary.pre_quant["val_bpb"] == pytest.approx(direct.val_bpb, rel=1e-7)
    assert "ema_step:6/6 val_loss:" in (workdir / "logs" / "ema.txt").read_text()


def test_ema_arithmetic_matches_a_hand_computation(tiny_dataset, workdir):
    """Warm-started EMA: the first update copies the weights, then
    ema = d_t * ema + (1 - d_t) * w with d_t = min(decay, (1 + t) / (10 + t)); use_ema_weights
    copies it in."""
    cfg = tiny_config(*tiny_dataset, ema_decay=0.9)
    cfg.run_id = "ema-hand"
    s = trainer_mod.setup(cfg)
    name = "blocks.0.attn.c_q.weight"
    weight = dict(s.base.named_parameters())[name]
    for v in (1.0, 3.0, -2.0):
        with torch.no_grad():
            weight.fill_(v)
        trainer_mod.update_ema(s)
    d2, d3 = 3 / 12, 4 / 13  # both below the configured 0.9
    hand = d3 * (d2 * 1.0 + (1 - d2) * 3.0) + (1 - d3) * -2.0
    assert s.ema_steps == 3
    assert torch.allclose(s.ema[name], torch.full_like(weight, hand), atol=1e-6)
    assert trainer_mod.use_ema_weights(s)
    assert torch.allclose(weight.detach(), torch.full_like(weight, hand), atol=1e-6)
    assert trainer_mod.ema_decay_at(0.9, 1000) == 0.9


def test_warmup_is_undone_exactly(tiny_dataset, workdir):
    """After warm-up the model, optimizer state and data position equal those before it, and a
    run with warm-up trains to bit-identical weights as one without."""
    cfg = tiny_config(*tiny_dataset, warmup_steps=3)
    cfg.run_id = "warm"
    s = trainer_mod.setup(cfg)
    model0 = {k: v.clone() for k, v in s.base.state_dict().items()}
    opts0 = [repr(o.state_dict()) for o in s.optimizers]
    calls = []
    real = trainer_mod.train_step
    trainer_mod.train_step = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        trainer_mod.warmup(s)
    finally:
        trainer_mod.train_step = real
    assert len(calls) == 3  # the warm-up really trained
    assert all(torch.equal(v, model0[k]) for k, v in s.base.state_dict().items())
    assert [repr(o.state_dict()) for o in s.optimizers] == opts0
    assert (s.loader.stream.file_idx, s.loader.stream.pos) == (0, 0)
    finals = []
    for steps in (0, 3):
        cfg = tiny_config(*tiny_dataset, warmup_steps=steps)
        cfg.run_id = f"warm{steps}"
        finals.append({k: v.clone() for k, v in train(cfg)[0].base.state_dict().items()})
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
