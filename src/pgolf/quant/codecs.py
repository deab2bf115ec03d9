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
    """Decompress bytes; corrupt input or a length mismatch raises CodecError."""
    try:
        if codec == "raw":
            out = bytes(data)
        elif codec == "zlib":
            out = zlib.decompress(data)
        elif codec == "zstd":
            import zstandard

            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_len or 0)
        elif codec == "brotli":
            import brotli

            out = brotli.decompress(data)
        elif codec == "lzma":
            out = lzma.decompress(data)
        else:
            raise CodecError(f"unknown codec {codec!r}; expected one of {', '.join(CODEC_NAMES)}")
    except CodecError:
        raise
    except Exception as exc:  # each library raises its own error type for corrupt data
        raise CodecError(f"{codec}: corrupt compressed data ({exc})") from exc
    if raw_len is not None and len(out) != raw_len:
        raise CodecError(f"{codec}: decoded {len(out)} bytes, expected {raw_len}")
    return out


def compress_best(data: bytes, codecs: tuple[str, ...] = ("zlib", "zstd", "brotli", "lzma")) -> tuple[str, bytes, dict[str, int]]:
    """Try each codec; return (name, bytes) of the smallest and every measured size."""
    sizes: dict[str, int] = {}
    best_name, best = "", b""
    for name in codecs:
        out = compress(data, name)
        sizes[name] = len(out)
        if not best_name or len(out) < len(best):
            best_name, best = name, out
    return best_name, best, sizes
