"""Lossless compression of the artifact's streams by codec name (the codecs themselves are the
registered `codec_*` modules, pgolf.quant.registry). `auto` tries each and keeps the smallest."""

from __future__ import annotations

from pgolf.quant.registry import CodecError, auto_codecs, codec_for


def compress(data: bytes, codec: str) -> bytes:
    """Compress bytes with a named codec."""
    return codec_for(codec).compress(data)


def decompress(data: bytes, codec: str, raw_len: int | None = None) -> bytes:
    """Decompress bytes; corrupt input or a length mismatch raises CodecError. With `raw_len` the
    output is bounded: a stream that would expand beyond it is refused before it is decoded in
    full (an artifact's header cannot make a few compressed bytes allocate gigabytes)."""
    impl = codec_for(codec)
    limit = None if raw_len is None else raw_len + 1  # one byte more shows an over-long stream
    try:
        out, unfinished = impl.decompress_limited(data, limit)
    except CodecError:
        raise
    except Exception as exc:  # each library raises its own error type for corrupt data
        raise CodecError(f"{codec}: corrupt compressed data ({exc})") from exc
    if raw_len is not None and len(out) > raw_len:
        raise CodecError(f"{codec}: stream expands beyond the {raw_len:,} bytes it declares")
    if unfinished:
        raise CodecError(f"{codec}: truncated or over-long compressed stream")
    if raw_len is not None and len(out) != raw_len:
        raise CodecError(f"{codec}: decoded {len(out)} bytes, expected {raw_len}")
    return out


def compress_best(data: bytes, names: tuple[str, ...] | None = None) -> tuple[str, bytes, dict[str, int]]:
    """Try each codec (the auto set by default); return (name, bytes) of the smallest and every
    measured size."""
    sizes: dict[str, int] = {}
    best_name, best = "", b""
    for name in names or auto_codecs():
        out = compress(data, name)
        sizes[name] = len(out)
        if not best_name or len(out) < len(best):
            best_name, best = name, out
    return best_name, best, sizes
