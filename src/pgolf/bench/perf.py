"""Throughput and utilisation measured on the machine at hand: the fp32 matmul peak, training
tokens/s of a config, and MFU (achieved model FLOP/s over that measured peak)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pgolf.core.config import RunConfig
from pgolf.model.gpt import GPT
from pgolf.model.inventory import flops_per_token
from pgolf.train.optim import build_optimizers

PEAK_MATMUL_N = 1024  # square fp32 matmul used to measure the peak


def measure_matmul_peak(seconds: float = 2.0, n: int = PEAK_MATMUL_N) -> float:
    """Best fp32 FLOP/s of an n x n matmul over repeated timings (the machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        dt = time.perf_counter() - t0
        best = max(best, 4 * 2.0 * n**3 / dt)
    return best


@dataclass
class Throughput:
    tokens_per_s: float
    step_ms: float
    flops_per_s: float  # model FLOP/s (6N + attention per token x tokens/s)


def measure_train_throughput(cfg: RunConfig, steps: int = 6, warmup: int = 2) -> Throughput:
    """fwd+bwd+optimizer steps on random tokens at cfg's micro-batch shape (no data loading)."""
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    model.set_recurrence(bool(cfg.model.recur_layers))
    opts = build_optimizers(model, cfg.train, cfg.model.tie_embeddings)
    t = cfg.train
    accum = t.grad_accum_steps or 8
    seqs = max(t.train_batch_tokens // (accum * t.train_seq_len), 1)
    x = torch.randint(0, cfg.model.vocab_size, (seqs, t.train_seq_len))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(x, x)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    step = times[len(times) // 2]
    tps = x.numel() / step
    fl = flops_per_token(cfg.model, t.train_seq_len, recur_active=bool(cfg.model.recur_layers)).per_token_train
    return Throughput(tps, 1000 * step, tps * fl)
