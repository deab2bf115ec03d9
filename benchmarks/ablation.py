"""Architecture ablation on the CPU proxy (issue: model architecture stack).

    python benchmarks/ablation.py [--budget 150] [--repeats 1]

Runs, at the same wall-clock and thread count: the naive-baseline proxy, the frontier proxy, and
the frontier proxy with one technique removed at a time (leave-one-out), so each row's distance
from the frontier row is that technique's effect at this scale. Results go to
benchmarks/results/ablation/.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pgolf.cli.main import main

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
BASE = "frontier-cpu-proxy"
LEAVE_ONE_OUT = {
    "bigram": "model.bigram_buckets=0",
    "xsa": "model.xsa_layers=",
    "smear": "model.smear_gate=0",
    "sparse_gate": "model.attn_gate=none",
    "skip_gates": "model.skip_gates=0",
    "lanes": "model.parallel_from=-1",
    "ln_scale": "model.ln_scale=0",
    "partial_rope": "model.rope_dims=0",
    "qk_gain5": "model.qk_gain_init=1.5",
    "leaky_relu2": "model.activation=relu2",
    "doc_mask": "model.doc_mask=0",
    "ema": "train.ema_decay=0",
}


def recipes() -> list[str]:
    return ["naive-baseline-cpu-proxy", BASE] + [f"{BASE}@{opt}" for opt in LEAVE_ONE_OUT.values()]


if __name__ == "__main__":
    args = [
        "bench",
        "proxy",
        "--recipes",
        ",".join(recipes()),
        "--budget",
        "150",
        "--set",
        "eval.val_max_tokens=262144",
        "--data",
        str(SHARED / "fineweb_sample" / "sp1024"),
        "--tokenizer",
        str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"),
        "--out",
        str(Path(__file__).resolve().parent / "results" / "ablation"),
    ]
    sys.exit(main(args + sys.argv[1:]))
