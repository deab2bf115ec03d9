"""`zlib` at level 9: the official script's codec (standard library)."""

from __future__ import annotations

import zlib

from pgolf.quant.registry import Codec

ZLIB_LEVEL = 9  # official


class ZlibCodec(Codec):
    name, order = "zlib", 0

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, ZLIB_LEVEL)

    def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
        d = zlib.decompressobj()
        out = d.decompress(data, limit or 0)
        return out, bool(d.unconsumed_tail) or not d.eof
