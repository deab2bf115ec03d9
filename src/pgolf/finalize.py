"""After training: quantize, compress, size-check, reload from disk and score the roundtrip model.

Log lines follow the official script (`Serialized model …`, `Code size: …`, `Total submission
size …`, `final_int8_zlib_roundtrip_exact val_loss:… val_bpb:…`), named after the scheme and codec
actually used, plus `final_sliding_window_exact …` when sliding evaluation is configured.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pgolf.config import config_to_dict
from pgolf.distributed import barrier
from pgolf.quant import pack, quantize, unpack
from pgolf.runlog import is_tty
from pgolf.scoring import Score, evaluate
from pgolf.trainer import Session, TrainState, _sync


class OverCapError(RuntimeError):
    """The artifact plus code exceeds the size cap."""


@dataclass
class Summary:
    """What a run produced (written as summary.json)."""

    run_id: str
    preset: str
    params: int
    steps: int
    train_time_ms: float
    tokens_seen: int
    pre_quant: dict = field(default_factory=dict)
    roundtrip: dict = field(default_factory=dict)
    sliding: dict = field(default_factory=dict)
    artifact_path: str = ""
    artifact_bytes: int = 0
    code_bytes: int = 0
    total_bytes: int = 0
    size_cap_bytes: int = 0
    codec: str = ""
    scheme: str = ""
    eval_seconds: dict = field(default_factory=dict)


def _score_dict(score: Score) -> dict:
    return {"val_loss": score.val_loss, "val_bpb": score.val_bpb, "tokens": score.tokens, "bytes": score.bytes}


def eval_window(s: Session) -> int:
    return s.cfg.eval.eval_seq_len or s.cfg.train.train_seq_len


def score_model(s: Session, stride: int) -> tuple[Score, float]:
    """Score the live model (non-overlapping when stride == 0); returns (score, seconds)."""
    _sync(s)
    t0 = time.perf_counter()
    window = s.cfg.train.train_seq_len if stride == 0 else eval_window(s)
    batch = s.cfg.eval.batch_seqs if stride else max(
        s.cfg.eval.val_batch_size // (s.rt.world_size * s.grad_accum * window), 1)
    score = evaluate(s.base, s.val.tokens, s.val.tables, window=window, stride=stride, batch_seqs=batch,
                     rank=s.rt.rank, world_size=s.rt.world_size, device=s.rt.device, autocast=s.autocast,
                     progress=s.rt.master and stride > 0 and is_tty())
    _sync(s)
    return score, time.perf_counter() - t0


def save_raw(s: Session, code_bytes: int) -> None:
    """The unquantized weights (safetensors) for debugging; sizes logged as the official script."""
    if not s.rt.master:
        return
    from safetensors.torch import save_file

    path = s.run_dir / "final_model.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in s.base.state_dict().items()}, str(path))
    nbytes = path.stat().st_size
    s.log(f"Serialized model: {nbytes} bytes")
    s.log(f"Code size: {code_bytes} bytes")
    s.log(f"Total submission size: {nbytes + code_bytes} bytes")


def pack_artifact(s: Session, code_bytes: int, summary: Summary) -> Path:
    """Quantize + compress to the run folder; refuse (raise) when over the cap."""
    q = s.cfg.quant
    path = s.run_dir / f"final_model.{q.scheme}.pglf"
    label = f"{q.scheme}+{q.compressor}"
    if s.rt.master:
        qs = quantize(s.base.state_dict(), q)
        res = pack(qs, asdict(s.cfg.model), q, path)
        summary.codec, summary.artifact_bytes = res.codec, res.bytes
        label = f"{q.scheme}+{res.codec}"
        s.log(f"Serialized model {label}: {res.bytes} bytes (payload:{res.payload_bytes} codec_sizes:{json.dumps(res.codec_sizes, sort_keys=True)})")
        s.log(f"Total submission size {label}: {res.bytes + code_bytes} bytes")
        total = res.bytes + code_bytes
        if total > q.size_cap_bytes:
            over = total - q.size_cap_bytes
            path.rename(path.with_suffix(".over_cap"))
            raise OverCapError(f"artifact {res.bytes} + code {code_bytes} = {total} bytes is {over} bytes over the "
                               f"cap of {q.size_cap_bytes}; not written as a submission (kept as {path.with_suffix('.over_cap')})")
    barrier(s.rt)
    return path


def roundtrip(s: Session, path: Path, summary: Summary) -> None:
    """Reload the artifact from disk into the model and score it (official + sliding)."""
    state, meta = unpack(path)
    s.base.load_state_dict({k: v.to(s.rt.device) for k, v in state.items()}, strict=True)
    tag = f"{meta['scheme']}_{summary.codec or s.cfg.quant.compressor}"
    score, secs = score_model(s, stride=0)
    s.log(f"final_{tag}_roundtrip val_loss:{score.val_loss:.4f} val_bpb:{score.val_bpb:.4f} eval_time:{1000 * secs:.0f}ms")
    s.log(f"final_{tag}_roundtrip_exact val_loss:{score.val_loss:.8f} val_bpb:{score.val_bpb:.8f}")
    summary.roundtrip, summary.eval_seconds["roundtrip"] = _score_dict(score), secs
    stride = s.cfg.eval.stride
    if stride > 0 and s.cfg.eval.final_sliding:
        score, secs = score_model(s, stride=stride)
        s.log(f"final_sliding_window val_loss:{score.val_loss:.4f} val_bpb:{score.val_bpb:.4f} "
              f"stride:{stride} window:{eval_window(s)} eval_time:{1000 * secs:.0f}ms")
        s.log(f"final_sliding_window_exact val_loss:{score.val_loss:.8f} val_bpb:{score.val_bpb:.8f}")
        summary.sliding, summary.eval_seconds["sliding"] = _score_dict(score), secs


def finalize(s: Session, st: TrainState, code_bytes: int) -> Summary:
    """Pack, check size, roundtrip-evaluate; write summary.json; return the Summary.
    `code_bytes` is the literal size of the submission script that goes with the artifact."""
    t = s.cfg.train
    summary = Summary(run_id=s.cfg.run_id, preset=s.cfg.preset, params=sum(p.numel() for p in s.base.parameters()),
                      steps=st.step, train_time_ms=st.training_time_ms, tokens_seen=st.step * t.train_batch_tokens,
                      size_cap_bytes=s.cfg.quant.size_cap_bytes, scheme=s.cfg.quant.scheme)
    if st.history:
        summary.pre_quant = {k: st.history[-1][k] for k in ("val_loss", "val_bpb")}
    summary.code_bytes = code_bytes
    save_raw(s, code_bytes)
    path = pack_artifact(s, code_bytes, summary)
    summary.artifact_path = str(path)
    summary.artifact_bytes = summary.artifact_bytes or path.stat().st_size
    summary.codec = summary.codec or s.cfg.quant.compressor
    summary.total_bytes = summary.artifact_bytes + code_bytes
    roundtrip(s, path, summary)
    if s.rt.master:
        out = {"summary": asdict(summary), "history": st.history, "config": config_to_dict(s.cfg)}
        (s.run_dir / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    return summary

