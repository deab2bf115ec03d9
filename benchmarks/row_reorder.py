"""Row reordering before compression (issue 22, item 4): the int code streams of an artifact packed
as the packer lays them out (`quant.transform=rows`) against the same codes with every matrix's
rows in greedy similarity order (`quant.transform=reorder`, the permutation stored as uint16 per
row), each stream coded with brotli-11; plus a frontier-shaped block (11 x 512-wide layers, MLP 4x,
GPTQ-free int6 SDClip codes of Gaussian weights) for the time at frontier size. The record's coder
(#1855: per-group lrzip of similarity-sorted rows) needs the lrzip binary: measured when found.

    python benchmarks/row_reorder.py runs/<RUN>/final_model.mixed.pglf [--out benchmarks/results/row_reorder.md]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import brotli
import numpy as np
import torch

from pgolf.core.config import QuantConfig
from pgolf.quant.container import read_artifact
from pgolf.quant.lowbit import quantize_rows
from pgolf.quant.pack import restore_layouts
from pgolf.quant.scheme_mixed import mixed_streams
from pgolf.quant.state import QuantizedState
from pgolf.quant.transforms import greedy_row_order, invert_row_order


def code_streams(qs: QuantizedState, transform: str) -> tuple[dict[str, bytes], float]:
    """(q.<group> label -> raw bytes incl. stored permutations, seconds to lay out)."""
    t0 = time.perf_counter()
    stored, _, streams, _ = mixed_streams(qs, QuantConfig(scheme="mixed", compressor="brotli", transform=transform))
    secs = time.perf_counter() - t0
    out = {}
    for s in streams:
        if s.label.startswith("q."):
            names = [n[: -len(".q")] for n in s.names]
            raw = b"".join(np.ascontiguousarray(stored[n + ".q"]).tobytes() for n in names)
            perms = b"".join(stored[n + ".perm"].tobytes() for n in names if n + ".perm" in stored)
            out[s.label] = raw + perms
    return out, secs


def lrzip_bytes(data: bytes) -> int | None:
    exe = shutil.which("lrzip")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "s.bin"
        src.write_bytes(data)
        subprocess.run([exe, "-q", "-z", "-L", "9", str(src)], check=True)
        return (Path(tmp) / "s.bin.lrz").stat().st_size


def artifact_rows(path: Path) -> list[str]:
    arrays, meta = read_artifact(path)
    qs = QuantizedState(restore_layouts(arrays, meta["entries"]), meta["entries"])
    plain, _ = code_streams(qs, "rows")
    ordered, secs = code_streams(qs, "reorder")
    rows = []
    for label in plain:
        a, b = len(brotli.compress(plain[label], quality=11)), len(brotli.compress(ordered[label], quality=11))
        lz = [lrzip_bytes(x) for x in (plain[label], ordered[label])]
        lz_text = f"{lz[0]:,} / {lz[1]:,}" if lz[0] else "no lrzip binary"
        rows.append(
            f"| {path.parent.name} {label} | {len(plain[label]):,} | {a:,} | {b:,} | {b / a - 1:+.2%} | {lz_text} |"
        )
    rows.append(f"| (reorder layout time, whole artifact) | | | | {secs:.2f} s | |")
    return rows


def frontier_block(seed: int = 0) -> tuple[str, float, float]:
    """(table row, reorder seconds, restore seconds) for 11 layers' int6 codes at 512 wide."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(512, 512)] * 2 + [(256, 512)] * 2 + [(2048, 512), (512, 2048)]  # q, proj, k, v, fc, mlp proj
    mats = []
    for _ in range(11):
        for shape in shapes:
            q, _ = quantize_rows(torch.randn(shape, generator=g), 6, "sdclip", 12.0)
            mats.append(q.numpy().astype(np.int8))
    plain = b"".join(m.tobytes() for m in mats)
    t0 = time.perf_counter()
    orders = [greedy_row_order(m) for m in mats]
    reorder_s = time.perf_counter() - t0
    ordered = b"".join(m[o.astype(np.int64)].tobytes() for m, o in zip(mats, orders)) + b"".join(
        o.tobytes() for o in orders
    )
    t0 = time.perf_counter()
    for m, o in zip(mats, orders):
        assert np.array_equal(invert_row_order(m[o.astype(np.int64)], o), m)
    restore_s = time.perf_counter() - t0
    a, b = len(brotli.compress(plain, quality=11)), len(brotli.compress(ordered, quality=11))
    row = f"| frontier-shaped block (Gaussian int6) | {len(plain):,} | {a:,} | {b:,} | {b / a - 1:+.2%} | {'no lrzip binary' if not shutil.which('lrzip') else ''} |"
    return row, reorder_s, restore_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="+", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    lines = [
        "| stream | raw bytes | brotli-11, rows as packed | brotli-11, rows reordered (+perm) | change | lrzip (plain / reordered) |",
        "|---|---|---|---|---|---|",
    ]
    for path in args.artifacts:
        lines += artifact_rows(path)
    row, reorder_s, restore_s = frontier_block()
    lines += [row, f"| (frontier-shaped block: reorder {reorder_s:.1f} s, restore {restore_s:.2f} s) | | | | | |"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
