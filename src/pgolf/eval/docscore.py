"""The configured evaluator: document-aware scoring, score-first LoRA TTT, global phases, n-gram
tilt, inside a timed budget — one pass over the validation stream, every target scored once.

    evaluate_documents(model, tokens, tables, eval_cfg, seq_len, ...) -> DocEval

Order of work (all of it inside the timer, after an untimed probe on random tokens):
  1. byte counts per target; n-gram hints when the tilt is on (from the stream's own past only);
  2. the documents are cut into phase groups at `ttt_phase_docs` (stream order); per group, this
     rank's share of documents is scored — windows of one document each (doc_aware), or chunk by
     chunk with per-document adapters, scoring each chunk before the step on it (ttt);
  3. after a group, when a phase boundary follows, SGD on the base weights over that group's
     (already scored) documents, on every rank, gradients all-reduced;
  4. per-target losses and counts are all-reduced: the Score is their sum; the base weights are
     restored so the caller's model is unchanged.

Documents are split across ranks by a balanced contiguous share of each group's token count; a
document's scores do not depend on the split (per-document state only), so any world size gives
the same score up to float summation order (tested with 2 gloo processes).
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from pgolf.core.config import EvalConfig, parse_phase_docs
from pgolf.core.progress import track
from pgolf.data.sidecar import SidecarBytes
from pgolf.data.tokenizer import ByteTables
from pgolf.eval.docplan import Setup, chunk_plan, rank_docs, resolve
from pgolf.eval.documents import Documents, length_sorted, per_target_bytes, plan_doc_windows
from pgolf.eval.fit import fit_to_budget
from pgolf.eval.scoring import Score
from pgolf.eval.tilt import Hints, ngram_hints, tilted_nll
from pgolf.eval.ttt import GlobalPhase, LoraBank, adapter_optimizer, frozen, global_phase, head_logits

LOGIT_ROWS = 8192  # scored positions per head/softmax slice (bounds the (rows, V) logits)


@dataclass
class DocEval:
    """Result of one configured evaluation."""

    score: Score
    nll: Tensor  # (N,) float64 CPU: the final loss of each target (index j - 1 for target j)
    counts: Tensor  # (N,) int32 CPU: times each target was scored (1 everywhere when correct)
    seconds: dict = field(default_factory=dict)  # total, scoring, ttt, global, tilt (probe: untimed)
    predicted_s: float = 0.0
    over_budget: bool = False
    tilted: int = 0  # targets whose distribution the tilt changed
    events: list = field(default_factory=list)  # (kind, ...) when record_events
    phases: list = field(default_factory=list)


# ----------------------------------------------------------------------------- scoring primitives


class Recorder:
    """Per-target losses and counts of this rank, on the device."""

    def __init__(self, n: int, device, hints: Tensor | None, beta: float, events: bool):
        self.nll = torch.zeros(n, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n, dtype=torch.int32, device=device)
        self.hints, self.beta = hints, beta
        self.events: list | None = [] if events else None

    def hint_for(self, idx: Tensor) -> Tensor | None:
        return None if self.hints is None else self.hints[idx]

    def add(self, idx: Tensor, nll: Tensor) -> None:
        self.nll.index_add_(0, idx, nll.detach().double())
        self.counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))

    def event(self, *item) -> None:
        if self.events is not None:
            self.events.append(item)


def scored_nll(logits: Tensor, y: Tensor, hint: Tensor | None, beta: float) -> tuple[Tensor, Tensor]:
    """(final scored loss incl. tilt, model loss) per row of logits (n, V)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    raw = -logp.gather(-1, y[:, None]).squeeze(-1)
    if hint is None:
        return raw, raw
    return tilted_nll(logp, y, hint, beta), raw


def window_batch(tokens: Tensor, starts: np.ndarray, lens: np.ndarray, device) -> tuple[Tensor, Tensor]:
    """(x (B, L), y (B, L)) for windows of different lengths, right-padded with the stream's own
    following tokens (causal attention: a padded column never affects a real one)."""
    n = int(tokens.numel()) - 1
    L = int(lens.max())
    rows = torch.from_numpy(starts)[:, None] + torch.arange(L + 1)[None, :]
    chunk = tokens[rows.clamp(max=n)].to(device=device, dtype=torch.int64)
    return chunk[:, :-1], chunk[:, 1:]


def score_windows(model, tokens: Tensor, win, rec: Recorder, batch: int, device, autocast, progress: bool) -> None:
    """Document windows without adaptation (no_grad), longest first, `batch` windows a forward."""
    order = length_sorted(win.length)
    for b0 in track(range(0, order.size, batch), "scoring documents", progress):
        sel = order[b0 : b0 + batch]
        starts, lens, sf = win.start[sel], win.length[sel], win.score_from[sel]
        x, y = window_batch(tokens, starts, lens, device)
        cols = torch.arange(x.size(1), device=device)[None, :]
        mask = (cols >= torch.from_numpy(sf).to(device)[:, None]) & (cols < torch.from_numpy(lens).to(device)[:, None])
        tidx = (torch.from_numpy(starts).to(device)[:, None] + cols)[mask]  # target index j - 1
        with torch.no_grad(), autocast or nullcontext():
            h = model.hidden(x)[mask]
            yy = y[mask]
            for r0 in range(0, h.size(0), LOGIT_ROWS):
                sl = slice(r0, r0 + LOGIT_ROWS)
                nll, _ = scored_nll(head_logits(model, h[sl], None), yy[sl], rec.hint_for(tidx[sl]), rec.beta)
                rec.add(tidx[sl], nll)
        for d in np.unique(win.doc[sel]).tolist():
            rec.event("score", int(d), -1, ())


# ----------------------------------------------------------------------------- TTT


def ttt_step_inputs(docs: Documents, batch: np.ndarray, plans, k: int, device):
    """Rows (documents) with a chunk k, their windows, and the gather index of their chunk targets."""
    rows = np.array([i for i, p in enumerate(plans) if k < p[0].size], dtype=np.int64)
    starts = np.array([docs.start[batch[i]] + plans[i][0][k] for i in rows], dtype=np.int64)
    lens = np.array([plans[i][1][k] for i in rows], dtype=np.int64)
    sf = np.array([plans[i][2][k] for i in rows], dtype=np.int64)
    width = int((lens - sf).max())
    cols = torch.from_numpy(sf)[:, None] + torch.arange(width)[None, :]
    valid = cols < torch.from_numpy(lens)[:, None]
    cols = torch.minimum(cols, torch.from_numpy(lens - 1)[:, None])
    return rows, starts, lens, cols.to(device), valid.to(device)


def ttt_chunk(
    model, tokens, bank: LoraBank, opt, st: Setup, rec: Recorder, batch, plans, k, applied, device, autocast
) -> None:
    """Chunk k of every document in the batch: score it (final), then one step on its loss."""
    docs = st.docs
    rows, starts, lens, cols, valid = ttt_step_inputs(docs, batch, plans, k, device)
    bank.rows = torch.from_numpy(rows).to(device)
    x, y = window_batch(tokens, starts, lens, device)
    with autocast or nullcontext():
        h = model.hidden(x)
        hc = h.gather(1, cols[..., None].expand(-1, -1, h.size(-1)))  # (rows, C, D)
        z = head_logits(model, hc, bank)
    yc = y.gather(1, cols)
    tidx = torch.from_numpy(starts).to(device)[:, None] + cols
    flat = valid.flatten()
    nll, raw = scored_nll(
        z.reshape(-1, z.size(-1))[flat], yc.flatten()[flat], rec.hint_for(tidx.flatten()[flat]), rec.beta
    )
    rec.add(tidx.flatten()[flat], nll)  # the chunk's scores are final before any step on it
    for i in rows.tolist():
        rec.event("score", int(batch[i]), k, tuple(applied[i]))
    learn = [i for i in rows.tolist() if k + 1 < plans[i][0].size]  # a step only helps later chunks
    if not learn:
        return
    per_row = torch.zeros(valid.shape, dtype=raw.dtype, device=device)
    per_row[valid] = raw
    loss = (per_row.sum(1) / valid.sum(1).clamp(min=1)).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    for i in learn:
        applied[i].append(k)
        rec.event("update", int(batch[i]), k)


def ttt_documents(model, tokens, st: Setup, mine: np.ndarray, rec: Recorder, device, autocast, progress: bool) -> None:
    """Score this rank's documents of one group with per-document adapters, batch by batch."""
    cfg = st.cfg
    order = mine[length_sorted(st.docs.length[mine])]
    with frozen(model):
        for b0 in track(range(0, order.size, cfg.doc_batch), "TTT documents", progress):
            batch = order[b0 : b0 + cfg.doc_batch]
            plans = chunk_plan(st, st.docs.length[batch])
            bank = LoraBank(model, st.targets, cfg.ttt_rank, cfg.ttt_alpha, batch.size, device)
            opt = adapter_optimizer(bank.parameters(), cfg.ttt_lr, cfg.ttt_beta2, cfg.ttt_weight_decay)
            applied: list[list[int]] = [[] for _ in range(batch.size)]
            with bank.attached():
                for k in range(max(p[0].size for p in plans)):
                    ttt_chunk(model, tokens, bank, opt, st, rec, batch, plans, k, applied, device, autocast)


# ----------------------------------------------------------------------------- the evaluator


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _all_reduce(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def score_group(model, tokens, st: Setup, mine: np.ndarray, rec: Recorder, device, autocast, progress: bool) -> None:
    if st.cfg.ttt:
        ttt_documents(model, tokens, st, mine, rec, device, autocast, progress)
    else:
        win = plan_doc_windows(st.docs, mine, st.context, st.cfg.stride)
        score_windows(model, tokens, win, rec, st.cfg.doc_batch, device, autocast, progress)


def run_global_phase(
    model, tokens, st: Setup, group: np.ndarray, rank: int, world: int, device, autocast
) -> GlobalPhase:
    cfg = st.cfg
    begin = int(st.docs.start[group[0]])
    end = int(st.docs.start[group[-1]] + st.docs.length[group[-1]])
    ph = GlobalPhase(
        begin,
        end,
        st.seq_len,
        cfg.ttt_global_lr,
        cfg.ttt_global_momentum,
        cfg.ttt_global_chunk_tokens,
        cfg.ttt_global_epochs,
    )
    return global_phase(model, tokens, ph, rank, world, device, autocast)


def evaluate_documents(
    model,
    tokens: Tensor,
    tables: ByteTables | SidecarBytes,
    cfg: EvalConfig,
    seq_len: int,
    bos_id: int,
    rank: int = 0,
    world_size: int = 1,
    device=None,
    autocast=None,
    progress: bool = False,
    record_events: bool = False,
    log=None,
) -> DocEval:
    """Score `tokens` (1-D CPU tensor, the validation stream) as configured; see the module doc."""
    device = device or next(model.parameters()).device
    cost = None
    if cfg.time_budget_s > 0 or log is not None:  # predict (untimed probe on random tokens), fit to the budget
        cfg, cost = fit_to_budget(model, cfg, tokens, seq_len, bos_id, world_size, device, autocast, log)
    st = resolve(cfg, tokens, seq_len, bos_id)
    saved = copy.deepcopy(model.state_dict()) if st.cfg.ttt and len(st.groups) > 1 else None
    was_training = model.training
    model.eval()
    secs = {"scoring": 0.0, "ttt": 0.0, "global": 0.0, "tilt": 0.0}
    _sync(device)
    t0 = time.perf_counter()
    n = int(tokens.numel()) - 1
    nbytes = per_target_bytes(tokens, tables, device)
    hints = None
    if cfg.tilt_order > 0:
        h: Hints = ngram_hints(tokens, cfg.tilt_order, cfg.tilt_min_order, device)
        hints = h.gate(cfg.tilt_threshold)
        _sync(device)
        secs["tilt"] = time.perf_counter() - t0
    rec = Recorder(n, device, hints, cfg.tilt_boost, record_events)
    phases = []
    try:
        for gi, group in enumerate(st.groups):
            ts = time.perf_counter()
            score_group(model, tokens, st, rank_docs(st.docs, group, rank, world_size), rec, device, autocast, progress)
            _sync(device)
            secs["ttt" if cfg.ttt else "scoring"] += time.perf_counter() - ts
            if gi + 1 < len(st.groups):
                ts = time.perf_counter()
                phases.append(run_global_phase(model, tokens, st, group, rank, world_size, device, autocast))
                rec.event("global", gi, int(group[0]), int(group[-1]) + 1)
                _sync(device)
                secs["global"] += time.perf_counter() - ts
    finally:
        if saved is not None:
            model.load_state_dict(saved)
        model.train(was_training)
    nll, counts = _all_reduce(rec.nll), _all_reduce(rec.counts)
    scored = counts > 0
    score = Score(float(nll.sum()), int(counts.sum()), int(nbytes[scored].sum()))
    _sync(device)
    secs["total"] = time.perf_counter() - t0
    tilted = int((hints >= 0).sum()) if hints is not None else 0
    over = cfg.time_budget_s > 0 and secs["total"] > cfg.time_budget_s
    return DocEval(
        score, nll.cpu(), counts.cpu(), secs, cost.predicted_s if cost else 0.0, over, tilted, rec.events or [], phases
    )


def time_split(res: DocEval) -> str:
    """`eval_time:…ms scoring:…ms ttt:…ms global:…ms tilt:…ms predicted:…ms` for the log lines."""
    s = res.seconds
    return (
        f"eval_time:{1000 * s['total']:.0f}ms scoring:{1000 * s['scoring']:.0f}ms ttt:{1000 * s['ttt']:.0f}ms "
        f"global:{1000 * s['global']:.0f}ms tilt:{1000 * s['tilt']:.0f}ms predicted:{1000 * res.predicted_s:.0f}ms"
    )


def eval_kind(cfg: EvalConfig) -> str:
    """Name of the configured evaluation for logs: ttt / docs, with +tilt / +global."""
    name = "ttt" if cfg.ttt else "docs"
    if cfg.ttt and parse_phase_docs(cfg.ttt_phase_docs):
        name += "+global"
    if cfg.tilt_order > 0:
        name += "+tilt"
    return name


def uses_documents(cfg: EvalConfig) -> bool:
    """Whether the configured evaluation is the document evaluator (vs the window scorer)."""
    return cfg.doc_aware or cfg.ttt or cfg.tilt_order > 0
