"""The document evaluator: document windows, score-first LoRA TTT, global phases, n-gram tilt and
the time budget, each against a definition written out the slow way."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf.core.config import EvalConfig, ModelConfig
from pgolf.data.tokenizer import ByteTables
from pgolf.eval.budget import check_budget, plan_cost
from pgolf.eval.docplan import EvalBudgetError, resolve
from pgolf.eval.docscore import evaluate_documents
from pgolf.eval.documents import doc_windows, find_documents, per_target_bytes
from pgolf.eval.legality import check_tables
from pgolf.eval.tilt import ngram_hints, tilted_log_probs, tilted_nll
from pgolf.model.gpt import GPT

V = 48
BOS = 1


def make_model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, doc_mask=True, **kw)
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def make_stream(n_docs: int = 10, seed: int = 1, lo: int = 3, hi: int = 70, lead: int = 0) -> torch.Tensor:
    """BOS-delimited random documents ending with a final BOS; `lead` tokens before the first BOS."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randint(2, V, (lead,), generator=g)] if lead else []
    for _ in range(n_docs):
        n = int(torch.randint(lo, hi, (1,), generator=g))
        parts.append(torch.cat([torch.tensor([BOS]), torch.randint(2, V, (n,), generator=g)]))
    parts.append(torch.tensor([BOS]))
    return torch.cat(parts).to(torch.int32)


def make_tables() -> ByteTables:
    return check_tables(V)


def ecfg(**kw) -> EvalConfig:
    e = EvalConfig(doc_aware=True, context=32, doc_batch=4)
    for k, v in kw.items():
        setattr(e, k, v)
    return e


def reference_doc_scores(model, tokens, context: int, first_end: int, step: int) -> torch.Tensor:
    """Per-target loss, one target at a time: each document alone, windows as doc_windows says."""
    docs = find_documents(tokens, BOS)
    out = torch.zeros(tokens.numel() - 1, dtype=torch.float64)
    with torch.no_grad():
        for s0, ln in zip(docs.start.tolist(), docs.length.tolist()):
            starts, lens, sfs = doc_windows(ln, context, first_end, step)
            for ws, wl, sf in zip(starts.tolist(), lens.tolist(), sfs.tolist()):
                for c in range(sf, wl):
                    ctx = tokens[s0 + ws : s0 + ws + c + 1].long()[None]
                    logit = model.logits(model.hidden(ctx)[0, -1]).float()
                    j = s0 + ws + c + 1
                    out[j - 1] = float(F.cross_entropy(logit[None], tokens[j].long()[None]))
    return out


def test_documents_tile_every_target_once_with_exact_bytes():
    tokens = make_stream(lead=5)
    docs = find_documents(tokens, BOS)
    assert docs.start[0] == 0 and docs.num_targets == tokens.numel() - 1
    covered = np.zeros(tokens.numel() - 1, dtype=int)
    for s, ln in zip(docs.start, docs.length):
        covered[s : s + ln] += 1  # targets s+1..s+ln are indices s..s+ln-1
        assert tokens[s + ln] == BOS or s + ln == tokens.numel() - 1  # the final target is the next BOS
    assert (covered == 1).all()
    tables = make_tables()
    nb = per_target_bytes(tokens, tables, "cpu")
    ref = sum(
        int(tables.base_bytes[t]) + int(tables.has_leading_space[t] and not tables.is_boundary[p])
        for p, t in zip(tokens[:-1].tolist(), tokens[1:].tolist())
    )
    assert int(nb.sum()) == ref


@pytest.mark.parametrize("stride,batch", [(0, 3), (8, 1), (8, 7)])
def test_document_scoring_equals_one_target_at_a_time(stride, batch):
    model, tokens, tables = make_model(), make_stream(lead=4), make_tables()
    res = evaluate_documents(model, tokens, tables, ecfg(stride=stride, doc_batch=batch), 32, BOS)
    ref = reference_doc_scores(model, tokens, 32, 32, stride or 32)
    assert (res.counts == 1).all()
    torch.testing.assert_close(res.nll, ref, rtol=1e-5, atol=1e-5)
    assert res.score.tokens == tokens.numel() - 1
    assert res.score.bytes == int(per_target_bytes(tokens, tables, "cpu").sum())
    assert math.isclose(res.score.loss_sum, float(ref.sum()), rel_tol=1e-6)


def test_ttt_without_learning_is_chunked_document_scoring():
    """lr 0, wd 0: adapters stay at B = 0, so TTT scores are the base model's on the chunk windows."""
    model, tokens, tables = make_model(), make_stream(), make_tables()
    e = ecfg(ttt=True, ttt_rank=4, ttt_chunk=8, ttt_lr=0.0, ttt_weight_decay=0.0)
    res = evaluate_documents(model, tokens, tables, e, 32, BOS)
    torch.testing.assert_close(res.nll, reference_doc_scores(model, tokens, 32, 8, 8), rtol=1e-5, atol=1e-5)


def test_ttt_scores_each_chunk_before_learning_from_it():
    """Chunk 0 of every document is scored by the base model; the adapter that scores chunk c has
    stepped on exactly chunks 0..c-1 of its own document; learning changes later chunks."""
    model, tokens, tables = make_model(), make_stream(), make_tables()
    e = ecfg(ttt=True, ttt_rank=4, ttt_chunk=8, ttt_lr=0.05, ttt_weight_decay=0.0)
    res = evaluate_documents(model, tokens, tables, e, 32, BOS, record_events=True)
    base = reference_doc_scores(model, tokens, 32, 8, 8)
    docs = find_documents(tokens, BOS)
    first = np.concatenate([np.arange(s, s + min(8, ln)) for s, ln in zip(docs.start, docs.length)])
    torch.testing.assert_close(res.nll[first], base[first], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(res.nll, base, atol=1e-4)
    for ev in res.events:
        if ev[0] == "score":
            assert list(ev[3]) == list(range(ev[2]))


def test_ttt_document_scores_do_not_depend_on_batching():
    model, tokens, tables = make_model(), make_stream(n_docs=7), make_tables()
    e = dict(ttt=True, ttt_rank=4, ttt_chunk=8, ttt_lr=0.05)
    a = evaluate_documents(model, tokens, tables, ecfg(doc_batch=1, **e), 32, BOS)
    b = evaluate_documents(model, tokens, tables, ecfg(doc_batch=5, **e), 32, BOS)
    torch.testing.assert_close(a.nll, b.nll, rtol=1e-4, atol=1e-5)


def test_global_phase_trains_on_scored_documents_and_restores_the_model():
    model, tokens, tables = make_model(), make_stream(n_docs=8), make_tables()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    e = dict(
        ttt=True,
        ttt_rank=4,
        ttt_chunk=8,
        ttt_lr=0.0,
        ttt_weight_decay=0.0,
        ttt_global_lr=0.05,
        ttt_global_chunk_tokens=64,
    )
    plain = evaluate_documents(model, tokens, tables, ecfg(**e), 16, BOS)
    res = evaluate_documents(model, tokens, tables, ecfg(ttt_phase_docs="4", **e), 16, BOS, record_events=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    docs = find_documents(tokens, BOS)
    split = int(docs.start[4])
    torch.testing.assert_close(res.nll[:split], plain.nll[:split])  # before the phase: identical
    assert not torch.allclose(res.nll[split:], plain.nll[split:])  # after it: the updated base
    assert res.phases and res.phases[0].steps > 0 and res.phases[0].end == split
    kinds = [ev[0] for ev in res.events]
    g = kinds.index("global")
    scored_before = {ev[1] for ev in res.events[:g] if ev[0] == "score"}
    assert scored_before == set(range(4))


def brute_hints(tokens: list[int], order: int, min_order: int) -> list[tuple[int, float]]:
    """Hint and confidence per target, from Python dictionaries over the past."""
    out = []
    for t in range(len(tokens) - 1):  # target t + 1
        hint = (-1, 0.0)
        for k in range(min_order, order + 1):
            if t - k + 1 < 0:
                break
            ctx = tuple(tokens[t - k + 1 : t + 1])
            cont = [tokens[s + 1] for s in range(k - 1, t) if tuple(tokens[s - k + 1 : s + 1]) == ctx]
            if cont:
                counts = {c: cont.count(c) for c in cont}
                best = max(counts.values())
                hint = (sorted(c for c in counts if counts[c] == best), best / len(cont))
        out.append(hint)
    return out


def test_ngram_hints_match_counting_the_past():
    g = torch.Generator().manual_seed(3)
    base = torch.randint(2, 7, (60,), generator=g)
    tokens = torch.cat([base, base[:25], torch.randint(2, 7, (30,), generator=g), base[10:40]])
    h = ngram_hints(tokens, 5, 2)
    ref = brute_hints(tokens.tolist(), 5, 2)
    for t, (cands, conf) in enumerate(ref):
        if cands == -1:
            assert int(h.token[t]) == -1
        else:
            assert int(h.token[t]) in cands and abs(float(h.confidence[t]) - conf) < 1e-6


def test_tilt_is_a_normalised_distribution_and_matches_the_closed_form():
    torch.manual_seed(0)
    logp = F.log_softmax(torch.randn(6, V), -1)
    hint = torch.tensor([3, -1, 5, 5, 0, 7])
    y = torch.tensor([3, 4, 6, 5, 0, 1])
    beta = 2.625
    full = tilted_log_probs(logp, hint, beta)
    torch.testing.assert_close(full.logsumexp(-1), torch.zeros(6), atol=1e-6, rtol=0)
    nll = tilted_nll(logp, y, hint, beta)
    torch.testing.assert_close(nll, -full.gather(1, y[:, None]).squeeze(1), atol=1e-6, rtol=0)
    ph = logp.exp().gather(1, hint.clamp(min=0)[:, None]).squeeze(1)
    manual = (
        -logp.gather(1, y[:, None]).squeeze(1) - beta * (y == hint).float() + torch.log(1 + ph * (math.exp(beta) - 1))
    )
    torch.testing.assert_close(nll[hint >= 0], manual[hint >= 0], atol=1e-6, rtol=0)


def test_tilt_helps_on_a_repeated_document():
    model, tables = make_model(), make_tables()
    g = torch.Generator().manual_seed(5)
    doc = torch.cat([torch.tensor([BOS]), torch.randint(2, V, (60,), generator=g)])
    tokens = torch.cat([doc, make_stream(n_docs=3, seed=9)[:-1], doc, torch.tensor([BOS])]).to(torch.int32)
    plain = evaluate_documents(model, tokens, tables, ecfg(), 32, BOS)
    tilt = evaluate_documents(model, tokens, tables, ecfg(tilt_order=8, tilt_min_order=2), 32, BOS)
    assert tilt.tilted > 50 and tilt.score.loss_sum < plain.score.loss_sum - 20
    untilted = ngram_hints(tokens, 8, 2).gate(0.8) < 0
    torch.testing.assert_close(tilt.nll[untilted], plain.nll[untilted])  # no hint: the model's own score
    n = doc.numel() - 1
    second = slice(tokens.numel() - 1 - n, tokens.numel() - 1)
    assert float(plain.nll[second].sum() - tilt.nll[second].sum()) > 20  # the copy is predicted from the past


def test_budget_refuses_a_plan_over_it_unless_research_mode():
    model, tokens = make_model(), make_stream()
    e = ecfg(ttt=True, ttt_rank=4, ttt_chunk=8, time_budget_s=1e-6)
    st = resolve(e, tokens, 32, BOS)
    cost = plan_cost(model, st, 1, "cpu", None)
    assert cost.predicted_s > 0 and cost.work["ttt"] > 0
    with pytest.raises(EvalBudgetError, match="over eval.time_budget_s"):
        check_budget(e, cost)
    lines = []
    e.over_budget_ok = True
    check_budget(e, cost, lines.append)
    assert any("over_budget" in line for line in lines)
    with pytest.raises(EvalBudgetError):
        evaluate_documents(model, tokens, make_tables(), ecfg(ttt=True, ttt_rank=4, time_budget_s=1e-6), 32, BOS)


def test_a_budget_below_the_plan_is_met_by_a_fitted_plan():
    """Issue 25: a budget under the configured plan's prediction gets the strongest plan along the
    fit ladder predicted inside FIT_MARGIN of it (logged with what changed); its measured time is
    inside the budget and it scores no worse than sliding-window scoring of the same tokens."""
    from pgolf.eval.fit import FIT_MARGIN, fit_to_budget
    from pgolf.eval.scoring import evaluate

    model = make_model()
    doc = make_stream(n_docs=1, seed=5, lo=60, hi=61)[:-1]
    tokens = torch.cat([make_stream(n_docs=12, seed=3)[:-1], doc, doc, torch.tensor([BOS])]).to(torch.int32)
    full = ecfg(ttt=True, ttt_rank=4, ttt_chunk=4, ttt_phase_docs="6", tilt_order=8, tilt_min_order=2)
    cost = plan_cost(model, resolve(full, tokens, 32, BOS), 1, "cpu", None)
    plain = plan_cost(model, resolve(ecfg(tilt_order=8, tilt_min_order=2), tokens, 32, BOS), 1, "cpu", None)
    assert plain.predicted_s < FIT_MARGIN * cost.predicted_s  # TTT is what costs here
    budget = max(plain.predicted_s / FIT_MARGIN * 1.5, cost.predicted_s / 2)
    full.time_budget_s = budget
    lines = []
    fitted, fitted_cost = fit_to_budget(model, full, tokens, 32, BOS, 1, "cpu", None, lines.append)
    assert fitted != full and fitted_cost.predicted_s <= FIT_MARGIN * budget
    assert any(line.startswith("eval_plan:fitted") and "->" in line for line in lines), lines
    res = evaluate_documents(model, tokens, make_tables(), full, 32, BOS, log=lines.append)
    assert res.seconds["total"] <= budget and not res.over_budget
    sliding = evaluate(model, tokens, make_tables(), window=32, stride=8, batch_seqs=4, device="cpu")
    assert res.score.val_bpb <= sliding.val_bpb + 1e-9


@pytest.mark.slow
def test_two_gloo_processes_score_like_one(tmp_path):
    """Documents split across 2 ranks (TTT, a global phase, tilt): the same score as 1 process."""
    import json
    import os
    import subprocess
    import sys

    worker = os.path.join(os.path.dirname(__file__), "docscore_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, worker, str(one)], check=True, env=env, timeout=300)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", worker, str(two)],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["tokens"] == b["tokens"] and a["bytes"] == b["bytes"]
    assert all(c == 1 for c in b["counts"])
    assert b["loss_sum"] == pytest.approx(a["loss_sum"], rel=1e-5)
    # Per target: float summation order differs (gloo all-reduce of the global phase's gradients;
    # Adam's g / sqrt(v) turns a rounding-level gradient into a full-size step), so 5e-3 nats.
    np.testing.assert_allclose(b["nll"], a["nll"], rtol=0, atol=5e-3)


def _tiny_artifact(tmp_path):
    from dataclasses import asdict

    from conftest import tiny_config
    from pgolf.model.inventory import quant_groups_for
    from pgolf.quant.pack import pack
    from pgolf.quant.schemes import quantize

    cfg = tiny_config(tmp_path, tmp_path)
    cfg.model.doc_mask = True
    torch.manual_seed(0)
    m = GPT(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "a.pglf"
    pack(quantize(m.state_dict(), quant_groups_for(cfg.model), cfg.quant), asdict(cfg.model), cfg.quant, path)
    return path


def test_pgolf_eval_runs_the_configured_document_evaluation(tmp_path, tiny_dataset, capsys):
    from pgolf.cli.main import main

    data, tok = tiny_dataset
    path = _tiny_artifact(tmp_path)
    args = [
        "eval",
        str(path),
        "--data",
        str(data),
        "--tokenizer",
        str(tok),
        "--device",
        "cpu",
        "--preset",
        "naive-baseline",
        "--set",
        "eval.ttt=true",
        "--set",
        "eval.ttt_rank=4",
        "--set",
        "eval.ttt_chunk=16",
        "--set",
        "eval.context=64",
        "--set",
        "eval.tilt_order=4",
        "--set",
        "eval.ttt_phase_docs=10",
        "--set",
        "eval.val_max_tokens=3000",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("eval:ttt+global+tilt"))
    for key in ("val_bpb:", "eval_time:", "scoring:", "ttt:", "global:", "tilt:", "predicted:", "budget:0s"):
        assert key in line, line
    assert "eval_plan predicted:" in out
    # a budget the plan cannot meet is refused in one line; research mode runs it and marks the log
    assert main(args + ["--set", "eval.time_budget_s=0.001"]) == 2
    assert "over eval.time_budget_s" in capsys.readouterr().err
    assert main(args + ["--set", "eval.time_budget_s=0.001", "--over-budget-ok"]) == 0
    out = capsys.readouterr().out
    assert "eval_plan:over_budget research mode" in out and "over_budget:RESEARCH" in out


def test_a_run_over_the_eval_budget_keeps_its_artifact_and_summary(tiny_dataset, tmp_path, monkeypatch):
    """Training is never lost to an evaluation plan refused at the end: logged, summary written."""
    from conftest import tiny_config
    from pgolf.finish.finalize import finalize
    from pgolf.train.trainer import run_training

    data, tok = tiny_dataset
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(data, tok, iterations=2)
    cfg.eval.ttt, cfg.eval.ttt_rank, cfg.eval.context, cfg.eval.time_budget_s = True, 4, 32, 1e-6
    s, st = run_training(cfg)
    summary = finalize(s, st, code_bytes=0)
    assert summary.roundtrip and not summary.documents
    assert (s.run_dir / "summary.json").is_file()
    assert "final_documents:refused" in s.log.path.read_text()


@pytest.mark.parametrize(
    "field,value,named",
    [
        ("ttt_targets", "q,x", "eval.ttt_targets"),
        ("ttt_chunk_by_len", "256-8", "eval.ttt_chunk_by_len"),
        ("ttt_phase_docs", "2500,100", "eval.ttt_phase_docs"),
        ("tilt_min_order", 9, "eval.tilt_min_order"),
    ],
)
def test_bad_evaluation_options_are_one_line_config_errors(field, value, named):
    from pgolf.core.config import ConfigError, validate_eval

    e = ecfg(ttt=True, tilt_order=4)
    setattr(e, field, value)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate_eval(e)
