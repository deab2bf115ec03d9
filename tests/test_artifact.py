"""The container: bit-exact multi-stream roundtrip, determinism, and rejection of truncated,
corrupted or tampered files (every single byte), all without pickle."""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from dataclasses import asdict

import numpy as np
import pytest
import torch

from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.model.gpt import GPT
from pgolf.model.inventory import quant_groups_for
from pgolf.quant.container import (
    ARTIFACT_MAGIC,
    PREFIX,
    ArtifactError,
    Stream,
    decode_artifact,
    encode_artifact,
    encode_artifact_report,
    read_header,
    write_artifact,
)
from pgolf.quant.pack import pack, unpack
from pgolf.quant.schemes import quantize
from pgolf.quant.state import dequantize


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "codes": np.clip(np.round(rng.standard_normal((16, 24)) * 4), -7, 7).astype(np.int8),
        "scales": (0.01 + 0.001 * rng.standard_normal(16)).astype(np.float16),
        "ctrl": rng.standard_normal(5).astype(np.float32),
        "ids": np.arange(7, dtype=np.int64),
        "flag": np.array([True, False]),
    }


def sample_blob() -> bytes:
    streams = [
        Stream("auto", ["codes"], ("none", "bitpack4"), "q"),
        Stream("zlib", ["scales"], ("none", "shuffle2"), "fp16"),
        Stream("raw", ["ctrl", "ids", "flag"], ("none",), "other"),
    ]
    return encode_artifact(sample_arrays(), {"note": "test"}, streams)


def test_roundtrip_bit_exact_and_deterministic():
    blob = sample_blob()
    arrays, meta = decode_artifact(blob)
    assert meta == {"note": "test"}
    for name, arr in sample_arrays().items():
        assert arrays[name].dtype == arr.dtype and arrays[name].shape == arr.shape
        assert arrays[name].tobytes() == arr.tobytes()
    assert sample_blob() == blob  # same inputs, same bytes


def test_report_lists_every_candidate():
    """Every (transform, codec) candidate is reported at the size its library gives for those bytes
    (the stream's raw bytes, little-endian C order, byte-shuffled by hand for shuffle2), and the
    smallest is stored."""
    import lzma

    import brotli
    import zstandard

    arrays = sample_arrays()
    raw = b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays.values())
    shuffled = np.frombuffer(raw[: len(raw) // 2 * 2], np.uint8).reshape(-1, 2).T.tobytes() + raw[len(raw) // 2 * 2 :]
    want = {}
    for tname, data in (("none", raw), ("shuffle2", shuffled)):
        want[f"{tname}+zlib"] = len(zlib.compress(data, 9))
        want[f"{tname}+zstd"] = len(zstandard.ZstdCompressor(level=22).compress(data))
        want[f"{tname}+brotli"] = len(brotli.compress(data, quality=11))
        want[f"{tname}+lzma"] = len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))
    _, reports = encode_artifact_report(arrays, {}, [Stream("auto", list(arrays), ("none", "shuffle2"), "all")])
    assert reports[0].trials == want
    assert reports[0].stored == min(want.values())


def test_every_truncation_is_rejected():
    blob = sample_blob()
    for n in range(len(blob)):
        with pytest.raises(ArtifactError):
            decode_artifact(blob[:n])
    with pytest.raises(ArtifactError, match="trailing"):
        decode_artifact(blob + b"\0")


def test_every_single_byte_change_is_rejected():
    blob = sample_blob()
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(ArtifactError):
            decode_artifact(bytes(bad))


def test_clear_messages(tmp_path):
    blob = bytearray(sample_blob())
    with pytest.raises(ArtifactError, match="not a pgolf artifact"):
        decode_artifact(b"NOPE" + bytes(blob[4:]))
    blob[-1] ^= 0xFF
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        decode_artifact(bytes(blob))
    with pytest.raises(ArtifactError, match="not found"):
        read_header(tmp_path / "missing.pglf")


def test_version_1_files_still_load():
    raw = np.arange(6, dtype=np.int16)
    import hashlib

    blob = zlib.compress(raw.tobytes(), 9)
    header = {
        "meta": {"v": 1},
        "streams": [{"codec": "zlib", "n": len(blob), "raw": raw.nbytes, "sha256": hashlib.sha256(blob).hexdigest()}],
        "tensors": [{"name": "x", "dtype": "int16", "shape": [2, 3], "stream": 0, "offset": 0}],
    }
    h = zlib.compress(json.dumps(header).encode(), 9)
    v1 = PREFIX.pack(ARTIFACT_MAGIC, 1, len(h), zlib.crc32(h)) + h + blob
    arrays, meta = decode_artifact(v1)
    assert meta == {"v": 1} and arrays["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_model_artifact_loads_without_pickle(tmp_path, monkeypatch):
    """A real mixed-scheme artifact unpacks bit-exactly to the in-memory dequantization, with
    pickle and torch.load disabled."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_layers=1, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=128)
    state = GPT(cfg).state_dict()
    q = QuantConfig(scheme="mixed", compressor="auto", keep_float_max_numel=256, lqer_rank=2, lqer_top_k=2)
    qs = quantize(state, quant_groups_for(cfg), q)
    pack(qs, asdict(cfg), q, tmp_path / "m.pglf")

    def refuse(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    restored, meta = unpack(tmp_path / "m.pglf")
    ref = dequantize(qs)
    assert meta["model"] == asdict(cfg)
    for name in state:
        assert torch.equal(restored[name], ref[name]), name


def test_write_is_atomic_and_sized(tmp_path):
    n = write_artifact(tmp_path / "a.pglf", {"x": np.zeros(3, np.float32)}, {}, [Stream("zlib", ["x"])])
    assert (tmp_path / "a.pglf").stat().st_size == n and not (tmp_path / "a.pglf.tmp").exists()
    assert (
        read_header(tmp_path / "a.pglf")["header_bytes"]
        == PREFIX.size + struct.unpack_from("<4sBII", (tmp_path / "a.pglf").read_bytes())[2]
    )
