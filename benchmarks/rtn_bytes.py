"""Artifact bytes of trained runs' raw weights packed without GPTQ and LQER (round-to-nearest codes,
brotli-11): the weight-decay lever measured on the weights alone, without LQER's choice of tensors
(which moves an artifact by ~10 KB from run to run).

    python benchmarks/rtn_bytes.py runs/wd0.095 runs/wd0.100 runs/wd0.105

Each RUN folder needs config.json and final_model.safetensors (every `pgolf train` run writes them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from safetensors.torch import load_file

from pgolf.core.config import RunConfig, apply_mapping
from pgolf.model.inventory import quant_groups_for
from pgolf.quant.pack import pack
from pgolf.quant.schemes import quantize


def rtn_bytes(run: Path) -> tuple[int, dict[str, int]]:
    """(artifact bytes, stored bytes per stream) of the run's weights, RTN codes, no LQER, brotli."""
    cfg = RunConfig()
    apply_mapping(cfg, json.loads((run / "config.json").read_text()), str(run / "config.json"))
    q = replace(cfg.quant, gptq=False, lqer_rank=0, compressor="brotli")
    state = load_file(str(run / "final_model.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        res = pack(quantize(state, quant_groups_for(cfg.model), q), asdict(cfg.model), q, Path(tmp) / "a.pglf")
    return res.bytes, {s.label: s.stored for s in res.streams}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    for run in ap.parse_args().runs:
        total, streams = rtn_bytes(run)
        print(f"{run.name} rtn_no_lqer_brotli_bytes:{total} " + " ".join(f"{k}:{v}" for k, v in streams.items()))


if __name__ == "__main__":
    main()
