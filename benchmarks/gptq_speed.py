"""GPTQ seconds per matrix at the frontier's shapes (issue 11), on synthetic but correlated
calibration data, with the output error of GPTQ and of round-to-nearest for the same scales.

Whatever `pgolf` is importable is measured, so the same script times old and new code:

    PYTHONPATH=/tmp/old/src python benchmarks/gptq_speed.py --threads 1 --out old.json
    python benchmarks/gptq_speed.py --threads 1 --out new.json

Shapes are (out, in) of the frontier's matrices: mlp.proj 512x2048, mlp.fc 2048x512, attn 512x512
and 256x512 (k, v), the tied embedding 8192x512 (GPTQ's cost grows with in^2 * out and in^3, so
512x2048 is the slow one). `frontier_total_s` adds the per-shape times over every matrix the
frontier preset quantizes (pgolf.quant.mixed.treatment), i.e. GPTQ of the whole model on one
process; compare it with quant.gptq_time_budget_s (12 s, half of it for calibration). The Hessian is
X^T X / n of n = 4 * in rows X = Z A (Z Gaussian, A a random mixing matrix, so the input
dimensions are correlated as real activations are); int6 codes with SDClip k = 12 row scales.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from pgolf.core.presets import frontier
from pgolf.model.inventory import quant_layout
from pgolf.quant.gptq import gptq_codes, output_error, rtn_codes
from pgolf.quant.lowbit import dequantize_rows, fp16_row_scale, row_clip
from pgolf.quant.mixed import treatment

SHAPES = ((512, 2048), (2048, 512), (512, 512), (256, 512), (8192, 512))
BITS, CLIP_K = 6, 12.0


def problem(out_f: int, in_f: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, Hessian, fp16 row scales) of one synthetic layer."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.02
    mix = torch.randn(in_f, in_f, generator=g) / in_f**0.5 + torch.eye(in_f)
    x = torch.randn(4 * in_f, in_f, generator=g) @ mix
    h = x.T @ x / x.shape[0]
    scale = fp16_row_scale(row_clip(w, BITS, "sdclip", CLIP_K), BITS)
    return w, h, scale


def time_one(out_f: int, in_f: int, repeats: int) -> dict:
    w, h, scale = problem(out_f, in_f, seed=out_f * 7 + in_f)
    gptq_codes(w, h, scale, BITS)  # warm the kernels once
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        codes = gptq_codes(w, h, scale, BITS)
        times.append(time.perf_counter() - t0)
    err_gptq = output_error(w, dequantize_rows(codes, scale), h)
    err_rtn = output_error(w, dequantize_rows(rtn_codes(w, scale, BITS), scale), h)
    return {
        "shape": [out_f, in_f],
        "seconds": min(times),
        "all_seconds": times,
        "err_gptq_over_rtn": err_gptq / err_rtn,
    }


def frontier_total(rows: list[dict]) -> float:
    """Seconds of GPTQ over the frontier's quantized matrices, from the per-shape times."""
    cfg = frontier()
    secs = {tuple(r["shape"]): r["seconds"] for r in rows}
    shapes = [
        shape for shape, group in quant_layout(cfg.model).values() if treatment(group, shape, True, cfg.quant) == "intq"
    ]
    missing = {s for s in shapes if s not in secs}
    if missing:
        raise SystemExit(f"no timing for frontier shapes {sorted(missing)}")
    return sum(secs[s] for s in shapes)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [time_one(o, i, args.repeats) for o, i in SHAPES]
    for r in rows:
        print(f"{r['shape'][0]}x{r['shape'][1]}: {r['seconds']:.3f} s  err(gptq)/err(rtn) {r['err_gptq_over_rtn']:.4f}")
    total = frontier_total(rows)
    print(f"frontier_total_s: {total:.1f} (GPTQ of every quantized matrix of the frontier preset, one process)")
    out = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
        "frontier_total_s": total,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
