"""`brotli` at quality 11 (brotli >= 1.2: its Decompressor bounds the output of untrusted streams)."""

from __future__ import annotations

from pgolf.quant.registry import Codec

BROTLI_QUALITY = 11


class BrotliCodec(Codec):
    name, module, order = "brotli", "brotli", 2

    def compress(self, data: bytes) -> bytes:
        import brotli

        return brotli.compress(data, quality=BROTLI_QUALITY)

    def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
        import brotli

        d = brotli.Decompressor()
        out = d.process(data) if limit is None else d.process(data, output_buffer_limit=limit)
        return out, not d.is_finished()
