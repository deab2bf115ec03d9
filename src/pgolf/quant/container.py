"""The artifact container: named arrays + JSON metadata in one file, loaded without pickle.

Layout (little-endian):

    b"PGLF" | u8 format version | u32 header length | u32 crc32(header) | header | stream 0 | ...

The header is zlib-compressed compact JSON: {"meta": {...}, "streams": [{"label", "codec",
"transform", "n" (stored bytes), "mid" (bytes after the transform, before the codec), "raw"
(decoded bytes), "sha256" (of the stored bytes)}], "tensors": [{"name", "dtype", "shape",
"stream", "offset"}]}. Arrays are stored C-contiguous, little-endian, inside a stream; each
stream's bytes go through one reversible byte transform (pgolf.quant.transforms) and one codec. A
stream may list several candidate codecs/transforms: every combination is measured and the
smallest kept. Every check (magic, version, header crc, total length, per-stream sha256, decoded
lengths, tensor bounds) fails with ArtifactError naming the file and the problem; decoding is
deterministic and bit-exact. Version 1 files (no transforms) still load.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pgolf.core.constants import SIZE_CAP_BYTES
from pgolf.core.errors import PgolfError
from pgolf.quant.codecs import compress, decompress
from pgolf.quant.registry import CodecError, auto_codecs, codecs
from pgolf.quant.transforms import (
    BYTE_TRANSFORMS,
    TransformError,
    apply_byte_transform,
    bitpack_fits,
    invert_byte_transform,
)

ARTIFACT_MAGIC = b"PGLF"
ARTIFACT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PREFIX = struct.Struct("<4sBII")  # magic, version, header length, crc32 (v2: of magic..length + header)
DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "int64", "float16", "float32", "float64", "bool")
# Decoded bytes an artifact may declare in all: the frontier's ~36 MB payload fits many times over,
# and a lying header cannot make a few compressed bytes allocate gigabytes.
MAX_DECODED_BYTES = 16 * SIZE_CAP_BYTES
MAX_NDIM = 8


class ArtifactError(PgolfError, ValueError):
    """A truncated, corrupted, tampered or foreign artifact file."""


@dataclass
class Stream:
    """A group of arrays coded together: one byte transform and one codec, each either fixed or
    chosen as the smallest of several candidates (codec "auto" = every codec)."""

    codec: str
    names: list[str] = field(default_factory=list)
    transforms: tuple[str, ...] = ("none",)
    label: str = ""


@dataclass
class StreamReport:
    """What encoding chose for one stream, and the measured size of every candidate."""

    label: str
    codec: str
    transform: str
    raw: int  # bytes of the arrays
    stored: int  # compressed bytes in the file
    trials: dict[str, int] = field(default_factory=dict)  # "transform+codec" -> bytes


def encode_stream(
    raw: bytes, candidates: tuple[str, ...], transforms: tuple[str, ...]
) -> tuple[str, str, bytes, bytes, dict[str, int]]:
    """Try every (transform, codec) pair; return (transform, codec, transformed, blob, trials) of
    the smallest (first in candidate order on ties, so the choice is deterministic)."""
    best: tuple | None = None
    trials: dict[str, int] = {}
    for tname in transforms:
        if tname.startswith("bitpack") and not bitpack_fits(raw, int(tname[7:])):
            continue
        mid = apply_byte_transform(raw, tname)
        for codec in candidates:
            blob = compress(mid, codec)
            trials[f"{tname}+{codec}"] = len(blob)
            if best is None or len(blob) < len(best[3]):
                best = (tname, codec, mid, blob)
    if best is None:
        raise ArtifactError(f"no applicable transform among {transforms}")
    return (*best, trials)


def _as_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _dtype_name(arr: np.ndarray) -> str:
    name = str(arr.dtype)
    if name not in DTYPES:
        raise ArtifactError(f"unsupported array dtype {name}")
    return name


def encode_artifact_report(
    arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: list[Stream]
) -> tuple[bytes, list[StreamReport]]:
    """Serialise arrays (each assigned to exactly one stream) and metadata; also report what
    each stream chose."""
    assigned = [n for s in streams for n in s.names]
    if sorted(assigned) != sorted(arrays) or len(set(assigned)) != len(assigned):
        raise ArtifactError("every array must belong to exactly one stream")
    table, blobs, stream_info, reports = [], [], [], []
    for si, stream in enumerate(streams):
        raw = bytearray()
        for name in stream.names:
            arr = arrays[name]
            table.append(
                {"name": name, "dtype": _dtype_name(arr), "shape": list(arr.shape), "stream": si, "offset": len(raw)}
            )
            raw += _as_bytes(arr)
        candidates = auto_codecs() if stream.codec == "auto" else (stream.codec,)
        tname, codec, mid, blob, trials = encode_stream(bytes(raw), candidates, tuple(stream.transforms))
        blobs.append(blob)
        stream_info.append(
            {
                "label": stream.label,
                "codec": codec,
                "transform": tname,
                "n": len(blob),
                "mid": len(mid),
                "raw": len(raw),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        )
        reports.append(StreamReport(stream.label, codec, tname, len(raw), len(blob), trials))
    header = zlib.compress(
        json.dumps(
            {"meta": meta, "streams": stream_info, "tensors": table}, separators=(",", ":"), sort_keys=True
        ).encode("utf-8"),
        9,
    )
    crc = _header_crc(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(header), header)
    prefix = PREFIX.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(header), crc)
    return prefix + header + b"".join(blobs), reports


def encode_artifact(arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: list[Stream]) -> bytes:
    """Serialise arrays (each assigned to exactly one stream) and metadata to bytes."""
    return encode_artifact_report(arrays, meta, streams)[0]


def _header_crc(magic: bytes, version: int, hlen: int, header: bytes) -> int:
    """v2 covers the prefix fields too, so no single byte of the file can change unnoticed."""
    if version == 1:
        return zlib.crc32(header)
    return zlib.crc32(header, zlib.crc32(struct.pack("<4sBI", magic, version, hlen)))


def _read_header(blob: bytes, src: str) -> tuple[dict, int]:
    if len(blob) < PREFIX.size:
        raise ArtifactError(f"{src}: truncated ({len(blob)} bytes; not even a header)")
    magic, version, hlen, crc = PREFIX.unpack_from(blob)
    if magic != ARTIFACT_MAGIC:
        raise ArtifactError(f"{src}: not a pgolf artifact (magic {magic!r})")
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"{src}: unsupported artifact format version {version}")
    end = PREFIX.size + hlen
    if len(blob) < end:
        raise ArtifactError(f"{src}: truncated header ({len(blob)} of {end} bytes)")
    header = blob[PREFIX.size : end]
    if _header_crc(magic, version, hlen, header) != crc:
        raise ArtifactError(f"{src}: header checksum mismatch (file corrupted or tampered)")
    try:
        parsed = json.loads(zlib.decompress(header))
    except (zlib.error, ValueError) as exc:
        raise ArtifactError(f"{src}: unreadable header ({exc})") from exc
    check_header(parsed, src)
    return parsed, end


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_header(header: Any, src: str) -> None:
    """The header's schema, with every size and offset bounded, before anything is decoded or
    allocated from it: checksums only prove the bytes are the writer's, not that the writer was
    honest."""

    def bad(msg: str) -> None:
        raise ArtifactError(f"{src}: malformed header: {msg}")

    if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
        bad("expected an object with 'meta', 'streams' and 'tensors'")
    streams, tensors = header.get("streams"), header.get("tensors")
    if not isinstance(streams, list) or not isinstance(tensors, list):
        bad("'streams' and 'tensors' must be lists")
    total = 0
    for i, st in enumerate(streams):
        if not isinstance(st, dict) or not all(_is_count(st.get(k)) for k in ("n", "raw")):
            bad(f"stream {i}: 'n' and 'raw' must be non-negative integers")
        if "mid" in st and not _is_count(st["mid"]):
            bad(f"stream {i}: 'mid' must be a non-negative integer")
        if st.get("codec") not in codecs() or st.get("transform", "none") not in ("none",) + tuple(BYTE_TRANSFORMS):
            bad(f"stream {i}: unknown codec {st.get('codec')!r} or transform {st.get('transform')!r}")
        sha = st.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            bad(f"stream {i}: 'sha256' must be 64 lowercase hex digits")
        total += st["raw"] + st.get("mid", 0)
    if total > MAX_DECODED_BYTES:
        bad(f"streams declare {total:,} decoded bytes, more than the {MAX_DECODED_BYTES:,} any artifact may hold")
    _check_tensors(tensors, streams, bad)


def _check_tensors(tensors: list, streams: list, bad) -> None:
    names = set()
    for j, t in enumerate(tensors):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or t["name"] in names:
            bad(f"tensor {j}: missing or repeated name")
        names.add(t["name"])
        shape = t.get("shape")
        if t.get("dtype") not in DTYPES:
            bad(f"tensor {t['name']!r}: unsupported dtype {t.get('dtype')!r}")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_count(d) for d in shape):
            bad(f"tensor {t['name']!r}: shape must be a list of at most {MAX_NDIM} non-negative integers")
        if not (_is_count(t.get("stream")) and t["stream"] < len(streams) and _is_count(t.get("offset"))):
            bad(f"tensor {t['name']!r}: stream index or offset out of range")
        nbytes = math.prod(shape) * np.dtype(t["dtype"]).itemsize
        if t["offset"] + nbytes > streams[t["stream"]]["raw"]:
            bad(f"tensor {t['name']!r} lies outside its payload stream")


def _decode_streams(blob: bytes, info: list[dict], start: int, src: str) -> list[bytes]:
    expected = start + sum(int(s["n"]) for s in info)
    if len(blob) != expected:
        kind = "truncated" if len(blob) < expected else "has trailing bytes"
        raise ArtifactError(f"{src}: {kind} ({len(blob)} bytes, header says {expected})")
    raws, pos = [], start
    for i, s in enumerate(info):
        part = blob[pos : pos + int(s["n"])]
        pos += int(s["n"])
        if hashlib.sha256(part).hexdigest() != s["sha256"]:
            raise ArtifactError(f"{src}: payload stream {i} sha256 mismatch (file corrupted or tampered)")
        mid_len = int(s.get("mid", s["raw"]))
        try:
            raw = invert_byte_transform(
                decompress(part, s["codec"], mid_len), s.get("transform", "none"), int(s["raw"])
            )
        except (CodecError, TransformError) as exc:
            raise ArtifactError(f"{src}: payload stream {i}: {exc}") from exc
        if len(raw) != int(s["raw"]):
            raise ArtifactError(f"{src}: payload stream {i} decodes to {len(raw)} bytes, header says {s['raw']}")
        raws.append(raw)
    return raws


def decode_artifact(blob: bytes, src: str = "<artifact>") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and verify an artifact; returns (arrays, meta)."""
    header, start = _read_header(blob, src)
    raws = _decode_streams(blob, header["streams"], start, src)
    arrays: dict[str, np.ndarray] = {}
    for t in header["tensors"]:  # dtypes, shapes and bounds were checked with the header
        dt = np.dtype(t["dtype"])
        count = int(np.prod(t["shape"], dtype=np.int64))
        raw = raws[t["stream"]]
        if t["offset"] < 0 or t["offset"] + count * dt.itemsize > len(raw):
            raise ArtifactError(f"{src}: tensor {t['name']!r} lies outside its payload stream")
        arr = np.frombuffer(raw, dtype=dt.newbyteorder("<"), count=count, offset=t["offset"])
        arrays[t["name"]] = arr.reshape(t["shape"]).copy()
    return arrays, header["meta"]


def write_artifact_report(
    path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: list[Stream]
) -> tuple[int, list[StreamReport]]:
    """Write atomically; returns (file size in bytes, per-stream reports)."""
    path = Path(path)
    blob, reports = encode_artifact_report(arrays, meta, streams)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return len(blob), reports


def write_artifact(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: list[Stream]) -> int:
    """Write atomically; returns the file size in bytes."""
    return write_artifact_report(path, arrays, meta, streams)[0]


def read_header(path: str | Path) -> dict:
    """The verified header of an artifact (meta, streams, tensors) without decoding the payload
    (the payload's length is still checked against the header)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    blob = path.read_bytes()
    header, start = _read_header(blob, str(path))
    expected = start + sum(int(s["n"]) for s in header["streams"])
    if len(blob) != expected:
        raise ArtifactError(f"{path}: {len(blob)} bytes, header says {expected} (truncated or padded)")
    header["header_bytes"] = start
    return header


def read_artifact(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    return decode_artifact(path.read_bytes(), str(path))
