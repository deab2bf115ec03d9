"""Finalization across ranks (issue 11), two gloo processes: Hessians collected from each rank's
own calibration batches and all-reduced equal one process's over all batches; GPTQ + LQER spread
over the ranks and merged on rank 0 give exactly one process's quantized state."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.core.roles import quant_groups
from pgolf.data.shards import write_shard
from pgolf.finish.ranks import gptq_cost, quantize_across_ranks, rank_shares
from pgolf.model.gpt import GPT
from pgolf.quant.gptq import calibration_batches, collect_hessians
from pgolf.quant.schemes import quantize

WORLD, BATCHES = 2, 5  # an odd batch count: the ranks read 3 and 2
QCFG = QuantConfig(
    scheme="mixed",
    gptq=True,
    keep_float_max_numel=512,
    attn_bits=4,
    mlp_bits=5,
    embed_bits=6,
    attn_clip_sigmas=6.0,
    mlp_clip_sigmas=8.0,
    lqer_rank=2,
    lqer_top_k=3,
)


def trained_like_model() -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, vocab_size=96))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=WORLD)
    model = trained_like_model()
    batches = calibration_batches(f"{folder}/fineweb_train_*.bin", BATCHES, 2, 32, rank=rank, world_size=WORLD)
    hs = collect_hessians(model, batches, all_reduce=True)
    qs = quantize_across_ranks(model.state_dict(), quant_groups(model), QCFG, hs.h, None)
    out = {"h": hs.h, "batches": hs.batches, "qs": None if qs is None else (qs.arrays, qs.entries, qs.info)}
    with open(f"{folder}/rank{rank}.pkl", "wb") as f:
        pickle.dump(out, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_calibrate_and_quantize_as_one(tmp_path):
    rng = np.random.default_rng(0)
    write_shard(tmp_path / "fineweb_train_000000.bin", rng.integers(1, 96, 4000).astype(np.uint16))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    outs = [pickle.load(open(tmp_path / f"rank{r}.pkl", "rb")) for r in range(WORLD)]
    model = trained_like_model()
    one = collect_hessians(model, calibration_batches(str(tmp_path / "fineweb_train_*.bin"), BATCHES, 2, 32))
    assert [o["batches"] for o in outs] == [3, 2]  # different batches per rank
    for out in outs:  # summed in another order: float tolerance
        assert set(out["h"]) == set(one.h)
        assert all(torch.allclose(out["h"][n], one.h[n], rtol=1e-5, atol=1e-6) for n in one.h)
    # with the same Hessians, the merged state is exactly one process's
    ref = quantize(model.state_dict(), quant_groups(model), QCFG, hessians=outs[0]["h"])
    arrays, entries, info = outs[0]["qs"]
    assert outs[1]["qs"] is None
    assert sorted(arrays) == sorted(ref.arrays) and all(np.array_equal(arrays[n], ref.arrays[n]) for n in ref.arrays)
    assert list(entries) == list(ref.entries) and entries == ref.entries
    for key in ("gptq", "rtn_after_deadline", "lqer"):
        assert info[key] == ref.info[key], key
    assert len(info["lqer"]) == QCFG.lqer_top_k and len(info["gptq"]) > WORLD


def test_rank_shares_balance_gptq_cost_and_cover_every_tensor():
    """Every tensor on exactly one rank; the non-matrix tensors on rank 0; the matrices dealt so
    no rank's GPTQ cost exceeds the ideal share by more than the largest matrix."""
    model = trained_like_model()
    state, groups = model.state_dict(), quant_groups(model)
    shares = rank_shares(state, groups, QCFG, 3)
    names = [n for share in shares for n in share]
    assert sorted(names) == sorted(state) and len(names) == len(set(names))
    matrices = {n for n, e in quantize(state, groups, QCFG).entries.items() if e["kind"] == "intq"}
    assert set(state) - matrices <= set(shares[0])
    loads = [sum(gptq_cost(tuple(state[n].shape)) for n in share if n in matrices) for share in shares]
    biggest = max(gptq_cost(tuple(state[n].shape)) for n in matrices)
    assert min(loads) > 0 and max(loads) <= sum(loads) / 3 + biggest
