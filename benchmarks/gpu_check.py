"""The prepared GPU check (issues 11, 20): on one H100/H200 from a cold machine, with no network,
every piece of the 8xH100 path measured in at most 6 minutes, compile included.

Stages, in order of value (each in its own process under its own timeout, so a failure or a hang
still reports the others; a stage that the budget cannot reach is marked skipped):

  step       the frontier compiled once (train.compile_scope, regional by default): cold compile
             seconds with recurrence off then on, then forward+backward and optimizer ms, MFU and
             peak memory at 48 x 2048 per GPU (recurrence off and on), the head eager against the
             compiled softcapped cross-entropy, and 100 training steps on a learnable stream (the
             loss must fall), all on that one compiled model
  attention  every document-masked kernel available (torch varlen, fa3, fa2, flex, dense) against
             causal SDPA on the frontier's shapes with FineWeb-like documents; mask builds apart
  ttt        the frontier's evaluation (score-first LoRA TTT, global phase, n-gram tilt) tokens/s
  eval       sliding-window scoring tokens/s
  gptq       Hessian collection and GPTQ seconds for every matrix
  export     the exported train_gpt.py: 20 eager steps under torchrun, on a dataset built here,
             through quantization, the roundtrip and the frontier's evaluation
  compile    whole-model compilation (train.compile_scope=model) from a cold cache of its own,
             against the regional compile of the step stage: seconds, graphs and step time
  fp8        step ms with FP8 linears (skipped at once without torchao)
  memory     the dry run's memory estimate of the step stage's step (CPU only: it runs beside the
             GPU stages from the start)

Every stage shares one compile cache (inductor, Triton) under the work folder. The JSON is
rewritten after every stage (and inside the long stages after every measurement), so a run cut
short still reports. The projection comes last: frontier steps in 588 s on 8xH100 from the
measured step and a modelled gradient all-reduce (assumptions printed with it).

    python benchmarks/gpu_check.py --out gpu_check.json                       # GPU, frontier shapes
    python benchmarks/gpu_check.py --stages step,attention --out g.json       # a selection
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc.json     # CPU, toy shapes (CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pgolf.bench.probes import (
    attention_flops,
    compiled,
    doc_ids,
    fresh_training,
    step_phases,
    sync,
    time_attention,
    timed,
)
from pgolf.bench.probes import training_batch as probe_batch

STAGES = {  # name -> timeout (s) on the GPU, in the order they run
    "step": 150,
    "attention": 60,
    "ttt": 60,
    "eval": 40,
    "gptq": 40,
    "export": 120,
    "compile": 150,
    "fp8": 60,
    "memory": 70,
}
BACKGROUND_STAGES = ("memory",)  # fake-tensor tracing on the CPU: started first, beside the GPU stages
TOTAL_BUDGET_S = 360.0  # the whole check: 6 minutes from a cold machine
NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core FLOP/s (SXM datasheets)
# Projection to 8xH100 (issue 20): the frontier's 786,432 tokens per step are one 48 x 2048
# micro-batch per GPU. Per step: the measured forward+backward, the optimizer step / 8 (Muon's
# Newton-Schulz is sharded over the ranks; Adam's share is small) and a ring all-reduce of fp32
# gradients (2 (n-1)/n x bytes / bus bandwidth) with no overlap.
TRAIN_CLOCK_S = 588.0  # 600 s minus the frontier's 12 s reserved for GPTQ calibration
WORLD = 8
NVLINK_BUS_GBPS = 370.0  # stated: all-reduce bus bandwidth of 8xH100 SXM (NVLink 4, nccl-tests class)
RECORD_STEPS = (4931, 4994)  # the records' step counts in 600 s (#1855 lineage)


# ---------------------------------------------------------------- shapes and helpers


def frontier_cfg(tiny: bool):
    """The frontier preset, or its structure at toy size (recurrence, lanes, XSA, doc mask kept)."""
    from pgolf.core.presets import get_preset

    cfg = get_preset("frontier")
    if tiny:
        m = cfg.model
        m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 256, 4, 64, 4, 2
        m.rope_dims, m.recur_layers, m.parallel_from = 8, "1-2", 3
        cfg.train.train_seq_len = 128
        cfg.eval.eval_seq_len, cfg.eval.stride = 128, 32
    return cfg


def micro_batch(tiny: bool) -> tuple[int, int]:
    return (2, 128) if tiny else (48, 2048)  # (sequences, seq_len) per GPU


def mean_doc(tiny: bool) -> int:
    return 40 if tiny else 900  # tokens; FineWeb sp8192 documents average ~1k tokens


def device_of(args):
    import torch

    return torch.device("cuda" if args.device == "cuda" else "cpu")


def autocast(device):
    from pgolf.core.runtime import autocast_for

    return autocast_for(device)


def training_batch(cfg, tiny: bool, device):
    """(x, y) of one micro-batch with FineWeb-like documents (what document masking sees)."""
    B, T = micro_batch(tiny)
    return probe_batch(cfg, B, T, device)


def markov_tokens(n: int, vocab: int, seed: int = 0):
    """A learnable stream: each token's successor drawn from 4 fixed choices."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    table = rng.integers(0, vocab, (vocab, 4))
    picks = rng.integers(0, 4, n)
    out = np.empty(n, dtype=np.int64)
    out[0] = 0
    for i in range(1, n):
        out[i] = table[out[i - 1], picks[i]]
    return torch.from_numpy(out)


def matmul_peak(device) -> float:
    """Measured matmul FLOP/s: bf16 8192^3 on GPU, pgolf's fp32 peak on CPU."""
    import torch

    if device.type != "cuda":
        from pgolf.bench.perf import measure_matmul_peak

        return measure_matmul_peak(1.0)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    dt = timed(lambda: a @ a, device, 10)
    return 2 * 8192**3 / dt


def nominal_peak(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in NOMINAL_BF16_PEAK.items() if k in name), None)


class Recorder:
    """A stage's results, written to its JSON file after every measurement."""

    def __init__(self, path: str):
        self.path, self.data = Path(path), {"status": "running"}

    def __setitem__(self, key, value):
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))

    def update(self, values: dict):
        for k, v in values.items():
            self[k] = v


# ---------------------------------------------------------------- stages


def stage_env(args) -> dict:
    import torch

    out = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": None,
        "gpu": None,
        "python": sys.version.split()[0],
    }
    if torch.backends.cudnn.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        out["gpus"] = torch.cuda.device_count()
    else:
        import platform

        out["cpu"] = platform.processor() or platform.machine()
    return out


def cold_compile(model, base, x, y, device, rec: Recorder, prefix: str = "") -> None:
    """The first step of each recurrence setting (recorded as it goes), graph breaks and graphs."""
    from torch._dynamo.utils import counters

    counters.clear()
    for recur in (False, True):
        base.set_recurrence(recur)
        sync(device)
        t0 = time.perf_counter()
        with autocast(device):
            model(x, y).backward()
        sync(device)
        rec[f"{prefix}compile_s_recur_{'on' if recur else 'off'}"] = time.perf_counter() - t0
    rec[f"{prefix}graph_breaks"] = sum(counters["graph_break"].values())
    rec[f"{prefix}unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
    for p in base.parameters():
        p.grad = None


def stage_step(args, rec: Recorder) -> None:
    """The frontier compiled once; compile, step, head and 100-step results from that one model."""
    import torch

    from pgolf.model.gpt import Regions, head_loss
    from pgolf.model.inventory import flops_per_token
    from pgolf.train.compile import RegionalModel

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    cfg.train.train_seq_len = T
    scope = args.scope or cfg.train.compile_scope
    from pgolf.model.attention import attention_log_line

    rec.update(
        {
            "batch": f"{B}x{T}",
            "scope": scope,
            "attention": attention_log_line(cfg.model.attn_kernel, cfg.model.doc_mask, device.type),
        }
    )
    base, opts = fresh_training(cfg, device)
    rec["params"] = sum(p.numel() for p in base.parameters())
    model = compiled(base, scope, device)
    x, y = training_batch(cfg, args.tiny, device)
    cold_compile(model, base, x, y, device, rec)
    for o in opts:
        o.zero_grad(set_to_none=True)
    peak = matmul_peak(device)
    nominal = nominal_peak(device)
    rec["matmul_peak_tflops"] = peak / 1e12
    iters, warm = (3, 1) if args.tiny else (10, 3)
    for recur in (False, True):
        base.set_recurrence(recur)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fb, op = step_phases(model, opts, x, y, device, iters, warm)
        fl = flops_per_token(cfg.model, T, recur_active=recur).per_token_train * B * T
        r = {
            "step_ms": 1e3 * (fb + op),
            "fwd_bwd_ms": 1e3 * fb,
            "optimizer_ms": 1e3 * op,
            "tokens_per_s": B * T / (fb + op),
            "model_tflops": fl / (fb + op) / 1e12,
            "mfu_measured_peak": fl / (fb + op) / peak,
        }
        if nominal:
            r["mfu_nominal_peak"] = fl / (fb + op) / nominal
        if device.type == "cuda":
            r["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rec[f"recur_{'on' if recur else 'off'}"] = r
    if isinstance(model, RegionalModel):  # the head: eager against compiled (fused softcapped CE)
        eager_head = Regions(model.regions.block, head_loss)
        fb_eager, _ = step_phases(lambda a, b: base(a, b, eager_head), opts, x, y, device, iters, warm)
        rec["head"] = {
            "fwd_bwd_ms_head_compiled": rec.data["recur_on"]["fwd_bwd_ms"],
            "fwd_bwd_ms_head_eager": 1e3 * fb_eager,
        }
    rec["train100"] = train100(cfg, args.tiny, device, model)


def train100(cfg, tiny: bool, device, model) -> dict:
    """100 steps from a fresh init on a learnable stream, through the already compiled functions
    (regional: the same Regions; whole-model: the same compiled module, weights re-initialised)."""
    import torch

    from pgolf.train.compile import RegionalModel
    from pgolf.train.optim import build_optimizers

    B, T = micro_batch(tiny)
    stream = markov_tokens(B * T * 4 + 1, cfg.model.vocab_size).to(device)
    fresh, opts = fresh_training(cfg, device, seed=1)
    if isinstance(model, RegionalModel):
        base, regions = fresh, model.regions
        run = lambda a, b: fresh(a, b, regions)  # noqa: E731
    else:
        base, run = model._orig_mod, model
        base.load_state_dict(fresh.state_dict())
        opts = build_optimizers(base, cfg.train, cfg.model.tie_embeddings)
    losses = []
    t0 = time.perf_counter()
    for i in range(100):
        base.set_recurrence(i >= 35)
        off = (i % 4) * B * T
        x = stream[off : off + B * T].view(B, T)
        y = stream[off + 1 : off + 1 + B * T].view(B, T)
        with autocast(device):
            loss = run(x, y)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    losses = [float(v) for v in torch.stack(losses).cpu()]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    return {
        "loss_first10": first,
        "loss_last10": last,
        "loss_falls": last < first - 0.1,
        "seconds": time.perf_counter() - t0,
    }


def stage_attention(args, rec: Recorder) -> None:
    """Every document-masked kernel this machine has, side by side with causal SDPA
    (pgolf.bench.probes.time_attention, what `pgolf doctor` times too); input builds (cu_seqlens,
    block mask, dense mask) timed apart from the kernels."""
    import torch

    from pgolf.model.attention import KERNEL_LABELS, attend, kernel_problem, resolve_with_notice

    device = device_of(args)
    B, T = micro_batch(args.tiny)
    H, Hk, Dh = (4, 2, 16) if args.tiny else (8, 4, 64)
    iters = 3 if args.tiny else 20
    ids, lengths = doc_ids(B, T, min(900, T), 8192, 1)
    auto, notice = resolve_with_notice("auto", True, device.type)
    doc_flops, causal_flops = attention_flops(lengths, T, H, Dh)
    rec.update(
        {
            "auto": KERNEL_LABELS[auto],
            "notice": notice,
            "shape": f"B{B} H{H} Hk{Hk} T{T} Dh{Dh}",
            "docs": sum(len(r) for r in lengths),
            "doc_pair_fraction": doc_flops / causal_flops,
        }
    )
    causal = time_attention("sdpa", False, B, T, H, Hk, Dh, device, iters)
    rec["sdpa-causal"] = {"ms": causal.ms, "tflops": causal.tflops}
    kernels = [
        kern for kern in ("varlen", "fa3", "fa2", "dense", "flex") if kernel_problem(kern, True, device.type) is None
    ]
    rec["kernels"] = [KERNEL_LABELS[kern] for kern in kernels]
    for kern in kernels:  # flex last: it compiles
        try:
            r = time_attention(kern, True, B, T, H, Hk, Dh, device, iters)
        except Exception as exc:  # one kernel failing must not hide the others' timings
            rec[KERNEL_LABELS[kern]] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            continue
        rec[KERNEL_LABELS[kern]] = {
            "ms": r.ms,
            "tflops": r.tflops,
            "input_build_ms": r.build_ms,
            "vs_sdpa_causal": r.ms / causal.ms,
        }
    if "varlen" in kernels:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (
            torch.randn(B, h, T, Dh, device=device, dtype=dtype, generator=g).requires_grad_() for h in (H, Hk, Hk)
        )
        rec["varlen_capacity_ms"] = varlen_capacity_sweep(
            ids.to(device), lambda a: attend(q, k, v, a).sum().backward(), device, iters
        )
    if "flex" in kernels:
        rec["flex_mask_build_compiled_ms"] = 1e3 * flex_mask_build_compiled(ids.to(device), device, iters)


def varlen_capacity_sweep(ids, fwd_bwd, device, iters: int) -> dict:
    """torch varlen fwd+bwd ms against the cu_seqlens capacity (slots; unused ones are empty
    sequences the kernel still launches blocks for): pgolf's static default, smaller static
    sizes, and the exact count of this batch (what a host-side count would give)."""
    from pgolf.model.attention import AttnInputs, varlen_capacity, varlen_cu_seqlens

    B, T = ids.shape
    starts = int(((ids == 1) | (torch_arange_col0(ids))).sum())
    out = {"starts": starts}
    for label, cap in (
        ("default", varlen_capacity(B, T)),
        ("512", 512),
        ("256", 256),
        ("exact_to_64", -(-starts // 64) * 64),
        ("exact", starts),
    ):
        if cap < starts:
            continue
        a = AttnInputs("varlen", cu_seqlens=varlen_cu_seqlens(ids, 1, True, cap), max_seqlen=T)
        out[f"{label}_{cap}"] = 1e3 * timed(lambda a=a: fwd_bwd(a), device, iters)
    return out


def torch_arange_col0(ids):
    """(B, T) bool: True in every row's first column (a row start is a sequence start)."""
    import torch

    first = torch.zeros_like(ids, dtype=torch.bool)
    first[:, 0] = True
    return first


def flex_mask_build_compiled(ids, device, iters: int) -> float:
    """Seconds to build the document block mask with create_block_mask(_compile=True)."""
    from torch.nn.attention.flex_attention import create_block_mask

    from pgolf.model.attention import segment_ids

    doc = segment_ids(ids, 1, True)

    def document_causal(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (doc[b, q_idx] == doc[b, kv_idx])

    B, T = ids.shape
    return timed(
        lambda: create_block_mask(document_causal, B, None, T, T, device=ids.device, _compile=True), device, iters
    )


def stage_compile(args, rec: Recorder) -> None:
    """Whole-model compilation (train.compile_scope=model) from its own cold cache, against the
    regional compile the step stage measured cold. Recurrence on first (the larger graph: 17
    block applications) and its step time, then recurrence off (the run compiles both), each
    recorded as it completes so a cut stage still reports."""
    from torch._dynamo.utils import counters

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    cfg.train.train_seq_len = T
    x, y = training_batch(cfg, args.tiny, device)
    rec["backend"] = "inductor" if device.type == "cuda" else "eager"
    base, opts = fresh_training(cfg, device)
    model = compiled(base, "model", device)
    counters.clear()
    iters, warm = (3, 1) if args.tiny else (10, 2)
    for recur in (True, False):
        base.set_recurrence(recur)
        sync(device)
        t0 = time.perf_counter()
        with autocast(device):
            model(x, y).backward()
        sync(device)
        tag = "on" if recur else "off"
        rec[f"model_compile_s_recur_{tag}"] = time.perf_counter() - t0
        rec["model_graph_breaks"] = sum(counters["graph_break"].values())
        rec["model_unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
        for p in base.parameters():
            p.grad = None
        if recur:
            fb, op = step_phases(model, opts, x, y, device, iters, warm)
            rec["model_step_ms_recur_on"] = 1e3 * (fb + op)


def stage_fp8(args, rec: Recorder) -> None:
    from pgolf.model.fp8 import convert_to_fp8, fp8_problem
    from pgolf.train.compile import compile_model

    device = device_of(args)
    problem = fp8_problem(device)
    if problem:
        rec.update({"status": "skipped", "reason": problem})
        return
    cfg = frontier_cfg(args.tiny)
    cfg.train.train_seq_len = micro_batch(args.tiny)[1]
    x, y = training_batch(cfg, args.tiny, device)
    for fp8 in (False, True):
        base, opts = fresh_training(cfg, device)
        if fp8:
            convert_to_fp8(base)
        model = compile_model(base, cfg)
        fb, op = step_phases(model, opts, x, y, device, 5, 2)
        rec[f"step_ms_{'fp8' if fp8 else 'bf16'}"] = 1e3 * (fb + op)
    rec["speedup"] = rec.data["step_ms_bf16"] / rec.data["step_ms_fp8"]


def stage_memory(args, rec: Recorder) -> None:
    from pgolf.model.memory import estimate_train_memory

    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    est = estimate_train_memory(cfg.model, B, T, compiled=True)
    rec.update(
        {
            "estimate_gib_compiled": est.total_gib,
            "fwd_bwd_gib": est.fwd_bwd / 2**30,
            "ema_plus_ddp_gib": (est.ema + est.ddp) / 2**30,
            "note": "compare with step.recur_on.peak_memory_gib (no EMA/DDP there: subtract ema+ddp)",
        }
    )


def stage_gptq(args, rec: Recorder) -> None:
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.quant.gptq import collect_hessians, gptq_codes, linear_weight_names

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    batches = [torch.randint(0, cfg.model.vocab_size, (min(B, 8), T), device=device) for _ in range(4)]
    t0 = time.perf_counter()
    hs = collect_hessians(model, batches, autocast=autocast(device))
    rec["calibration_s"] = time.perf_counter() - t0
    names = [n for n in linear_weight_names(model) if n in hs.h]
    weights = dict(model.named_parameters())
    t0 = time.perf_counter()
    for n in names:
        w = weights[n].detach()
        scale = (w.abs().amax(dim=1) / 31).clamp_min(1e-8).half()
        gptq_codes(w, hs.h[n], scale, 6)
    sync(device)
    total = time.perf_counter() - t0
    rec.update({"matrices": len(names), "gptq_s": total, "per_matrix_ms": 1e3 * total / max(len(names), 1)})


def synthetic_tables(vocab: int, bos: int):
    import numpy as np

    from pgolf.data.tokenizer import ByteTables

    boundary = np.zeros(vocab, dtype=bool)
    boundary[bos] = True
    return ByteTables(np.full(vocab, 3, dtype=np.int16), np.zeros(vocab, dtype=bool), boundary)


def stage_eval(args, rec: Recorder) -> None:
    import torch

    from pgolf.eval.scoring import evaluate
    from pgolf.model.gpt import GPT

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    window = 128 if args.tiny else 2048
    stride, n = (32, 2048) if args.tiny else (64, 131_072)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    tokens, _ = doc_ids(1, n + 1, mean_doc(args.tiny), cfg.model.vocab_size, cfg.model.bos_id)
    tables = synthetic_tables(cfg.model.vocab_size, cfg.model.bos_id)
    t0 = time.perf_counter()
    with torch.no_grad():
        score = evaluate(
            model, tokens[0], tables, window, stride, batch_seqs=32, device=device, autocast=autocast(device)
        )
    dt = time.perf_counter() - t0
    rec.update(
        {
            "tokens": n,
            "window": window,
            "stride": stride,
            "seconds": dt,
            "tokens_per_s": n / dt,
            "val_loss": score.val_loss,
        }
    )


def stage_ttt(args, rec: Recorder) -> None:
    """The frontier's evaluation (per-document LoRA TTT, one global phase, n-gram tilt) on
    synthetic documents: scored tokens/s and the split between TTT, global phase and tilt."""
    import copy

    import torch

    from pgolf.eval.docscore import evaluate_documents
    from pgolf.model.gpt import GPT

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    e = copy.copy(cfg.eval)
    n = 4096 if args.tiny else 32_768
    if args.tiny:
        e.context, e.doc_batch, e.ttt_rank, e.ttt_chunk = 128, 8, 8, 32
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    tokens, _ = doc_ids(1, n + 1, 100 if args.tiny else 1000, cfg.model.vocab_size, cfg.model.bos_id)
    n_docs = int((tokens[0][:-1] == cfg.model.bos_id).sum()) + 1
    e.ttt_phase_docs, e.time_budget_s = str(max(n_docs // 2, 1)), 0.0
    tables = synthetic_tables(cfg.model.vocab_size, cfg.model.bos_id)
    res = evaluate_documents(
        model, tokens[0], tables, e, cfg.train.train_seq_len, cfg.model.bos_id, device=device, autocast=autocast(device)
    )
    secs = res.seconds
    rec.update(
        {
            "tokens": n,
            "documents": n_docs,
            "context": e.context,
            "chunk": e.ttt_chunk,
            "rank": e.ttt_rank,
            "seconds": secs["total"],
            "tokens_per_s": n / secs["total"],
            "split_s": secs,
            "val_loss": res.score.val_loss,
        }
    )


WORDS_SEED = 7


def build_dataset(root: Path, vocab: int) -> tuple[Path, Path]:
    """Generated text -> a SentencePiece tokenizer and official-format shards (no network)."""
    from pgolf.data.build import build_shards, train_tokenizer

    rng = random.Random(WORDS_SEED)
    lexicon = ["".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    docs = root / "docs.jsonl"
    with docs.open("w", encoding="utf-8") as f:
        for _ in range(1500):
            words = [rng.choice(lexicon[: rng.choice((300, 3000))]) for _ in range(rng.randint(30, 400))]
            f.write(json.dumps({"text": " ".join(words)}) + "\n")
    model = train_tokenizer(docs, root / f"fineweb_{vocab}_bpe", vocab, num_threads=4)
    build_shards(docs, model, root / "shards", num_val_docs=60, shard_size=200_000)
    return root / "shards", model


def stage_export(args, rec: Recorder) -> None:
    from pgolf.submit.export import export_script

    root = Path(args.work) / "export"
    root.mkdir(parents=True, exist_ok=True)
    vocab = 512 if args.tiny else 1024  # byte fallback: 256 byte pieces + the text's characters
    t0 = time.perf_counter()
    shards, tok = build_dataset(root, vocab)
    rec["dataset_s"] = time.perf_counter() - t0
    cfg = frontier_cfg(args.tiny)
    cfg.model.vocab_size = vocab
    t = cfg.train
    # 8 micro-batches a step (one process): 2 x 128 tokens each at toy size, 8 x 2048 on the GPU
    t.train_batch_tokens = 8 * 2 * 128 if args.tiny else 8 * 8 * 2048
    t.iterations, t.max_wallclock_seconds, t.val_loss_every, t.train_log_every, t.warmup_steps = 20, 0.0, 0, 5, 2
    cfg.eval.val_max_tokens = 16_384
    cfg.quant.gptq_time_budget_s = 5.0
    # Eager: the step stage measured the compiled path, and a cold compile of the bundle (its own
    # source, so no cache hit) cost 43 s of the 6-minute check (H200, 2026-12-04).
    cfg.compile = "off"
    script = root / "train_gpt.py"
    rec["code_bytes"] = export_script(cfg, script)
    env = dict(
        os.environ,
        DATA_PATH=str(shards),
        TOKENIZER_PATH=str(tok),
        RUN_ID="gpu_check_export",
        ITERATIONS="20",
        MAX_WALLCLOCK_SECONDS="0",
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    (root / "run.log").write_text(proc.stdout + proc.stderr)
    log = (proc.stdout + proc.stderr).splitlines()
    steps = [line for line in log if line.startswith("step:")]
    rec.update(
        {
            "status": "ok" if proc.returncode == 0 else "failed",
            "returncode": proc.returncode,
            "run_s": time.perf_counter() - t0,
            "last_step_line": steps[-1] if steps else None,
            "compile_line": next((line for line in log if line.startswith("compile_s:")), None),
            "final_line": next(
                (line for line in reversed(log) if line.startswith("final_") and "_exact" in line), None
            ),
            "error_lines": error_lines(log) if proc.returncode else [],
        }
    )


def error_lines(log: list[str], n: int = 12) -> list[str]:
    """The lines that say what failed: the last traceback's end (before torchrun's summary)."""
    end = next((i for i in range(len(log) - 1, -1, -1) if "Error" in log[i] and "elastic" not in log[i]), len(log) - 1)
    return log[max(end - n, 0) : end + 1]


# ---------------------------------------------------------------- projection


def projection(results: dict) -> dict | None:
    """Frontier steps in TRAIN_CLOCK_S on 8xH100 from the step stage (recurrence on, the state of
    most of the run) and a modelled all-reduce; None without a step result."""
    step = results.get("step", {})
    r = step.get("recur_on")
    if not r or "params" not in step:
        return None
    allreduce_ms = 1e3 * 2 * (WORLD - 1) / WORLD * 4 * step["params"] / (NVLINK_BUS_GBPS * 1e9)
    step_ms = r["fwd_bwd_ms"] + r["optimizer_ms"] / WORLD + allreduce_ms
    return {
        "step_ms_8gpu": step_ms,
        "allreduce_ms": allreduce_ms,
        "steps_in_588s": int(TRAIN_CLOCK_S * 1e3 / step_ms),
        "records_steps": RECORD_STEPS,
        "assumptions": (
            f"one 48x2048 micro-batch per GPU (786,432 tokens/step); measured fwd+bwd + optimizer/{WORLD} "
            f"(sharded Muon) + fp32 gradient ring all-reduce at {NVLINK_BUS_GBPS:.0f} GB/s bus bandwidth, "
            "no overlap; an H200 step taken as an H100 step (same compute, 1.4x the memory bandwidth: "
            "memory-bound kernels make this optimistic)"
        ),
    }


# ---------------------------------------------------------------- driver


def run_stage(args) -> int:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    rec = Recorder(args.result)
    globals()[f"stage_{args.stage}"](args, rec)
    if rec.data["status"] == "running":
        rec["status"] = "ok"
    return 0


def stage_cmd(args, work: Path) -> list[str]:
    return [sys.executable, __file__, "--device", args.device, "--work", str(work), "--threads", str(args.threads)]


def compile_cache_env(root: Path) -> dict:
    """One persistent compile cache for every stage (inductor's FX/AOT caches and Triton's); the
    compile stage gets a fresh one of its own, so whole-model compilation is measured cold."""
    cache = root / "compile-cache"
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }


def skip_reason(name: str, args) -> str | None:
    if name == "fp8" and importlib.util.find_spec("torchao") is None:
        return "torchao is not installed"
    return None


def drive(args, save) -> dict:
    """Every selected stage in its own process, each under min(its timeout, the budget left)."""
    results, start = {}, time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="pgolf-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **compile_cache_env(Path(args.cache) if args.cache else work))
    results["env"] = stage_env(args)
    save(results)
    background = {}  # CPU-only stages run beside the GPU ones from the start
    for name in BACKGROUND_STAGES:
        if name in args.stages:
            out = work / f"{name}.json"
            out.unlink(missing_ok=True)
            cmd = stage_cmd(args, work) + ["--stage", name, "--result", str(out)] + (["--tiny"] if args.tiny else [])
            background[name] = (
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env),
                out,
                time.perf_counter(),
            )
    for name in args.stages:
        if name in background:
            continue
        limit = STAGES[name] * args.budget_scale
        left = TOTAL_BUDGET_S * args.budget_scale - (time.perf_counter() - start)
        reason = skip_reason(name, args) or ("check budget used up" if left < 5 else None)
        if reason:
            results[name] = {"status": "skipped", "reason": reason, "stage_s": 0.0}
            save(results)
            print(f"{name}: skipped ({reason})", file=sys.stderr, flush=True)
            continue
        out = work / f"{name}.json"
        out.unlink(missing_ok=True)
        cmd = stage_cmd(args, work) + ["--stage", name, "--result", str(out)] + (["--tiny"] if args.tiny else [])
        cmd += ["--scope", args.scope] if args.scope else []
        t0 = time.perf_counter()
        timeout = min(limit, left)
        try:
            env_s = dict(env, **compile_cache_env(work / "cold-model")) if name == "compile" else env
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env_s)
            partial = json.loads(out.read_text()) if out.is_file() else {}
            if proc.returncode == 0 and partial:
                results[name] = partial
            else:
                results[name] = dict(
                    partial, status="failed", returncode=proc.returncode, error=proc.stderr.strip().splitlines()[-3:]
                )
        except subprocess.TimeoutExpired:
            partial = json.loads(out.read_text()) if out.is_file() else {}
            results[name] = dict(partial, status="timeout", limit_s=round(timeout, 1))
        results[name]["stage_s"] = round(time.perf_counter() - t0, 2)
        save(results)
        print(f"{name}: {results[name]['status']} ({results[name]['stage_s']} s)", file=sys.stderr, flush=True)
    for name, (proc, out, t0) in background.items():
        left = max(STAGES[name] * args.budget_scale - (time.perf_counter() - t0), 1.0)
        try:
            _, err = proc.communicate(timeout=left)
            partial = json.loads(out.read_text()) if out.is_file() else {}
            results[name] = (
                partial
                if proc.returncode == 0 and partial
                else dict(partial, status="failed", returncode=proc.returncode, error=err.strip().splitlines()[-3:])
            )
        except subprocess.TimeoutExpired:
            proc.kill()
            partial = json.loads(out.read_text()) if out.is_file() else {}
            results[name] = dict(partial, status="timeout", limit_s=STAGES[name] * args.budget_scale)
        results[name]["stage_s"] = round(time.perf_counter() - t0, 2)
        results[name]["ran"] = "beside the GPU stages (CPU only)"
        save(results)
        print(f"{name}: {results[name]['status']} ({results[name]['stage_s']} s)", file=sys.stderr, flush=True)
    results = {k: results[k] for k in ["env", *[s for s in STAGES if s in results]]}
    results["total_s"] = round(time.perf_counter() - start, 1)
    results["projection"] = None if args.tiny else projection(results)
    save(results)
    return results


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={fmt(v)}" for k, v in value.items() if k not in ("status", "stage_s"))
    return str(value)


def table(results: dict) -> str:
    rows = ["| stage | status | s | results |", "|---|---|---|---|"]
    for name, r in results.items():
        if not isinstance(r, dict) or name in ("env", "projection"):
            continue
        rest = {k: v for k, v in r.items() if k not in ("status", "stage_s")}
        rows.append(f"| {name} | {r['status']} | {r.get('stage_s', '')} | {fmt(rest)} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="toy shapes (the CPU check that keeps this script alive)")
    p.add_argument("--out", type=Path, help="write the results as JSON here (rewritten after every stage)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument(
        "--scope", choices=("blocks", "model"), help="train.compile_scope of the step stage (preset's default)"
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads per stage")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every timeout and the 6-minute budget")
    p.add_argument("--work", help="work folder (compile cache, datasets); a fresh temporary one by default")
    p.add_argument("--cache", help="compile cache folder kept across runs (default: inside the work folder)")
    p.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        return run_stage(args)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    args.stages = [s for s in STAGES if s in args.stages]  # always in the order of value

    def save(results):
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")

    results = drive(args, save)
    print(f"env: {fmt(results['env'])}")
    print(table(results))
    proj = results["projection"]
    if proj:
        print(
            f"projection: {proj['steps_in_588s']} frontier steps in {TRAIN_CLOCK_S:.0f} s on {WORLD}xH100 "
            f"({proj['step_ms_8gpu']:.1f} ms/step; records {RECORD_STEPS[0]}-{RECORD_STEPS[1]}); {proj['assumptions']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
