"""One prepared GPU check (issue 11, item 7): on one H100/H200 with no network, in under 8 minutes,
every piece of the 8xH100 path measured once, one table printed and the results written as JSON.

Stages (each in its own subprocess under its own timeout, so a failure or a hang still reports
the others): env (versions, GPU), attention (the chosen kernel's ms and TFLOP/s against is_causal
SDPA on the frontier's shapes with realistic document lengths), compile (compile seconds and graph
breaks, recurrence off then on), step (frontier step ms, MFU and peak memory per GPU at 48 x 2048,
recurrence off and on), memory (the dry run's estimate of the same step), fp8 (step ms with FP8
linears on and off), train100 (100 steps on synthetic Markov tokens: the loss must fall), gptq
(GPTQ seconds for every matrix), eval (sliding-window scoring tokens/s), ttt (test-time-training
eval tokens/s, when pgolf.eval has an evaluator for it), export (the exported train_gpt.py, 20
steps under torchrun with one process, on a dataset built here from generated text).

    python benchmarks/gpu_check.py --out gpu_check.json                       # GPU, frontier shapes
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc.json     # CPU, toy shapes (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

STAGES = {  # name -> timeout (s) on the GPU; the CPU --tiny run uses the same
    "env": 60, "attention": 90, "compile": 180, "step": 150, "memory": 90, "fp8": 120,
    "train100": 150, "gptq": 90, "eval": 90, "ttt": 60, "export": 240,
}
TOTAL_BUDGET_S = 480.0  # the whole check: 8 minutes
NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core FLOP/s (SXM)


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


def device_of(args):
    import torch

    return torch.device("cuda" if args.device == "cuda" else "cpu")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, iters: int, warmup: int = 2) -> float:
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


def autocast(device):
    from pgolf.core.runtime import autocast_for

    return autocast_for(device)


def doc_ids(batch: int, seq_len: int, mean_doc: int, vocab: int, bos: int, seed: int = 0):
    """Token ids with documents of log-normal lengths (FineWeb-like spread) and their lengths."""
    import torch

    rng = random.Random(seed)
    ids = torch.randint(bos + 1, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    lengths = []
    for b in range(batch):
        t = rng.randint(0, mean_doc)  # rows start mid-document
        row = [t]
        while t < seq_len:
            ids[b, t] = bos
            n = max(1, int(rng.lognormvariate(0, 1.0) * mean_doc / 1.65))
            row.append(min(n, seq_len - t))
            t += n
        lengths.append(row)
    return ids, lengths


def markov_tokens(n: int, vocab: int, seed: int = 0):
    """A learnable stream: each token's successor drawn from 4 fixed choices."""
    import torch

    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, vocab, (vocab, 4), generator=g)
    out = torch.empty(n, dtype=torch.int64)
    out[0] = 0
    picks = torch.randint(0, 4, (n,), generator=g)
    for i in range(1, n):
        out[i] = table[out[i - 1], picks[i]]
    return out


def matmul_peak(device) -> float:
    """Measured matmul FLOP/s: bf16 8192^3 on GPU, pgolf's fp32 peak on CPU."""
    import torch

    if device.type != "cuda":
        from pgolf.bench.perf import measure_matmul_peak

        return measure_matmul_peak(1.0)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    dt = timed(lambda: a @ a, device, 10)
    return 2 * 8192**3 / dt


def build_training(cfg, device, compiled: bool, fp8: bool = False):
    """(model, step function) for pgolf's GPT and optimizers at cfg."""
    import torch

    from pgolf.model.fp8 import convert_to_fp8
    from pgolf.model.gpt import GPT
    from pgolf.train.optim import build_optimizers

    torch.manual_seed(0)
    base = GPT(cfg.model).to(device)
    if fp8:
        convert_to_fp8(base)
    model = torch.compile(base, dynamic=False) if compiled else base
    opts = build_optimizers(base, cfg.train, cfg.model.tie_embeddings)
    ctx = autocast(device)

    def step(x, y):
        with ctx:
            loss = model(x, y)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        return loss.detach()

    return base, step


# ---------------------------------------------------------------- stages

def stage_env(args) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": None, "gpu": None, "python": sys.version.split()[0]}
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


def attention_flops(lengths: list[list[int]], seq_len: int, heads: int, dh: int) -> tuple[float, float]:
    """(doc-masked, causal) FLOPs of forward + backward (4 H Dh per attended pair forward, x3.5)."""
    doc = sum(n * (n + 1) // 2 for row in lengths for n in row)
    causal = len(lengths) * seq_len * (seq_len + 1) // 2
    return 3.5 * 4 * heads * dh * doc, 3.5 * 4 * heads * dh * causal


def stage_attention(args) -> dict:
    import torch

    from pgolf.model.attention import KERNEL_LABELS, attend, attention_inputs, resolve_with_notice

    device = device_of(args)
    B, T = micro_batch(args.tiny)
    H, Hk, Dh = (4, 2, 16) if args.tiny else (8, 4, 64)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ids, lengths = doc_ids(B, T, 40 if args.tiny else 900, 8192, 1)
    ids = ids.to(device)
    kernel, notice = resolve_with_notice("auto", True, device.type)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, h, T, Dh, device=device, dtype=dtype, generator=g).requires_grad_() for h in (H, Hk, Hk))

    def run(kind, doc_mask):
        a = attention_inputs(ids, 1, doc_mask, kind)
        attend(q, k, v, a).sum().backward()

    iters = 3 if args.tiny else 20
    kernel_s = timed(lambda: run(kernel, True), device, iters)
    sdpa_s = timed(lambda: run("sdpa", False), device, iters)
    doc_flops, causal_flops = attention_flops(lengths, T, H, Dh)
    return {"kernel": KERNEL_LABELS[kernel], "notice": notice, "shape": f"B{B} H{H} Hk{Hk} T{T} Dh{Dh}",
            "docs": sum(len(r) for r in lengths), "kernel_ms": 1e3 * kernel_s,
            "kernel_tflops": doc_flops / kernel_s / 1e12, "sdpa_causal_ms": 1e3 * sdpa_s,
            "sdpa_causal_tflops": causal_flops / sdpa_s / 1e12}


def stage_compile(args) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from pgolf.model.gpt import GPT

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    torch.manual_seed(0)
    base = GPT(cfg.model).to(device)
    # On CPU only dynamo runs (graph breaks, guards, recompiles): inductor's CPU codegen takes minutes.
    backend = "inductor" if device.type == "cuda" else "eager"
    model = torch.compile(base, dynamic=False, backend=backend)
    x = torch.randint(0, cfg.model.vocab_size, (B, T), device=device)
    counters.clear()
    out = {"backend": backend}
    for recur in (False, True):
        base.set_recurrence(recur)
        t0 = time.perf_counter()
        with autocast(device):
            loss = model(x, x)
        loss.backward()
        sync(device)
        out[f"compile_s_recur_{'on' if recur else 'off'}"] = time.perf_counter() - t0
    out["graph_breaks"] = sum(counters["graph_break"].values())
    out["graph_break_reasons"] = sorted(counters["graph_break"])[:5]
    out["unique_graphs"] = counters["stats"].get("unique_graphs", 0)
    return out


def step_stats(cfg, device, tiny: bool, recur: bool, fp8: bool = False) -> dict:
    import torch

    from pgolf.model.inventory import flops_per_token

    B, T = micro_batch(tiny)
    cfg.train.train_seq_len = T
    base, step = build_training(cfg, device, compiled=device.type == "cuda", fp8=fp8)
    base.set_recurrence(recur)
    x = torch.randint(0, cfg.model.vocab_size, (B, T), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = timed(lambda: step(x, x), device, 3 if tiny else 10, warmup=2 if tiny else 3)
    fl = flops_per_token(cfg.model, T, recur_active=recur).per_token_train * B * T
    out = {"step_ms": 1e3 * step_s, "tokens_per_s": B * T / step_s, "model_tflops": fl / step_s / 1e12}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def stage_step(args) -> dict:
    device = device_of(args)
    peak = matmul_peak(device)
    out = {"matmul_peak_tflops": peak / 1e12, "batch": "x".join(map(str, micro_batch(args.tiny)))}
    for recur in (False, True):
        r = step_stats(frontier_cfg(args.tiny), device, args.tiny, recur)
        r["mfu_measured_peak"] = r["model_tflops"] * 1e12 / peak
        nominal = next((v for k, v in NOMINAL_BF16_PEAK.items() if k in (stage_env(args).get("gpu") or "")), None)
        if nominal:
            r["mfu_nominal_peak"] = r["model_tflops"] * 1e12 / nominal
        out[f"recur_{'on' if recur else 'off'}"] = r
    return out


def stage_memory(args) -> dict:
    from pgolf.model.memory import estimate_train_memory

    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    est = estimate_train_memory(cfg.model, B, T, compiled=True)
    return {"estimate_gib_compiled": est.total_gib, "fwd_bwd_gib": est.fwd_bwd / 2**30,
            "note": "compare with step.recur_on.peak_memory_gib (no EMA/DDP there: subtract ema+ddp)",
            "ema_plus_ddp_gib": (est.ema + est.ddp) / 2**30}


def stage_fp8(args) -> dict:
    from pgolf.model.fp8 import fp8_problem

    device = device_of(args)
    problem = fp8_problem(device)
    if problem:
        return {"status": "skipped", "reason": problem}
    off = step_stats(frontier_cfg(args.tiny), device, args.tiny, False)
    on = step_stats(frontier_cfg(args.tiny), device, args.tiny, False, fp8=True)
    return {"step_ms_bf16": off["step_ms"], "step_ms_fp8": on["step_ms"], "speedup": off["step_ms"] / on["step_ms"]}


def stage_train100(args) -> dict:
    import torch

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    B, T = micro_batch(args.tiny)
    if not args.tiny:
        B = 16  # 100 steps at 16 x 2048 fit the stage's time with compile
    cfg.train.train_seq_len = T
    stream = markov_tokens(B * T * 4 + 1, cfg.model.vocab_size).to(device)
    base, step = build_training(cfg, device, compiled=device.type == "cuda")
    losses = []
    t0 = time.perf_counter()
    for i in range(100):
        base.set_recurrence(i >= 35)
        off = (i % 4) * B * T
        x = stream[off: off + B * T].view(B, T)
        y = stream[off + 1: off + 1 + B * T].view(B, T)
        losses.append(step(x, y))
    losses = [float(v) for v in torch.stack(losses).cpu()]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    return {"loss_first10": first, "loss_last10": last, "loss_falls": last < first - 0.1,
            "seconds": time.perf_counter() - t0, "status": "ok" if last < first - 0.1 else "failed"}


def stage_gptq(args) -> dict:
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
    calib_s = time.perf_counter() - t0
    names = [n for n in linear_weight_names(model) if n in hs.h]
    weights = dict(model.named_parameters())
    t0 = time.perf_counter()
    for n in names:
        w = weights[n].detach()
        scale = (w.abs().amax(dim=1) / 31).clamp_min(1e-8).half()
        gptq_codes(w, hs.h[n], scale, 6)
    sync(device)
    total = time.perf_counter() - t0
    return {"matrices": len(names), "calibration_s": calib_s, "gptq_s": total, "per_matrix_ms": 1e3 * total / max(len(names), 1)}


def synthetic_tables(vocab: int, bos: int):
    import numpy as np

    from pgolf.data.tokenizer import ByteTables

    boundary = np.zeros(vocab, dtype=bool)
    boundary[bos] = True
    return ByteTables(np.full(vocab, 3, dtype=np.int16), np.zeros(vocab, dtype=bool), boundary)


def stage_eval(args) -> dict:
    import torch

    from pgolf.eval.scoring import evaluate
    from pgolf.model.gpt import GPT

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    window = 128 if args.tiny else 2048
    stride, n = (32, 2048) if args.tiny else (64, 262_144)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    tokens, _ = doc_ids(1, n + 1, 40 if args.tiny else 900, cfg.model.vocab_size, cfg.model.bos_id)
    tables = synthetic_tables(cfg.model.vocab_size, cfg.model.bos_id)
    t0 = time.perf_counter()
    with torch.no_grad():
        score = evaluate(model, tokens[0], tables, window, stride, batch_seqs=32, device=device, autocast=autocast(device))
    dt = time.perf_counter() - t0
    return {"tokens": n, "window": window, "stride": stride, "seconds": dt, "tokens_per_s": n / dt,
            "val_loss": score.val_loss}


def stage_ttt(args) -> dict:
    """The frontier's evaluation (per-document LoRA TTT r80, one global phase, n-gram tilt) on
    synthetic documents: scored tokens/s and the split between TTT, global phase and tilt."""
    import copy

    import torch

    from pgolf.eval.docscore import evaluate_documents
    from pgolf.model.gpt import GPT

    device = device_of(args)
    cfg = frontier_cfg(args.tiny)
    e = copy.copy(cfg.eval)
    n = 4096 if args.tiny else 262_144
    if args.tiny:
        e.context, e.doc_batch, e.ttt_rank, e.ttt_chunk = 128, 8, 8, 32
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    tokens, _ = doc_ids(1, n + 1, 100 if args.tiny else 1000, cfg.model.vocab_size, cfg.model.bos_id)
    n_docs = int((tokens[0][:-1] == cfg.model.bos_id).sum()) + 1
    e.ttt_phase_docs, e.time_budget_s = str(max(n_docs // 2, 1)), 0.0
    tables = synthetic_tables(cfg.model.vocab_size, cfg.model.bos_id)
    res = evaluate_documents(model, tokens[0], tables, e, cfg.train.train_seq_len, cfg.model.bos_id, device=device,
                             autocast=autocast(device))
    secs = res.seconds
    return {"tokens": n, "documents": n_docs, "context": e.context, "chunk": e.ttt_chunk, "rank": e.ttt_rank,
            "seconds": secs["total"], "tokens_per_s": n / secs["total"], "split_s": secs, "val_loss": res.score.val_loss}


WORDS_SEED = 7


def build_dataset(root: Path, vocab: int) -> tuple[Path, Path]:
    """Generated text -> a SentencePiece tokenizer and official-format shards (no network)."""
    import json as _json

    from pgolf.data.build import build_shards, train_tokenizer

    rng = random.Random(WORDS_SEED)
    lexicon = ["".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    docs = root / "docs.jsonl"
    with docs.open("w", encoding="utf-8") as f:
        for _ in range(1500):
            words = [rng.choice(lexicon[: rng.choice((300, 3000))]) for _ in range(rng.randint(30, 400))]
            f.write(_json.dumps({"text": " ".join(words)}) + "\n")
    model = train_tokenizer(docs, root / f"fineweb_{vocab}_bpe", vocab, num_threads=4)
    build_shards(docs, model, root / "shards", num_val_docs=60, shard_size=200_000)
    return root / "shards", model


def stage_export(args) -> dict:
    from pgolf.submit.export import export_script

    root = Path(args.work) / "export"
    root.mkdir(parents=True, exist_ok=True)
    vocab = 512 if args.tiny else 1024  # byte fallback: 256 byte pieces + the text's characters
    t0 = time.perf_counter()
    shards, tok = build_dataset(root, vocab)
    data_s = time.perf_counter() - t0
    cfg = frontier_cfg(args.tiny)
    cfg.model.vocab_size = vocab
    t = cfg.train
    if args.tiny:
        t.train_batch_tokens = 8 * 2 * 128
    t.iterations, t.max_wallclock_seconds, t.val_loss_every, t.train_log_every, t.warmup_steps = 20, 0.0, 0, 5, 2
    cfg.eval.val_max_tokens = 16_384
    cfg.quant.gptq_time_budget_s = 5.0
    script = root / "train_gpt.py"
    code_bytes = export_script(cfg, script)
    env = dict(os.environ, DATA_PATH=str(shards), TOKENIZER_PATH=str(tok), RUN_ID="gpu_check_export",
               ITERATIONS="20", MAX_WALLCLOCK_SECONDS="0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    log = (proc.stdout + proc.stderr).splitlines()
    steps = [line for line in log if line.startswith("step:")]
    return {"status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode,
            "code_bytes": code_bytes, "dataset_s": data_s, "run_s": time.perf_counter() - t0,
            "last_step_line": steps[-1] if steps else None,
            "final_line": next((line for line in reversed(log) if "roundtrip" in line), None),
            "tail": log[-5:] if proc.returncode else []}


# ---------------------------------------------------------------- driver

def run_stage(args) -> int:
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    result = globals()[f"stage_{args.stage}"](args)
    result.setdefault("status", "ok")
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))
    return 0


def drive(args) -> dict:
    """Every stage in its own process, each under min(its timeout, the budget left)."""
    results, start = {}, time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="pgolf-gpu-check-"))
    for name, limit in STAGES.items():
        left = TOTAL_BUDGET_S * args.budget_scale - (time.perf_counter() - start)
        if left < 5:
            results[name] = {"status": "skipped", "reason": "check budget used up"}
            continue
        out = work / f"{name}.json"
        cmd = [sys.executable, __file__, "--stage", name, "--device", args.device, "--work", str(work),
               "--result", str(out), "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=min(limit * args.budget_scale, left))
            if proc.returncode == 0 and out.is_file():
                results[name] = json.loads(out.read_text())
            else:
                results[name] = {"status": "failed", "returncode": proc.returncode, "error": proc.stderr.strip().splitlines()[-3:]}
        except subprocess.TimeoutExpired:
            results[name] = {"status": "timeout", "limit_s": round(min(limit * args.budget_scale, left), 1)}
        results[name]["stage_s"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {results[name]['status']} ({results[name]['stage_s']} s)", file=sys.stderr, flush=True)
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
        rest = {k: v for k, v in r.items() if k not in ("status", "stage_s")}
        rows.append(f"| {name} | {r['status']} | {r.get('stage_s', '')} | {fmt(rest)} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="toy shapes (the CPU check that keeps this script alive)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per stage")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every timeout and the 8-minute budget")
    p.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        return run_stage(args)
    results = drive(args)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
