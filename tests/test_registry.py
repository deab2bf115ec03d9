"""The scheme and codec registry: what a plugin module registers is what validation, CLI help,
packing, the planner and dispatch see; a new codec or scheme is one class."""

from __future__ import annotations

import bz2

import numpy as np
import pytest
import torch

from pgolf.core.config import ConfigError, QuantConfig, RunConfig
from pgolf.quant import registry
from pgolf.quant.codecs import compress, decompress
from pgolf.quant.container import Stream, decode_artifact, encode_artifact
from pgolf.quant.registry import Codec, Scheme, auto_codecs, check_quant, codecs, schemes, validate_config


def test_the_package_registers_its_schemes_and_codecs_from_their_modules():
    assert set(schemes()) == {"int8", "mixed"}
    assert set(codecs()) == {"raw", "zlib", "zstd", "brotli", "lzma"}
    assert auto_codecs() == ("zlib", "zstd", "brotli", "lzma")  # the order ties are broken in
    assert [m.rsplit(".", 1)[1] for m in registry.plugin_modules()] == [
        "codec_brotli",
        "codec_lzma",
        "codec_raw",
        "codec_zlib",
        "codec_zstd",
        "scheme_int8",
        "scheme_mixed",
    ]


def test_validation_names_what_is_registered():
    cfg = RunConfig()
    cfg.quant.scheme = "int4"
    with pytest.raises(ConfigError, match=r"quant.scheme='int4': expected one of int8, mixed"):
        validate_config(cfg)
    cfg.quant.scheme, cfg.quant.compressor = "int8", "bz2"
    with pytest.raises(ConfigError, match=r"quant.compressor='bz2': expected brotli\|lzma\|zlib\|zstd\|auto"):
        validate_config(cfg)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test vanish after it."""
    monkeypatch.setattr(registry, "_CODECS", dict(registry.codecs()))
    monkeypatch.setattr(registry, "_SCHEMES", dict(registry.schemes()))


def test_a_new_codec_is_one_class(scratch_registry):
    class Bz2Codec(Codec):  # what a quant/codec_bz2.py would hold
        name, order = "bz2", 10

        def compress(self, data: bytes) -> bytes:
            return bz2.compress(data, 9)

        def decompress_limited(self, data: bytes, limit: int | None) -> tuple[bytes, bool]:
            d = bz2.BZ2Decompressor()
            out = d.decompress(data, -1 if limit is None else limit)
            return out, not d.eof

    check_quant(QuantConfig(compressor="bz2"))  # validation sees it
    assert "bz2" in auto_codecs() and auto_codecs()[-1] == "bz2"
    data = np.arange(5000, dtype=np.int16).tobytes()
    assert decompress(compress(data, "bz2"), "bz2", len(data)) == data
    blob = encode_artifact({"a": np.arange(100, dtype=np.int8)}, {"m": 1}, [Stream("bz2", ["a"], ("none",), "s")])
    arrays, meta = decode_artifact(blob)  # the container accepts and decodes the new codec id
    assert arrays["a"].tolist() == list(range(100)) and meta == {"m": 1}


def test_a_new_scheme_is_one_class_and_dispatch_reaches_it(scratch_registry):
    from pgolf.quant.schemes import quantize
    from pgolf.quant.state import QuantizedState, dequantize

    class HalfScheme(Scheme):  # every tensor stored as fp16 (what a quant/scheme_half.py would hold)
        name, summary = "half", "fp16 everything"

        def quantize(self, state, groups, qcfg, hessians=None, deadline=None):
            qs = QuantizedState()
            for n, t in state.items():
                qs.arrays[n] = t.detach().half().numpy()
                qs.entries[n] = {"kind": "raw", "dtype": "float32", "shape": list(t.shape)}
            return qs

        def streams(self, qs, qcfg):
            return qs.arrays, qs.entries, [Stream(qcfg.compressor, sorted(qs.arrays), ("none",), "all")], {}

        def tensor_bytes(self, group, shape, qcfg, beta):
            return 2.0 * int(np.prod(shape))

        def tensor_width(self, group, shape, qcfg):
            return "fp16"

    q = QuantConfig(scheme="half")
    check_quant(q)
    state = {"w": torch.randn(4, 3)}
    out = dequantize(quantize(state, {"w": "mlp"}, q))
    torch.testing.assert_close(out["w"], state["w"].half().float())
    from pgolf.quant.plan import predict_table

    table = predict_table(None, {"w": ((4, 3), "mlp")}, q)
    assert table.artifact_bytes == 24 and {r.width for r in table.rows if r.params} == {"fp16"}
