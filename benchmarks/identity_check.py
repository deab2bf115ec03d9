"""Refactor check (the torchtitan rule): a change that is not meant to change numbers must give the
same losses, the same artifact bytes and the same scores on the same seed.

Runs three fixed-step configurations through the `pgolf` command line (so it works on any layout
of the package): the naive baseline at the official oracle's tiny shape (2x128, seq 256, 8,192
tokens/step), `naive-baseline-cpu-proxy` and `frontier-cpu-proxy`, with no wall-clock cap (a clock
makes step counts machine-dependent). It prints, per run, a fingerprint: every logged train loss
and validation score, the exact roundtrip / sliding scores from summary.json and the sha256 of
every artifact and of the unquantized final weights, and writes them as JSON. Compare two fingerprints with --compare A.json B.json.

    python benchmarks/identity_check.py --out before.json      # on the old code
    python benchmarks/identity_check.py --out after.json       # on the new code
    python benchmarks/identity_check.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {
    "naive-tiny": [
        "--preset",
        "naive-baseline",
        "--set",
        "model.num_layers=2",
        "--set",
        "model.model_dim=128",
        "--set",
        "model.num_heads=4",
        "--set",
        "model.num_kv_heads=2",
        "--set",
        "model.mlp_mult=2",
        "--set",
        "train.train_seq_len=256",
        "--set",
        "train.train_batch_tokens=8192",
        "--set",
        "train.warmdown_iters=10",
        "--set",
        "quant.keep_float_max_numel=4096",
    ],
    "naive-proxy": ["--preset", "naive-baseline-cpu-proxy"],
    "frontier-proxy": ["--preset", "frontier-cpu-proxy", "--set", "quant.gptq_time_budget_s=0"],
}
COMMON = [
    "--iterations",
    "{steps}",
    "--max-wallclock-seconds",
    "0",
    "--val-max-tokens",
    "65536",
    "--set",
    "train.train_log_every=1",
    "--set",
    "train.val_loss_every=10",
    "--seed",
    "1337",
    "--set",
    "threads={threads}",
]
# Timing fields differ run to run; everything else in these lines must not.
KEEP = re.compile(
    r"(train_loss:|val_loss:|val_bpb:|roundtrip_exact|sliding_window_exact|model_params:|"
    r"Serialized model|quant_gap|quantize:)"
)
TIMING = re.compile(r"\s*(train_time|step_avg|eval_time|quant_time|pack_time|time|tok_s)[:=][^\s)]*")


def shared_data() -> Path:
    root = Path(os.environ.get("PGOLF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root / "fineweb_sample" / "sp1024"


def run_one(name: str, args: list[str], steps: int, threads: int, work: Path) -> dict:
    data = shared_data()
    cmd = [
        sys.executable,
        "-m",
        "pgolf",
        "train",
        *args,
        *[a.format(steps=steps, threads=threads) for a in COMMON],
        "--data",
        str(data),
        "--tokenizer",
        str(data.parents[1] / "tokenizers" / "fineweb_1024_bpe.model"),
        "--run-id",
        f"identity-{name}",
        "--out-dir",
        str(work / "runs"),
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)  # logs/ land under work
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log = work / "logs" / f"identity-{name}.txt"
    lines = [TIMING.sub("", line).strip() for line in log.read_text().splitlines() if KEEP.search(line)]
    run_dir = work / "runs" / f"identity-{name}"
    summary = json.loads((run_dir / "summary.json").read_text())["summary"]
    shas = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.glob("*.pglf")) + sorted(run_dir.glob("final_model.safetensors"))
    }
    return {
        "lines": lines,
        "roundtrip": summary["roundtrip"],
        "sliding": summary["sliding"],
        "artifact_bytes": summary["artifact_bytes"],
        "sha256": shas,
    }


def compare(a: dict, b: dict) -> int:
    bad = 0
    for name in sorted(set(a) | set(b)):
        same = a.get(name) == b.get(name)
        bad += not same
        sha = (b.get(name) or {}).get("sha256", {})
        print(f"{name}: {'identical' if same else 'DIFFERENT'} artifact sha256 {sha}")
        if not same and name in a and name in b:
            for key in a[name]:
                if a[name][key] != b[name].get(key):
                    print(f"  {key}: {a[name][key]!r:.300} != {b[name].get(key)!r:.300}")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (1: no run-to-run float reordering from thread scheduling)",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--only", nargs="*", choices=sorted(RUNS))
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = p.parse_args()
    if args.compare:
        return compare(*(json.loads(x.read_text()) for x in args.compare))
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or RUNS:
            result[name] = run_one(name, RUNS[name], args.steps, args.threads, Path(tmp))
            r = result[name]
            print(
                f"{name}: roundtrip val_bpb {r['roundtrip']['val_bpb']:.8f} sliding {r['sliding'].get('val_bpb')} "
                f"artifact {r['artifact_bytes']} sha256 {r['sha256']}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
