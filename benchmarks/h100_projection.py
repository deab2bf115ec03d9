"""Frontier steps in the 8xH100 budget, rebuilt from its pieces (issue 11). No GPU measurement:
every input is either computed from the model (pgolf.model.inventory), the preset, or a stated
external number, and each is printed with where it comes from.

    python benchmarks/h100_projection.py                    # the records' MFU, the preset's reserve
    python benchmarks/h100_projection.py --mfu 0.40 --reserve 3 --overhead-ms 2

Model of a run: the training clock is max_wallclock_seconds - reserve_seconds; depth recurrence
switches on at recur_start_frac of that clock; a step costs FLOPs / (8 GPUs x peak x MFU) plus a
fixed per-step overhead (host syncs, launches, collectives not hidden by compute). The records'
MFU is backed out of their measured 121.7 ms/step average over 4,931 steps, with the same model
of the recurrence switch (PR #1855 switches at 35% of its clock too).
"""

from __future__ import annotations

import argparse
import json

from pgolf.core.presets import frontier
from pgolf.model.inventory import flops_per_token

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (NVIDIA datasheet)
GPUS = 8
RECORD_STEPS, RECORD_MS, RECORD_CLOCK_S = 4931, 121.7, 600.0  # PR #1855 (4,931 steps, 121.7 ms/step)


def phase_flops(tokens: int, seq: int) -> tuple[float, float]:
    """Training FLOPs of one optimizer step with recurrence off and on (all 8 GPUs)."""
    m = frontier().model
    return (
        flops_per_token(m, seq, False).per_token_train * tokens,
        flops_per_token(m, seq, True).per_token_train * tokens,
    )


def steps_in(clock_s: float, frac_on: float, ms_off: float, ms_on: float) -> float:
    return (1 - frac_on) * clock_s / (ms_off / 1000) + frac_on * clock_s / (ms_on / 1000)


def step_ms(flops: float, mfu: float, overhead_ms: float) -> float:
    return 1000 * flops / (GPUS * H100_BF16_PEAK * mfu) + overhead_ms


def record_mfu(f_off: float, f_on: float, frac_on: float) -> float:
    """The MFU at which this model of a run gives the records' step count in their clock."""
    # steps = clock * (8 * peak * mfu) * ((1 - frac) / f_off + frac / f_on): linear in mfu
    per_unit_mfu = RECORD_CLOCK_S * GPUS * H100_BF16_PEAK * ((1 - frac_on) / f_off + frac_on / f_on)
    return RECORD_STEPS / per_unit_mfu


def main() -> None:
    cfg = frontier()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mfu", type=float, default=0.0, help="model FLOPs utilisation (0 = the records')")
    ap.add_argument("--reserve", type=float, default=cfg.train.reserve_seconds, help="seconds kept off the clock")
    ap.add_argument("--overhead-ms", type=float, default=0.0, help="per-step time not hidden by compute")
    ap.add_argument("--target", type=int, default=5200)
    args = ap.parse_args()
    t = cfg.train
    f_off, f_on = phase_flops(t.train_batch_tokens, t.train_seq_len)
    frac_on = 1 - cfg.model.recur_start_frac
    rec = record_mfu(f_off, f_on, frac_on)
    mfu = args.mfu or rec
    clock = t.max_wallclock_seconds - args.reserve
    ms_off, ms_on = step_ms(f_off, mfu, args.overhead_ms), step_ms(f_on, mfu, args.overhead_ms)
    steps = steps_in(clock, frac_on, ms_off, ms_on)
    need = mfu * args.target / steps if args.overhead_ms == 0 else None
    out = {
        "tflop_per_step_recurrence_off": f_off / 1e12,
        "tflop_per_step_recurrence_on": f_on / 1e12,
        "records_mfu": rec,
        "mfu": mfu,
        "clock_s": clock,
        "ms_per_step_off": ms_off,
        "ms_per_step_on": ms_on,
        "mean_ms_per_step": 1000 * clock / steps,
        "steps": steps,
        "target": args.target,
        "mfu_for_target": need,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
