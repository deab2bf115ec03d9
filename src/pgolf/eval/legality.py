"""The challenge's four conditions on evaluation (issue #1017), checked against the configured
evaluator itself — document windows, TTT, global phases and tilt included — by running it.

C1 causality: perturbing tokens after position t never changes the score of any target <= t
    (token values changed; and, one document per batch, a BOS inserted — a new document boundary).
C2 normalisation: at sampled targets the scored probabilities over every possible value of the
    target sum to one (the evaluator re-run once per vocabulary entry: a black-box test that also
    catches a score which peeks at its own target), and the scorer's tilted distribution sums to
    one (white box).
C3 score before update: a planted one-chunk document copied later in the stream is scored the
    first time exactly as with adaptation off; the adapter that scored chunk c of a document had
    stepped only on its chunks < c; a global phase runs only after all of its documents are scored.
C4 single pass: every target scored exactly once; the byte total equals the per-target rule.

Each check returns a CheckResult; `tests/test_legality.py` shows each one failing on a broken
evaluator (update before score, tilt without renormalisation, a future-token leak).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pgolf.core.config import EvalConfig
from pgolf.data.tokenizer import ByteTables
from pgolf.eval.docscore import evaluate_documents
from pgolf.eval.documents import find_documents
from pgolf.eval.tilt import ngram_hints, tilted_log_probs

CHECK_VOCAB = 32
BOS = 1


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {'PASS' if self.passed else 'FAIL'} {self.detail}"


@dataclass
class CheckCase:
    """A small model, stream and byte tables on which the configured evaluator is run."""

    model: torch.nn.Module
    tokens: torch.Tensor
    tables: ByteTables
    cfg: EvalConfig
    seq_len: int

    def run(self, tokens: torch.Tensor | None = None, cfg: EvalConfig | None = None, **kw):
        return evaluate_documents(
            self.model, self.tokens if tokens is None else tokens, self.tables, cfg or self.cfg, self.seq_len, BOS, **kw
        )


def check_tables(vocab: int) -> ByteTables:
    """Byte rule of a synthetic tokenizer: 1-3 bytes a piece, half with a leading space, BOS 0."""
    rng = np.random.default_rng(0)
    base = rng.integers(1, 4, vocab).astype(np.int16)
    space = rng.random(vocab) < 0.5
    base[BOS], space[BOS] = 0, False
    boundary = np.zeros(vocab, dtype=bool)
    boundary[BOS] = True
    return ByteTables(base, space, boundary)


def planted_stream(chunk: int, n_docs: int, seed: int = 0) -> tuple[torch.Tensor, slice, slice]:
    """Documents of random tokens with repeated phrases; the first document is one chunk long and
    copied as the last one. Returns (tokens, first copy's targets, second copy's targets)."""
    g = torch.Generator().manual_seed(seed)
    phrase = torch.randint(2, CHECK_VOCAB, (12,), generator=g)
    planted = torch.cat([torch.tensor([BOS]), torch.randint(2, CHECK_VOCAB, (max(chunk - 1, 2),), generator=g)])
    parts = [planted]
    for i in range(n_docs):
        body = torch.randint(2, CHECK_VOCAB, (int(torch.randint(chunk, 4 * chunk, (1,), generator=g)),), generator=g)
        if i % 2:
            body[: phrase.numel()] = phrase  # repeats give the tilt something to do
        parts.append(torch.cat([torch.tensor([BOS]), body]))
    parts += [planted, torch.tensor([BOS])]
    tokens = torch.cat(parts).to(torch.int32)
    n1 = planted.numel()
    n2_start = tokens.numel() - 1 - n1
    return tokens, slice(0, n1), slice(n2_start, n2_start + n1)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[bool, float]:
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    return diff <= tol, diff


def check_causality(case: CheckCase, points: int = 4, seed: int = 0, tol: float = 1e-6) -> CheckResult:
    base = case.run()
    n = case.tokens.numel() - 1
    rng = np.random.default_rng(seed)
    worst = 0.0
    bad = []
    for t in sorted(rng.choice(np.arange(2, n - 2), size=min(points, n - 4), replace=False).tolist()):
        pert = case.tokens.clone()
        g = torch.Generator().manual_seed(int(t))
        tail = torch.randint(2, CHECK_VOCAB, (pert.numel() - t - 1,), generator=g).to(pert.dtype)
        pert[t + 1 :] = torch.where(pert[t + 1 :] == BOS, pert[t + 1 :], tail)  # values only: same documents
        ok, diff = _close(case.run(pert).nll[:t], base.nll[:t], tol)  # targets 1..t
        worst = max(worst, diff)
        if not ok:
            bad.append(t)
    # a new document boundary after t, one document per batch (shapes of other documents unchanged)
    one = _with(case.cfg, doc_batch=1)
    ref = case.run(cfg=one)
    for t in sorted(rng.choice(np.arange(2, n - 3), size=min(points, n - 5), replace=False).tolist()):
        pert = case.tokens.clone()
        pert[t + 2] = BOS
        ok, diff = _close(case.run(pert, cfg=one).nll[:t], ref.nll[:t], 1e-4)
        worst = max(worst, diff)
        if not ok:
            bad.append(t)
    return CheckResult(
        "C1 causality",
        not bad,
        f"{2 * points} perturbations after t; max change of an earlier score {worst:.2e} nats"
        + (f"; changed at t={bad}" if bad else ""),
    )


def _with(cfg: EvalConfig, **kw) -> EvalConfig:
    out = copy.copy(cfg)
    for k, v in kw.items():
        setattr(out, k, v)
    return out


def check_normalisation(case: CheckCase, points: int = 2, seed: int = 1, tol: float = 1e-3) -> CheckResult:
    n = case.tokens.numel() - 1
    docs = find_documents(case.tokens, BOS)
    rng = np.random.default_rng(seed)
    late = int(docs.start[len(docs) // 2]) + 3  # after a global phase when there is one
    picks = [late]
    if case.cfg.tilt_order > 0:  # a target the tilt acts on
        gated = ngram_hints(case.tokens, case.cfg.tilt_order, case.cfg.tilt_min_order).gate(case.cfg.tilt_threshold)
        hinted = torch.nonzero(gated >= 0).flatten() + 1
        if hinted.numel():
            picks.append(int(hinted[rng.integers(hinted.numel())]))
    while len(picks) < points:
        picks.append(int(rng.integers(3, n)))
    targets = sorted(set(picks))
    sums = []
    for j in targets:
        probs = []
        for v in range(CHECK_VOCAB):
            pert = case.tokens.clone()
            pert[j] = v
            probs.append(float(torch.exp(-case.run(pert).nll[j - 1])))
        sums.append(sum(probs))
    white = _white_box(case)
    ok = all(abs(s - 1) <= tol for s in sums) and white <= 1e-5
    return CheckResult(
        "C2 normalisation",
        ok,
        f"sum over {CHECK_VOCAB} target values at targets {targets}: "
        + ", ".join(f"{s:.6f}" for s in sums)
        + f"; tilted distribution |sum-1| <= {white:.1e}",
    )


def _white_box(case: CheckCase) -> float:
    """Largest |sum - 1| of the tilted distribution over the full vocabulary at hinted positions."""
    if case.cfg.tilt_order <= 0:
        return 0.0
    hints = ngram_hints(case.tokens, case.cfg.tilt_order, case.cfg.tilt_min_order).gate(case.cfg.tilt_threshold)
    on = torch.nonzero(hints >= 0).flatten()[:64]
    if on.numel() == 0:
        return 0.0
    x = case.tokens[: int(on.max()) + 1].long()[None]
    with torch.no_grad():
        logp = F.log_softmax(case.model.logits(case.model.hidden(x)[0, on]).float(), -1)
    full = tilted_log_probs(logp, hints[on], case.cfg.tilt_boost)
    return float((full.exp().sum(-1) - 1).abs().max())


def check_score_before_update(case: CheckCase, first: slice, second: slice) -> CheckResult:
    res = case.run(record_events=True)
    off = case.run(cfg=_with(case.cfg, ttt_lr=0.0, ttt_weight_decay=0.0, ttt_phase_docs=""))
    idx = torch.arange(first.start, first.stop)
    same, diff = _close(res.nll[idx], off.nll[idx], 1e-6)
    problems = (
        [] if same else [f"planted document's first copy scored {diff:.2e} nats differently than with adaptation off"]
    )
    scored: set[int] = set()
    for ev in res.events:
        if ev[0] == "score":
            if any(c >= ev[2] for c in ev[3]):
                problems.append(f"doc {ev[1]} chunk {ev[2]} scored by an adapter that stepped on chunks {list(ev[3])}")
            scored.add(ev[1])
        elif ev[0] == "global" and not set(range(ev[2], ev[3])) <= scored:
            problems.append(f"global phase {ev[1]} ran before documents {ev[2]}..{ev[3] - 1} were all scored")
    gain = float(off.nll[second].sum() - res.nll[second].sum())
    detail = (
        f"first copy {float(res.nll[idx].sum()):.4f} nats (adaptation off {float(off.nll[idx].sum()):.4f}); "
        f"second copy {gain:+.4f} nats better with adaptation; {len(res.events)} events checked"
    )
    return CheckResult("C3 score before update", not problems, detail + ("; " + problems[0] if problems else ""))


def check_single_pass(case: CheckCase) -> CheckResult:
    res = case.run()
    toks, t = case.tokens.tolist(), case.tables
    ref = sum(
        int(t.base_bytes[y]) + int(t.has_leading_space[y] and not t.is_boundary[p]) for p, y in zip(toks[:-1], toks[1:])
    )
    counts = res.counts
    ok = bool((counts == 1).all()) and res.score.bytes == ref and res.score.tokens == len(toks) - 1
    return CheckResult(
        "C4 single pass",
        ok,
        f"targets {len(toks) - 1}, scored once {int((counts == 1).sum())}, twice+ {int((counts > 1).sum())}, "
        f"never {int((counts == 0).sum())}; bytes {res.score.bytes} (rule: {ref})",
    )


def run_checks(case: CheckCase, first: slice, second: slice) -> list[CheckResult]:
    return [
        check_causality(case),
        check_normalisation(case),
        check_score_before_update(case, first, second),
        check_single_pass(case),
    ]
