"""GPTQ: beats round-to-nearest on the same weights and calibration data; Hessian collection hooks
every linear input (and the head); calibration reads training shards only; the time budget."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from conftest import shared_data_dir
from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.core.roles import quant_groups
from pgolf.data.shards import write_shard
from pgolf.model.gpt import GPT
from pgolf.quant.gptq import (
    calibration_batches,
    collect_hessians,
    gptq_codes,
    linear_weight_names,
    output_error,
    rtn_codes,
)
from pgolf.quant.lowbit import dequantize_rows, fp16_row_scale, row_clip
from pgolf.quant.schemes import quantize
from pgolf.quant.state import dequantize

SHARED = shared_data_dir() / "fineweb_sample" / "sp1024"  # ../shared/data or $PGOLF_SHARED_DATA


def correlated_inputs(n: int, dim: int, sample_seed: int = 0) -> torch.Tensor:
    """Activations with strongly correlated features and uneven scales (as real layer inputs);
    the feature mixing is fixed, `sample_seed` draws new samples from the same distribution."""
    mix = torch.randn(dim, dim, generator=torch.Generator().manual_seed(123)) / dim**0.5 + torch.eye(dim)
    g = torch.Generator().manual_seed(sample_seed)
    return (torch.randn(n, dim, generator=g) @ mix) * torch.linspace(0.2, 3.0, dim)


@pytest.mark.parametrize("bits,k", [(3, 4.0), (4, 6.0), (6, 12.0)])
@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_beats_rtn_on_same_weights_and_calibration(bits, k, act_order):
    torch.manual_seed(1)
    w = torch.randn(48, 96) * 0.02
    x = correlated_inputs(2048, 96)
    h = x.T @ x / x.shape[0]
    scale = fp16_row_scale(row_clip(w, bits, "sdclip", k), bits)
    err_rtn = output_error(w, dequantize_rows(rtn_codes(w, scale, bits), scale), h)
    codes = gptq_codes(w, h, scale, bits, block_size=32, damp=0.01, act_order=act_order)
    err_gptq = output_error(w, dequantize_rows(codes, scale), h)
    assert codes.dtype == torch.int8 and codes.abs().max() <= (1 << (bits - 1)) - 1
    assert err_gptq < 0.8 * err_rtn
    x_test = correlated_inputs(2048, 96, sample_seed=2)  # held-out inputs from the same distribution
    h_test = x_test.T @ x_test / x_test.shape[0]
    assert output_error(w, dequantize_rows(codes, scale), h_test) < output_error(
        w, dequantize_rows(rtn_codes(w, scale, bits), scale), h_test
    )


def reference_gptq(
    w: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, bits: int, damp: float = 0.01
) -> torch.Tensor:
    """Textbook GPTQ in float64 without blocks or act-order: U = chol((H + damp)^-1, upper), then
    column by column round and spread the scaled error over the later columns."""
    w, h = w.double().clone(), h.double()
    hd = h + damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(hd), upper=True)
    s, r = scale.double(), (1 << (bits - 1)) - 1
    codes = torch.zeros_like(w)
    for j in range(w.shape[1]):
        codes[:, j] = torch.clamp(torch.round(w[:, j] / s), -r, r)
        e = (w[:, j] - codes[:, j] * s) / u[j, j]
        w[:, j + 1 :] -= e[:, None] * u[j, j + 1 :][None, :]
    return codes.to(torch.int8)


@pytest.mark.parametrize("shape,block", [((48, 96), 32), ((96, 40), 128), ((20, 130), 16)])
def test_fast_gptq_matches_the_textbook_algorithm(shape, block):
    """The blocked fp32 GPTQ (flipped-Cholesky inverse, transposed in-place updates) against the
    float64 textbook loop: the same codes up to rare ties at a rounding boundary, the same error."""
    torch.manual_seed(2)
    w = torch.randn(*shape) * 0.02
    x = correlated_inputs(4 * shape[1], shape[1])
    h = x.T @ x / x.shape[0]
    scale = fp16_row_scale(row_clip(w, 5, "sdclip", 8.0), 5)
    fast = gptq_codes(w, h, scale, 5, block_size=block, act_order=False)
    ref = reference_gptq(w, h, scale, 5)
    assert (fast == ref).float().mean() > 0.999
    err = [output_error(w, dequantize_rows(c, scale), h) for c in (fast, ref)]
    assert err[0] == pytest.approx(err[1], rel=1e-3)


def test_gptq_with_identity_hessian_is_rtn():
    w = torch.randn(8, 40)
    scale = fp16_row_scale(row_clip(w, 4, "sdclip", 5.0), 4)
    assert torch.equal(gptq_codes(w, torch.eye(40), scale, 4, act_order=False), rtn_codes(w, scale, 4))


def test_gptq_dead_columns_are_zeroed():
    w = torch.randn(6, 20)
    h = torch.eye(20)
    h[3, 3] = 0.0
    scale = fp16_row_scale(row_clip(w, 5, "sdclip", 8.0), 5)
    assert (gptq_codes(w, h, scale, 5)[:, 3] == 0).all()


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=96))


def test_collect_hessians_covers_every_linear_and_the_head():
    model = tiny_model()
    batches = [torch.randint(0, 96, (2, 32)) for _ in range(3)]
    hs = collect_hessians(model, batches)
    expected = set(linear_weight_names(model)) | {"tok_emb.weight"}
    assert set(hs.h) == expected and hs.batches == 3 and hs.tokens == 3 * 64
    for name, h in hs.h.items():
        assert h.shape[0] == h.shape[1] and torch.allclose(h, h.T, atol=1e-5)
        assert torch.linalg.eigvalsh(h.double()).min() > -1e-5, name
    # the head's Hessian is the mean outer product of the final hidden states
    with torch.no_grad():
        hid = torch.cat([model.hidden(b).reshape(-1, 64) for b in batches])
    assert torch.allclose(hs.h["tok_emb.weight"], hid.T @ hid / hid.shape[0], atol=1e-5)


def test_collect_hessians_shares_xtx_across_qkv_and_never_copies_to_the_host(monkeypatch):
    """q, k and v read the same input: one X^T X product serves all three (4 products per layer:
    qkv, attention output, MLP up, MLP down; + the head); the sums stay on the model's device
    (no .cpu() per hook, which is a device sync on GPU)."""
    model = tiny_model()
    copies = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(1) or real_cpu(self, *a, **k))
    hs = collect_hessians(model, [torch.randint(0, 96, (2, 32)) for _ in range(3)])
    assert copies == [] and hs.products == 3 * (4 * 2 + 1)
    for i in range(2):
        q = hs.h[f"blocks.{i}.attn.c_q.weight"]
        assert torch.equal(q, hs.h[f"blocks.{i}.attn.c_k.weight"]) and torch.equal(
            q, hs.h[f"blocks.{i}.attn.c_v.weight"]
        )
        assert q.data_ptr() != hs.h[f"blocks.{i}.attn.c_k.weight"].data_ptr()  # separate tensors: safe to all-reduce


def test_collect_hessians_respects_batch_and_time_limits():
    model = tiny_model()
    many = (torch.randint(0, 96, (2, 32)) for _ in range(1000))
    assert collect_hessians(model, many, max_batches=2).batches == 2
    slow = collect_hessians(model, (torch.randint(0, 96, (2, 32)) for _ in range(1000)), time_budget_s=1e-9)
    assert slow.batches == 1  # at least one batch, then the budget stops it


def test_quantize_with_hessians_uses_gptq_until_the_deadline():
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    hs = collect_hessians(model, [torch.randint(0, 96, (4, 32)) for _ in range(2)]).h
    q = QuantConfig(
        scheme="mixed",
        gptq=True,
        keep_float_max_numel=512,
        attn_bits=4,
        mlp_bits=4,
        attn_clip_sigmas=6.0,
        mlp_clip_sigmas=6.0,
    )
    state = model.state_dict()
    on = quantize(state, quant_groups(model), q, hessians=hs)
    assert len(on.info["gptq"]) == sum(e["kind"] == "intq" for e in on.entries.values())
    late = quantize(state, quant_groups(model), q, hessians=hs, deadline=time.perf_counter() - 1)
    assert late.info["gptq"] == [] and len(late.info["rtn_after_deadline"]) == len(on.info["gptq"])
    rtn = quantize(state, quant_groups(model), q)  # no Hessians: round to nearest, same as after the deadline
    assert all(np.array_equal(rtn.arrays[n], late.arrays[n]) for n in rtn.arrays)
    total = {
        kind: sum(output_error(state[n], dequantize(s)[n], hs[n]) for n in on.info["gptq"])
        for kind, s in (("gptq", on), ("rtn", rtn))
    }
    assert total["gptq"] < total["rtn"]


def test_calibration_reads_training_shards_only(tmp_path):
    train = np.arange(5000, dtype=np.uint16) % 90 + 2
    write_shard(tmp_path / "fineweb_train_000000.bin", train)
    write_shard(tmp_path / "fineweb_val_000000.bin", np.full(5000, 95, dtype=np.uint16))
    batches = list(calibration_batches(str(tmp_path / "fineweb_train_*.bin"), 3, 2, 16))
    assert len(batches) == 3 and batches[0].shape == (2, 16)
    seen = torch.cat([b.reshape(-1) for b in batches])
    assert torch.equal(seen, torch.from_numpy(train[: seen.numel()].astype(np.int64)))
    assert not (seen == 95).any()


@pytest.mark.data
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the FineWeb sample in ../shared/data (or $PGOLF_SHARED_DATA)")
def test_gptq_beats_rtn_on_real_calibration_data():
    torch.manual_seed(0)
    model = GPT(ModelConfig(num_layers=1, model_dim=64, num_heads=2, num_kv_heads=1))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    hs = collect_hessians(model, calibration_batches(str(SHARED / "fineweb_train_*.bin"), 2, 4, 128)).h
    w = model.blocks[0].mlp.proj.weight.detach()
    scale = fp16_row_scale(row_clip(w, 4, "sdclip", 6.0), 4)
    h = hs["blocks.0.mlp.proj.weight"]
    codes = gptq_codes(w, h, scale, 4)
    assert output_error(w, dequantize_rows(codes, scale), h) < output_error(
        w, dequantize_rows(rtn_codes(w, scale, 4), scale), h
    )
