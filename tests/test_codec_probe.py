"""The `auto` codec on long streams (issue 11): chosen on a sample, then the stream is compressed
once; short streams still try every codec on the whole stream; a time budget picks a faster codec."""

from __future__ import annotations

import numpy as np
import torch

from pgolf.core.config import QuantConfig
from pgolf.quant import container as container_mod
from pgolf.quant import pack as pack_mod
from pgolf.quant.pack import CodecProbe, pack, pick_codec, probe_sample, unpack
from pgolf.quant.schemes import quantize


def mixed_state(rows: int = 256, cols: int = 512) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    state = {
        "blocks.0.mlp.fc.weight": torch.randn(rows, cols, generator=g) * 0.02,
        "blocks.0.attn.c_q.weight": torch.randn(cols // 4, cols // 4, generator=g) * 0.02,
        "blocks.0.attn.q_gain": torch.ones(4),
    }
    groups = {"blocks.0.mlp.fc.weight": "mlp", "blocks.0.attn.c_q.weight": "attn", "blocks.0.attn.q_gain": "control"}
    return state, groups


def counting_compress(monkeypatch) -> list[tuple[str, int]]:
    """Every compress call of the probe and of the container: (codec, input bytes)."""
    calls = []
    for mod in (pack_mod, container_mod):
        real = mod.compress
        monkeypatch.setattr(
            mod, "compress", lambda data, codec, real=real: calls.append((codec, len(data))) or real(data, codec)
        )
    return calls


def test_long_stream_is_chosen_on_a_sample_and_compressed_once(tmp_path, monkeypatch):
    state, groups = mixed_state()
    # transform none: no rows/cols layout probe (its own bounded zstd runs on <= 1 MiB)
    q = QuantConfig(
        scheme="mixed", compressor="auto", keep_float_max_numel=64, codec_probe_bytes=16_384, transform="none"
    )
    qs = quantize(state, groups, q)
    calls = counting_compress(monkeypatch)
    res = pack(qs, {}, q, tmp_path / "a.pglf")
    mlp = next(r for r in res.streams if r.label == "q.mlp")
    assert mlp.raw == 256 * 512 > q.codec_probe_bytes and "q.mlp" in res.sampled
    big = [c for c in calls if c[1] > q.codec_probe_bytes]
    assert big == [(mlp.codec, mlp.raw)]  # the whole stream: once, with the winner
    assert len(mlp.trials) == 4 and mlp.stored == mlp.trials[f"{mlp.transform}+{mlp.codec}"]
    small = next(r for r in res.streams if r.label == "q.attn")  # 16,384 bytes: every codec on all of it
    assert small.raw <= q.codec_probe_bytes and "q.attn" not in res.sampled and len(small.trials) == 4
    out, _ = unpack(tmp_path / "a.pglf")
    assert torch.equal(out["blocks.0.attn.q_gain"], state["blocks.0.attn.q_gain"])


def test_sampled_choice_matches_the_full_trial_on_these_codes(tmp_path):
    """Sampling changes how the codec is chosen, not the bytes, when it picks the full trial's
    winner (it does here: int6 codes of Gaussian weights)."""
    state, groups = mixed_state()
    full = QuantConfig(scheme="mixed", compressor="auto", keep_float_max_numel=64, codec_probe_bytes=0)
    sampled = QuantConfig(scheme="mixed", compressor="auto", keep_float_max_numel=64, codec_probe_bytes=32_768)
    a = pack(quantize(state, groups, full), {}, full, tmp_path / "full.pglf")
    b = pack(quantize(state, groups, sampled), {}, sampled, tmp_path / "sampled.pglf")
    assert b.sampled and not a.sampled
    assert [(r.codec, r.transform) for r in a.streams] == [(r.codec, r.transform) for r in b.streams]
    assert (tmp_path / "full.pglf").read_bytes() == (tmp_path / "sampled.pglf").read_bytes()


def test_time_budget_picks_the_smallest_candidate_that_fits():
    probes = [
        CodecProbe("none", "brotli", 100, 9.0),
        CodecProbe("none", "zstd", 104, 2.0),
        CodecProbe("none", "zlib", 120, 0.5),
    ]
    assert pick_codec(probes, 0).codec == "brotli"  # no budget: smallest
    assert pick_codec(probes, 3.0).codec == "zstd"
    assert pick_codec(probes, 0.1).codec == "zlib"  # nothing fits: fastest


def test_probe_sample_spreads_over_the_stream():
    raw = bytes(range(256)) * 40  # 10,240 bytes
    sample = probe_sample(raw, 400, chunks=4)
    assert len(sample) == 400
    assert sample[:100] == raw[:100] and sample[-100:] == raw[-100:]
    assert np.frombuffer(sample, dtype=np.uint8)[100] == raw[int((len(raw) - 100) / 3)]
