"""Size levers measured on trained weights (issue 12): artifact bytes per +0.5 of each group's
SDClip k, against what the planner predicts for the same config (`pgolf train --dry-run` prints
the planner's `levers:` line). Round-to-nearest codes (no GPTQ: the lever is the clip grid).

    python benchmarks/bench_levers.py runs/<RUN_ID>   # a run folder: config.json + final_model.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from safetensors.torch import load_file

from pgolf.core.config import RunConfig, apply_mapping
from pgolf.model.inventory import quant_groups_for, quant_layout
from pgolf.quant.pack import pack
from pgolf.quant.plan import predict_table
from pgolf.quant.schemes import quantize

STEP = 0.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    args = p.parse_args()
    cfg = RunConfig()
    apply_mapping(cfg, json.loads((args.run_dir / "config.json").read_text()), "config")
    state = load_file(str(args.run_dir / "final_model.safetensors"))
    q = replace(cfg.quant, gptq=False, lqer_rank=0, compressor="brotli")
    groups, layout = quant_groups_for(cfg.model), quant_layout(cfg.model)

    def measured(qc) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            return pack(quantize(state, groups, qc), asdict(cfg.model), qc, Path(tmp) / "a.pglf").bytes

    base, base_pred = measured(q), predict_table(cfg.model, layout, q).artifact_bytes
    print(
        f"| lever | measured bytes | planner bytes |\n|---|---|---|\n| base (k as configured) | {base:,} | {base_pred:,} |"
    )
    for group in ("attn", "mlp", "embed", "hash"):
        field = f"{group}_clip_sigmas"
        moved = replace(q, **{field: getattr(q, field) + STEP})
        d_meas = measured(moved) - base
        d_pred = predict_table(cfg.model, layout, moved).artifact_bytes - base_pred
        print(f"| quant.{field} +{STEP:g} | {d_meas:+,} | {d_pred:+,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
