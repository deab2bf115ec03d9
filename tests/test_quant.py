"""Quantizers against float64 references: per-row intN (every width, every clip rule), the official
int8 scheme, the mixed scheme's roundtrip bound, LQER, and the hash group's own width."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.model.gpt import GPT
from pgolf.model.inventory import quant_groups_for
from pgolf.quant.lowbit import (
    CLIP_SEARCH_GRID,
    INT8_CLIP_Q,
    dequantize_rows,
    fp16_row_scale,
    qmax,
    quantize_rows,
    row_clip,
)
from pgolf.quant.lqer import lqer_candidate, lqer_correction, lqer_factors
from pgolf.quant.scheme_int8 import quantize_int8_rows
from pgolf.quant.schemes import quantize
from pgolf.quant.state import dequantize

TINY = ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=96)


def trained_like(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Heavy-ish tailed rows (Student-t, 6 dof) with per-row scales spread over 4x."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(6.0, size=(rows, cols)) * rng.uniform(0.01, 0.04, size=(rows, 1))
    return torch.from_numpy(w.astype(np.float32))


def reference_codes(w: np.ndarray, scale16: np.ndarray, bits: int) -> np.ndarray:
    """float64 round-to-nearest-even of w / scale, clamped to +-R."""
    r = qmax(bits)
    return np.clip(np.round(w.astype(np.float64) / scale16.astype(np.float64)[:, None]), -r, r)


def reference_clip(w: np.ndarray, rule: str, k: float, bits: int) -> np.ndarray:
    w = w.astype(np.float64)
    if rule == "sdclip":
        return k * w.std(axis=1)
    if rule == "percentile":
        return np.quantile(np.abs(w), INT8_CLIP_Q, axis=1)
    best, best_err = None, None
    for kk in CLIP_SEARCH_GRID:  # per-row brute force in float64
        s = fp16_row_scale(torch.from_numpy(kk * w.std(axis=1)), bits).double().numpy()
        err = ((reference_codes(w, s, bits) * s[:, None] - w) ** 2).sum(axis=1)
        take = np.ones_like(err, bool) if best is None else err < best_err
        best = np.where(take, kk * w.std(axis=1), best if best is not None else 0)
        best_err = np.where(take, err, best_err if best_err is not None else 0)
    return best


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("rule", ["sdclip", "percentile", "search"])
def test_intn_rows_match_float64_reference(bits, rule):
    w = trained_like(24, 96, seed=bits)
    k = 2.5 + bits  # any k: the reference uses the same
    q, s = quantize_rows(w, bits, rule=rule, k=k, percentile=INT8_CLIP_Q * 100)
    ref_clip = reference_clip(w.numpy(), rule, k, bits)
    assert np.allclose(row_clip(w, bits, rule, k, INT8_CLIP_Q * 100).numpy(), ref_clip, rtol=1e-5)
    ref_scale = fp16_row_scale(torch.from_numpy(ref_clip), bits)
    assert torch.equal(s, ref_scale) and s.dtype == torch.float16
    ref_q = reference_codes(w.numpy(), s.numpy(), bits)
    mismatch = q.numpy() != ref_q
    assert mismatch.mean() < 1e-3 and (np.abs(q.numpy() - ref_q) <= 1).all()  # only fp32-vs-fp64 ties
    err = (dequantize_rows(q, s) - w).abs()
    inside = w.abs() <= qmax(bits) * s.float()[:, None]
    assert (err[inside] <= s.float()[:, None].expand_as(w)[inside] / 2 + 1e-7).all()


def test_official_int8_rows_match_float64_reference():
    w = trained_like(32, 300, seed=7)
    q, s = quantize_int8_rows(w)
    x = w.numpy().astype(np.float64)
    clip = np.quantile(np.abs(x), INT8_CLIP_Q, axis=1)
    scale = np.maximum(clip / 127.0, 1.0 / 127.0)
    ref = np.clip(np.round(np.clip(x, -clip[:, None], clip[:, None]) / scale[:, None]), -127, 127)
    assert np.abs(q.numpy() - ref).max() <= 1 and (q.numpy() != ref).mean() < 1e-3
    assert np.allclose(s.float().numpy(), scale, rtol=1e-3)


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = GPT(TINY).state_dict()
    return {k: (v + 0.02 * torch.randn_like(v)) if v.ndim == 2 else v for k, v in state.items()}


@pytest.mark.parametrize("bits", [3, 5, 6, 8])
def test_mixed_scheme_roundtrip_bound(bits):
    state = tiny_state()
    q = QuantConfig(
        scheme="mixed",
        attn_bits=bits,
        mlp_bits=bits,
        embed_bits=16,
        keep_float_max_numel=512,
        attn_clip_sigmas=20.0,
        mlp_clip_sigmas=20.0,
    )
    qs = quantize(state, quant_groups_for(TINY), q)
    out = dequantize(qs)
    for name, t in state.items():
        e = qs.entries[name]
        if e["kind"] == "intq":
            s = torch.from_numpy(qs.arrays[name + ".s"]).float()[:, None]
            assert e["bits"] == bits and (out[name] - t).abs().max() <= (s / 2 + 1e-6).max()  # k=20: no clipping
        else:  # raw fp16 (embeddings at their own width here: fp16)
            assert torch.equal(out[name], t.to(torch.float16).to(t.dtype)), name
    assert qs.entries["tok_emb.weight"]["kind"] == "raw"


def test_lqer_reduces_error_and_is_exact_at_full_rank():
    w = trained_like(40, 32, seed=3)
    q, s = quantize_rows(w, 3, rule="sdclip", k=6.0)
    w_hat = dequantize_rows(q, s)
    a, b = lqer_factors(w - w_hat, 32)
    assert torch.allclose(a @ b, w - w_hat, atol=1e-5)  # full rank: exact before factor quantization
    gain, parts = lqer_candidate(w, w_hat, rank=4)
    before = float(((w - w_hat) ** 2).sum())
    after = float(((w - w_hat - lqer_correction(parts)) ** 2).sum())
    assert gain > 0 and after < before and abs((before - after) - gain) < 1e-6 * before
    assert parts["lqa"].shape == (4, 40) and parts["lqb"].shape == (4, 32) and parts["lqa"].dtype == torch.int8


def test_lqer_in_mixed_scheme_picks_top_k():
    state = tiny_state()
    q = QuantConfig(
        scheme="mixed",
        attn_bits=4,
        mlp_bits=4,
        keep_float_max_numel=512,
        lqer_rank=2,
        lqer_top_k=2,
        attn_clip_sigmas=6.0,
        mlp_clip_sigmas=6.0,
    )
    qs = quantize(state, quant_groups_for(TINY), q)
    assert len(qs.info["lqer"]) == 2
    plain = dequantize(quantize(state, quant_groups_for(TINY), QuantConfig(**{**q.__dict__, "lqer_rank": 0})))
    corrected = dequantize(qs)
    for name in qs.info["lqer"]:
        assert (corrected[name] - state[name]).norm() < (plain[name] - state[name]).norm()


def test_hash_tables_have_their_own_width():
    """BigramHash / value-embedding tables form the `hash` group with quant.hash_bits."""
    from pgolf.model.inventory import params_by_group

    cfg = ModelConfig(
        vocab_size=64,
        num_layers=2,
        model_dim=32,
        num_heads=2,
        num_kv_heads=1,
        bigram_buckets=512,
        bigram_dim=16,
        ve_layers="1",
        ve_dim=8,
    )
    groups = quant_groups_for(cfg)
    assert groups["bigram.bigram_table"] == groups["value_embed.ve_table"] == "hash"
    assert groups["bigram.bigram_proj.weight"] == groups["value_embed.ve_proj.weight"] == "hash"
    assert groups["tok_emb.weight"] == "embed" and groups["bigram.bigram_scale"] == "control"
    assert params_by_group(cfg)["hash"] == 512 * 16 + 16 * 32 + 64 * 8 + 8 * 16
    q = QuantConfig(scheme="mixed", compressor="zlib", hash_bits=4, embed_bits=8, keep_float_max_numel=64)
    qs = quantize(GPT(cfg).state_dict(), groups, q)
    assert qs.entries["bigram.bigram_table"]["bits"] == 4 and qs.entries["tok_emb.weight"]["bits"] == 8
    assert qs.entries["bigram.bigram_table"]["group"] == "hash" and qs.entries["tok_emb.weight"]["group"] == "embed"


def test_a_tensor_without_a_group_is_refused():
    state = tiny_state()
    groups = quant_groups_for(TINY)
    groups.pop("blocks.0.mlp.fc.weight")
    for scheme in ("int8", "mixed"):
        with pytest.raises(KeyError, match="no quantization group"):
            quantize(state, groups, QuantConfig(scheme=scheme))
