"""Post-training quantization: state dict in, QuantizedState out (and back), plus packing into
the artifact container and loading of the official script's checkpoints.

The `int8` scheme is the official one, numerically identical: 2-D float tensors larger than
65,536 elements get per-row int8 with a per-row clip at the 99.99984th percentile of |w| and an
fp16 scale; other large float tensors a per-tensor int8 scale; small float tensors stay float
(control tensors fp32, others fp16); non-float tensors pass through unchanged. It is written as
one stream with one codec.

The `mixed` scheme (pgolf.mixedquant) is per-group intN + GPTQ + LQER. Its artifact has one
stream of codes per tensor group (embed, attn, mlp; tensors ordered by role, then layer, as PR
#1855's per-group path), one of fp16 values (scales, passthrough tensors) and one for the rest.
With `quant.compressor` auto every codec is measured per stream and the smallest kept; with
`quant.transform` auto each code group is stored row- or column-major (whichever a zstd probe
finds smaller) and the fp16 stream byte-shuffled if that is smaller. `bitpack` and `reorder`
(greedy row similarity order) are explicit choices: measured, they did not win on trained
weights (BENCHMARKS.md). Layouts, transforms and codecs are recorded in the header, so unpacking
is deterministic and bit-exact.
"""

from __future__ import annotations

import io
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.artifact import AUTO_CODECS, ArtifactError, Stream, StreamReport, encode_stream, read_artifact, write_artifact_report
from pgolf.config import QuantConfig
from pgolf.lowbit import INT8_CLIP_Q, INT8_MAX, quantize_int8_tensor
from pgolf.mixedquant import quantize_mixed_arrays, restore_intq
from pgolf.model import CONTROL_PATTERNS
from pgolf.sizing import tensor_group
from pgolf.transforms import apply_layout, greedy_row_order, invert_layout, invert_row_order

ARTIFACT_QUANT_FORMAT = "pgolf-quant-v1"
CODE_GROUPS = ("embed", "attn", "mlp")  # one code stream each, in this order
LAYOUT_PROBE_BYTES = 1 << 20  # rows-vs-cols is decided on this many bytes of a code group...
LAYOUT_PROBE_CODEC = "zstd"  # ...compressed with this codec


@dataclass
class QuantizedState:
    """Stored arrays plus, per original tensor, how to rebuild it ("kind", dtype, shape, ...)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what quantization did (not stored)

    def payload_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _dtype_str(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def is_control_name(name: str) -> bool:
    return any(p in name for p in CONTROL_PATTERNS)


def quantize_int8_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-row int8: (int8 q, fp16 scale) for a 2-D tensor."""
    t32 = t.float()
    clip = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
    clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
    scale = (clip / INT8_MAX).clamp_min(1.0 / INT8_MAX)
    q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.to(torch.float16).contiguous()


def _passthrough(qs: QuantizedState, name: str, t: Tensor) -> None:
    """Small float tensors: control tensors in fp32, the rest fp16; non-floats unchanged."""
    entry = {"kind": "raw", "dtype": _dtype_str(t), "shape": list(t.shape)}
    if t.is_floating_point():
        store = torch.float32 if is_control_name(name) else torch.float16
        t = t.to(store)
    qs.arrays[name] = _np(t)
    qs.entries[name] = entry


def quantize_int8(state: dict[str, Tensor], qcfg: QuantConfig) -> QuantizedState:
    """The official int8 scheme."""
    qs = QuantizedState()
    for name, t in state.items():
        t = t.detach().cpu()
        if not t.is_floating_point() or t.numel() <= qcfg.keep_float_max_numel:
            _passthrough(qs, name, t)
            continue
        q, s = quantize_int8_rows(t) if t.ndim == 2 else quantize_int8_tensor(t)
        kind = "int8_row" if t.ndim == 2 else "int8_tensor"
        qs.arrays[name + ".q"], qs.arrays[name + ".s"] = _np(q), _np(s)
        qs.entries[name] = {"kind": kind, "dtype": _dtype_str(t), "shape": list(t.shape)}
    return qs


def _restore(name: str, entry: dict, arrays: dict[str, np.ndarray]) -> Tensor:
    kind, dtype = entry["kind"], getattr(torch, entry["dtype"])
    if kind == "raw":
        return torch.from_numpy(arrays[name].copy()).to(dtype)
    if kind == "intq":
        return restore_intq(name, entry, arrays).to(dtype).contiguous()
    q = torch.from_numpy(arrays[name + ".q"].copy()).float()
    s = torch.from_numpy(arrays[name + ".s"].copy()).float()
    if kind == "int8_row":
        return (q * s.view(q.shape[0], *([1] * (q.ndim - 1)))).to(dtype).contiguous()
    if kind == "int8_tensor":
        return (q * float(s.item())).to(dtype).contiguous()
    raise ArtifactError(f"tensor {name!r}: unknown quantization kind {kind!r}")


def dequantize(qs: QuantizedState) -> dict[str, Tensor]:
    """Rebuild a float state dict from a QuantizedState (dispatch on each entry's kind)."""
    out = {}
    for name, entry in qs.entries.items():
        try:
            t = _restore(name, entry, qs.arrays)
        except KeyError as exc:
            raise ArtifactError(f"tensor {name!r}: stored array {exc} is missing") from None
        if list(t.shape) != list(entry["shape"]):
            raise ArtifactError(f"tensor {name!r}: decoded shape {list(t.shape)} != {entry['shape']}")
        out[name] = t
    return out


def quantize_mixed(state: dict[str, Tensor], qcfg: QuantConfig, hessians: dict[str, Tensor] | None = None,
                   deadline: float | None = None) -> QuantizedState:
    """Per-group intN (+ GPTQ with Hessians, + LQER): see pgolf.mixedquant."""
    arrays, entries, info = quantize_mixed_arrays(state, qcfg, hessians, deadline)
    return QuantizedState(arrays, entries, info)


QUANT_SCHEMES = {"int8": quantize_int8, "mixed": quantize_mixed}


def quantize(state: dict[str, Tensor], qcfg: QuantConfig, hessians: dict[str, Tensor] | None = None,
             deadline: float | None = None) -> QuantizedState:
    """Apply the configured scheme. `hessians` (name -> H, from pgolf.gptq.collect_hessians) turn
    on GPTQ when quant.gptq is set; without them the mixed scheme rounds to nearest. `deadline`
    (a time.perf_counter() value) bounds GPTQ time: later tensors fall back to rounding."""
    if qcfg.scheme not in QUANT_SCHEMES:
        raise ValueError(f"quant.scheme={qcfg.scheme!r}: expected one of {sorted(QUANT_SCHEMES)}")
    if qcfg.scheme == "int8":
        return quantize_int8(state, qcfg)
    return QUANT_SCHEMES[qcfg.scheme](state, qcfg, hessians, deadline)


class SizeCapError(ValueError):
    """Artifact + code bytes over the size cap: the file is not kept as a submission."""


@dataclass
class PackResult:
    path: Path
    bytes: int
    codec: str  # the codec used ("a+b" when streams differ)
    codec_sizes: dict[str, int]  # artifact size had every stream used this codec (measured)
    payload_bytes: int  # uncompressed stored arrays
    streams: list[StreamReport] = field(default_factory=list)
    seconds: float = 0.0


def role_key(name: str) -> tuple[str, int]:
    """('attn.c_q.weight', 3) for 'blocks.3.attn.c_q.weight'; (name, -1) for non-block tensors."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return ".".join(parts[2:]), int(parts[1])
    return name, -1


def code_tensors(entries: dict[str, dict], group: str) -> list[str]:
    """intq tensors of a group, by role then layer (like matrices next to each other)."""
    names = [n for n, e in entries.items() if e["kind"] == "intq" and e.get("group", tensor_group(n)) == group]
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
        streams.append(Stream(qcfg.compressor, [n + ".q" for n in names], _code_transforms(qcfg, entries, names),
                              f"q.{group}"))
        taken.update(n + ".q" for n in names)
    rest = sorted(n for n in arrays if n not in taken)
    half = [n for n in rest if arrays[n].dtype == np.float16]
    shuffle = ("none", "shuffle2") if qcfg.transform in ("auto", "shuffle") else ("none",)
    streams.append(Stream(qcfg.compressor, half, shuffle, "fp16"))
    other = [n for n in rest if arrays[n].dtype != np.float16]
    if other:
        streams.append(Stream(qcfg.compressor, other, ("none",), "other"))
    return arrays, entries, streams, probes


def _codec_totals(size: int, reports: list[StreamReport]) -> dict[str, int]:
    """Artifact bytes had every stream used codec c (best transform/layout for c), measured."""
    header = size - sum(r.stored for r in reports)
    totals: dict[str, int] = {}
    for codec in AUTO_CODECS:
        best = []
        for r in reports:
            sizes = [v for k, v in r.trials.items() if k.endswith("+" + codec)]
            best.append(min(sizes) if sizes else None)
        if all(b is not None for b in best):
            totals[codec] = header + sum(best)
    return totals


def check_cap(path: Path, artifact_bytes: int, code_bytes: int, cap: int) -> None:
    """Refuse an over-cap artifact: rename it to *.over_cap and raise SizeCapError saying by how much."""
    total = artifact_bytes + code_bytes
    if total <= cap:
        return
    kept = path.with_name(path.name + ".over_cap")
    path.replace(kept)
    raise SizeCapError(f"artifact {artifact_bytes:,} + code {code_bytes:,} = {total:,} bytes is {total - cap:,} bytes "
                       f"over the cap of {cap:,}; not written as a submission (kept as {kept})")


def pack(qs: QuantizedState, model_cfg: dict, qcfg: QuantConfig, path: str | Path,
         code_bytes: int | None = None) -> PackResult:
    """Write a QuantizedState + model config as one artifact; `auto` picks the smallest codec
    (and, for the mixed scheme, transform and layout) per stream by measuring all. With
    `code_bytes` given, an artifact whose total exceeds quant.size_cap_bytes is refused
    (SizeCapError; the file is renamed *.over_cap)."""
    t0 = time.perf_counter()
    if qcfg.scheme == "int8":
        arrays, entries = qs.arrays, qs.entries
        streams = [Stream(qcfg.compressor, sorted(arrays), ("none",), "all")]
    else:
        arrays, entries, streams, _ = mixed_streams(qs, qcfg)
    meta = {"format": ARTIFACT_QUANT_FORMAT, "model": model_cfg, "scheme": qcfg.scheme, "entries": entries}
    size, reports = write_artifact_report(path, arrays, meta, streams)
    if code_bytes is not None:
        check_cap(Path(path), size, code_bytes, qcfg.size_cap_bytes)
    codecs = sorted({r.codec for r in reports if r.raw})
    sizes = _codec_totals(size, reports) or {"+".join(codecs): size}
    return PackResult(Path(path), size, "+".join(codecs) or qcfg.compressor, sizes, qs.payload_bytes(), reports,
                      time.perf_counter() - t0)


def restore_layouts(arrays: dict[str, np.ndarray], entries: dict[str, dict]) -> dict[str, np.ndarray]:
    """Undo per-tensor layouts (transpose, row order) of stored code matrices."""
    out = dict(arrays)
    for name, e in entries.items():
        key = name + ".q"
        if key not in out:
            continue
        if e.get("layout", "rows") != "rows":
            out[key] = invert_layout(out[key], e["layout"])
        if e.get("perm"):
            out[key] = invert_row_order(out[key], out.pop(name + ".perm"))
    return out


def unpack(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an artifact back into a float state dict and its metadata."""
    arrays, meta = read_artifact(path)
    if meta.get("format") != ARTIFACT_QUANT_FORMAT:
        raise ArtifactError(f"{path}: unknown artifact content format {meta.get('format')!r}")
    try:
        arrays = restore_layouts(arrays, meta["entries"])
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: inconsistent tensor layout ({exc})") from exc
    return dequantize(QuantizedState(arrays, meta["entries"])), meta


def load_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """State dict from the official script's `final_model.pt` or `final_model.int8.ptz`.
    Loaded with torch.load(weights_only=True): tensors and plain containers only, no code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    raw = path.read_bytes()
    if path.suffix == ".ptz":
        try:
            raw = zlib.decompress(raw)
        except zlib.error as exc:
            raise ArtifactError(f"{path}: not a zlib-compressed official int8 checkpoint ({exc})") from exc
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise ArtifactError(f"{path}: cannot load as a weights-only torch checkpoint ({exc})") from exc
    if isinstance(obj, dict) and obj.get("__quant_format__") == "int8_clean_per_row_v1":
        return _dequantize_official(obj)
    if isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
        return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}
    raise ArtifactError(f"{path}: not an official state dict or int8 checkpoint")


def _dequantize_official(obj: dict) -> dict[str, Tensor]:
    """Official int8 object -> float32 state dict, rounding through each tensor's recorded
    original dtype first (e.g. bf16 on GPU) so the values equal what the official roundtrip used."""
    out: dict[str, Tensor] = {}
    orig = obj.get("passthrough_orig_dtypes", {})
    for name, q in obj["quantized"].items():
        s = obj["scales"][name]
        if s.ndim > 0:
            w = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        else:
            w = q.float() * float(s.item())
        out[name] = w.to(getattr(torch, obj["dtypes"][name])).float()
    for name, t in obj["passthrough"].items():
        if t.is_floating_point():
            t = t.to(getattr(torch, orig[name])) if name in orig else t
            t = t.float()
        out[name] = t
    return out
