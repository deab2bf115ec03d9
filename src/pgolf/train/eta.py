"""The plan of a run with its expected duration, printed before the long part starts.

Measured, not guessed: the training pace comes from the warm-up steps (timed, then undone), the
scoring pace from scoring one batch of validation windows. From those: training (the cap, or
iterations x pace), mid-training validations, GPTQ calibration (its budget), the roundtrip
evaluation and the sliding-window evaluation (each window a full forward that scores `stride`
new tokens)."""

from __future__ import annotations

import time

from pgolf.core.runtime import sync_device
from pgolf.eval.scoring import evaluate
from pgolf.quant.registry import scheme_for
from pgolf.train.schedules import training_cap_ms


def scoring_tokens_per_s(s) -> float:
    """Scored tokens per second of non-overlapping evaluation, from one batch of windows."""
    t = s.cfg.train
    window = t.train_seq_len
    n = min(window * max(s.cfg.eval.batch_seqs, 1), int(s.val.tokens.numel()) - 1)
    n -= n % window
    if n <= 0:
        return 0.0
    sync_device(s.rt)
    t0 = time.perf_counter()
    score = evaluate(
        s.base,
        s.val.tokens[: n + 1],
        s.val.tables,
        window=window,
        stride=0,
        batch_seqs=max(s.cfg.eval.batch_seqs, 1),
        device=s.rt.device,
        autocast=s.autocast,
    )
    sync_device(s.rt)
    return score.tokens / max(time.perf_counter() - t0, 1e-9)


def plan_seconds(s, step_s: float | None, tokens_per_s: float) -> dict[str, float]:
    """Expected seconds of each stage (None-free: unknown paces give 0 for that stage)."""
    t, e, q = s.cfg.train, s.cfg.eval, s.cfg.quant
    targets = int(s.val.tokens.numel()) - 1
    one_eval = targets / tokens_per_s if tokens_per_s else 0.0
    cap_ms = training_cap_ms(t)
    if cap_ms is not None:
        train = cap_ms / 1000.0 if not step_s else min(cap_ms / 1000.0, t.iterations * step_s)
    else:
        train = t.iterations * (step_s or 0.0)
    steps = t.iterations if cap_ms is None or not step_s else min(t.iterations, int(train / step_s))
    vals = (steps // t.val_loss_every if t.val_loss_every > 0 else 0) + 1 + (1 if t.ema_decay > 0 else 0)
    window = e.eval_seq_len or t.train_seq_len
    sliding = (targets / e.stride) * window / tokens_per_s if (e.stride and e.final_sliding and tokens_per_s) else 0.0
    calib = q.gptq_time_budget_s if (scheme_for(q.scheme).uses_hessians and q.gptq) else 0.0
    return {
        "train": train,
        "validation": vals * one_eval,
        "calibration": calib,
        "roundtrip_eval": one_eval,
        "sliding_eval": sliding,
    }


def log_plan(s, step_s: float | None) -> None:
    """One `plan:` line with every stage's expected seconds and the total."""
    parts = plan_seconds(s, step_s, scoring_tokens_per_s(s))
    total = sum(parts.values())
    pace = f"{1000 * step_s:.0f}ms/step" if step_s else "pace unknown (measured from 2+ warm-up steps)"
    s.log(
        "plan: "
        + " ".join(f"{k}:~{v:.0f}s" for k, v in parts.items())
        + f" total:~{total:.0f}s ({total / 60:.1f} min) {pace}"
    )
