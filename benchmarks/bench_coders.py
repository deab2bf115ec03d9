"""Coders on real quantized streams (issue 12): the exact streams an artifact stores (per-group
int codes, the fp16 stream of scales and small tensors, the rest), each coded with brotli-11,
lzma-9e, zstd-22, PPMd (pyppmd) and an order-0 range coder with a fitted prior per stream
(constriction's rANS; the prior is the stream's symbol histogram, stored as 4-byte counts), with
the order-0 entropy as the floor a context-free coder cannot beat. One table, brotli-11 = 1.000.

Then, per artifact, the int code matrices of each group (attn, MLP, hash, embedding) under
context models: ideal (adaptive KT) code lengths of order-0, per-tensor order-0, neighbour
magnitudes (left, above), a column-scale class stored per column or estimated from the rows above
(adaptive), and a real adaptive range coder for the column-class model (bit-exact roundtrip
checked), with encode/decode seconds. A synthetic frontier-shaped block (512 wide, GPTQ int6 of
random weights) is a secondary check of the coders at the frontier's matrix sizes.

    pip install constriction pyppmd     # not pgolf dependencies: measured before adopting them
    python benchmarks/bench_coders.py runs/<RUN_ID>/final_model.mixed.pglf [--more OTHER.pglf ...]
        [--no-frontier-like] [--out benchmarks/results/coders]
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
from pgolf.quant.pack import restore_layouts
from pgolf.quant.scheme_mixed import mixed_streams, role_key
from pgolf.quant.state import QuantizedState


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
        lines.append(
            f"| {r['stream']} | {r['raw']:,} | {r['brotli-11']:,} | "
            + " | ".join(f"{r[n] / r['brotli-11']:.3f}" for n in names)
            + " |"
        )
        for k in totals:
            totals[k] += r[k]
    lines.append(
        f"| all | {int(totals['raw']):,} | {int(totals['brotli-11']):,} | "
        + " | ".join(f"{totals[n] / totals['brotli-11']:.3f}" for n in names)
        + " |"
    )
    mb = totals["raw"] / 1e6
    speed = {n: sum(r[n + "_s"] for r in rows) for n in ("brotli-11", "lzma-9e", "zstd-22", "ppmd-o6", "rans-o0")}
    lines.append("")
    lines.append(
        "encode seconds for these "
        + f"{mb:.2f} MB (x{36 / mb:.0f} for a 36 MB frontier payload): "
        + ", ".join(f"{k} {v:.2f}" for k, v in speed.items())
        + f"; rANS decode {sum(r['rans-o0_dec_s'] for r in rows):.2f}"
    )
    return "\n".join(lines)


# ---- context models on the int code matrices (issue 12 item 4, second part) -------------------
# Ideal code lengths are adaptive Krichevsky-Trofimov costs (Dirichlet(1/2) per context, closed
# form, order-independent): what an adaptive coder pays, model learning included, so no header
# is added except where a model stores side information (a class per column).
CLASS_STEP = 0.25  # log2 width of a column-scale class
N_CLASSES = 8


def code_groups(path: Path) -> dict[str, list[np.ndarray]]:
    """group -> int code matrices (row layout, rows = output channels) of every intN tensor."""
    arrays, meta = read_artifact(path)
    arrays = restore_layouts(arrays, meta["entries"])
    out: dict[str, list[np.ndarray]] = {}
    for name in sorted(meta["entries"], key=role_key):
        e = meta["entries"][name]
        if e["kind"] == "intq":
            out.setdefault(f"{e['group']} (int{e['bits']})", []).append(arrays[name + ".q"].astype(np.int64))
    return out


def kt_bytes(ctx: np.ndarray, sym: np.ndarray, k: int) -> float:
    from scipy.special import gammaln

    c = np.bincount(ctx * k + sym, minlength=(int(ctx.max()) + 1) * k).reshape(-1, k)
    n = c.sum(1)
    bits = (gammaln(n + k / 2) - gammaln(k / 2)).sum() - (gammaln(c + 0.5) - gammaln(0.5)).sum()
    return float(bits / np.log(2) / 8)


def col_classes(q: np.ndarray, adaptive: bool) -> np.ndarray:
    """Per-symbol class of its column's scale: log2 RMS of the whole column (stored: 3 bits per
    column) or of the rows above it in that column (adaptive: the decoder knows them), 8 classes
    of 0.25 octave centred on the matrix's RMS (adaptive: the RMS of the rows above)."""
    q2 = q.astype(np.float64) ** 2
    if adaptive:
        return adaptive_class(np.cumsum(q2, 0) - q2, np.arange(q.shape[0])[:, None])
    rms = np.sqrt(q2.mean(0) + 0.05)
    c = np.round(np.log2(rms / np.sqrt(q2.mean() + 0.05)) / CLASS_STEP) + N_CLASSES // 2
    return np.broadcast_to(np.clip(c, 0, N_CLASSES - 1).astype(np.int64)[None, :], q.shape)


def adaptive_class(seen: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Classes from `seen` (sum of squared codes of the n rows above, per column)."""
    tot = seen.sum(-1, keepdims=True) / np.maximum(n * seen.shape[-1], 1)
    tot = np.where(n == 0, 1.0, tot)
    rms = np.sqrt((seen + 4.0 * tot) / (n + 4.0) + 0.05)  # 4 rows of prior at the running RMS
    c = np.round(np.log2(rms / np.sqrt(tot + 0.05)) / CLASS_STEP) + N_CLASSES // 2
    return np.clip(c, 0, N_CLASSES - 1).astype(np.int64)


def neighbour(q: np.ndarray, axis: int) -> np.ndarray:
    """Magnitude bucket (0, 1, 2, 3-4, 5-7, 8+) of the code left of (axis 1) or above (axis 0) each code."""
    a = np.abs(q)
    prev = np.zeros_like(a)
    if axis == 1:
        prev[:, 1:] = a[:, :-1]
    else:
        prev[1:] = a[:-1]
    return np.searchsorted(np.array([0.5, 1.5, 2.5, 4.5, 7.5]), prev, side="right")


def context_models(mats: list[np.ndarray]) -> dict[str, float]:
    """Ideal bytes of each model on one group's matrices (row-major: contexts from left / above)."""
    sym = np.concatenate([q.ravel() for q in mats])
    off = sym.min()
    sym = sym - off
    k = int(sym.max()) + 1
    cat = lambda f: np.concatenate([f(q).ravel() for q in mats])  # noqa: E731
    left, up = cat(lambda q: neighbour(q, 1)), cat(lambda q: neighbour(q, 0))
    stored, adapt = cat(lambda q: col_classes(q, False)), cat(lambda q: col_classes(q, True))
    side = sum(q.shape[1] for q in mats) * np.log2(N_CLASSES) / 8
    per_tensor = np.concatenate([np.full(q.size, i) for i, q in enumerate(mats)])
    return {
        "ideal order-0": kt_bytes(np.zeros_like(sym), sym, k),
        "ideal per-tensor order-0": kt_bytes(per_tensor, sym, k),
        "ideal abs left": kt_bytes(left, sym, k),
        "ideal abs above": kt_bytes(up, sym, k),
        "ideal abs left, abs above": kt_bytes(left * 6 + up, sym, k),
        "ideal column class, stored": kt_bytes(stored, sym, k) + side,
        "ideal column class, adaptive": kt_bytes(adapt, sym, k),
        "ideal column class adaptive + abs left": kt_bytes(adapt * 6 + left, sym, k),
    }


def colctx_code(mats: list[np.ndarray]) -> tuple[int, float, float]:
    """A real coder for 'column class, adaptive', fully adaptive (nothing stored but the symbol
    range): row by row, each symbol's probabilities are the KT estimate (counts + 1/2) of its
    column class over all rows coded before, range coded with constriction one row per call.
    Returns (bytes, encode s, decode s); asserts the roundtrip is bit-exact."""
    import constriction

    sym = np.concatenate([q.ravel() for q in mats])
    off, k = int(sym.min()), int(sym.max() - sym.min()) + 1
    model = constriction.stream.model.Categorical(perfect=False)

    def rows(coder, mats_in):
        counts = np.full((N_CLASSES, k), 0.5)
        for q in mats_in:
            seen = np.zeros(q.shape[1])
            for r in range(q.shape[0]):
                c = adaptive_class(seen, np.array(r))
                p = counts[c] / counts[c].sum(1, keepdims=True)
                row = yield coder, p  # the caller codes one row with these probabilities
                np.add.at(counts, (c, row), 1.0)
                seen += (row + off).astype(np.float64) ** 2

    t0 = time.perf_counter()
    enc = constriction.stream.queue.RangeEncoder()
    it = rows(enc, mats)
    _, p = next(it)
    for row in (q[r] - off for q in mats for r in range(q.shape[0])):
        enc.encode(row.astype(np.int32), model, p)
        try:
            _, p = it.send(row)
        except StopIteration:
            pass
    words = enc.get_compressed()
    t1 = time.perf_counter()
    dec = constriction.stream.queue.RangeDecoder(words)
    it, out = rows(dec, mats), []
    _, p = next(it)
    while True:
        out.append(dec.decode(model, p).astype(np.int64))
        try:
            _, p = it.send(out[-1])
        except StopIteration:
            break
    t2 = time.perf_counter()
    assert np.array_equal(np.concatenate(out) + off, sym), "context coder roundtrip failed"
    return int(words.nbytes) + 2, t1 - t0, t2 - t1


def frontier_like(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Secondary check only: one `frontier` block (512 wide, MLP x4) of heavy-tailed random
    weights with lognormal input-channel scales, GPTQ-quantized (int6, sdclip k 13 / 11.5) against
    the Hessian of random inputs with lognormal channel scales. Random weights carry none of a
    trained model's structure; this measures the coders at the frontier's matrix sizes."""
    import torch

    from pgolf.quant.gptq import gptq_codes
    from pgolf.quant.lowbit import fp16_row_scale, row_clip

    torch.manual_seed(seed)  # StudentT samples from the global generator
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[np.ndarray]] = {}
    shapes = {
        "attn (int6)": [(512, 512, 13.0), (256, 512, 13.0), (256, 512, 13.0), (512, 512, 13.0)],
        "mlp (int6)": [(2048, 512, 11.5), (512, 2048, 11.5)],
    }
    for group, mats in shapes.items():
        for rows, cols, k in mats:
            chan = torch.exp(0.5 * torch.randn(cols, generator=g))
            x = torch.randn(4 * cols, cols, generator=g) * chan
            t = torch.distributions.StudentT(5.0).sample((rows, cols))
            w = t * torch.exp(0.2 * torch.randn(cols, generator=g)) * 0.02
            scale = fp16_row_scale(row_clip(w, 6, "sdclip", k), 6)
            codes = gptq_codes(w, x.T @ x / x.shape[0], scale, 6)
            out.setdefault(group, []).append(codes.numpy().astype(np.int64))
    return out


def measure_groups(groups: dict[str, list[np.ndarray]]) -> list[dict]:
    import brotli

    rows = []
    for label, mats in groups.items():
        row: dict = {"stream": label, "raw": sum(q.size for q in mats)}
        t0 = time.perf_counter()
        by_layout = [
            len(
                brotli.compress(
                    b"".join(np.ascontiguousarray(f(q)).astype(np.int8).tobytes() for q in mats), quality=11, lgwin=24
                )
            )
            for f in (lambda q: q, lambda q: q.T)
        ]
        row["brotli-11"], row["brotli-11_s"] = min(by_layout), (time.perf_counter() - t0) / 2
        data = b"".join(q.astype(np.int8).tobytes() for q in mats)
        row["rANS order-0"], row["rANS order-0_s"], row["rANS order-0_dec_s"] = rans_bytes(data)
        row.update(context_models(mats))
        row["range coder, column class adaptive"], row["colctx_s"], row["colctx_dec_s"] = colctx_code(mats)
        rows.append(row)
    return rows


GROUP_COLS = [
    "rANS order-0",
    "ideal order-0",
    "ideal per-tensor order-0",
    "ideal abs left",
    "ideal abs above",
    "ideal abs left, abs above",
    "ideal column class, stored",
    "ideal column class, adaptive",
    "ideal column class adaptive + abs left",
    "range coder, column class adaptive",
]


def group_table(title: str, rows: list[dict]) -> str:
    """One table of code groups, brotli-11 (best of row/column layout) = 1.000, with an int6 total."""
    lines = [
        f"{title}",
        "",
        "| model | " + " | ".join(f"{r['stream']}" for r in rows) + " | all int6 | attn+MLP int6 |",
        "|---|" + "---|" * (len(rows) + 2),
    ]
    six = [r for r in rows if "int6" in r["stream"]]
    am = [r for r in six if r["stream"].startswith(("attn", "mlp"))]  # the frontier's int6 streams
    lines.append(
        "| symbols / brotli-11 bytes | "
        + " | ".join(f"{r['raw']:,} / {r['brotli-11']:,}" for r in rows)
        + "".join(f" | {sum(r['raw'] for r in g):,} / {sum(r['brotli-11'] for r in g):,}" for g in (six, am))
        + " |"
    )
    for c in GROUP_COLS:
        lines.append(
            f"| {c} | "
            + " | ".join(f"{r[c] / r['brotli-11']:.4f}" for r in rows)
            + "".join(f" | {sum(r[c] for r in g) / max(sum(r['brotli-11'] for r in g), 1):.4f}" for g in (six, am))
            + " |"
        )
    mb = sum(r["raw"] for r in rows) / 1e6
    sec = {
        k: sum(r[k] for r in rows)
        for k in ("brotli-11_s", "rANS order-0_s", "rANS order-0_dec_s", "colctx_s", "colctx_dec_s")
    }
    lines += [
        "",
        f"seconds for these {mb:.2f} M symbols (x{36 / mb:.0f} for 36 MB): brotli-11 encode {sec['brotli-11_s']:.2f}; "
        f"rANS order-0 encode {sec['rANS order-0_s']:.3f} / decode {sec['rANS order-0_dec_s']:.3f}; "
        f"column-class range coder encode {sec['colctx_s']:.2f} / decode {sec['colctx_dec_s']:.2f} (row-by-row loop)",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--more", type=Path, nargs="*", default=[], help="further artifacts: code-group tables only")
    p.add_argument("--no-frontier-like", action="store_true")
    args = p.parse_args()
    rows = measure(stream_bytes(args.artifact))
    text = table(rows)
    groups = {str(args.artifact): measure_groups(code_groups(args.artifact))}
    for extra in args.more:
        groups[str(extra)] = measure_groups(code_groups(extra))
    if not args.no_frontier_like:
        groups["frontier-like (synthetic)"] = measure_groups(frontier_like())
    for name, grows in groups.items():
        text += "\n\n" + group_table(f"Code groups of {name}; bytes relative to brotli-11 = 1.000:", grows)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"streams": rows, "groups": groups}, indent=2) + "\n")
        (args.out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
