"""`zstd` at level 22 (zstandard)."""

from __future__ import annotations

from pgolf.quant.registry import Codec

ZSTD_LEVEL = 22


class ZstdCodec(Codec):
    name, module, order = "zstd", "zstandard", 1

    def compress(self, data: bytes) -> bytes:
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)

    def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
        import zstandard

        if limit is None:
            return zstandard.ZstdDecompressor().decompress(data), False
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        chunks, total = [], 0
        while total < limit and (chunk := reader.read(limit - total)):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks), False
