"""Measurements the prepared GPU check (benchmarks/gpu_check.py) and `pgolf doctor` share, so
nothing is measured twice in two code paths: synthetic FineWeb-like micro-batches, the attention
kernel's forward+backward at a preset's shapes, and a training step (cold compile seconds, then
forward+backward and optimizer milliseconds) of a config on the device at hand."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from pgolf.core.config import RunConfig
from pgolf.core.runtime import autocast_for
from pgolf.model.attention import KERNEL_LABELS, attend, attention_inputs, resolve_with_notice
from pgolf.model.gpt import GPT
from pgolf.train.compile import RegionalModel, compile_enabled
from pgolf.train.optim import build_optimizers

FINEWEB_MEAN_DOC = 900  # tokens: FineWeb sp8192 documents average ~1k tokens (log-normal spread)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, iters: int, warmup: int = 2) -> float:
    """Median seconds of fn() over iters runs after warmup."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def doc_ids(batch: int, seq_len: int, mean_len: int, vocab: int, bos: int, seed: int = 0):
    """(ids, lengths): token ids with documents of log-normal lengths (FineWeb-like spread) and each
    row's document lengths (the first one is the tail of a document the row starts inside)."""
    rng = random.Random(seed)
    ids = torch.randint(bos + 1, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    lengths = []
    for b in range(batch):
        t = rng.randint(0, mean_len)
        row = [t]
        while t < seq_len:
            ids[b, t] = bos
            n = max(1, int(rng.lognormvariate(0, 1.0) * mean_len / 1.65))
            row.append(min(n, seq_len - t))
            t += n
        lengths.append(row)
    return ids, lengths


def micro_batch(cfg: RunConfig, world: int) -> tuple[int, int]:
    """(sequences, seq_len) of one micro-batch on one rank (grad_accum = 8 // world)."""
    t = cfg.train
    accum = t.grad_accum_steps or max(8 // max(world, 1), 1)
    return max(t.train_batch_tokens // (world * accum * t.train_seq_len), 1), t.train_seq_len


def attention_flops(lengths: list[list[int]], seq_len: int, heads: int, dh: int) -> tuple[float, float]:
    """(doc-masked, causal) FLOPs of forward + backward (4 H Dh per attended pair forward, x3.5)."""
    doc = sum(n * (n + 1) // 2 for row in lengths for n in row)
    causal = len(lengths) * seq_len * (seq_len + 1) // 2
    return 3.5 * 4 * heads * dh * doc, 3.5 * 4 * heads * dh * causal


@dataclass
class AttentionTiming:
    kernel: str  # label of the kernel timed
    notice: str  # fallback notice ("" when the requested kernel ran)
    ms: float  # forward + backward of one call
    tflops: float  # useful (document pairs only) TFLOP/s
    build_ms: float  # the per-micro-batch inputs (cu_seqlens, block mask, dense mask)


def time_attention(
    kernel: str, doc_mask: bool, batch: int, seq_len: int, heads: int, kv_heads: int, dh: int, device, iters: int
) -> AttentionTiming:
    """One attention call's forward+backward at these shapes with FineWeb-like documents, in the
    compute dtype of the device (bf16 on GPU, fp32 on CPU)."""
    resolved, notice = resolve_with_notice(kernel, doc_mask, device.type)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ids, lengths = doc_ids(batch, seq_len, min(FINEWEB_MEAN_DOC, seq_len), 8192, 1)
    ids = ids.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(batch, h, seq_len, dh, device=device, dtype=dtype, generator=g).requires_grad_()
        for h in (heads, kv_heads, kv_heads)
    )
    build_s = timed(lambda: attention_inputs(ids, 1, doc_mask, resolved), device, iters)
    inputs = attention_inputs(ids, 1, doc_mask, resolved)
    s = timed(lambda: attend(q, k, v, inputs).sum().backward(), device, iters)
    doc_flops, causal_flops = attention_flops(lengths, seq_len, heads, dh)
    useful = doc_flops if doc_mask else causal_flops
    return AttentionTiming(KERNEL_LABELS[resolved], notice, 1e3 * s, useful / s / 1e12, 1e3 * build_s)


def fresh_training(cfg: RunConfig, device, seed: int = 0):
    """(base GPT, optimizers) at cfg, seeded."""
    torch.manual_seed(seed)
    base = GPT(cfg.model).to(device)
    return base, build_optimizers(base, cfg.train, cfg.model.tie_embeddings)


def compiled(base: GPT, scope: str, device, backend: str | None = None):
    """base compiled as the trainer does (pgolf.train.compile), static shapes; `backend` defaults
    to inductor on GPU and dynamo alone on CPU (inductor's CPU codegen takes minutes there)."""
    backend = backend or ("inductor" if device.type == "cuda" else "eager")
    if scope == "model":
        return torch.compile(base, dynamic=False, backend=backend)
    return RegionalModel(base, dynamic=False, backend=backend)


def training_batch(cfg: RunConfig, batch: int, seq_len: int, device, seed: int = 1):
    """(x, y) of one micro-batch with FineWeb-like documents (what document masking sees)."""
    ids, _ = doc_ids(batch, seq_len + 1, min(FINEWEB_MEAN_DOC, seq_len), cfg.model.vocab_size, cfg.model.bos_id, seed)
    ids = ids.to(device)
    return ids[:, :seq_len].contiguous(), ids[:, 1:].contiguous()


def step_phases(model_fn, opts, x, y, device, iters: int, warmup: int) -> tuple[float, float]:
    """Median (forward+backward s, optimizer s) of a training step, timed apart."""
    fb, op = [], []
    for i in range(warmup + iters):
        sync(device)
        t0 = time.perf_counter()
        with autocast_for(device):
            loss = model_fn(x, y)
        loss.backward()
        sync(device)
        t1 = time.perf_counter()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            fb.append(t1 - t0)
            op.append(time.perf_counter() - t1)
    return sorted(fb)[len(fb) // 2], sorted(op)[len(op) // 2]


@dataclass
class StepTiming:
    compile_s: float  # first step of each recurrence setting beyond a steady step (0 when eager)
    fwd_bwd_ms: float  # one micro-batch, recurrence as the run spends most of its steps
    optimizer_ms: float
    compiled: bool


def time_training_step(
    cfg: RunConfig, device, world: int = 1, iters: int = 3, backend: str | None = None
) -> StepTiming:
    """A config's training step on this device as the trainer runs it (compiled when the config
    compiles here): cold compile seconds with recurrence off then on, then the step timed with
    recurrence on if the config ever turns it on."""
    base, opts = fresh_training(cfg, device)
    on = compile_enabled(cfg, device)
    model = compiled(base, cfg.train.compile_scope, device, backend or "inductor") if on else base
    batch, seq_len = micro_batch(cfg, world)
    x, y = training_batch(cfg, batch, seq_len, device)
    recur = bool(cfg.model.recur_layers) and cfg.model.recur_loops > 1
    firsts = []
    for flag in (False, True) if recur else (False,):
        base.set_recurrence(flag)
        sync(device)
        t0 = time.perf_counter()
        with autocast_for(device):
            model(x, y).backward()
        sync(device)
        firsts.append(time.perf_counter() - t0)
    for o in opts:
        o.zero_grad(set_to_none=True)
    fb, op = step_phases(model, opts, x, y, device, iters, warmup=1)
    compile_s = sum(max(f - fb, 0.0) for f in firsts) if on else 0.0
    return StepTiming(compile_s, 1e3 * fb, 1e3 * op, on)
