"""The training-memory estimate (pgolf.model.memory): the live-bytes counter against a hand count,
the fake-tensor trace against the same step on real tensors, scaling with the batch, the
persistent state by role, the compiled partition below eager, and the dry-run line."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pgolf.core.config import ModelConfig, RunConfig
from pgolf.core.roles import parameter_roles
from pgolf.model import memory as M
from pgolf.model.gpt import GPT
from pgolf.submit.dryrun import memory_line


def tiny(**kw) -> ModelConfig:
    base = ModelConfig(
        vocab_size=128, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, xsa_layers="all", doc_mask=True
    )
    return replace(base, **kw)


def test_live_bytes_counts_storages_while_alive_rounded_to_blocks():
    x = torch.ones(1000)  # made outside: not counted
    with M.LiveBytes() as live:
        a = x * 2  # 4,000 B -> 4,096
        view = a[:10]  # a view: no new storage
        b = a + 1  # 4,096 more: peak 8,192
        assert live.live == live.peak == 8192
        del a  # the view still holds a's storage
        assert live.live == 8192
        del view  # now it is freed
        assert live.live == 4096
        c = b.sum()  # 4 B -> 512
        del b
    assert live.peak == 8192 and live.live == 512
    del c


def test_fake_trace_equals_the_same_step_on_real_tensors():
    cfg = tiny()
    ids = torch.randint(0, 128, (2, 64))
    torch.manual_seed(0)
    real = M.eager_step_peak(M._fake_model(cfg, False), ids, torch.float32)
    fake, _, _ = M.traced_step_peak(cfg, 2, 64, dtype=torch.float32)
    assert fake == real > 0


def test_activations_scale_with_the_batch():
    cfg = tiny()
    p = {b: M.traced_step_peak(cfg, b, 128)[0] for b in (2, 4, 8)}
    assert p[2] < p[4] < p[8]
    ratio = (p[8] - p[4]) / (p[4] - p[2])  # linear in the batch: equal increments per 2 x B
    assert 1.8 < ratio < 2.2


def test_persistent_state_by_role_is_the_hand_count():
    cfg = tiny()
    est = M.estimate_train_memory(cfg, 1, 32, world_size=8, ema=True)
    model = GPT(cfg)
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    muon = sum(params[n].numel() for n, r in roles.items() if r.opt == "muon")
    other = sum(p.numel() for p in params.values()) - muon
    assert est.params == est.ema == est.ddp == 4 * (muon + other)
    assert est.optimizer == 4 * muon + 8 * other
    solo = M.estimate_train_memory(cfg, 1, 32, world_size=1, ema=False)
    assert solo.ema == solo.ddp == 0 and solo.total == est.total - 2 * est.params


def test_cuda_policy_traces_relu_squared_in_fp32():
    """CUDA autocast runs pow (relu^2) and rms_norm in fp32; the CPU trace copies that, so the
    bf16 estimate is larger than a plain CPU-autocast trace would say."""
    cfg = tiny(doc_mask=False)
    with M.CudaAutocastPolicy(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.functional.linear(torch.randn(3, 4), torch.randn(5, 4))
        assert h.dtype == torch.bfloat16 and h.square().dtype == torch.float32
    bf16 = M.traced_step_peak(cfg, 4, 128)[0]
    fp32 = M.traced_step_peak(cfg, 4, 128, dtype=torch.float32)[0]
    assert bf16 < fp32


@pytest.mark.slow
def test_compiled_partition_saves_less_than_eager():
    cfg = tiny()
    eager = M.estimate_train_memory(cfg, 4, 128)
    compiled = M.estimate_train_memory(cfg, 4, 128, compiled=True)
    assert 0 < compiled.fwd_bwd < eager.fwd_bwd
    assert compiled.params == eager.params and compiled.optimizer == eager.optimizer


def test_dry_run_line_uses_the_per_gpu_micro_batch():
    cfg = RunConfig(compile="off")
    cfg.model = tiny()
    cfg.train.train_batch_tokens, cfg.train.train_seq_len = 8 * 3 * 64, 64
    line = memory_line(cfg)
    assert line.startswith("memory_per_gpu_gib:") and "micro_batch:3x64 mode:eager" in line
    gib = float(line.split()[0].split(":")[1])
    est = M.estimate_train_memory(cfg.model, 3, 64, ema=False)
    assert abs(gib - est.total_gib) < 0.01
