"""Model arithmetic before training: parameters by group, FLOPs per token, predicted artifact size.

Parameter shapes come from building the model on the `meta` device (no memory, no init cost),
so the prediction can never drift from the model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgolf.config import ModelConfig, RunConfig
from pgolf.model import GPT, layer_schedule

# Tensor groups (by parameter name) used by size tables and per-group quantization.
GROUP_RULES = (
    ("hash", ("bigram_table", "bigram_proj", "ve_table", "ve_proj")),  # extra lookup tables
    ("embed", ("tok_emb", "lm_head")),
    ("attn", (".attn.c_q", ".attn.c_k", ".attn.c_v", ".attn.proj")),
    ("mlp", (".mlp.fc", ".mlp.proj")),
)
TENSOR_GROUPS = ("embed", "hash", "attn", "mlp", "control")  # every group, in table order
# Compressed bytes per stored byte of int8 payload, official int8+zlib on an 8xH100-trained
# baseline: 15,815,847 artifact bytes for 17,059,912 params (~0.93 B/param incl. scales/fp16).
INT8_ZLIB_BYTES_PER_PARAM = 15_815_847 / 17_059_912


def tensor_group(name: str) -> str:
    """hash | embed | attn | mlp | control (every small/control tensor)."""
    for group, keys in GROUP_RULES:
        if any(k in name for k in keys):
            return group
    return "control"


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """name -> shape of every parameter, without allocating weights."""
    with torch.device("meta"):
        model = GPT(cfg)
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def params_by_group(cfg: ModelConfig) -> dict[str, int]:
    out = dict.fromkeys(TENSOR_GROUPS, 0)
    for name, shape in param_shapes(cfg).items():
        n = 1
        for d in shape:
            n *= d
        out[tensor_group(name)] += n
    return out


@dataclass(frozen=True)
class Flops:
    per_token_forward: float
    per_token_train: float  # 3x forward (forward + backward)


def flops_per_token(cfg: ModelConfig, seq_len: int, recur_active: bool = True) -> Flops:
    """Matmul FLOPs per token: 2 x (weights used, counting looped layers per pass, plus the
    output head) + attention scores/values 2 x 2 x T x D per layer application (full T x T,
    the PaLM convention; causal masking halves the useful part)."""
    D, H = cfg.model_dim, cfg.num_heads
    dh = D // H
    kv = cfg.num_kv_heads * dh
    hidden = int(round(cfg.mlp_mult * D))
    per_layer = D * D + 2 * D * kv + D * D + 2 * D * hidden
    applications = len(layer_schedule(cfg, recur_active))
    fwd = 2.0 * (applications * per_layer + D * cfg.vocab_size) + applications * 4.0 * seq_len * D
    return Flops(fwd, 3.0 * fwd)


def predict_int8_bytes(cfg: ModelConfig, keep_float_max_numel: int = 65_536) -> int:
    """Official int8 scheme, before compression: int8 + fp16 row scale for large matrices, fp16
    (fp32 for control) for small tensors."""
    total = 0
    for name, shape in param_shapes(cfg).items():
        n = 1
        for d in shape:
            n *= d
        if n <= keep_float_max_numel:
            total += n * (4 if tensor_group(name) == "control" else 2)
        else:
            total += n + 2 * (shape[0] if len(shape) == 2 else 0) + (4 if len(shape) != 2 else 0)
    return total


def describe(cfg: RunConfig) -> str:
    """The dry-run report: params by group, FLOPs/token, the planner's predicted artifact size
    (pgolf.sizeplan) vs the cap, with its per-group table."""
    m = cfg.model
    groups = params_by_group(m)
    total = sum(groups.values())
    fl = flops_per_token(m, cfg.train.train_seq_len)
    from pgolf.sizeplan import format_table, predict_table

    table = predict_table(m, cfg.quant)
    pred = table.artifact_bytes
    lines = [
        f"preset:{cfg.preset} model_params:{total} " + " ".join(f"params_{k}:{v}" for k, v in groups.items()),
        f"layer_applications:{len(layer_schedule(m, True))} flops_per_token_fwd:{fl.per_token_forward:.4g} "
        f"flops_per_token_train:{fl.per_token_train:.4g} seq_len:{cfg.train.train_seq_len}",
        f"predicted_artifact_bytes:{pred} scheme:{cfg.quant.scheme} compressor:{cfg.quant.compressor} "
        f"size_cap_bytes:{cfg.quant.size_cap_bytes} fits:{pred <= cfg.quant.size_cap_bytes} (code bytes not included)",
        format_table(table),
    ]
    return "\n".join(lines)
