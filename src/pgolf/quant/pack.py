"""Packing: a QuantizedState + model config -> the artifact file (streams of the container), and
back to a float state dict.

The int8 scheme is written as one stream with one codec. The mixed scheme has one stream of codes
per tensor group (embed, attn, mlp; tensors ordered by role, then layer, as PR #1855's per-group
path), one of fp16 values (scales, passthrough tensors) and one for the rest. With
`quant.compressor` auto every codec is measured per stream and the smallest kept: on the whole
stream when it is at most `quant.codec_probe_bytes` long (the CPU proxies' streams), else on a
sample of that many bytes (CODEC_PROBE_CHUNKS pieces spread over the stream), after which the
stream is compressed once with the winner (issue 11: trying brotli-11, lzma-9e, zstd-22 and
zlib on the frontier's ~36 MB took minutes). With `quant.codec_time_budget_s` > 0 a sampled
stream takes the smallest candidate whose predicted time (sample time scaled to the stream) fits
its share of that budget, else the fastest; the choice then depends on the machine's speed. With
`quant.transform` auto each code group is stored row- or column-major (whichever a zstd probe
finds smaller) and the fp16 stream byte-shuffled if that is smaller. `bitpack` and `reorder`
(greedy row similarity order) are explicit choices: measured, they did not win on trained
weights (BENCHMARKS.md). Layouts, transforms and codecs are recorded in the header, so unpacking
is deterministic and bit-exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from pgolf.core.config import QuantConfig
from pgolf.core.errors import PgolfError
from pgolf.quant.codecs import compress
from pgolf.quant.container import (
    ArtifactError,
    Stream,
    StreamReport,
    read_artifact,
    write_artifact_report,
)
from pgolf.quant.registry import auto_codecs, scheme_for
from pgolf.quant.state import QuantizedState, dequantize
from pgolf.quant.transforms import (
    apply_byte_transform,
    bitpack_fits,
    invert_layout,
    invert_row_order,
)

ARTIFACT_QUANT_FORMAT = "pgolf-quant-v1"
CODE_GROUPS = ("embed", "attn", "mlp")  # one code stream each, in this order
LAYOUT_PROBE_BYTES = 1 << 20  # rows-vs-cols is decided on this many bytes of a code group...
LAYOUT_PROBE_CODEC = "zstd"  # ...compressed with this codec
CODEC_PROBE_CHUNKS = 4  # a sampled stream's probe: this many equal pieces, evenly spaced


class SizeCapError(PgolfError, ValueError):
    """Artifact + code bytes over the size cap: the file is not kept as a submission."""


@dataclass
class PackResult:
    path: Path
    bytes: int
    codec: str  # the codec used ("a+b" when streams differ)
    codec_sizes: dict[str, int]  # artifact size had every stream used this codec (sampled streams: predicted)
    payload_bytes: int  # uncompressed stored arrays
    streams: list[StreamReport] = field(default_factory=list)
    seconds: float = 0.0
    sampled: list[str] = field(default_factory=list)  # streams whose codec was chosen on a sample


def _codec_totals(size: int, reports: list[StreamReport]) -> dict[str, int]:
    """Artifact bytes had every stream used codec c (best transform/layout for c), measured."""
    header = size - sum(r.stored for r in reports)
    totals: dict[str, int] = {}
    for codec in auto_codecs():
        best = []
        for r in reports:
            sizes = [v for k, v in r.trials.items() if k.endswith("+" + codec)]
            best.append(min(sizes) if sizes else None)
        if all(b is not None for b in best):
            totals[codec] = header + sum(best)
    return totals


def stream_bytes(arrays: dict[str, np.ndarray], names: list[str]) -> bytes:
    """A stream's raw bytes, laid out as the container stores them (C order, little-endian)."""
    return b"".join(
        np.ascontiguousarray(arrays[n]).astype(arrays[n].dtype.newbyteorder("<"), copy=False).tobytes() for n in names
    )


def probe_sample(raw: bytes, size: int, chunks: int = CODEC_PROBE_CHUNKS) -> bytes:
    """`size` bytes of `raw` as `chunks` equal pieces starting evenly across it."""
    piece = size // chunks
    step = (len(raw) - piece) / max(chunks - 1, 1)
    return b"".join(raw[int(i * step) : int(i * step) + piece] for i in range(chunks))


@dataclass
class CodecProbe:
    """What one candidate (transform, codec) does to a sample, scaled to the whole stream."""

    transform: str
    codec: str
    predicted_bytes: float
    predicted_seconds: float


def probe_codecs(raw: bytes, transforms: tuple[str, ...], size: int) -> list[CodecProbe]:
    """Compress a sample of `size` bytes with every (transform, codec); sizes and seconds scaled
    by len(raw) / len(sample)."""
    sample = probe_sample(raw, size)
    scale = len(raw) / max(len(sample), 1)
    out = []
    for tname in transforms:
        if tname.startswith("bitpack") and not bitpack_fits(raw, int(tname[7:])):
            continue
        mid = apply_byte_transform(sample, tname)
        for codec in auto_codecs():
            t0 = time.perf_counter()
            n = len(compress(mid, codec))
            out.append(CodecProbe(tname, codec, n * scale, (time.perf_counter() - t0) * scale))
    return out


def pick_codec(probes: list[CodecProbe], budget_s: float) -> CodecProbe:
    """The smallest predicted output (first candidate on ties) whose predicted time fits `budget_s`
    (0 = any), else the fastest."""
    fits = [p for p in probes if budget_s <= 0 or p.predicted_seconds <= budget_s]
    if not fits:
        return min(probes, key=lambda p: p.predicted_seconds)
    return min(fits, key=lambda p: p.predicted_bytes)


def sample_auto_streams(
    arrays: dict[str, np.ndarray], streams: list[Stream], qcfg: QuantConfig
) -> tuple[list[Stream], dict[str, dict[str, int]]]:
    """Fix the codec (and transform) of every `auto` stream longer than quant.codec_probe_bytes
    from a sample; returns the streams and, per sampled stream, the predicted bytes per candidate."""
    limit = qcfg.codec_probe_bytes
    raws = {s.label: stream_bytes(arrays, s.names) for s in streams if s.codec == "auto" and limit > 0}
    big = {label: raw for label, raw in raws.items() if len(raw) > limit}
    total = sum(len(r) for r in big.values())
    out, predicted = [], {}
    for st in streams:
        if st.label not in big:
            out.append(st)
            continue
        probes = probe_codecs(big[st.label], tuple(st.transforms), limit)
        best = pick_codec(probes, qcfg.codec_time_budget_s * len(big[st.label]) / total)
        predicted[st.label] = {f"{p.transform}+{p.codec}": int(p.predicted_bytes) for p in probes}
        out.append(Stream(best.codec, st.names, (best.transform,), st.label))
    return out, predicted


def check_cap(path: Path, artifact_bytes: int, code_bytes: int, cap: int) -> None:
    """Refuse an over-cap artifact: rename it to *.over_cap and raise SizeCapError saying by how much."""
    total = artifact_bytes + code_bytes
    if total <= cap:
        return
    kept = path.with_name(path.name + ".over_cap")
    path.replace(kept)
    raise SizeCapError(
        f"artifact {artifact_bytes:,} + code {code_bytes:,} = {total:,} bytes is {total - cap:,} bytes "
        f"over the cap of {cap:,}; not written as a submission (kept as {kept})"
    )


def pack(
    qs: QuantizedState, model_cfg: dict, qcfg: QuantConfig, path: str | Path, code_bytes: int | None = None
) -> PackResult:
    """Write a QuantizedState + model config as one artifact; `auto` picks the smallest codec
    (and, for the mixed scheme, transform and layout) per stream by measuring all (on a sample
    for streams over quant.codec_probe_bytes). With
    `code_bytes` given, an artifact whose total exceeds quant.size_cap_bytes is refused
    (SizeCapError; the file is renamed *.over_cap)."""
    t0 = time.perf_counter()
    arrays, entries, streams, _ = scheme_for(qcfg.scheme).streams(qs, qcfg)
    streams, predicted = sample_auto_streams(arrays, streams, qcfg)
    meta = {"format": ARTIFACT_QUANT_FORMAT, "model": model_cfg, "scheme": qcfg.scheme, "entries": entries}
    size, reports = write_artifact_report(path, arrays, meta, streams)
    if code_bytes is not None:
        check_cap(Path(path), size, code_bytes, qcfg.size_cap_bytes)
    for r in reports:  # a sampled stream's other candidates: predicted sizes
        r.trials = {**predicted.get(r.label, {}), **r.trials}
    codecs = sorted({r.codec for r in reports if r.raw})
    sizes = _codec_totals(size, reports) or {"+".join(codecs): size}
    return PackResult(
        Path(path),
        size,
        "+".join(codecs) or qcfg.compressor,
        sizes,
        qs.payload_bytes(),
        reports,
        time.perf_counter() - t0,
        sorted(predicted),
    )


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


ENTRY_KINDS = ("raw", "intq", "int8_row", "int8_tensor")
ENTRY_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def unpack(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an artifact back into a float state dict and its metadata. Every entry is checked
    against the arrays it names before anything is rebuilt (the header is untrusted input)."""
    arrays, meta = read_artifact(path)
    if meta.get("format") != ARTIFACT_QUANT_FORMAT or not isinstance(meta.get("entries"), dict):
        raise ArtifactError(f"{path}: unknown artifact content format {meta.get('format')!r}")
    try:
        arrays = restore_layouts(arrays, meta["entries"])
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path}: inconsistent tensor layout ({exc})") from None
    for name, entry in meta["entries"].items():
        problem = entry_problem(name, entry, arrays)
        if problem:
            raise ArtifactError(f"{path}: tensor {name!r}: {problem}")
    return dequantize(QuantizedState(arrays, meta["entries"])), meta


def _shape_of(arrays: dict, key: str) -> tuple | None:
    return tuple(arrays[key].shape) if key in arrays else None


def entry_problem(name: str, e: Any, arrays: dict[str, np.ndarray]) -> str:
    """What is wrong with one stored entry ('' when nothing): kind, dtype, shape, and the shapes
    of the arrays it is rebuilt from, so dequantization can neither fail oddly nor allocate more
    than the stored arrays hold."""
    if not isinstance(e, dict) or e.get("kind") not in ENTRY_KINDS or e.get("dtype") not in ENTRY_DTYPES:
        return "unknown kind or dtype"
    shape = e.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return "shape must be a list of non-negative integers"
    shape, kind = tuple(shape), e["kind"]
    if kind == "raw":
        return "" if _shape_of(arrays, name) == shape else f"stored array does not have shape {list(shape)}"
    q, sc = _shape_of(arrays, name + ".q"), _shape_of(arrays, name + ".s")
    if kind == "int8_tensor":
        return "" if q == shape and sc == () else "codes/scale do not match its shape"
    if len(shape) != 2 or q != shape or sc != (shape[0],):
        return "codes/scales do not match its shape"
    if kind == "intq" and (not isinstance(e.get("bits"), int) or not 2 <= e["bits"] <= 8):
        return "bits must be 2..8"
    if e.get("lqer"):
        r = _shape_of(arrays, name + ".lqa")
        rank = r[0] if r else -1
        want = {".lqa": (rank, shape[0]), ".lqas": (rank,), ".lqb": (rank, shape[1]), ".lqbs": (rank,)}
        if any(_shape_of(arrays, name + k) != v for k, v in want.items()):
            return "LQER factors do not match its shape"
    return ""
