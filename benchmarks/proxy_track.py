"""CPU proxy track (issue: "compare whole recipes fairly on this 2-core machine").

    python benchmarks/proxy_track.py                       # naive-baseline-cpu-proxy vs frontier-cpu-proxy, 600 s each
    python benchmarks/proxy_track.py --repeats 2 --budget 300

A thin wrapper over `pgolf bench proxy` with the local FineWeb sample as data; everything it
measures is written to benchmarks/results/proxy/ (results.json, table.md, final_bpb.png).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pgolf.cli.main import main

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
DEFAULTS = [
    "bench",
    "proxy",
    "--data",
    str(SHARED / "fineweb_sample" / "sp1024"),
    "--tokenizer",
    str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"),
    "--out",
    str(Path(__file__).resolve().parent / "results" / "proxy"),
]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
