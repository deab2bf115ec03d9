"""Optimizers and schedules: orthogonalisation, the official split, warmdown semantics."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig, TrainConfig
from pgolf.model import GPT
from pgolf.optim import Muon, build_optimizers, lr_multiplier, muon_momentum_at, newton_schulz5, split_params


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
    model = GPT(ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2,
                            bigram_buckets=16, bigram_dim=8, smear_gate=True, parallel_from=1, attn_gate="sparse"))
    groups = split_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    matrix = {names[id(p)] for p in groups["matrix"]}
    assert all(n.startswith("blocks.") and ("c_" in n or "proj" in n or "fc" in n) for n in matrix)
    assert "tok_emb.weight" in {names[id(p)] for p in groups["embed"]}
    from pgolf.optim import is_control

    assert all(p.ndim < 2 or is_control(names[id(p)]) for p in groups["scalar"])
    assert {"bigram.bigram_table", "bigram.bigram_proj.weight"} <= {names[id(p)] for p in groups["embed"]}
    opts = build_optimizers(model, TrainConfig(), tied=True)
    assert isinstance(opts[1], Muon) and len(opts) == 3


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
    assert muon_momentum_at(0, t) == 0.85 and muon_momentum_at(5, t) == pytest.approx(0.9) and muon_momentum_at(50, t) == 0.95


def test_muon_weight_decay_and_row_norm_step():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, 16))
    before = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.0, backend_steps=5, nesterov=False, weight_decay=0.5, ns="polar_express", row_norm=True)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(p.detach(), before * (1 - 0.1 * 0.5))  # zero grad: only the decay acts
