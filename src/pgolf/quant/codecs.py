"""General-purpose lossless compressors for the artifact payload, behind one name -> codec table.

All are well-kept libraries (zlib and lzma from the standard library, zstandard, brotli) at
their strongest settings. `auto` tries each and keeps the smallest output.
"""

from __future__ import annotations

import lzma
import zlib

from pgolf.core.errors import PgolfError

CODEC_NAMES = ("raw", "zlib", "zstd", "brotli", "lzma")
ZLIB_LEVEL = 9  # official
ZSTD_LEVEL = 22
BROTLI_QUALITY = 11
LZMA_PRESET = 9 | lzma.PRESET_EXTREME


class CodecError(PgolfError, ValueError):
    """Unknown codec name, or bytes the codec cannot decode."""


def compress(data: bytes, codec: str) -> bytes:
    """Compress bytes with a named codec."""
    if codec == "raw":
        return bytes(data)
    if codec == "zlib":
        return zlib.compress(data, ZLIB_LEVEL)
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if codec == "brotli":
        import brotli

        return brotli.compress(data, quality=BROTLI_QUALITY)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=LZMA_PRESET)
    raise CodecError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_NAMES)}")


def decompress(data: bytes, codec: str, raw_len: int | None = None) -> bytes:
    """Decompress bytes; corrupt input or a length mismatch raises CodecError. With `raw_len` the
    output is bounded: a stream that would expand beyond it is refused before it is decoded in
    full (an artifact's header cannot make a few compressed bytes allocate gigabytes)."""
    try:
        out = _decode(data, codec, raw_len)
    except CodecError:
        raise
    except Exception as exc:  # each library raises its own error type for corrupt data
        raise CodecError(f"{codec}: corrupt compressed data ({exc})") from exc
    if raw_len is not None and len(out) != raw_len:
        raise CodecError(f"{codec}: decoded {len(out)} bytes, expected {raw_len}")
    return out


def _decode(data: bytes, codec: str, raw_len: int | None) -> bytes:
    if codec not in CODEC_NAMES:
        raise CodecError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_NAMES)}")
    if codec == "raw":
        return bytes(data)
    limit = None if raw_len is None else raw_len + 1  # one byte more shows an over-long stream
    if codec == "zlib":
        d = zlib.decompressobj()
        out = d.decompress(data, limit or 0)
        return _bounded(out, d.unconsumed_tail or not d.eof, raw_len, codec)
    if codec == "lzma":
        d = lzma.LZMADecompressor()
        out = d.decompress(data, -1 if limit is None else limit)
        return _bounded(out, not d.eof, raw_len, codec)
    if codec == "brotli":
        import brotli

        d = brotli.Decompressor()
        out = d.process(data) if limit is None else d.process(data, output_buffer_limit=limit)
        return _bounded(out, not d.is_finished(), raw_len, codec)
    import zstandard

    if limit is None:
        return zstandard.ZstdDecompressor().decompress(data)
    reader = zstandard.ZstdDecompressor().stream_reader(data)
    chunks, total = [], 0
    while total < limit and (chunk := reader.read(limit - total)):
        chunks.append(chunk)
        total += len(chunk)
    return _bounded(b"".join(chunks), False, raw_len, codec)


def _bounded(out: bytes, unfinished: bool, raw_len: int | None, codec: str) -> bytes:
    """Refuse output past raw_len, and a stream that did not end where it should."""
    if raw_len is not None and len(out) > raw_len:
        raise CodecError(f"{codec}: stream expands beyond the {raw_len:,} bytes it declares")
    if unfinished:
        raise CodecError(f"{codec}: truncated or over-long compressed stream")
    return out


def compress_best(
    data: bytes, codecs: tuple[str, ...] = ("zlib", "zstd", "brotli", "lzma")
) -> tuple[str, bytes, dict[str, int]]:
    """Try each codec; return (name, bytes) of the smallest and every measured size."""
    sizes: dict[str, int] = {}
    best_name, best = "", b""
    for name in codecs:
        out = compress(data, name)
        sizes[name] = len(out)
        if not best_name or len(out) < len(best):
            best_name, best = name, out
    return best_name, best, sizes
