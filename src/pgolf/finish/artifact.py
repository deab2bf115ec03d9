"""Calibrate -> quantize -> pack -> cap-fit: the trained weights become the artifact file.

Log lines follow the official script (`Serialized model …`, `Code size: …`, `Total submission
size …`), named after the scheme and codec actually used. On several GPUs every rank collects GPTQ
Hessians from its own training batches (all-reduced) and quantizes its share
(pgolf.finish.ranks); rank 0 packs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from pgolf.core.roles import quant_groups
from pgolf.core.runtime import barrier
from pgolf.finish.ranks import quantize_across_ranks
from pgolf.finish.summary import Summary
from pgolf.quant.capfit import cap_target_bytes, fit_to_cap
from pgolf.quant.gptq import calibration_batches, collect_hessians
from pgolf.quant.pack import check_cap, pack
from pgolf.quant.registry import scheme_for
from pgolf.quant.schemes import quantize
from pgolf.train.rundir import atomic_write_bytes, usable_output_dir
from pgolf.train.trainer import Session


def save_raw(s: Session, code_bytes: int) -> None:
    """The unquantized weights (safetensors) for debugging; sizes logged as the official script."""
    if not s.rt.master:
        return
    from safetensors.torch import save

    path = s.run_dir / "final_model.safetensors"
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in s.base.state_dict().items()}))
    nbytes = path.stat().st_size
    s.log(f"Serialized model: {nbytes} bytes")
    s.log(f"Code size: {code_bytes} bytes")
    s.log(f"Total submission size: {nbytes + code_bytes} bytes")


def calibrate(s: Session) -> tuple[dict | None, float | None]:
    """GPTQ Hessians from training batches (never validation data), within the quant time budget:
    every rank runs its own share of the calibration batches under the training autocast, and
    the sums are all-reduced (a collective: every rank calls this). Returns (hessians on the
    model's device or None, deadline for GPTQ or None)."""
    q, t = s.cfg.quant, s.cfg.train
    if not (scheme_for(q.scheme).uses_hessians and q.gptq):
        return None, None
    deadline = time.perf_counter() + q.gptq_time_budget_s if q.gptq_time_budget_s > 0 else None
    seqs = max(t.train_batch_tokens // (s.rt.world_size * s.grad_accum * t.train_seq_len), 1)
    batches = calibration_batches(
        s.train_pattern, q.gptq_calib_batches, seqs, t.train_seq_len, s.rt.device, s.rt.rank, s.rt.world_size
    )
    hs = collect_hessians(
        s.base, batches, time_budget_s=0.5 * q.gptq_time_budget_s, autocast=s.autocast, all_reduce=s.rt.distributed
    )
    s.log(
        f"gptq_calibration batches:{hs.batches} tokens:{hs.tokens} ranks:{s.rt.world_size} "
        f"time:{1000 * hs.seconds:.0f}ms"
    )
    return hs.h, deadline


def pack_artifact(s: Session, code_bytes: int, summary: Summary) -> Path:
    """Calibrate (every rank), quantize (spread over the ranks) and compress to the run folder
    (rank 0); over the cap the file is renamed *.over_cap and SizeCapError says by how much."""
    q = s.cfg.quant
    path = s.run_dir / f"final_model.{q.scheme}.pglf"
    t0 = time.perf_counter()
    hessians, deadline = calibrate(s)
    if scheme_for(q.scheme).spreads_over_ranks:
        qs = quantize_across_ranks(s.base.state_dict(), quant_groups(s.base), q, hessians, deadline)
    else:
        qs = quantize(s.base.state_dict(), quant_groups(s.base), q) if s.rt.master else None
    if s.rt.master:
        info = getattr(qs, "info", {}) or {}
        s.log(
            f"quantize:{q.scheme} gptq_tensors:{len(info.get('gptq', []))} "
            f"rtn_after_deadline:{len(info.get('rtn_after_deadline', []))} lqer:{','.join(info.get('lqer', []))} "
            f"ranks:{s.rt.world_size} quant_time:{1000 * (time.perf_counter() - t0):.0f}ms"
        )
        counted = code_bytes if q.count_code_bytes else 0
        try:
            res = fit_and_pack(s, qs, hessians, path, counted, summary)
        finally:
            barrier(s.rt)
        summary.codec, summary.artifact_bytes = res.codec, res.bytes
        label = f"{q.scheme}+{res.codec}"
        s.log(
            f"Serialized model {label}: {res.bytes} bytes (payload:{res.payload_bytes} "
            f"codec_sizes:{json.dumps(res.codec_sizes, sort_keys=True)} pack_time:{1000 * res.seconds:.0f}ms)"
        )
        s.log(f"Total submission size {label}: {res.bytes + code_bytes} bytes")
        s.log(
            f"finalize_time:{1000 * (time.perf_counter() - t0):.0f}ms reserve_seconds:{s.cfg.train.reserve_seconds:g}"
        )
    else:
        barrier(s.rt)
    return path


def fit_and_pack(s: Session, qs, hessians, path: Path, counted: int, summary: Summary):
    """Pack; when model + counted code bytes are over the target, fit by measured pruning
    (pgolf.quant.capfit) instead of wasting the run; refuse (SizeCapError) only what cannot fit."""
    q, model_cfg = s.cfg.quant, asdict(s.cfg.model)
    res = pack(qs, model_cfg, q, path)
    limit = cap_target_bytes(q, counted)
    if res.bytes > limit and scheme_for(q.scheme).fits_cap:
        s.log(f"cap_fit:start artifact:{res.bytes} code:{counted} target:{limit + counted} over:{res.bytes - limit}")
        res, report = fit_to_cap(qs, model_cfg, q, path, limit, hessians, res)
        s.log(report.line())
        summary.cap_fit = asdict(report)
    check_cap(path, res.bytes, counted, q.size_cap_bytes)
    return res


def ensure_output_dir(s: Session) -> None:
    """Finished training is never lost to an unwritable run folder: if it cannot be written now,
    every result goes to the rescue folder instead, and the log says so (all ranks agree)."""
    out = [str(s.run_dir), False]
    if s.rt.master:
        path, rescued = usable_output_dir(s.run_dir, s.cfg.run_id)
        out = [str(path), rescued]
    if s.rt.distributed:
        import torch.distributed as dist

        dist.broadcast_object_list(out, src=0)
    if out[1]:
        s.log(f"output:rescued run folder {s.run_dir} is not writable; writing the results to {out[0]}")
        s.run_dir = Path(out[0])
