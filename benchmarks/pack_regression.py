"""Pack one run's final weights again (calibration -> GPTQ/LQER -> streams -> file) and report the
artifact bytes and the seconds of each phase, so old and new packing code can be compared on the
same trained weights (issue 11: the CPU proxies must keep their bytes within 0.5%).

    python -m pgolf train --preset frontier-cpu-proxy --max-wallclock-seconds 150 --run-id fp150 ...
    PYTHONPATH=/tmp/old/src python benchmarks/pack_regression.py runs/fp150 --data DIR --out old.json
    python benchmarks/pack_regression.py runs/fp150 --data DIR --out new.json

Only APIs both versions have are used: collect_hessians, calibration_batches, quantize, pack. One
process, no GPTQ deadline (every matrix gets GPTQ, so the comparison is not a timing race).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from pgolf.core.config import apply_mapping
from pgolf.core.presets import get_preset
from pgolf.core.roles import quant_groups
from pgolf.model.gpt import GPT
from pgolf.quant.gptq import calibration_batches, collect_hessians
from pgolf.quant.pack import pack
from pgolf.quant.schemes import quantize


def load_run(run_dir: Path):
    """The run's config (options this code version does not know are skipped) and weights."""
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = get_preset(saved["preset"])
    known = {
        k: ({f: x for f, x in v.items() if hasattr(getattr(cfg, k), f)} if isinstance(v, dict) else v)
        for k, v in saved.items()
        if hasattr(cfg, k)
    }
    apply_mapping(cfg, known, str(run_dir / "config.json"))
    model = GPT(cfg.model)
    model.load_state_dict(load_file(str(run_dir / "final_model.safetensors")), strict=True)
    return cfg, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", required=True, help="shard folder (the run's training shards)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--keep", default="", help="also copy the artifact here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, model = load_run(args.run_dir)
    q, t = cfg.quant, cfg.train
    out = {"preset": cfg.preset, "scheme": q.scheme}
    t0 = time.perf_counter()
    hessians = None
    if q.scheme == "mixed" and q.gptq:
        seqs = max(t.train_batch_tokens // (8 * t.train_seq_len), 1)  # one process: grad_accum 8
        pattern = str(Path(args.data) / cfg.data.train_pattern)
        hessians = collect_hessians(model, calibration_batches(pattern, q.gptq_calib_batches, seqs, t.train_seq_len)).h
    out["calibration_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    qs = quantize(model.state_dict(), quant_groups(model), q, hessians=hessians)
    out["quantize_s"] = time.perf_counter() - t0
    out["lqer"] = list(qs.info.get("lqer", []))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.pglf"
        t0 = time.perf_counter()
        res = pack(qs, asdict(cfg.model), q, path)
        out["pack_s"] = time.perf_counter() - t0
        out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if args.keep:
            Path(args.keep).write_bytes(path.read_bytes())
    out["bytes"], out["codec"] = res.bytes, res.codec
    out["streams"] = [(s.label, s.transform, s.codec, s.raw, s.stored) for s in res.streams]
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
