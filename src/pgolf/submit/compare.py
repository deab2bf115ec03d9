"""`pgolf compare A B`: is A better (lower) than B beyond seed noise, by the rules in use?

Each side is one or more results: run folders, summary.json files, train logs, record folders
(submission.json), or a published `leaderboard:NAME` entry (pgolf.submit.leaderboard). The test is
one-sided Welch (unequal variances): H1 "mean(A) < mean(B)", on val_loss (nats per token) and on
val_bpb. When one side has a single value (the naive baseline has one published seed) it is a
one-sample t-test of the other side against that value; with one value on both sides there is
nothing to test and only the difference is shown.

The two rules in use (openai/parameter-golf):
- README rule (a new record): beat the best by at least 0.005 nats "at p < 0.01". Read strictly,
  the improvement itself must be shown: H1 "mean(B) - mean(A) > 0.005", p_margin < 0.01.
- The maintainers' chronological progression (how the leaderboard accepts each next row): p < 0.25
  for "A better than the previous row" on val_bpb.
nats are only comparable between runs scored on the same tokens (same tokenizer and validation
set); when the two sides' val_loss/val_bpb ratios differ, a warning says so and val_bpb is the
number to read.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.core.errors import MissingInputError, UsageError
from pgolf.submit.leaderboard import is_leaderboard_spec, leaderboard_entry
from pgolf.submit.runlogs import SUMMARY_NAME, load_run, parse_train_log

README_MARGIN_NATS = 0.005  # "beat the existing SOTA by at least 0.005 nats"
README_P = 0.01  # "... at p < 0.01"
PROGRESSION_P = 0.25  # maintainers: each accepted row beats the previous one at p < 0.25
CONFIDENCE = 0.95  # two-sided confidence interval of the difference


@dataclass
class Sample:
    """One side of a comparison: per-result val_loss and val_bpb, with where they came from."""

    label: str
    seeds: list = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_bpb: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, seed, val_loss: float, val_bpb: float) -> None:
        self.seeds.append(seed)
        self.val_loss.append(float(val_loss))
        self.val_bpb.append(float(val_bpb))

    def loss_per_bpb(self) -> float:
        return float(np.mean(self.val_loss) / np.mean(self.val_bpb))


@dataclass
class TestResult:
    """One-sided test of H1 "mean(A) + margin < mean(B)"; diff and CI are of mean(A) - mean(B)."""

    metric: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float | None
    ci_high: float | None
    t: float | None
    dof: float | None
    p: float | None
    method: str
    margin: float = 0.0


def split_specs(text: str) -> list[str]:
    """'a,b' or a glob pattern -> the specs it names (globs expanded, in sorted order)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if any(c in part for c in "*?[") and not is_leaderboard_spec(part):
            matches = sorted(glob.glob(part))
            if not matches:
                raise MissingInputError(f"{part}: matches no file or folder")
            out.extend(matches)
        else:
            out.append(part)
    return out


def _add_record_folder(sample: Sample, path: Path) -> None:
    """A record folder's submission.json: pgolf's per_seed list, the newer official seed_results
    mapping, or the single top-level val_loss / val_bpb."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data.get("per_seed"), list) and data["per_seed"]:
        for row in data["per_seed"]:
            sample.add(row.get("seed"), row["val_loss"], row["val_bpb"])
    elif isinstance(data.get("seed_results"), dict) and data["seed_results"]:
        for seed, row in data["seed_results"].items():
            sample.add(seed, row["val_loss"], row["val_bpb"])
    elif data.get("val_loss") is not None and data.get("val_bpb") is not None:
        sample.add(None, data["val_loss"], data["val_bpb"])
    else:
        raise UsageError(f"{path}: submission.json without val_loss/val_bpb")


def _add_spec(sample: Sample, spec: str) -> None:
    if is_leaderboard_spec(spec):
        entry = leaderboard_entry(spec)
        for seed, loss, bpb in zip(entry.seeds, entry.val_loss, entry.val_bpb, strict=True):
            sample.add(seed, loss, bpb)
        if entry.note:
            sample.notes.append(f"{spec}: {entry.note}")
        return
    path = Path(spec)
    if path.is_dir() and (path / SUMMARY_NAME).is_file() or path.name == SUMMARY_NAME:
        run = load_run(path)
        final = run.final()
        if not final:
            raise UsageError(f"{spec}: summary.json has no final score")
        sample.add(run.seed, final["val_loss"], final["val_bpb"])
    elif path.is_dir() and (path / "submission.json").is_file() or path.name == "submission.json":
        _add_record_folder(sample, path / "submission.json" if path.is_dir() else path)
    elif path.is_file():
        log = parse_train_log(path)
        if log.final() is None:
            raise UsageError(f"{spec}: train log without a final_*_exact score (run not finished?)")
        sample.add(log.seed, *log.final())
    else:
        raise MissingInputError(
            f"{spec}: not a run folder, summary.json, submission.json, train log or leaderboard:NAME"
        )


def load_side(text: str) -> Sample:
    """A comparison side from its command-line text (comma-separated specs, globs allowed)."""
    specs = split_specs(text)
    if not specs:
        raise UsageError(f"{text!r}: names no results")
    sample = Sample(label=text)
    for spec in specs:
        _add_spec(sample, spec)
    return sample


def _t_quantile(q: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, dof))


def _degenerate(diff_shifted: float) -> float:
    """p when both sides have zero spread: certain either way (or a tie)."""
    return 0.0 if diff_shifted < 0 else (1.0 if diff_shifted > 0 else 0.5)


def one_sided_test(a: list[float], b: list[float], metric: str, margin: float = 0.0) -> TestResult:
    """H1: mean(a) + margin < mean(b). Welch when both sides have >= 2 values, a one-sample test
    against the single value otherwise; scipy.stats computes t and p."""
    from scipy import stats

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = len(xa), len(xb)
    diff = float(xa.mean() - xb.mean())
    res = TestResult(
        metric,
        na,
        nb,
        float(xa.mean()),
        float(xb.mean()),
        diff,
        None,
        None,
        None,
        None,
        None,
        "none (one value per side)",
        margin,
    )
    if na >= 2 and nb >= 2:
        va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
        se = math.sqrt(va + vb)
        dof = float((va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))) if se > 0 else float(na + nb - 2)
        if se > 0:
            r = stats.ttest_ind(xa + margin, xb, equal_var=False, alternative="less")
            t, p = float(r.statistic), float(r.pvalue)
        else:
            t, p = math.copysign(math.inf, diff + margin) if diff + margin else 0.0, _degenerate(diff + margin)
        res.method = "welch"
    elif na >= 2 or nb >= 2:
        many, one, sign = (xa, float(xb[0]) - margin, 1.0) if na >= 2 else (xb, float(xa[0]) + margin, -1.0)
        se = float(many.std(ddof=1) / math.sqrt(len(many)))
        dof = float(len(many) - 1)
        if se > 0:
            r = stats.ttest_1samp(many, one, alternative="less" if sign > 0 else "greater")
            t, p = sign * float(r.statistic), float(r.pvalue)
        else:
            t, p = math.copysign(math.inf, diff + margin) if diff + margin else 0.0, _degenerate(diff + margin)
        res.method = "one-sample vs " + ("B's single value" if na >= 2 else "A's single value")
    else:
        return res
    half = _t_quantile(0.5 + CONFIDENCE / 2, dof) * se
    res.ci_low, res.ci_high, res.t, res.dof, res.p = diff - half, diff + half, t, dof, p
    return res


@dataclass
class Verdict:
    rule: str
    passed: bool | None
    text: str


def readme_rule(loss_margin_test: TestResult) -> Verdict:
    """Improvement >= 0.005 nats, shown at p < 0.01 (the test of H1 "improvement > 0.005")."""
    t = loss_margin_test
    improvement = -t.diff
    if t.p is None:
        return Verdict("readme_rule", None, f"untestable (one value per side) improvement_nats:{improvement:.5f}")
    ok = t.p < README_P and improvement >= README_MARGIN_NATS
    return Verdict(
        "readme_rule",
        ok,
        f"improvement_nats:{improvement:.5f} (needs >= {README_MARGIN_NATS}) p_margin:{t.p:.4g} (needs < {README_P})",
    )


def progression_rule(bpb_test: TestResult) -> Verdict:
    """The maintainers' chronological rule: better than the previous row at p < 0.25 (val_bpb)."""
    if bpb_test.p is None:
        return Verdict("progression_rule", None, "untestable (one value per side)")
    return Verdict(
        "progression_rule", bpb_test.p < PROGRESSION_P, f"p:{bpb_test.p:.4g} on val_bpb (needs < {PROGRESSION_P})"
    )


@dataclass
class Comparison:
    a: Sample
    b: Sample
    loss: TestResult
    bpb: TestResult
    loss_margin: TestResult
    readme: Verdict
    progression: Verdict
    warnings: list[str] = field(default_factory=list)


def compare_samples(a: Sample, b: Sample) -> Comparison:
    """Both tests, both rules, and the comparability check."""
    loss = one_sided_test(a.val_loss, b.val_loss, "val_loss")
    bpb = one_sided_test(a.val_bpb, b.val_bpb, "val_bpb")
    margin = one_sided_test(a.val_loss, b.val_loss, "val_loss", margin=README_MARGIN_NATS)
    warnings = list(a.notes + b.notes)
    ra, rb = a.loss_per_bpb(), b.loss_per_bpb()
    if abs(ra - rb) > 1e-4 * rb:
        warnings.append(
            f"A and B were scored on different tokens (val_loss/val_bpb {ra:.4f} vs {rb:.4f}: another "
            "tokenizer or validation set): nats are not comparable, read val_bpb"
        )
    return Comparison(a, b, loss, bpb, margin, readme_rule(margin), progression_rule(bpb), warnings)


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_comparison(c: Comparison) -> str:
    """A table of both tests, the verdicts, and one golf-style summary line."""
    lines = [
        f"A: {c.a.label} (n={len(c.a.val_loss)})",
        f"B: {c.b.label} (n={len(c.b.val_loss)})",
        f"{'metric':<9}{'mean A':>12}{'mean B':>12}{'A - B':>12}  {'95% CI of A - B':<26}{'t':>9}{'dof':>7}"
        f"{'p(A<B)':>11}  test",
    ]
    for t in (c.loss, c.bpb):
        ci = f"[{_num(t.ci_low, '+.5f')}, {_num(t.ci_high, '+.5f')}]" if t.ci_low is not None else "-"
        lines.append(
            f"{t.metric:<9}{t.mean_a:>12.6f}{t.mean_b:>12.6f}{t.diff:>+12.6f}  {ci:<26}"
            f"{_num(t.t, '.3f'):>9}{_num(t.dof, '.2f'):>7}{_num(t.p, '.4g'):>11}  {t.method}"
        )
    for v in (c.readme, c.progression):
        state = "n/a" if v.passed is None else ("PASS" if v.passed else "FAIL")
        lines.append(f"{v.rule}: {state} {v.text}")
    lines += [f"warning: {w}" for w in c.warnings]
    lines.append(
        f"compare val_loss_diff:{c.loss.diff:+.6f} val_loss_p:{_num(c.loss.p, '.6g')} "
        f"val_bpb_diff:{c.bpb.diff:+.6f} val_bpb_p:{_num(c.bpb.p, '.6g')} "
        f"readme_rule:{_state(c.readme)} progression_rule:{_state(c.progression)}"
    )
    return "\n".join(lines)


def _state(v: Verdict) -> str:
    return "na" if v.passed is None else ("pass" if v.passed else "fail")
