"""Scores of the finished artifact: the roundtrip (reloaded from disk, official and exact lines),
the sliding window, and the configured document evaluation (TTT, global phases, tilt) under
eval.time_budget_s (`final_int8_zlib_roundtrip_exact val_loss:… val_bpb:…` and the like)."""

from __future__ import annotations

import time
from pathlib import Path

from pgolf.core.runtime import sync_device
from pgolf.eval.docplan import EvalBudgetError
from pgolf.eval.docscore import eval_kind, evaluate_documents, time_split, uses_documents
from pgolf.eval.scoring import Score, evaluate
from pgolf.finish.summary import Summary, score_dict
from pgolf.quant.pack import unpack
from pgolf.train.trainer import Session


def eval_window(s: Session) -> int:
    return s.cfg.eval.eval_seq_len or s.cfg.train.train_seq_len


def score_model(s: Session, stride: int) -> tuple[Score, float]:
    """Score the live model (non-overlapping when stride == 0); returns (score, seconds)."""
    sync_device(s.rt)
    t0 = time.perf_counter()
    window = s.cfg.train.train_seq_len if stride == 0 else eval_window(s)
    batch = (
        s.cfg.eval.batch_seqs
        if stride
        else max(s.cfg.eval.val_batch_size // (s.rt.world_size * s.grad_accum * window), 1)
    )
    score = evaluate(
        s.base,
        s.val.tokens,
        s.val.tables,
        window=window,
        stride=stride,
        batch_seqs=batch,
        rank=s.rt.rank,
        world_size=s.rt.world_size,
        device=s.rt.device,
        autocast=s.autocast,
        progress=s.rt.master,
    )
    sync_device(s.rt)
    return score, time.perf_counter() - t0


def roundtrip(s: Session, path: Path, summary: Summary) -> None:
    """Reload the artifact from disk into the model and score it (official + sliding)."""
    state, meta = unpack(path)
    s.base.load_state_dict({k: v.to(s.rt.device) for k, v in state.items()}, strict=True)
    tag = f"{meta['scheme']}_{summary.codec or s.cfg.quant.compressor}".replace("+", "_")
    score, secs = score_model(s, stride=0)
    s.log(
        f"final_{tag}_roundtrip val_loss:{score.val_loss:.4f} val_bpb:{score.val_bpb:.4f} eval_time:{1000 * secs:.0f}ms"
    )
    s.log(f"final_{tag}_roundtrip_exact val_loss:{score.val_loss:.8f} val_bpb:{score.val_bpb:.8f}")
    summary.roundtrip, summary.eval_seconds["roundtrip"] = score_dict(score), secs
    if summary.pre_quant:  # the quantization gap, every time
        gap = score.val_bpb - summary.pre_quant["val_bpb"]
        summary.roundtrip["quant_gap_bpb"] = gap
        s.log(
            f"quant_gap val_bpb:{gap:+.6f} pre_quant:{summary.pre_quant['val_bpb']:.6f} roundtrip:{score.val_bpb:.6f}"
        )
    stride = s.cfg.eval.stride
    if stride > 0 and s.cfg.eval.final_sliding:
        score, secs = score_model(s, stride=stride)
        s.log(
            f"final_sliding_window val_loss:{score.val_loss:.4f} val_bpb:{score.val_bpb:.4f} "
            f"stride:{stride} window:{eval_window(s)} eval_time:{1000 * secs:.0f}ms"
        )
        s.log(f"final_sliding_window_exact val_loss:{score.val_loss:.8f} val_bpb:{score.val_bpb:.8f}")
        summary.sliding, summary.eval_seconds["sliding"] = score_dict(score), secs
    if uses_documents(s.cfg.eval):
        score_documents(s, summary)


def score_documents(s: Session, summary: Summary) -> None:
    """The configured document evaluation of the roundtrip model (per-document windows, score-first
    TTT, global phases, n-gram tilt) under eval.time_budget_s; logged as final_<kind>_exact."""
    e = s.cfg.eval
    try:
        res = evaluate_documents(
            s.base,
            s.val.tokens,
            s.val.tables,
            e,
            s.cfg.train.train_seq_len,
            s.cfg.model.bos_id,
            rank=s.rt.rank,
            world_size=s.rt.world_size,
            device=s.rt.device,
            autocast=s.autocast,
            progress=s.rt.master,
            log=s.log,
        )
    except EvalBudgetError as exc:  # the trained artifact and its scores so far are kept
        s.log(
            f"final_documents:refused {exc}; the artifact is kept: score it with `pgolf eval ARTIFACT "
            f"--over-budget-ok` (research) or a smaller plan"
        )
        return
    kind = eval_kind(e).replace("+", "_")
    s.log(
        f"final_{kind} val_loss:{res.score.val_loss:.4f} val_bpb:{res.score.val_bpb:.4f} {time_split(res)}"
        + (" over_budget:RESEARCH" if res.over_budget else "")
    )
    s.log(f"final_{kind}_exact val_loss:{res.score.val_loss:.8f} val_bpb:{res.score.val_bpb:.8f}")
    summary.documents = {**score_dict(res.score), "kind": eval_kind(e), "over_budget": res.over_budget}
    summary.eval_seconds["documents"] = res.seconds["total"]
