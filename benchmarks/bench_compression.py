"""Compression benchmark (issue 4): one trained model, every quantization/coding scheme side by side.

    PYTHONPATH=src python benchmarks/bench_compression.py --run-dir runs/bench-q4-4x256 [--train]

Loads runs/<id>/final_model.safetensors (the unquantized weights written by `pgolf train`; with
--train it first trains the 4x256 model below), scores it on the first --val-tokens tokens of the
validation sample, then for each scheme: quantize (GPTQ Hessians from training batches, never
validation), pack to a real artifact, unpack from disk, score the roundtrip model, and report
artifact bytes, bits per parameter (artifact bytes incl. scales, header and fp16 tensors),
quantization gap (roundtrip val_bpb - pre-quant val_bpb), quantize/pack/unpack seconds and the
planner's prediction. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from pgolf.core.config import RunConfig, apply_mapping
from pgolf.data.source import load_val_data, resolve_data
from pgolf.eval.scoring import evaluate
from pgolf.model.gpt import GPT
from pgolf.model.inventory import quant_groups_for, quant_layout
from pgolf.quant.gptq import calibration_batches, collect_hessians
from pgolf.quant.pack import pack, unpack
from pgolf.quant.plan import predict_table
from pgolf.quant.schemes import quantize

DATA = "/work/shared/data/fineweb_sample/sp1024"
TOKENIZER = "/work/shared/data/tokenizers/fineweb_1024_bpe.model"
KEEP = 4096  # tensors <= this many elements stay fp16 (the official 65,536 would keep 256x256 matrices float)
TRAIN_ARGS = [  # the benchmark model: 4x256, 250 Muon steps of 8,192 tokens (~12 min on 1 core)
    "--preset",
    "naive-baseline",
    "--data",
    DATA,
    "--tokenizer",
    TOKENIZER,
    "--device",
    "cpu",
    "--iterations",
    "250",
    "--max-wallclock-seconds",
    "0",
    "--val-loss-every",
    "0",
    "--val-max-tokens",
    "131072",
    "--set",
    "model.num_layers=4",
    "--set",
    "model.model_dim=256",
    "--set",
    "model.num_heads=4",
    "--set",
    "model.num_kv_heads=2",
    "--set",
    "train.train_seq_len=512",
    "--set",
    "train.train_batch_tokens=8192",
    "--set",
    "train.grad_accum_steps=1",
    "--set",
    "train.warmup_steps=0",
    "--set",
    "train.warmdown_iters=80",
    "--set",
    "train.train_log_every=25",
    "--set",
    "threads=1",
    "--set",
    f"quant.keep_float_max_numel={KEEP}",
]
# (label, QuantConfig overrides, use GPTQ Hessians). Widths are attn/mlp/embed bits; k = SDClip sigmas.
INT6 = dict(
    scheme="mixed",
    attn_bits=6,
    mlp_bits=6,
    attn_clip_sigmas=13.0,
    mlp_clip_sigmas=11.5,
    embed_bits=8,
    embed_clip_sigmas=14.0,
)
INT5 = dict(INT6, attn_bits=5, mlp_bits=5, attn_clip_sigmas=8.0, mlp_clip_sigmas=8.0)
SCHEMES = [
    (
        "int8+zlib, official rule (keep <= 65,536 fp16)",
        dict(scheme="int8", compressor="zlib", keep_float_max_numel=65_536),
        False,
    ),
    ("int8+zlib, official rule, keep <= 4,096 (baseline)", dict(scheme="int8", compressor="zlib"), False),
    ("int8, best codec", dict(scheme="int8", compressor="auto"), False),
    ("6/6/8 SDClip k13/11.5/14, RTN", INT6, False),
    ("6/6/8 percentile clip, RTN", dict(INT6, clip="percentile"), False),
    ("6/6/8 clip search (min MSE), RTN", dict(INT6, clip="search"), False),
    ("6/6/8 SDClip, GPTQ", dict(INT6, gptq=True), True),
    ("6/6/8 SDClip, GPTQ + LQER r4 top3", dict(INT6, gptq=True, lqer_rank=4), True),
    ("6/5/8 k13/8/14, GPTQ + LQER r4 top3", dict(INT6, mlp_bits=5, mlp_clip_sigmas=8.0, gptq=True, lqer_rank=4), True),
    ("5/5/8 k8/8/14, GPTQ + LQER r4 top3", dict(INT5, gptq=True, lqer_rank=4), True),
    ("5/5/8, GPTQ + LQER, row reorder", dict(INT5, gptq=True, lqer_rank=4, transform="reorder"), True),
    ("5/5/8, GPTQ + LQER, bit-packed", dict(INT5, gptq=True, lqer_rank=4, transform="bitpack"), True),
    ("5/5/7 k8/8/14, GPTQ + LQER r4 top3", dict(INT5, embed_bits=7, gptq=True, lqer_rank=4), True),
]


def load_run(run_dir: Path, val_tokens: int) -> tuple[RunConfig, dict]:
    cfg = RunConfig()
    apply_mapping(cfg, json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
    cfg.eval.val_max_tokens = val_tokens
    from safetensors.torch import load_file

    return cfg, load_file(str(run_dir / "final_model.safetensors"))


def score(model: GPT, val, cfg: RunConfig) -> float:
    seq = cfg.train.train_seq_len
    return evaluate(model, val.tokens, val.tables, window=seq, stride=0, batch_seqs=16).val_bpb


def hessians_for(model: GPT, data, cfg: RunConfig, batches: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    hs = collect_hessians(model, calibration_batches(data.train_pattern, batches, 16, cfg.train.train_seq_len))
    return hs.h, time.perf_counter() - t0


def run_scheme(label, over, use_h, state, hessians, model, val, cfg, pre, out_dir) -> dict:
    q = replace(cfg.quant, **{"keep_float_max_numel": KEEP, "compressor": "auto", "transform": "auto", **over})
    t0 = time.perf_counter()
    qs = quantize(state, quant_groups_for(cfg.model), q, hessians=hessians if use_h else None)
    t_quant = time.perf_counter() - t0
    path = out_dir / f"bench_{len(list(out_dir.glob('bench_*.pglf')))}.pglf"
    res = pack(qs, asdict(cfg.model), q, path)
    t0 = time.perf_counter()
    rt_state, _ = unpack(path)
    t_unpack = time.perf_counter() - t0
    model.load_state_dict(rt_state, strict=True)
    post = score(model, val, cfg)
    model.load_state_dict(state, strict=True)
    params = sum(v.numel() for v in state.values())
    pred = predict_table(cfg.model, quant_layout(cfg.model), q).artifact_bytes
    return {
        "scheme": label,
        "bytes": res.bytes,
        "bpp": 8 * res.bytes / params,
        "gap": post - pre,
        "post": post,
        "quant_s": t_quant,
        "pack_s": res.seconds,
        "unpack_s": t_unpack,
        "pred": pred,
        "codecs": res.codec_sizes,
        "streams": [(s.label, s.transform, s.codec, s.raw, s.stored) for s in res.streams],
        "info": {k: len(v) if isinstance(v, list) else v for k, v in qs.info.items()},
    }


def fit_planner(state: dict, cfg: RunConfig, hessians: dict) -> None:
    """Measure the planner's constants on these trained weights (printed; copied into pgolf/quant/plan.py)."""
    import math

    import numpy as np
    from scipy.optimize import brentq

    from pgolf.quant.container import encode_stream
    from pgolf.quant.lowbit import quantize_rows
    from pgolf.quant.plan import GENNORM_BETA, code_entropy_bits
    from pgolf.quant.registry import auto_codecs

    def kurt_of(beta):
        return math.gamma(5 / beta) * math.gamma(1 / beta) / math.gamma(3 / beta) ** 2

    groups = quant_groups_for(cfg.model)
    mats = {
        g: [v.float() for n, v in state.items() if v.ndim == 2 and v.numel() > KEEP and groups[n] == g]
        for g in ("embed", "attn", "mlp")
    }
    for g, ws in mats.items():
        z = torch.cat([(w / w.std(dim=1, keepdim=True, unbiased=False)).reshape(-1) for w in ws])
        kurt = float((z**4).mean())
        beta = brentq(lambda b, kurt=kurt: kurt_of(b) - kurt, 0.3, 20.0)
        print(f"fit group:{g} params:{z.numel()} kurtosis:{kurt:.3f} gennorm_beta:{beta:.3f}")
    for bits, k in ((5, 8.0), (6, 11.5), (6, 13.0), (7, 14.0), (8, 20.0)):
        for g, ws in mats.items():
            codes = [quantize_rows(w, bits, "sdclip", k)[0].numpy() for w in ws]
            flat = np.concatenate([c.reshape(-1) for c in codes])
            p = np.bincount(flat.astype(np.int64) + 128, minlength=256) / flat.size
            h_emp = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
            h_model = code_entropy_bits(bits, k / ((1 << (bits - 1)) - 1), GENNORM_BETA[g])
            raw = b"".join(c.tobytes() for c in codes)
            _, codec, _, blob, _ = encode_stream(
                raw, auto_codecs(), ("none", f"bitpack{bits}") if bits < 8 else ("none",)
            )
            coded = 8 * len(blob) / flat.size
            print(
                f"fit int{bits} k{k} group:{g} entropy_emp:{h_emp:.4f} entropy_model:{h_model:.4f} "
                f"coded_bits:{coded:.4f} ({codec}) overhead_vs_emp:{coded / h_emp:.4f} pred_err:{h_model * 1.0 / coded - 1:+.4f}"
            )


def markdown(rows: list[dict], base: dict) -> str:
    head = (
        "| scheme | artifact bytes | bits/param | vs int8+zlib | roundtrip val_bpb | quant gap (bpb) | "
        "predicted bytes (err) | quantize s | pack s | unpack s |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        err = (r["pred"] - r["bytes"]) / r["bytes"]
        lines.append(
            f"| {r['scheme']} | {r['bytes']:,} | {r['bpp']:.3f} | {base['bytes'] / r['bytes']:.2f}x | "
            f"{r['post']:.4f} | {r['gap']:+.4f} | {r['pred']:,} ({err:+.1%}) | {r['quant_s']:.1f} | "
            f"{r['pack_s']:.1f} | {r['unpack_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-q4-4x256"))
    ap.add_argument("--train", action="store_true", help="train the benchmark model first if it is missing")
    ap.add_argument("--val-tokens", type=int, default=131_072)
    ap.add_argument("--calib-batches", type=int, default=8, help="calibration batches of 16 x seq_len training tokens")
    ap.add_argument("--only", default="", help="comma-separated scheme indices to run (default all)")
    ap.add_argument("--fit-planner", action="store_true", help="print the planner's constants measured on this model")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not (args.run_dir / "final_model.safetensors").is_file():
        if not args.train:
            print(f"{args.run_dir}/final_model.safetensors missing; pass --train", file=sys.stderr)
            return 2
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pgolf",
                "train",
                "--run-id",
                args.run_dir.name,
                "--out-dir",
                str(args.run_dir.parent),
                *TRAIN_ARGS,
            ],
            check=True,
        )
    t_start = time.perf_counter()
    cfg, state = load_run(args.run_dir, args.val_tokens)
    data = resolve_data(cfg, lambda *_: None)
    val = load_val_data(cfg, data)
    model = GPT(cfg.model)
    model.load_state_dict(state, strict=True)
    pre = score(model, val, cfg)
    hessians, t_h = hessians_for(model, data, cfg, args.calib_batches)
    print(
        f"model_params:{sum(v.numel() for v in state.values())} pre_quant_val_bpb:{pre:.4f} "
        f"val_tokens:{val.tokens.numel() - 1} hessians:{len(hessians)} hessian_s:{t_h:.1f}",
        flush=True,
    )
    if args.fit_planner:
        fit_planner(state, cfg, hessians)
        return 0
    pick = [int(i) for i in args.only.split(",")] if args.only else range(len(SCHEMES))
    rows = []
    for i in pick:
        label, over, use_h = SCHEMES[i]
        rows.append(run_scheme(label, over, use_h, state, hessians, model, val, cfg, pre, args.run_dir))
        r = rows[-1]
        print(
            f"{label}: bytes:{r['bytes']} bpp:{r['bpp']:.3f} gap:{r['gap']:+.4f} pred:{r['pred']} "
            f"codecs:{r['codecs']} streams:{r['streams']} info:{r['info']}",
            flush=True,
        )
    print(markdown(rows, rows[1] if len(rows) > 1 else rows[0]))
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} torch {torch.__version__} threads 1; "
        f"total {time.perf_counter() - t_start:.0f}s"
    )
    if args.json:
        args.json.write_text(json.dumps({"pre": pre, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
