"""After training: quantize, compress, size-check, reload from disk and score the roundtrip model.

Log lines follow the official script (`Serialized model …`, `Code size: …`, `Total submission
size …`, `final_int8_zlib_roundtrip_exact val_loss:… val_bpb:…`), named after the scheme and codec
actually used, plus `final_sliding_window_exact …` when sliding evaluation is configured.

On several GPUs the whole finalization runs on all of them (issue 11): every rank collects GPTQ
Hessians from its own training batches (all-reduced), GPTQ and the LQER candidates of each matrix
run on one rank (matrices dealt by GPTQ cost), rank 0 gathers the codes, keeps the best LQER
corrections over all ranks and packs. One process gives the same artifact as before.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from pgolf.core.config import QuantConfig, config_to_dict
from pgolf.core.roles import quant_groups
from pgolf.core.runtime import barrier, sync_device
from pgolf.eval.docplan import EvalBudgetError
from pgolf.eval.docscore import eval_kind, evaluate_documents, time_split, uses_documents
from pgolf.eval.scoring import Score, evaluate
from pgolf.quant.capfit import cap_target_bytes, fit_to_cap
from pgolf.quant.gptq import calibration_batches, collect_hessians
from pgolf.quant.lowbit import dequantize_rows
from pgolf.quant.lqer import lqer_correction, weighted_error
from pgolf.quant.mixed import LQER_PART_NAMES, treatment
from pgolf.quant.pack import check_cap, pack, unpack
from pgolf.quant.schemes import QuantizedState, quantize
from pgolf.train.rundir import atomic_write_bytes, atomic_write_text, usable_output_dir
from pgolf.train.trainer import Session, TrainState


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
    cap_fit: dict = field(default_factory=dict)  # what cap fitting pruned or dropped (empty: nothing)
    documents: dict = field(default_factory=dict)  # the configured document evaluation (TTT, tilt), when on


def _score_dict(score: Score) -> dict:
    return {"val_loss": score.val_loss, "val_bpb": score.val_bpb, "tokens": score.tokens, "bytes": score.bytes}


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
    if q.scheme != "mixed" or not q.gptq:
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


def gptq_cost(shape: tuple[int, ...]) -> int:
    """GPTQ work of an (out x in) matrix: the column loop's updates (out * in^2) + the inverse (in^3)."""
    out_f, in_f = shape
    return out_f * in_f * in_f + in_f**3


def rank_shares(state: dict[str, Tensor], groups: dict[str, str], q: QuantConfig, world: int) -> list[list[str]]:
    """Tensor names each rank quantizes: the GPTQ matrices dealt largest first to the least
    loaded rank; every other tensor (cheap: fp16 or per-tensor int8) on rank 0."""
    costs = {
        n: gptq_cost(tuple(t.shape))
        for n, t in state.items()
        if treatment(groups[n], tuple(t.shape), t.is_floating_point(), q) == "intq"
    }
    loads, shares = [0] * world, [[] for _ in range(world)]
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        r = min(range(world), key=lambda i: (loads[i], i))
        shares[r].append(name)
        loads[r] += costs[name]
    shares[0].extend(n for n in state if n not in costs)
    return shares


def quantize_across_ranks(
    state: dict[str, Tensor], groups: dict[str, str], q: QuantConfig, hessians: dict | None, deadline: float | None
) -> QuantizedState | None:
    """The mixed scheme with each rank quantizing its share (GPTQ, and the LQER candidates of its
    tensors); rank 0 gets the merged QuantizedState, identical to one process's, the others None.
    A collective under torch.distributed; one process just calls quantize."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return quantize(state, groups, q, hessians=hessians, deadline=deadline)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = set(rank_shares(state, groups, q, world)[rank])
    part = quantize(
        {n: t for n, t in state.items() if n in mine},
        {n: groups[n] for n in mine},
        q,
        hessians=hessians,
        deadline=deadline,
    )
    parts = [None] * world if rank == 0 else None
    dist.gather_object((part.arrays, part.entries, part.info), parts, dst=0)
    if rank != 0:
        return None
    return merge_parts(state, parts, q, hessians)


def merge_parts(state: dict[str, Tensor], parts: list, q: QuantConfig, hessians: dict | None) -> QuantizedState:
    """One QuantizedState from every rank's (arrays, entries, info), in the state's order. Each
    rank kept LQER on its own best lqer_top_k tensors; the global best lqer_top_k are among
    those, and they are ranked here exactly as pgolf.quant.mixed.add_lqer ranks them."""
    arrays, entries, info = {}, {}, {"gptq": [], "rtn_after_deadline": [], "lqer": []}
    for part_arrays, _, _ in parts:
        arrays.update(part_arrays)
    by_name = {n: e for _, part_entries, _ in parts for n, e in part_entries.items()}
    for name in state:
        entries[name] = by_name[name]
    for key in ("gptq", "rtn_after_deadline"):
        listed = {n for _, _, part_info in parts for n in part_info.get(key, [])}
        info[key] = [n for n in state if n in listed]
    info["lqer"] = keep_best_lqer(state, arrays, entries, q, hessians)
    info["seconds"] = max(part_info.get("seconds", 0.0) for _, _, part_info in parts)
    return QuantizedState(arrays, entries, info)


def keep_best_lqer(
    state: dict[str, Tensor], arrays: dict, entries: dict, q: QuantConfig, hessians: dict | None
) -> list[str]:
    """Rank the LQER corrections the ranks kept by error reduction per stored code (the gain
    recomputed from the stored factors is bit-identical to the one they were chosen by), keep
    the best lqer_top_k, drop the rest's factors."""
    scored = []
    for name, e in entries.items():
        if not e.get("lqer"):
            continue
        w = state[name].detach().cpu().float()
        err = w - dequantize_rows(torch.from_numpy(arrays[name + ".q"]), torch.from_numpy(arrays[name + ".s"]))
        h = hessians.get(name) if hessians else None
        h_diag = h.diagonal() if h is not None else None
        parts = {p: torch.from_numpy(arrays[f"{name}.{p}"]) for p in LQER_PART_NAMES}
        gain = weighted_error(err, h_diag) - weighted_error(err - lqer_correction(parts), h_diag)
        scored.append((gain / (sum(w.shape) * q.lqer_rank), name))
    scored.sort(key=lambda g: (-g[0], g[1]))
    keep = [name for _, name in scored[: q.lqer_top_k]]
    for _, name in scored[q.lqer_top_k :]:
        del entries[name]["lqer"]
        for p in LQER_PART_NAMES:
            del arrays[f"{name}.{p}"]
    return keep


def pack_artifact(s: Session, code_bytes: int, summary: Summary) -> Path:
    """Calibrate (every rank), quantize (spread over the ranks) and compress to the run folder
    (rank 0); over the cap the file is renamed *.over_cap and SizeCapError says by how much."""
    q = s.cfg.quant
    path = s.run_dir / f"final_model.{q.scheme}.pglf"
    t0 = time.perf_counter()
    hessians, deadline = calibrate(s)
    if q.scheme == "mixed":
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
    if res.bytes > limit and q.scheme == "mixed":
        s.log(f"cap_fit:start artifact:{res.bytes} code:{counted} target:{limit + counted} over:{res.bytes - limit}")
        res, report = fit_to_cap(qs, model_cfg, q, path, limit, hessians, res)
        s.log(report.line())
        summary.cap_fit = asdict(report)
    check_cap(path, res.bytes, counted, q.size_cap_bytes)
    return res


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
    summary.roundtrip, summary.eval_seconds["roundtrip"] = _score_dict(score), secs
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
        summary.sliding, summary.eval_seconds["sliding"] = _score_dict(score), secs
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
    summary.documents = {**_score_dict(res.score), "kind": eval_kind(e), "over_budget": res.over_budget}
    summary.eval_seconds["documents"] = res.seconds["total"]


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
