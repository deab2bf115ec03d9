"""The evaluation time budget: count the work a plan implies, time a short probe on random tokens
(never validation data, outside the timer, like a compile warm-up), predict, refuse over budget.

Work is counted in padded tokens through the model, per rank (the slowest rank decides):
scoring forwards, TTT forward+backward (with adapters), global-phase forward+backward, and the
n-gram precompute (context orders x stream length). Rates come from timing the same kinds of
calls on random tokens of the plan's shapes, so the prediction carries this machine's speed.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from pgolf.core.config import EvalConfig
from pgolf.eval.docplan import EvalBudgetError, Setup, chunk_plan, rank_docs
from pgolf.eval.documents import length_sorted, plan_doc_windows
from pgolf.eval.tilt import ngram_hints
from pgolf.eval.ttt import LoraBank, adapter_optimizer, frozen, head_logits

TILT_PROBE_TOKENS = 1 << 16


@dataclass
class Cost:
    """Predicted seconds of one evaluation and what they are made of."""

    predicted_s: float
    parts: dict = field(default_factory=dict)  # name -> seconds
    work: dict = field(default_factory=dict)  # name -> padded tokens (slowest rank)


def window_work(st: Setup, mine: np.ndarray) -> tuple[int, int]:
    """(padded tokens, forward calls) of scoring `mine` with document windows, longest first in
    batches."""
    win = plan_doc_windows(st.docs, mine, st.context, st.cfg.stride)
    lens = win.length[length_sorted(win.length)]
    b = st.cfg.doc_batch
    starts = range(0, lens.size, b)
    return int(sum(lens[i] * min(b, lens.size - i) for i in starts)), len(starts)


def ttt_work(st: Setup, mine: np.ndarray) -> tuple[int, int]:
    """(padded tokens through forward+backward, steps) when TTT scores `mine` chunk by chunk."""
    order = mine[length_sorted(st.docs.length[mine])]
    total = steps = 0
    for b0 in range(0, order.size, st.cfg.doc_batch):
        plans = chunk_plan(st, st.docs.length[order[b0 : b0 + st.cfg.doc_batch]])
        for k in range(max(p[0].size for p in plans)):
            lens = [p[1][k] for p in plans if k < p[0].size]
            total += max(lens) * len(lens)
            steps += 1
    return int(total), steps


def _slowest(pairs: list[tuple[int, int]]) -> tuple[int, int]:
    return max(pairs, key=lambda p: p[0])


def plan_work(st: Setup, world: int) -> dict:
    """Padded tokens per kind for the slowest rank, and its forward calls / TTT steps (each also
    pays a fixed cost: launches, the adapters' optimizer, bookkeeping)."""
    score = ttt = score_calls = ttt_steps = 0
    for group in st.groups:
        per_rank = [rank_docs(st.docs, group, r, world) for r in range(world)]
        if st.cfg.ttt:
            tokens, steps = _slowest([ttt_work(st, m) for m in per_rank])
            ttt, ttt_steps = ttt + tokens, ttt_steps + steps
        else:
            tokens, calls = _slowest([window_work(st, m) for m in per_rank])
            score, score_calls = score + tokens, score_calls + calls
    glob = 0
    for group in st.groups[:-1]:
        span = int(st.docs.length[group].sum())
        glob += (span // max(st.seq_len, 1)) * st.seq_len * st.cfg.ttt_global_epochs // world
    orders = max(0, st.cfg.tilt_order - st.cfg.tilt_min_order + 1) if st.cfg.tilt_order else 0
    return {
        "scoring": score,
        "ttt": ttt,
        "global": glob,
        "tilt": orders * st.docs.num_targets,
        "scoring_calls": score_calls,
        "ttt_steps": ttt_steps,
    }


def _timed(fn, reps: int = 2) -> float:
    fn()  # warm-up (allocations, lazy init, compile)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _linear(t_small: float, n_small: int, t_big: float, n_big: int) -> tuple[float, float]:
    """(tokens per second, fixed seconds per call) from two timed calls of different sizes."""
    per_token = max((t_big - t_small) / max(n_big - n_small, 1), 1e-12)
    return 1.0 / per_token, max(t_small - per_token * n_small, 0.0)


def probe_rates(model, st: Setup, device, autocast) -> dict:
    """Tokens per second of each kind of work and the fixed seconds of each call, timed on random
    tokens: a call of the plan's shape and a one-row call, a line through both."""
    rows = max(1, min(st.cfg.doc_batch, 16))
    vocab = model.tok_emb.weight.size(0)
    gen = torch.Generator().manual_seed(0)
    big = torch.randint(0, vocab, (rows, st.context), generator=gen).to(device)
    small = big[:1, : min(st.context, 16)]
    ctx = autocast or nullcontext()
    rates = {}

    def forward(x):
        with torch.no_grad(), ctx:
            head_logits(model, model.hidden(x)[:, -64:], None)

    rates["scoring"], rates["scoring_call_s"] = _linear(
        _timed(lambda: forward(small)), small.numel(), _timed(lambda: forward(big)), big.numel()
    )
    if st.cfg.ttt:
        bank = LoraBank(model, st.targets, st.cfg.ttt_rank, st.cfg.ttt_alpha, rows, device)
        opt = adapter_optimizer(bank.parameters(), st.cfg.ttt_lr, st.cfg.ttt_beta2, st.cfg.ttt_weight_decay)

        def train_step(x):
            bank.rows = torch.arange(x.size(0), device=x.device)
            with frozen(model), bank.attached(), ctx:
                loss = head_logits(model, model.hidden(x)[:, -min(64, st.context) :], bank).float().logsumexp(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        rates["ttt"], rates["ttt_step_s"] = _linear(
            _timed(lambda: train_step(small)), small.numel(), _timed(lambda: train_step(big)), big.numel()
        )
        rates["global"] = rates["ttt"]
    if st.cfg.tilt_order > 0:
        r = torch.randint(0, vocab, (TILT_PROBE_TOKENS,), generator=gen)
        orders = min(st.cfg.tilt_order, 4)
        rates["tilt"] = TILT_PROBE_TOKENS * orders / _timed(lambda: ngram_hints(r, orders, 1, device), reps=1)
    return rates


def plan_cost(model, st: Setup, world: int, device, autocast, cache: dict | None = None) -> Cost:
    """Predicted seconds of the plan on this machine (see the module docstring). `cache` keeps
    probed rates by the shapes they depend on, for comparing several plans (pgolf.eval.fit)."""
    work = plan_work(st, world)
    c = st.cfg
    key = (st.context, min(c.doc_batch, 16), c.ttt, tuple(st.targets), c.ttt_rank, min(c.tilt_order, 4))
    if cache is None or key not in cache:
        rates = probe_rates(model, st, device, autocast)
        if cache is not None:
            cache[key] = rates
    rates = cache[key] if cache is not None else rates
    parts = {k: (work[k] / rates[k] if work[k] else 0.0) for k in ("scoring", "ttt", "global", "tilt")}
    parts["scoring"] += work["scoring_calls"] * rates["scoring_call_s"]
    if work["ttt_steps"]:
        parts["ttt"] += work["ttt_steps"] * rates["ttt_step_s"]
    return Cost(sum(parts.values()), parts, work)


def check_budget(cfg: EvalConfig, cost: Cost, log=None) -> None:
    """Refuse a plan predicted over eval.time_budget_s unless eval.over_budget_ok (research mode)."""
    line = " ".join(f"{k}:{v:.1f}s" for k, v in cost.parts.items())
    budget = cfg.time_budget_s
    if log is not None:
        log(f"eval_plan predicted:{cost.predicted_s:.1f}s budget:{budget:g}s {line}")
    if budget <= 0 or cost.predicted_s <= budget:
        return
    if cfg.over_budget_ok:
        if log is not None:
            log(
                f"eval_plan:over_budget research mode: predicted {cost.predicted_s:.1f}s > budget {budget:g}s "
                f"(eval.over_budget_ok); this score is not a legal record"
            )
        return
    raise EvalBudgetError(
        f"evaluation predicted at {cost.predicted_s:.0f}s, over eval.time_budget_s={budget:g}s "
        f"({line}); shrink it (eval.doc_batch, eval.ttt_chunk, eval.context, eval.tilt_order) "
        f"or pass --over-budget-ok for a research run"
    )
