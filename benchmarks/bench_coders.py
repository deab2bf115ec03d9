"""Coders on real quantized streams (issue 12): the exact streams an artifact stores (per-group
int codes, the fp16 stream of scales and small tensors, the rest), each coded with brotli-11,
lzma-9e, zstd-22, PPMd (pyppmd) and an order-0 range coder with a fitted prior per stream
(constriction's rANS; the prior is the stream's symbol histogram, stored as 4-byte counts), with
the order-0 entropy as the floor a context-free coder cannot beat. One table, brotli-11 = 1.000.

    pip install constriction pyppmd     # not pgolf dependencies: measured before adopting them
    python benchmarks/bench_coders.py runs/<RUN_ID>/final_model.mixed.pglf [--out benchmarks/results/coders]
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from pathlib import Path

import numpy as np

from pgolf.core.config import QuantConfig
from pgolf.quant.container import read_artifact
from pgolf.quant.pack import mixed_streams, restore_layouts
from pgolf.quant.schemes import QuantizedState


def stream_bytes(path: Path) -> dict[str, bytes]:
    """label -> raw bytes of every stream, exactly as the packer lays them out for this artifact."""
    arrays, meta = read_artifact(path)
    qs = QuantizedState(restore_layouts(arrays, meta["entries"]), meta["entries"])
    q = QuantConfig(scheme="mixed", compressor="brotli", transform="auto")
    stored, _, streams, _ = mixed_streams(qs, q)
    return {s.label: b"".join(np.ascontiguousarray(stored[n]).tobytes() for n in s.names) for s in streams}


def entropy_bytes(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256).astype(np.float64)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum() * len(data) / 8)


def rans_bytes(data: bytes) -> tuple[int, float, float]:
    """(bytes incl. the stored histogram, encode s, decode s) of an order-0 rANS code."""
    import constriction

    sym = np.frombuffer(data, np.uint8).astype(np.int32)
    counts = np.bincount(sym, minlength=256)
    used = np.flatnonzero(counts)
    remap = np.zeros(256, np.int32)
    remap[used] = np.arange(used.size)
    probs = (counts[used] / counts.sum()).astype(np.float64)
    model = constriction.stream.model.Categorical(probs, perfect=False)
    t0 = time.perf_counter()
    enc = constriction.stream.stack.AnsCoder()
    enc.encode_reverse(remap[sym], model)
    words = enc.get_compressed()
    t1 = time.perf_counter()
    dec = constriction.stream.stack.AnsCoder(words)
    out = used[dec.decode(model, sym.size)]
    t2 = time.perf_counter()
    assert np.array_equal(out, sym), "rANS roundtrip failed"
    return int(words.nbytes) + 4 * used.size + 2 * used.size, t1 - t0, t2 - t1


def timed(fn, data: bytes) -> tuple[int, float]:
    t0 = time.perf_counter()
    out = fn(data)
    return len(out), time.perf_counter() - t0


def measure(streams: dict[str, bytes]) -> list[dict]:
    import brotli
    import pyppmd
    import zstandard

    coders = {
        "brotli-11": lambda d: brotli.compress(d, quality=11, lgwin=24),
        "lzma-9e": lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME),
        "zstd-22": lambda d: zstandard.ZstdCompressor(level=22).compress(d),
        "ppmd-o6": lambda d: pyppmd.compress(d, max_order=6, mem_size=64 << 20),
        "ppmd-o2": lambda d: pyppmd.compress(d, max_order=2, mem_size=64 << 20),
    }
    rows = []
    for label, data in streams.items():
        row = {"stream": label, "raw": len(data), "entropy0": entropy_bytes(data)}
        for name, fn in coders.items():
            row[name], row[name + "_s"] = timed(fn, data)
        row["rans-o0"], row["rans-o0_s"], row["rans-o0_dec_s"] = rans_bytes(data)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    names = ["entropy0", "lzma-9e", "zstd-22", "ppmd-o2", "ppmd-o6", "rans-o0"]
    head = "| stream | raw bytes | brotli-11 bytes | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    totals = {k: 0.0 for k in ["raw", "brotli-11"] + names}
    for r in rows:
        lines.append(f"| {r['stream']} | {r['raw']:,} | {r['brotli-11']:,} | "
                     + " | ".join(f"{r[n] / r['brotli-11']:.3f}" for n in names) + " |")
        for k in totals:
            totals[k] += r[k]
    lines.append(f"| all | {int(totals['raw']):,} | {int(totals['brotli-11']):,} | "
                 + " | ".join(f"{totals[n] / totals['brotli-11']:.3f}" for n in names) + " |")
    mb = totals["raw"] / 1e6
    speed = {n: sum(r[n + "_s"] for r in rows) for n in ("brotli-11", "lzma-9e", "zstd-22", "ppmd-o6", "rans-o0")}
    lines.append("")
    lines.append("encode seconds for these " + f"{mb:.2f} MB (x{36 / mb:.0f} for a 36 MB frontier payload): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in speed.items())
                 + f"; rANS decode {sum(r['rans-o0_dec_s'] for r in rows):.2f}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows = measure(stream_bytes(args.artifact))
    text = table(rows)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        (args.out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
