"""Quantization spread over the ranks (issue 11): each GPTQ matrix on one rank (dealt by GPTQ cost),
rank 0 gathers the codes and keeps the best LQER corrections over all ranks. One process gives the
same QuantizedState as quantizing alone."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from pgolf.core.config import QuantConfig
from pgolf.quant.lowbit import dequantize_rows
from pgolf.quant.lqer import lqer_correction, weighted_error
from pgolf.quant.mixed import LQER_PART_NAMES, treatment
from pgolf.quant.schemes import quantize
from pgolf.quant.state import QuantizedState


def gptq_cost(shape: tuple[int, ...]) -> int:
    """GPTQ work of an (out x in) matrix: the column loop's updates (out * in^2) + the inverse (in^3)."""
    out_f, in_f = shape
    return out_f * in_f * in_f + in_f**3


def rank_shares(state: dict[str, Tensor], groups: dict[str, str], q: QuantConfig, world: int) -> list[list[str]]:
    """Tensor names each rank quantizes: the GPTQ matrices dealt largest first to the least
    loaded rank; every other tensor (cheap: fp16 or per-tensor int8) on rank 0."""
    costs = {
        n: gptq_cost(tuple(t.shape))
        for n, t in state.items()
        if treatment(groups[n], tuple(t.shape), t.is_floating_point(), q) == "intq"
    }
    loads, shares = [0] * world, [[] for _ in range(world)]
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        r = min(range(world), key=lambda i: (loads[i], i))
        shares[r].append(name)
        loads[r] += costs[name]
    shares[0].extend(n for n in state if n not in costs)
    return shares


def quantize_across_ranks(
    state: dict[str, Tensor], groups: dict[str, str], q: QuantConfig, hessians: dict | None, deadline: float | None
) -> QuantizedState | None:
    """The mixed scheme with each rank quantizing its share (GPTQ, and the LQER candidates of its
    tensors); rank 0 gets the merged QuantizedState, identical to one process's, the others None.
    A collective under torch.distributed; one process just calls quantize."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return quantize(state, groups, q, hessians=hessians, deadline=deadline)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = set(rank_shares(state, groups, q, world)[rank])
    part = quantize(
        {n: t for n, t in state.items() if n in mine},
        {n: groups[n] for n in mine},
        q,
        hessians=hessians,
        deadline=deadline,
    )
    parts = [None] * world if rank == 0 else None
    dist.gather_object((part.arrays, part.entries, part.info), parts, dst=0)
    if rank != 0:
        return None
    return merge_parts(state, parts, q, hessians)


def merge_parts(state: dict[str, Tensor], parts: list, q: QuantConfig, hessians: dict | None) -> QuantizedState:
    """One QuantizedState from every rank's (arrays, entries, info), in the state's order. Each
    rank kept LQER on its own best lqer_top_k tensors; the global best lqer_top_k are among
    those, and they are ranked here exactly as pgolf.quant.mixed.add_lqer ranks them."""
    arrays, entries, info = {}, {}, {"gptq": [], "rtn_after_deadline": [], "lqer": []}
    for part_arrays, _, _ in parts:
        arrays.update(part_arrays)
    by_name = {n: e for _, part_entries, _ in parts for n, e in part_entries.items()}
    for name in state:
        entries[name] = by_name[name]
    for key in ("gptq", "rtn_after_deadline"):
        listed = {n for _, _, part_info in parts for n in part_info.get(key, [])}
        info[key] = [n for n in state if n in listed]
    info["lqer"] = keep_best_lqer(state, arrays, entries, q, hessians)
    info["seconds"] = max(part_info.get("seconds", 0.0) for _, _, part_info in parts)
    return QuantizedState(arrays, entries, info)


def keep_best_lqer(
    state: dict[str, Tensor], arrays: dict, entries: dict, q: QuantConfig, hessians: dict | None
) -> list[str]:
    """Rank the LQER corrections the ranks kept by error reduction per stored code (the gain
    recomputed from the stored factors is bit-identical to the one they were chosen by), keep
    the best lqer_top_k, drop the rest's factors."""
    scored = []
    for name, e in entries.items():
        if not e.get("lqer"):
            continue
        w = state[name].detach().cpu().float()
        err = w - dequantize_rows(torch.from_numpy(arrays[name + ".q"]), torch.from_numpy(arrays[name + ".s"]))
        h = hessians.get(name) if hessians else None
        h_diag = h.diagonal() if h is not None else None
        parts = {p: torch.from_numpy(arrays[f"{name}.{p}"]) for p in LQER_PART_NAMES}
        gain = weighted_error(err, h_diag) - weighted_error(err - lqer_correction(parts), h_diag)
        scored.append((gain / (sum(w.shape) * q.lqer_rank), name))
    scored.sort(key=lambda g: (-g[0], g[1]))
    keep = [name for _, name in scored[: q.lqer_top_k]]
    for _, name in scored[q.lqer_top_k :]:
        del entries[name]["lqer"]
        for p in LQER_PART_NAMES:
            del arrays[f"{name}.{p}"]
    return keep
