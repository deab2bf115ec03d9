"""Coding: bit packing, byte transforms, layouts, row reorder, codecs and the smallest-wins choice."""

from __future__ import annotations

import numpy as np
import pytest

from pgolf.quant.codecs import CodecError, compress, compress_best, decompress
from pgolf.quant.container import encode_stream
from pgolf.quant.lowbit import pack_bits, qmax, unpack_bits
from pgolf.quant.transforms import (
    BYTE_TRANSFORMS,
    TransformError,
    apply_byte_transform,
    apply_layout,
    bitpack_fits,
    greedy_row_order,
    invert_byte_transform,
    invert_layout,
    invert_row_order,
)

CODECS = ("zlib", "zstd", "brotli", "lzma")


def gaussian_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = qmax(bits)
    return np.clip(np.round(rng.standard_normal(n) * r / 4), -r, r).astype(np.int8)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("n", [0, 1, 7, 1001])
def test_bitpack_roundtrip_and_size(bits, n):
    codes = gaussian_codes(n, bits, seed=bits)
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == (n * bits + 7) // 8
    assert np.array_equal(unpack_bits(packed, bits, n), codes)


def test_bitpack_rejects_out_of_range_and_wrong_length():
    with pytest.raises(ValueError):
        pack_bits(np.array([4], dtype=np.int8), 3)  # R = 3
    with pytest.raises(ValueError):
        unpack_bits(np.zeros(3, dtype=np.uint8), 6, 5)


@pytest.mark.parametrize("name", BYTE_TRANSFORMS)
def test_byte_transforms_roundtrip(name):
    bits = int(name[7:]) if name.startswith("bitpack") else 8
    data = gaussian_codes(4099, bits, seed=3).tobytes()  # odd length: shuffle keeps a tail
    if name.startswith("bitpack"):
        assert bitpack_fits(data, bits)
    mid = apply_byte_transform(data, name)
    assert invert_byte_transform(mid, name, len(data)) == data


def test_unknown_transform_is_an_error():
    with pytest.raises(TransformError):
        apply_byte_transform(b"abc", "rot13")
    with pytest.raises(TransformError):
        invert_byte_transform(b"abc", "rot13", 3)


def test_shuffle_helps_fp16():
    """fp16 values of similar magnitude: their high bytes repeat, shuffling groups them."""
    rng = np.random.default_rng(0)
    data = (0.02 + 0.002 * rng.standard_normal(20000)).astype(np.float16).tobytes()
    plain = len(compress(data, "zlib"))
    shuffled = len(compress(apply_byte_transform(data, "shuffle2"), "zlib"))
    assert shuffled < plain


@pytest.mark.parametrize("codec", CODECS + ("raw",))
def test_codecs_roundtrip_and_reject_corruption(codec):
    data = gaussian_codes(50000, 6).tobytes()
    blob = compress(data, codec)
    assert decompress(blob, codec, len(data)) == data
    if codec != "raw":
        with pytest.raises(CodecError):
            decompress(blob[: len(blob) // 2], codec, len(data))


def library_sizes(data: bytes) -> dict[str, int]:
    """Each library called directly at the documented strongest settings: the oracle for pgolf's
    codec registry (zlib 9, zstd 22, brotli 11, xz preset 9 extreme)."""
    import lzma
    import zlib

    import brotli
    import zstandard

    return {
        "zlib": len(zlib.compress(data, 9)),
        "zstd": len(zstandard.ZstdCompressor(level=22).compress(data)),
        "brotli": len(brotli.compress(data, quality=11)),
        "lzma": len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)),
    }


def test_compress_best_measures_every_codec_and_keeps_smallest():
    data = gaussian_codes(30000, 5).tobytes()
    name, blob, sizes = compress_best(data, CODECS)
    want = library_sizes(data)
    assert sizes == want  # every codec measured, at the libraries' own sizes
    assert name == min(CODECS, key=lambda c: (want[c], CODECS.index(c))) and len(blob) == want[name]
    assert decompress(blob, name, len(data)) == data


def test_encode_stream_picks_smallest_transform_and_codec():
    data = gaussian_codes(30000, 3).tobytes()
    tname, codec, mid, blob, trials = encode_stream(data, CODECS, ("none", "bitpack3", "bitpack2"))
    assert "bitpack2+zlib" not in trials  # codes of 3 bits do not fit 2: skipped
    assert len(blob) == min(trials.values()) == trials[f"{tname}+{codec}"]
    assert invert_byte_transform(decompress(blob, codec, len(mid)), tname, len(data)) == data


def test_layouts_and_row_reorder_roundtrip():
    rng = np.random.default_rng(1)
    base = rng.integers(-3, 4, size=(8, 16)).astype(np.int8)
    q = np.concatenate([base, base + 1, base], axis=0)[rng.permutation(24)]  # near-duplicate rows
    for layout in ("rows", "cols"):
        assert np.array_equal(invert_layout(apply_layout(q, layout), layout), q)
    order = greedy_row_order(q)
    assert order.dtype == np.uint16 and sorted(order.tolist()) == list(range(24)) and order[0] == 0
    assert np.array_equal(invert_row_order(q[order.astype(np.int64)], order), q)
    with pytest.raises(TransformError):
        invert_row_order(q, np.zeros(24, dtype=np.uint16))


def test_greedy_order_puts_similar_rows_together():
    rng = np.random.default_rng(2)
    a, b = rng.integers(-20, 20, size=(2, 64))
    rows = np.stack([a, b, a, b, a, b]).astype(np.int8)
    order = greedy_row_order(rows).tolist()
    assert order[:3] == [0, 2, 4]  # all copies of row 0 first
