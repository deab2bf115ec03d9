"""After training: the artifact (pgolf.finish.artifact), its scores (pgolf.finish.scores) and
summary.json. One call, on every rank, from the trainer's caller (CLI or exported script)."""

from __future__ import annotations

import json
from dataclasses import asdict

from pgolf.core.config import config_to_dict
from pgolf.finish.artifact import ensure_output_dir, pack_artifact, save_raw
from pgolf.finish.scores import roundtrip
from pgolf.finish.summary import Summary
from pgolf.train.rundir import atomic_write_text
from pgolf.train.trainer import Session, TrainState


def finalize(s: Session, st: TrainState, code_bytes: int) -> Summary:
    """Pack, check size, roundtrip-evaluate; write summary.json; return the Summary.
    `code_bytes` is the literal size of the submission script that goes with the artifact."""
    t = s.cfg.train
    summary = Summary(
        run_id=s.cfg.run_id,
        preset=s.cfg.preset,
        params=sum(p.numel() for p in s.base.parameters()),
        steps=st.step,
        train_time_ms=st.training_time_ms,
        tokens_seen=st.step * t.train_batch_tokens,
        size_cap_bytes=s.cfg.quant.size_cap_bytes,
        scheme=s.cfg.quant.scheme,
    )
    if st.history:
        summary.pre_quant = {k: st.history[-1][k] for k in ("val_loss", "val_bpb")}
    summary.code_bytes = code_bytes
    ensure_output_dir(s)
    save_raw(s, code_bytes)
    path = pack_artifact(s, code_bytes, summary)
    summary.artifact_path = str(path)
    summary.artifact_bytes = summary.artifact_bytes or path.stat().st_size
    summary.codec = summary.codec or s.cfg.quant.compressor
    summary.total_bytes = summary.artifact_bytes + code_bytes
    roundtrip(s, path, summary)
    if s.rt.master:
        out = {"summary": asdict(summary), "history": st.history, "config": config_to_dict(s.cfg)}
        atomic_write_text(s.run_dir / "summary.json", json.dumps(out, indent=2) + "\n")
    if s.folder is not None:
        s.folder.release()  # the run folder is complete: unlocked for readers and --overwrite
    return summary
