"""Fit the document evaluation to eval.time_budget_s instead of refusing it (issue 25).

Cap fitting does this for bytes; this does it for seconds. When the configured plan is predicted
over FIT_MARGIN of the budget, the plan is weakened one step at a time along FIT_LADDER (the
order measured on the CPU proxy: the steps that cost the least score per second saved come
first, BENCHMARKS.md "Fitting the evaluation to its budget"), and the first plan predicted to fit
is used; the log says what changed and the predicted time. Only when even the plainest document
scoring (no TTT, no phases, no tilt) is predicted over the budget is the evaluation refused.
Predictions come from pgolf.eval.budget (work counted exactly, rates probed on random tokens of
each plan's shapes, probes shared between plans of the same shapes).
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor

from pgolf.core.config import EvalConfig
from pgolf.eval.budget import Cost, check_budget, plan_cost
from pgolf.eval.docplan import EvalBudgetError, resolve

# A fitted plan must be predicted at most this share of the budget: the budget planner's error on
# the proxy was within +-10% (BENCHMARKS.md, "Evaluation methods"), so a plan at 85% stays inside.
FIT_MARGIN = 0.85
MAX_CHUNK = 1024  # the TTT chunk is never grown past this many targets
MAX_DOC_BATCH = 1024


def _grow_chunk(e: EvalConfig) -> EvalConfig | None:
    if not e.ttt or e.ttt_chunk >= MAX_CHUNK:
        return None
    return replace(e, ttt_chunk=min(2 * e.ttt_chunk, MAX_CHUNK), ttt_chunk_by_len="")


def _grow_batch(e: EvalConfig) -> EvalConfig | None:
    return None if e.doc_batch >= MAX_DOC_BATCH else replace(e, doc_batch=min(2 * e.doc_batch, MAX_DOC_BATCH))


def _shrink_context(e: EvalConfig, floor: int) -> EvalConfig | None:
    ctx = e.context or e.eval_seq_len
    if not ctx or ctx // 2 < floor:
        return None
    half = ctx // 2
    return replace(e, context=half, stride=min(e.stride, half))


def _no_phases(e: EvalConfig) -> EvalConfig | None:
    return replace(e, ttt_phase_docs="") if e.ttt and e.ttt_phase_docs else None


def _no_ttt(e: EvalConfig) -> EvalConfig | None:
    return replace(e, ttt=False, ttt_phase_docs="") if e.ttt else None


def _no_tilt(e: EvalConfig) -> EvalConfig | None:
    return replace(e, tilt_order=0) if e.tilt_order else None


# (label, step): applied in this order, each as often as it applies, until a plan fits.
FIT_LADDER = (
    ("ttt_chunk x2", lambda e, floor: _grow_chunk(e)),
    ("doc_batch x2", lambda e, floor: _grow_batch(e)),
    ("global phases off", lambda e, floor: _no_phases(e)),
    ("context /2", _shrink_context),
    ("ttt off", lambda e, floor: _no_ttt(e)),
    ("tilt off", lambda e, floor: _no_tilt(e)),
)


def describe_changes(before: EvalConfig, after: EvalConfig) -> str:
    """`ttt_chunk:48->96 doc_batch:64->128` for the fields a fit changed."""
    fields = ("ttt", "ttt_chunk", "ttt_chunk_by_len", "doc_batch", "context", "stride", "ttt_phase_docs", "tilt_order")
    parts = [
        f"{f}:{getattr(before, f)!r}->{getattr(after, f)!r}" for f in fields if getattr(before, f) != getattr(after, f)
    ]
    return " ".join(parts).replace("'", "")


def fit_to_budget(
    model, cfg: EvalConfig, tokens: Tensor, seq_len: int, bos_id: int, world: int, device, autocast, log=None
) -> tuple[EvalConfig, Cost]:
    """The plan to run and its predicted cost: cfg itself when it fits (or there is no budget, or
    eval.over_budget_ok asks for it anyway), else the first fitting plan along FIT_LADDER; raises
    EvalBudgetError when even the plainest one does not fit."""
    rates: dict = {}
    cost = plan_cost(model, resolve(cfg, tokens, seq_len, bos_id), world, device, autocast, rates)
    budget = cfg.time_budget_s
    if budget <= 0 or cost.predicted_s <= budget or cfg.over_budget_ok:
        check_budget(cfg, cost, log)
        return cfg, cost
    floor = min(seq_len, cfg.context or cfg.eval_seq_len or seq_len)
    current, current_cost = cfg, cost
    for _label, step in FIT_LADDER:
        while (candidate := step(current, floor)) is not None:
            current = candidate
            current_cost = plan_cost(model, resolve(current, tokens, seq_len, bos_id), world, device, autocast, rates)
            if current_cost.predicted_s <= FIT_MARGIN * budget:
                if log is not None:
                    log(
                        f"eval_plan:fitted predicted:{current_cost.predicted_s:.1f}s budget:{budget:g}s "
                        f"(configured plan {cost.predicted_s:.1f}s) {describe_changes(cfg, current)}"
                    )
                return current, current_cost
    raise EvalBudgetError(
        f"evaluation predicted at {cost.predicted_s:.0f}s, over eval.time_budget_s={budget:g}s, and even "
        f"plain document scoring ({current_cost.predicted_s:.0f}s) does not fit; raise the budget or pass "
        f"--over-budget-ok for a research run"
    )
