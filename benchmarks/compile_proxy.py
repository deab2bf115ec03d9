"""Does torch.compile give the CPU proxies more steps in their budget, now that compilation sits in
the untimed warm-up (issue 11)? Runs each proxy preset with `compile=off` and `compile=on`,
interleaved (off, on, off, on, ...) under the same wall-clock cap, and reports the steps each
took, the step time, the untimed warm-up seconds and the final val_bpb (65,536 val tokens).

    python benchmarks/compile_proxy.py --budget 60 --repeats 2 --threads 1 --out results.json

A cold compile of a proxy takes minutes of warm-up here; the second and later compiled runs hit
the inductor cache. The warm-up does not count against the training clock, as on 8xH100.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
PRESETS = ("naive-baseline-cpu-proxy", "frontier-cpu-proxy")


def run_once(preset: str, compile_: str, budget: float, threads: int, work: Path, tag: str) -> dict:
    data = SHARED / "fineweb_sample" / "sp1024"
    run_id = f"{preset}-{compile_}-{tag}"
    cmd = [
        sys.executable,
        "-m",
        "pgolf",
        "train",
        "--preset",
        preset,
        "--data",
        str(data),
        "--tokenizer",
        str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"),
        "--run-id",
        run_id,
        "--out-dir",
        str(work / "runs"),
        "--max-wallclock-seconds",
        str(budget),
        "--val-max-tokens",
        "65536",
        "--set",
        f"compile={compile_}",
        "--set",
        f"threads={threads}",
        "--set",
        "eval.final_sliding=false",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{run_id} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log = (work / "logs" / f"{run_id}.txt").read_text()
    stop = re.search(r"stopping_early: wallclock_cap train_time:(\d+)ms step:(\d+)", log)
    final = re.findall(r"^step:\d+/\d+ val_loss:[0-9.]+ val_bpb:([0-9.]+)", log, re.M)
    graphs = re.search(r"compile:graphs_in_timed_loop:(\d+)", log)
    return {
        "preset": preset,
        "compile": compile_,
        "steps": int(stop.group(2)),
        "train_ms": int(stop.group(1)),
        "step_ms": int(stop.group(1)) / int(stop.group(2)),
        "val_bpb": float(final[-1]),
        "wall_s": wall,
        "graphs_in_timed_loop": int(graphs.group(1)) if graphs else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for preset in args.presets:
                for compile_ in ("off", "on"):
                    row = run_once(preset, compile_, args.budget, args.threads, Path(tmp), str(rep))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    for preset in args.presets:
        steps = {
            c: statistics.median(r["steps"] for r in rows if r["preset"] == preset and r["compile"] == c)
            for c in ("off", "on")
        }
        print(f"{preset}: steps off {steps['off']} on {steps['on']} ratio {steps['on'] / steps['off']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
