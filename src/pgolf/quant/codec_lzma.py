"""`lzma` (xz container) at preset 9 extreme (standard library)."""

from __future__ import annotations

import lzma

from pgolf.quant.registry import Codec

LZMA_PRESET = 9 | lzma.PRESET_EXTREME


class LzmaCodec(Codec):
    name, order = "lzma", 3

    def compress(self, data: bytes) -> bytes:
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=LZMA_PRESET)

    def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
        d = lzma.LZMADecompressor()
        out = d.decompress(data, -1 if limit is None else limit)
        return out, not d.eof
