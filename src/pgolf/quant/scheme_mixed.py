"""`mixed`: per tensor group (embed / attn / mlp / hash) its own bit width and clip rule, GPTQ when
Hessians are given, LQER on the tensors that gain most, fp16 for the rest (pgolf.quant.mixed).

Streams: one of codes per tensor group (tensors ordered by role, then layer, as PR #1855's
per-group path; each group row- or column-major, whichever a zstd probe finds smaller under
quant.transform=auto), one of fp16 values (scales, passthrough tensors; byte-shuffled when that
is smaller) and one for the rest. `bitpack` and `reorder` (greedy row similarity order) are
explicit choices: measured, they did not win on trained weights (BENCHMARKS.md).

Size model: pgolf.quant.plan (code entropy of a generalized normal on the clip grid, measured
coder overheads and stream ratios), the header exactly (the packer runs on zero arrays of the
planned shapes), LQER factors at their measured bits per code.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.quant.container import Stream, encode_stream, read_header
from pgolf.quant.mixed import FP16_BITS, group_bits_and_k, quantize_mixed_arrays, treatment
from pgolf.quant.pack import pack
from pgolf.quant.plan import (
    FP16_STREAM_RATIO,
    FP16_WEIGHT_RATIO,
    GENNORM_BETA,
    LQER_CODE_BITS,
    Layout,
    clip_sigmas,
    intq_bytes,
)
from pgolf.quant.registry import Scheme
from pgolf.quant.state import QuantizedState, check_groups
from pgolf.quant.transforms import apply_layout, greedy_row_order

CODE_GROUPS = ("embed", "attn", "mlp")  # one code stream each, in this order (hash codes go with "other")
LAYOUT_PROBE_BYTES = 1 << 20  # rows-vs-cols is decided on this many bytes of a code group...
LAYOUT_PROBE_CODEC = "zstd"  # ...compressed with this codec


def role_key(name: str) -> tuple[str, int]:
    """('attn.c_q.weight', 3) for 'blocks.3.attn.c_q.weight'; (name, -1) for non-block tensors."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return ".".join(parts[2:]), int(parts[1])
    return name, -1


def code_tensors(entries: dict[str, dict], group: str) -> list[str]:
    """intq tensors of a group, by role then layer (like matrices next to each other)."""
    names = [n for n, e in entries.items() if e["kind"] == "intq" and e["group"] == group]
    return sorted(names, key=role_key)


def _code_transforms(qcfg: QuantConfig, entries: dict[str, dict], names: list[str]) -> tuple[str, ...]:
    bits = {entries[n]["bits"] for n in names}
    if qcfg.transform == "bitpack" and len(bits) == 1 and min(bits) < 8:
        return (f"bitpack{min(bits)}",)
    return ("none",)  # auto: bit packing never won on trained weights (BENCHMARKS.md), so not tried


def _layouts(qcfg: QuantConfig) -> tuple[str, ...]:
    return {"auto": ("rows", "cols"), "transpose": ("cols",)}.get(qcfg.transform, ("rows",))


def _choose_layout(arrays: dict, names: list[str], layouts: tuple[str, ...]) -> tuple[str, dict[str, int]]:
    """The layout of a code group whose first LAYOUT_PROBE_BYTES compress smallest under
    LAYOUT_PROBE_CODEC (a cheap stand-in for trying every codec on every layout), and the probe sizes."""
    if len(layouts) == 1:
        return layouts[0], {}
    probes = {}
    for layout in layouts:
        raw = b"".join(apply_layout(arrays[n + ".q"], layout).tobytes() for n in names)[:LAYOUT_PROBE_BYTES]
        probes[layout] = len(encode_stream(raw, (LAYOUT_PROBE_CODEC,), ("none",))[3])
    return min(layouts, key=lambda lay: (probes[lay], layouts.index(lay))), probes


def _apply_reorder(arrays: dict, entries: dict, names: list[str]) -> None:
    """Greedy similarity order of each code matrix's rows; the permutation is stored (uint16)."""
    for n in names:
        order = greedy_row_order(arrays[n + ".q"])
        arrays[n + ".q"] = np.ascontiguousarray(arrays[n + ".q"][order.astype(np.int64)])
        arrays[n + ".perm"] = order
        entries[n]["perm"] = True


def mixed_streams(qs: QuantizedState, qcfg: QuantConfig) -> tuple[dict, dict, list[Stream], dict[str, dict]]:
    """(stored arrays, entries, streams, layout probe sizes by stream label) of a mixed-scheme state."""
    arrays, entries = dict(qs.arrays), {n: dict(e) for n, e in qs.entries.items()}
    streams, probes, taken = [], {}, set()
    for group in CODE_GROUPS:
        names = code_tensors(entries, group)
        if not names:
            continue
        if qcfg.transform == "reorder":
            _apply_reorder(arrays, entries, names)
        layout, probes[f"q.{group}"] = _choose_layout(arrays, names, _layouts(qcfg))
        for n in names:
            arrays[n + ".q"] = apply_layout(arrays[n + ".q"], layout)
            entries[n]["layout"] = layout
        streams.append(
            Stream(qcfg.compressor, [n + ".q" for n in names], _code_transforms(qcfg, entries, names), f"q.{group}")
        )
        taken.update(n + ".q" for n in names)
    rest = sorted(n for n in arrays if n not in taken)
    half = [n for n in rest if arrays[n].dtype == np.float16]
    shuffle = ("none", "shuffle2") if qcfg.transform in ("auto", "shuffle") else ("none",)
    streams.append(Stream(qcfg.compressor, half, shuffle, "fp16"))
    other = [n for n in rest if arrays[n].dtype != np.float16]
    if other:
        streams.append(Stream(qcfg.compressor, other, ("none",), "other"))
    return arrays, entries, streams, probes


def _lqer_choice(layout: Layout, qcfg: QuantConfig) -> list[str]:
    """The planner's guess of the LQER tensors: the lqer_top_k largest quantized matrices."""
    if not qcfg.lqer_rank:
        return []
    intq = [n for n, (s, g) in layout.items() if treatment(g, s, True, qcfg) == "intq"]
    return sorted(intq, key=lambda n: (-sum(layout[n][0]), n))[: qcfg.lqer_top_k]


def _planned_state(layout: Layout, qcfg: QuantConfig) -> QuantizedState:
    """Zero arrays with the names, dtypes and shapes the mixed scheme will store (LQER on the
    lqer_top_k largest matrices), for an exact header size."""
    qs = QuantizedState()
    lqer = set(_lqer_choice(layout, qcfg))
    for name, (shape, group) in layout.items():
        kind = treatment(group, shape, True, qcfg)
        entry = {"kind": kind, "dtype": "float32", "shape": list(shape)}
        if kind == "raw":
            qs.arrays[name] = np.zeros(shape, dtype=np.float16)
        elif kind == "int8_tensor":
            qs.arrays[name + ".q"], qs.arrays[name + ".s"] = np.zeros(shape, np.int8), np.zeros((), np.float32)
        else:
            bits, _ = group_bits_and_k(qcfg, group)
            entry.update(bits=bits, group=group)
            qs.arrays[name + ".q"], qs.arrays[name + ".s"] = np.zeros(shape, np.int8), np.zeros(shape[0], np.float16)
            if name in lqer:
                entry["lqer"] = qcfg.lqer_rank
                for part, rows in (("lqa", shape[0]), ("lqb", shape[1])):
                    qs.arrays[f"{name}.{part}"] = np.zeros((qcfg.lqer_rank, rows), np.int8)
                    qs.arrays[f"{name}.{part}s"] = np.zeros(qcfg.lqer_rank, np.float16)
        qs.entries[name] = entry
    return qs


def planned_header_bytes(model_cfg: ModelConfig, layout: Layout, qcfg: QuantConfig) -> tuple[int, int]:
    """(header bytes, stream count) of the artifact the real packer writes for this config."""
    qs = _planned_state(layout, qcfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.pglf"
        pack(qs, asdict(model_cfg), replace(qcfg, compressor="zlib", transform="none"), path)
        header = read_header(path)
    return int(header["header_bytes"]), len(header["streams"])


def _tensor_bytes(group: str, shape: tuple[int, ...], qcfg: QuantConfig, beta: float | None = None) -> float:
    """Predicted compressed bytes of one tensor under the mixed scheme (LQER not included)."""
    kind = treatment(group, shape, True, qcfg)
    numel = int(np.prod(shape, dtype=np.int64))
    if kind == "raw":
        return numel * 2.0 * (FP16_WEIGHT_RATIO if numel > qcfg.keep_float_max_numel else FP16_STREAM_RATIO)
    if kind == "int8_tensor":
        return numel + 4.0
    bits, k = group_bits_and_k(qcfg, group)
    beta = beta or GENNORM_BETA.get(group, 2.0)
    return intq_bytes(shape[0], shape[1], bits, clip_sigmas(qcfg, bits, k, shape[1], beta), group, beta)


def _group_width(qcfg: QuantConfig, group: str) -> str:
    bits, _ = group_bits_and_k(qcfg, group)
    return "fp16" if bits >= FP16_BITS else f"int{bits}"


def _add_lqer(layout: Layout, qcfg: QuantConfig, nbytes: dict[str, float]) -> None:
    """LQER factors of the lqer_top_k largest matrices (the planner's guess of which gain most)."""
    for name in _lqer_choice(layout, qcfg):
        shape, g = layout[name]
        codes = qcfg.lqer_rank * sum(shape)
        nbytes[g] = nbytes.get(g, 0.0) + codes * LQER_CODE_BITS / 8.0 + 4.0 * qcfg.lqer_rank * FP16_STREAM_RATIO


class MixedScheme(Scheme):
    name = "mixed"
    summary = "per-group intN codes (SDClip/percentile/search clips), GPTQ, LQER; streams per group"
    fields = (
        "attn_bits",
        "mlp_bits",
        "embed_bits",
        "hash_bits",
        "clip",
        "gptq",
        "lqer_rank",
        "lqer_top_k",
        "transform",
        "compressor",
        "keep_float_max_numel",
    )
    uses_hessians, fits_cap, shape_term, spreads_over_ranks = True, True, True, True

    def quantize(self, state, groups, qcfg, hessians=None, deadline=None) -> QuantizedState:
        check_groups(state, groups)
        arrays, entries, info = quantize_mixed_arrays(state, groups, qcfg, hessians, deadline)
        return QuantizedState(arrays, entries, info)

    def streams(self, qs, qcfg):
        return mixed_streams(qs, qcfg)

    def tensor_bytes(self, group, shape, qcfg, beta) -> float:
        return _tensor_bytes(group, shape, qcfg, beta)

    def tensor_width(self, group, shape, qcfg) -> str:
        return _group_width(qcfg, group) if treatment(group, shape, True, qcfg) == "intq" else "fp16"

    def planned_extra_bytes(self, model_cfg, layout, qcfg, nbytes) -> int:
        header, _ = planned_header_bytes(model_cfg, layout, qcfg)
        _add_lqer(layout, qcfg, nbytes)
        return header
