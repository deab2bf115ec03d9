"""`raw`: the bytes as they are (a stream that compresses to nothing useful)."""

from __future__ import annotations

from pgolf.quant.registry import Codec


class RawCodec(Codec):
    name, in_auto = "raw", False

    def compress(self, data: bytes) -> bytes:
        return bytes(data)

    def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
        return bytes(data), False
