"""`pgolf check`: each condition passes on the configured evaluator and FAILS on a broken one
(update before score, tilt without renormalisation, a future-token leak, warm-up on validation)."""

from __future__ import annotations

import copy

import pytest
import torch

import pgolf.eval.docscore as docscore
from pgolf.core.presets import get_preset
from pgolf.eval.legality import check_causality, check_normalisation, check_score_before_update, check_single_pass
from pgolf.eval.tilt import tilted_nll
from pgolf.submit.check import legality_case


def proxy_with_ttt():
    cfg = get_preset("frontier-cpu-proxy")
    e = cfg.eval
    e.ttt, e.ttt_phase_docs, e.tilt_order, e.ttt_lr = True, "2500", 16, 0.01
    return cfg


@pytest.fixture(scope="module")
def case():
    return legality_case(proxy_with_ttt())


def test_single_pass_and_score_before_update_pass(case):
    c, first, second = case
    assert check_single_pass(c).passed
    r = check_score_before_update(c, first, second)
    assert r.passed, r.detail


def test_update_before_score_fails_c3(case, monkeypatch):
    c, first, second = case

    def step_then_score(model, tokens, bank, opt, st, rec, batch, plans, k, applied, device, autocast):
        rows, starts, lens, cols, valid = docscore.ttt_step_inputs(st.docs, batch, plans, k, device)
        bank.rows = torch.from_numpy(rows).to(device)
        x, y = docscore.window_batch(tokens, starts, lens, device)
        h = model.hidden(x)
        z = docscore.head_logits(model, h.gather(1, cols[..., None].expand(-1, -1, h.size(-1))), bank)
        per = torch.nn.functional.cross_entropy(z.float().flatten(0, 1), y.gather(1, cols).flatten(), reduction="none")
        opt.zero_grad()
        (per.view(valid.shape) * valid).sum().backward()
        opt.step()  # the step on chunk k BEFORE chunk k is scored
        for i in rows.tolist():
            applied[i].append(k)
        bank.rows = torch.from_numpy(rows).to(device)
        real_step(
            model, tokens, bank, _NoStep(), st, rec, batch, plans, k, [list(a) for a in applied], device, autocast
        )

    real_step = docscore.ttt_chunk
    monkeypatch.setattr(docscore, "ttt_chunk", step_then_score)
    r = check_score_before_update(c, first, second)
    assert not r.passed
    assert "adaptation off" in r.detail


class _NoStep:
    def zero_grad(self, **kw):
        pass

    def step(self):
        pass


def test_future_token_leak_fails_c1(case, monkeypatch):
    c, _, _ = case
    c = copy.copy(c)
    model = copy.deepcopy(c.model)
    original = model.hidden

    def leaky_hidden(ids):  # each position also sees the token two ahead (after its own target)
        return original(ids) + 0.05 * model.tok_emb(torch.roll(ids, -2, dims=1))

    monkeypatch.setattr(model, "hidden", leaky_hidden)
    c.model = model
    r = check_causality(c, points=2)
    assert not r.passed and "changed at" in r.detail


@pytest.mark.slow
def test_tilt_without_renormalisation_fails_c2(case, monkeypatch):
    c, _, _ = case
    assert check_normalisation(c).passed
    monkeypatch.setattr(
        docscore,
        "tilted_nll",
        lambda logp, y, h, beta: (
            tilted_nll(logp, y, h, beta)
            - torch.where(
                h >= 0,
                torch.log1p(logp.exp().gather(-1, h.clamp(min=0)[:, None]).squeeze(-1) * (torch.e**beta - 1)),
                torch.zeros_like(y, dtype=logp.dtype),
            )
        ),
    )
    r = check_normalisation(c)
    assert not r.passed, r.detail


@pytest.mark.slow
def test_pgolf_check_passes_on_the_cpu_proxy_preset(capsys):
    """The command the issue names: every condition printed, all pass, exit 0."""
    from pgolf.cli.main import main

    assert main(["check", "--preset", "frontier-cpu-proxy"]) == 0
    out = capsys.readouterr().out
    for name in (
        "C1 causality: PASS",
        "C2 normalisation: PASS",
        "C3 score before update: PASS",
        "C4 single pass: PASS",
        "V  validation isolation: PASS",
        "check:PASS all 5",
    ):
        assert name in out, out


@pytest.mark.slow
def test_warmup_on_validation_fails_isolation_and_clean_training_passes(monkeypatch):
    import pgolf.train.trainer as trainer
    from pgolf.submit.check import check_isolation

    cfg = get_preset("frontier-cpu-proxy")
    ok = check_isolation(cfg)
    assert ok.passed, ok.detail
    original = trainer.warmup

    def warmup_on_val(s):
        ids = s.val.tokens[: 4 * 33].long().view(4, 33)
        for _ in range(2):
            s.base(ids[:, :-1], ids[:, 1:]).backward()
        s.base.zero_grad(set_to_none=True)
        return original(s)

    monkeypatch.setattr(trainer, "warmup", warmup_on_val)
    bad = check_isolation(cfg)
    assert not bad.passed and "validation window: 0" not in bad.detail
