"""Cap fitting: an artifact a little over its target is brought under it by measured pruning of
the cheapest +-1 codes (then by dropping LQER), one far over is refused saying by how much."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import tiny_config
from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.model.gpt import GPT
from pgolf.model.inventory import quant_groups_for
from pgolf.quant.capfit import fit_to_cap, prune_order, pruned_state
from pgolf.quant.pack import SizeCapError, pack, unpack
from pgolf.quant.schemes import quantize

MCFG = ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=128)


def trained_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = GPT(MCFG).state_dict()
    return {k: v + 0.02 * torch.randn_like(v) if v.ndim == 2 else v for k, v in state.items()}


def quantized(lqer: int = 0):
    # a tiny model's artifact is mostly scales and fp16 tensors: 2% of it takes ~7% of its codes
    q = QuantConfig(
        scheme="mixed",
        compressor="zlib",
        keep_float_max_numel=256,
        attn_bits=5,
        mlp_bits=5,
        embed_bits=6,
        attn_clip_sigmas=6.0,
        mlp_clip_sigmas=6.0,
        embed_clip_sigmas=8.0,
        lqer_rank=lqer,
        lqer_top_k=2,
        prune_max_frac=0.12,
    )
    return quantize(trained_like_state(), quant_groups_for(MCFG), q), q


def test_two_percent_over_fits_by_pruning_the_cheapest_codes(tmp_path):
    qs, q = quantized()
    first = pack(qs, asdict(MCFG), q, tmp_path / "a.pglf")
    limit = int(first.bytes * 0.98)
    res, report = fit_to_cap(qs, asdict(MCFG), q, tmp_path / "a.pglf", limit, None, first)
    assert res.bytes <= limit and report.bytes_after == res.bytes and report.pruned > 0
    assert report.pruned_frac <= q.prune_max_frac and "cap_fit: bytes:" in report.line()
    restored, _ = unpack(tmp_path / "a.pglf")  # the fitted artifact is what was written
    assert set(restored) == set(qs.entries)
    changed = sum(
        int((qs.arrays[n + ".q"] != pruned_state(qs, prune_order(qs, None), report.pruned).arrays[n + ".q"]).sum())
        for n, e in qs.entries.items()
        if e["kind"] == "intq"
    )
    assert changed == report.pruned


def test_prune_order_is_cheapest_first_and_only_unit_codes():
    qs, _ = quantized()
    h = {
        n: torch.diag(torch.rand(qs.arrays[n + ".q"].shape[1]) + 0.1)
        for n, e in qs.entries.items()
        if e["kind"] == "intq"
    }
    order = prune_order(qs, h)
    costs = []
    for i, j in zip(order.ids[:500].tolist(), order.idx[:500].tolist()):
        name = order.tensors[i]
        q = qs.arrays[name + ".q"]
        r, c = divmod(j, q.shape[1])
        assert abs(int(q[r, c])) == 1
        costs.append(float(qs.arrays[name + ".s"][r]) ** 2 * float(h[name][c, c]))
    assert costs == sorted(costs)
    assert len(order) == sum(
        int((np.abs(qs.arrays[n + ".q"]) == 1).sum()) for n, e in qs.entries.items() if e["kind"] == "intq"
    )


def test_lqer_is_dropped_when_pruning_is_not_allowed(tmp_path):
    qs, q = quantized(lqer=4)
    q = QuantConfig(**{**q.__dict__, "prune_max_frac": 0.0})
    first = pack(qs, asdict(MCFG), q, tmp_path / "a.pglf")
    assert qs.info["lqer"]
    res, report = fit_to_cap(qs, asdict(MCFG), q, tmp_path / "a.pglf", first.bytes - 10, None, first)
    assert report.lqer_dropped and report.pruned == 0 and res.bytes <= first.bytes - 10


def test_thirty_percent_over_is_refused_saying_by_how_much(tmp_path):
    qs, q = quantized()
    first = pack(qs, asdict(MCFG), q, tmp_path / "a.pglf")
    with pytest.raises(SizeCapError, match=r"cannot fit the cap: .* still leaves [\d,]+ bytes over"):
        fit_to_cap(qs, asdict(MCFG), q, tmp_path / "a.pglf", int(first.bytes * 0.7), None, first)
    assert not (tmp_path / "a.pglf").exists()  # nothing half-fitted is left as the artifact


def test_a_run_slightly_over_the_cap_ends_under_it(tiny_dataset, tmp_path, monkeypatch):
    """End to end: the natural size of a tiny mixed run, then the same run under a cap 2% below
    it: the artifact fits, the log says what was pruned, the roundtrip score is still measured."""
    from pgolf.finish.finalize import finalize
    from pgolf.train.trainer import run_training

    monkeypatch.chdir(tmp_path)
    sizes = {}
    for run, cap in (("free", 16_000_000), ("tight", None)):
        cfg = tiny_config(*tiny_dataset, iterations=4)
        q = cfg.quant
        q.scheme, q.compressor, q.keep_float_max_numel, q.count_code_bytes = "mixed", "zlib", 64, False
        q.prune_max_frac = 0.3
        q.size_cap_bytes = cap or int(sizes["free"] * 0.98) + 4096  # the target is the cap minus 4,096
        cfg.run_id = run
        summary = finalize(*run_training(cfg), code_bytes=0)
        sizes[run] = summary.artifact_bytes
    assert sizes["tight"] <= int(sizes["free"] * 0.98) < sizes["free"]
    assert summary.cap_fit["pruned"] > 0 and summary.roundtrip["val_bpb"] > 0
    assert "cap_fit: bytes:" in (tmp_path / "logs" / "tight.txt").read_text()
