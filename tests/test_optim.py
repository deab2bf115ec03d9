"""Optimizers and schedules: orthogonalisation, the official split, warmdown semantics."""

from __future__ import annotations

import pytest
import torch

from pgolf.core.config import ModelConfig, TrainConfig
from pgolf.model.gpt import GPT
from pgolf.train.optim import Muon, build_optimizers, newton_schulz5, split_params
from pgolf.train.schedules import lr_multiplier, muon_momentum_at


@pytest.mark.parametrize("kind,lo", [("ns5", 0.65), ("polar_express", 0.85)])
@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32)])
def test_newton_schulz_orthogonalises(kind, lo, shape):
    """Singular values spread over [0.05, 1] all land near 1 (Polar Express tighter than NS5)."""
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    g = u[:, :k] @ torch.diag(torch.linspace(0.05, 1.0, k)) @ v[:, :k].T
    sv = torch.linalg.svdvals(newton_schulz5(g, 5, kind=kind))
    assert lo < float(sv.min()) and float(sv.max()) < 1.2


def test_official_split_covers_every_parameter_once():
    model = GPT(
        ModelConfig(
            vocab_size=64,
            num_layers=3,
            model_dim=32,
            num_heads=4,
            num_kv_heads=2,
            bigram_buckets=16,
            bigram_dim=8,
            smear_gate=True,
            parallel_from=1,
            attn_gate="sparse",
        )
    )
    groups = split_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {g: {names[id(p)] for p in ps} for g, ps in groups.items()}
    assert sum(len(v) for v in by_group.values()) == len(names)  # each parameter exactly once
    matrix = {
        f"blocks.{i}.{m}.weight"
        for i in range(3)
        for m in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")
    }
    assert by_group["muon"] == matrix
    assert by_group["adam-embed"] == {"tok_emb.weight", "bigram.bigram_table", "bigram.bigram_proj.weight"}
    assert by_group["adam-head"] == set()
    assert {
        "blocks.0.attn.attn_gate",
        "blocks.1.resid_mix",
        "lane_post",
        "skip_weights",
        "smear.smear_gate",
    } <= by_group["adam-scalar"]
    opts = build_optimizers(model, TrainConfig(), tied=True)
    assert isinstance(opts[1], Muon) and len(opts) == 3
    untied = GPT(
        ModelConfig(vocab_size=64, num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2, tie_embeddings=False)
    )
    assert [len(g) for g in split_params(untied).values()] == [6, 1, 1, 5]  # muon, embed, head, scalar


def test_step_based_warmdown_is_official():
    t = TrainConfig(iterations=100, warmdown_iters=20, max_wallclock_seconds=0)
    assert lr_multiplier(0, 0, t) == 1.0 and lr_multiplier(79, 0, t) == 1.0
    assert lr_multiplier(80, 0, t) == pytest.approx(1.0) and lr_multiplier(90, 0, t) == pytest.approx(0.5)


def test_time_based_warmdown_under_a_cap():
    t = TrainConfig(iterations=10**6, warmdown_iters=10, max_wallclock_seconds=10)  # cap 10 s
    # 100 ms/step so far: warmdown = 10 steps = 1 s before the cap
    assert lr_multiplier(50, 5000.0, t) == 1.0
    assert lr_multiplier(95, 9500.0, t) == pytest.approx(0.5)


def test_fractional_warmdown_with_floor():
    t = TrainConfig(max_wallclock_seconds=100, warmdown_frac=0.85, min_lr_frac=0.1)
    assert lr_multiplier(1, 10_000.0, t) == 1.0  # 10% of the clock: flat
    assert lr_multiplier(1, 57_500.0, t) == pytest.approx(0.5)
    assert lr_multiplier(1, 99_000.0, t) == pytest.approx(0.1)  # floor


def test_reserve_shortens_the_training_clock():
    t = TrainConfig(max_wallclock_seconds=100, reserve_seconds=20, warmdown_frac=1.0)
    assert lr_multiplier(1, 40_000.0, t) == pytest.approx(0.5)


def test_muon_momentum_ramp():
    t = TrainConfig(muon_momentum_warmup_start=0.85, muon_momentum=0.95, muon_momentum_warmup_steps=10)
    assert (
        muon_momentum_at(0, t) == 0.85
        and muon_momentum_at(5, t) == pytest.approx(0.9)
        and muon_momentum_at(50, t) == 0.95
    )


def test_muon_weight_decay_and_row_norm_step():
    """One Muon step against a hand computation: decoupled decay, then the row-normalised,
    Polar-Express-orthogonalised gradient scaled by max(1, rows/cols)^0.5."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(16, 8))
    g = torch.randn(16, 8)
    g[3] *= 50.0  # one large row: row normalisation must remove its dominance
    before = p.detach().clone()
    opt = Muon(
        [p], lr=0.1, momentum=0.0, backend_steps=5, nesterov=False, weight_decay=0.5, ns="polar_express", row_norm=True
    )
    p.grad = g.clone()
    opt.step()
    u = newton_schulz5(g / g.norm(dim=-1, keepdim=True), 5, kind="polar_express") * (16 / 8) ** 0.5
    expected = before * (1 - 0.1 * 0.5) - 0.1 * u
    assert torch.allclose(p.detach(), expected, atol=1e-6)
    plain = newton_schulz5(g, 5, kind="polar_express") * (16 / 8) ** 0.5
    assert not torch.allclose(u, plain, atol=1e-2)  # row norm changed the update


def test_muon_nesterov_momentum_accumulates():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(8, 8))
    g1, g2 = torch.randn(8, 8), torch.randn(8, 8)
    opt = Muon([p], lr=0.05, momentum=0.9, backend_steps=5, nesterov=True)
    start = p.detach().clone()
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
    buf1 = g1
    buf2 = 0.9 * buf1 + g2
    step1 = newton_schulz5(g1 + 0.9 * buf1, 5)
    step2 = newton_schulz5(g2 + 0.9 * buf2, 5)
    assert torch.allclose(p.detach(), start - 0.05 * (step1 + step2), atol=1e-6)
