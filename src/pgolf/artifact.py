"""The artifact container: named arrays + JSON metadata in one file, loaded without pickle.

Layout (little-endian):

    b"PGLF" | u8 format version | u32 header length | u32 crc32(header) | header | stream 0 | ...

The header is zlib-compressed compact JSON: {"meta": {...}, "streams": [{"codec", "n" (stored
bytes), "raw" (decoded bytes), "sha256" (of the stored bytes)}], "tensors": [{"name", "dtype",
"shape", "stream", "offset"}]}. Arrays are stored C-contiguous, little-endian, inside a stream;
several streams let groups of tensors use different codecs. Every check (magic, version, header
crc, total length, per-stream sha256, decoded length, tensor bounds) fails with ArtifactError
naming the file and the problem; decoding is deterministic and bit-exact.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pgolf.codecs import CodecError, compress, decompress

ARTIFACT_MAGIC = b"PGLF"
ARTIFACT_VERSION = 1
PREFIX = struct.Struct("<4sBII")  # magic, version, header length, header crc32
DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "int64", "float16", "float32", "float64", "bool")


class ArtifactError(ValueError):
    """A truncated, corrupted, tampered or foreign artifact file."""


@dataclass
class Stream:
    """A group of arrays compressed together with one codec."""

    codec: str
    names: list[str] = field(default_factory=list)


def _as_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _dtype_name(arr: np.ndarray) -> str:
    name = str(arr.dtype)
    if name not in DTYPES:
        raise ArtifactError(f"unsupported array dtype {name}")
    return name


def encode_artifact(arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: list[Stream]) -> bytes:
    """Serialise arrays (each assigned to exactly one stream) and metadata to bytes."""
    assigned = [n for s in streams for n in s.names]
    if sorted(assigned) != sorted(arrays) or len(set(assigned)) != len(assigned):
        raise ArtifactError("every array must belong to exactly one stream")
    table, blobs, stream_info = [], [], []
    for si, stream in enumerate(streams):
        raw = bytearray()
        for name in stream.names:
            arr = arrays[name]
            table.append({"name": name, "dtype": _dtype_name(arr), "shape": list(arr.shape),
                          "stream": si, "offset": len(raw)})
            raw += _as_bytes(arr)
        blob = compress(bytes(raw), stream.codec)
        blobs.append(blob)
        stream_info.append({"codec": stream.codec, "n": len(blob), "raw": len(raw),
                            "sha256": hashlib.sha256(blob).hexdigest()})
    header = zlib.compress(json.dumps({"meta": meta, "streams": stream_info, "tensors": table},
                                      separators=(",", ":"), sort_keys=True).encode("utf-8"), 9)
    prefix = PREFIX.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(header), zlib.crc32(header))
    return prefix + header + b"".join(blobs)


def _read_header(blob: bytes, src: str) -> tuple[dict, int]:
    if len(blob) < PREFIX.size:
        raise ArtifactError(f"{src}: truncated ({len(blob)} bytes; not even a header)")
    magic, version, hlen, crc = PREFIX.unpack_from(blob)
    if magic != ARTIFACT_MAGIC:
        raise ArtifactError(f"{src}: not a pgolf artifact (magic {magic!r})")
    if version != ARTIFACT_VERSION:
        raise ArtifactError(f"{src}: unsupported artifact format version {version}")
    end = PREFIX.size + hlen
    if len(blob) < end:
        raise ArtifactError(f"{src}: truncated header ({len(blob)} of {end} bytes)")
    header = blob[PREFIX.size : end]
    if zlib.crc32(header) != crc:
        raise ArtifactError(f"{src}: header checksum mismatch (file corrupted or tampered)")
    try:
        return json.loads(zlib.decompress(header)), end
    except (zlib.error, ValueError) as exc:
        raise ArtifactError(f"{src}: unreadable header ({exc})") from exc


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
        try:
            raws.append(decompress(part, s["codec"], int(s["raw"])))
        except CodecError as exc:
            raise ArtifactError(f"{src}: payload stream {i}: {exc}") from exc
    return raws


def decode_artifact(blob: bytes, src: str = "<artifact>") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse and verify an artifact; returns (arrays, meta)."""
    header, start = _read_header(blob, src)
    raws = _decode_streams(blob, header["streams"], start, src)
    arrays: dict[str, np.ndarray] = {}
    for t in header["tensors"]:
        if t["dtype"] not in DTYPES:
            raise ArtifactError(f"{src}: tensor {t['name']!r} has unsupported dtype {t['dtype']!r}")
        dt = np.dtype(t["dtype"])
        count = int(np.prod(t["shape"], dtype=np.int64))
        raw = raws[t["stream"]]
        if t["offset"] < 0 or t["offset"] + count * dt.itemsize > len(raw):
            raise ArtifactError(f"{src}: tensor {t['name']!r} lies outside its payload stream")
        arr = np.frombuffer(raw, dtype=dt.newbyteorder("<"), count=count, offset=t["offset"])
        arrays[t["name"]] = arr.reshape(t["shape"]).copy()
    return arrays, header["meta"]


def write_artifact(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], streams: list[Stream]) -> int:
    """Write atomically; returns the file size in bytes."""
    path = Path(path)
    blob = encode_artifact(arrays, meta, streams)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return len(blob)


def read_artifact(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    return decode_artifact(path.read_bytes(), str(path))
