"""The dry-run report (`pgolf train --dry-run`): parameters by group, FLOPs per token and the
planner's predicted artifact size against the cap, with its per-group table; nothing trained."""

from __future__ import annotations

from pgolf.core.config import RunConfig
from pgolf.model.gpt import layer_schedule
from pgolf.model.inventory import flops_per_token, params_by_group, quant_layout
from pgolf.quant.plan import format_table, predict_table


def describe(cfg: RunConfig) -> str:
    """The report as text (golf-style key:value lines, then the size table)."""
    m = cfg.model
    groups = params_by_group(m)
    total = sum(groups.values())
    fl = flops_per_token(m, cfg.train.train_seq_len)
    table = predict_table(m, quant_layout(m), cfg.quant)
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
