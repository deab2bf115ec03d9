"""The `mixed` quantization scheme: per tensor group (embed / attn / mlp) its own bit width and clip
rule, GPTQ when Hessians are given, LQER on the tensors that gain most, fp16 for the rest.

| tensor | stored as |
|---|---|
| 2-D float in embed/attn/mlp, > keep_float_max_numel | per-row intN codes (int8 array) + fp16 row scales (`intq`) |
| group width >= 16 bits (e.g. quant.embed_bits=16) | fp16 (`raw`) |
| control tensors, small tensors | fp16 (`raw`) |
| large non-2-D float | official per-tensor int8 (`int8_tensor`) |
| non-float | unchanged (`raw`) |

A pure function of (state, config, Hessians): the same inputs give the same codes. GPTQ runs
until `deadline` (time.perf_counter() value); tensors left after it fall back to round-to-nearest
and are listed in the returned info, so a time budget can never stall finalization.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.core.config import QuantConfig
from pgolf.quant.gptq import gptq_codes
from pgolf.quant.lowbit import codes_for, dequantize_rows, fp16_row_scale, quantize_int8_tensor, row_clip
from pgolf.quant.lqer import lqer_candidate, lqer_correction

FP16_BITS = 16  # a group width >= this means "keep fp16"
LQER_PART_NAMES = ("lqa", "lqas", "lqb", "lqbs")


def group_bits_and_k(qcfg: QuantConfig, group: str) -> tuple[int, float]:
    """(bits, SDClip k) configured for a tensor group."""
    if group == "embed":
        return qcfg.embed_bits, qcfg.embed_clip_sigmas
    if group == "hash":
        return qcfg.hash_bits, qcfg.hash_clip_sigmas
    if group == "attn":
        return qcfg.attn_bits, qcfg.attn_clip_sigmas
    if group == "mlp":
        return qcfg.mlp_bits, qcfg.mlp_clip_sigmas
    return FP16_BITS, 0.0


def treatment(group: str, shape: tuple[int, ...], is_float: bool, qcfg: QuantConfig) -> str:
    """How the mixed scheme stores a tensor of a quantization group: raw | intq | int8_tensor (the
    planner uses this too)."""
    bits, _ = group_bits_and_k(qcfg, group)
    numel = int(np.prod(shape, dtype=np.int64))
    if not is_float or bits >= FP16_BITS or numel <= qcfg.keep_float_max_numel:
        return "raw"
    return "intq" if len(shape) == 2 else "int8_tensor"


def _to_np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _raw_entry(arrays: dict, entries: dict, name: str, t: Tensor) -> None:
    """fp16 for floats (control tensors included), unchanged otherwise."""
    entries[name] = {"kind": "raw", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
    arrays[name] = _to_np(t.to(torch.float16) if t.is_floating_point() else t)


def _int8_tensor_entry(arrays: dict, entries: dict, name: str, t: Tensor) -> None:
    """Large non-matrix float tensors: one int8 scale for the whole tensor (official rule)."""
    q, s = quantize_int8_tensor(t)
    arrays[name + ".q"], arrays[name + ".s"] = _to_np(q), _to_np(s)
    entries[name] = {"kind": "int8_tensor", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _quantize_matrix(t: Tensor, qcfg: QuantConfig, bits: int, k: float, h: Tensor | None) -> tuple[Tensor, Tensor]:
    """(codes, fp16 scales) of one 2-D weight: scales from the clip rule, codes by GPTQ when a
    Hessian is given, else round-to-nearest."""
    scale = fp16_row_scale(row_clip(t, bits, qcfg.clip, k), bits)
    if h is None:
        return codes_for(t, scale, bits), scale
    codes = gptq_codes(t, h, scale, bits, qcfg.gptq_block_size, qcfg.gptq_damp, qcfg.gptq_act_order)
    return codes, scale


def quantize_mixed_arrays(
    state: dict[str, Tensor],
    groups: dict[str, str],
    qcfg: QuantConfig,
    hessians: dict[str, Tensor] | None = None,
    deadline: float | None = None,
) -> tuple[dict, dict, dict[str, Any]]:
    """(arrays, entries, info) of the mixed scheme (see module docstring); `groups` maps every
    tensor name to its quantization group."""
    arrays: dict[str, np.ndarray] = {}
    entries: dict[str, dict] = {}
    info: dict[str, Any] = {"gptq": [], "rtn_after_deadline": [], "lqer": []}
    t0 = time.perf_counter()
    for name, t in state.items():
        t = t.detach().cpu()
        group = groups[name]
        bits, k = group_bits_and_k(qcfg, group)
        kind = treatment(group, tuple(t.shape), t.is_floating_point(), qcfg)
        if kind != "intq":
            (_raw_entry if kind == "raw" else _int8_tensor_entry)(arrays, entries, name, t)
            continue
        h = hessians.get(name) if (qcfg.gptq and hessians) else None
        if h is not None and deadline is not None and time.perf_counter() > deadline:
            info["rtn_after_deadline"].append(name)
            h = None
        codes, scale = _quantize_matrix(t.float(), qcfg, bits, k, h)
        if h is not None:
            info["gptq"].append(name)
        arrays[name + ".q"], arrays[name + ".s"] = _to_np(codes), _to_np(scale)
        entries[name] = {
            "kind": "intq",
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "bits": bits,
            "group": group,
        }
    if qcfg.lqer_rank > 0 and qcfg.lqer_top_k > 0:
        info["lqer"] = add_lqer(state, arrays, entries, qcfg, hessians)
    info["seconds"] = time.perf_counter() - t0
    return arrays, entries, info


def add_lqer(
    state: dict[str, Tensor], arrays: dict, entries: dict, qcfg: QuantConfig, hessians: dict[str, Tensor] | None
) -> list[str]:
    """Give the lqer_top_k intq tensors with the largest (activation-weighted) error reduction per
    stored factor code, (out + in) * rank, a rank-lqer_rank correction; returns their names."""
    gains = []
    for name, e in entries.items():
        if e["kind"] != "intq":
            continue
        w = state[name].detach().cpu().float()
        w_hat = dequantize_rows(torch.from_numpy(arrays[name + ".q"]), torch.from_numpy(arrays[name + ".s"]))
        h = hessians.get(name) if hessians else None
        gain, parts = lqer_candidate(w, w_hat, qcfg.lqer_rank, h.diagonal() if h is not None else None)
        gains.append((gain / (sum(w.shape) * qcfg.lqer_rank), name, parts))
    gains.sort(key=lambda g: (-g[0], g[1]))
    chosen = []
    for gain, name, parts in gains[: qcfg.lqer_top_k]:
        if gain <= 0:
            continue
        for part in LQER_PART_NAMES:
            arrays[f"{name}.{part}"] = _to_np(parts[part])
        entries[name]["lqer"] = int(parts["lqb"].shape[0])
        chosen.append(name)
    return chosen


def restore_intq(name: str, entry: dict, arrays: dict[str, np.ndarray]) -> Tensor:
    """codes * row scales (+ the LQER product when present), in fp32."""
    w = dequantize_rows(torch.from_numpy(arrays[name + ".q"].copy()), torch.from_numpy(arrays[name + ".s"].copy()))
    if entry.get("lqer"):
        parts = {p: torch.from_numpy(arrays[f"{name}.{p}"].copy()) for p in LQER_PART_NAMES}
        w = w + lqer_correction(parts)
    return w
