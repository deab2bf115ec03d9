"""Seconds to pack a frontier-sized artifact with `quant.compressor=auto` (issue 11: trying every
codec on ~36 MB of codes took minutes), on stand-in weights: the frontier preset's model with
Gaussian weights (std 0.02, the tied embedding 0.005 as its init), quantized by the preset's
mixed scheme with round-to-nearest (GPTQ does not change what the coder sees much; the byte
count is not the point here, the time is). Measures whatever `pgolf` is importable:

    PYTHONPATH=/tmp/old/src python benchmarks/pack_speed.py --out old.json
    python benchmarks/pack_speed.py --out new.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pgolf.core.presets import frontier
from pgolf.core.roles import quant_groups
from pgolf.model.gpt import GPT
from pgolf.quant.pack import pack
from pgolf.quant.schemes import quantize


def stand_in_state() -> tuple[dict, dict, object]:
    cfg = frontier()
    cfg.quant.lqer_rank = 0  # no Hessians here, and LQER is not a coder cost
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.005 if name == "tok_emb.weight" else 0.02)
    return model.state_dict(), quant_groups(model), cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state, groups, cfg = stand_in_state()
    qs = quantize(state, groups, cfg.quant)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = pack(qs, asdict(cfg.model), cfg.quant, Path(tmp) / "a.pglf")
        secs = time.perf_counter() - t0
    out = {
        "pack_s": secs,
        "bytes": res.bytes,
        "payload": res.payload_bytes,
        "codec": res.codec,
        "streams": [(s.label, s.transform, s.codec, s.raw, s.stored) for s in res.streams],
        "sampled": list(getattr(res, "sampled", [])),
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
