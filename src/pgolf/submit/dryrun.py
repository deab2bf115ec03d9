"""The dry-run report (`pgolf train --dry-run`): parameters by group, FLOPs per token and the
planner's predicted artifact size against the cap, with its per-group table; nothing trained."""

from __future__ import annotations

from dataclasses import replace

from pgolf.core.config import RunConfig
from pgolf.model.gpt import layer_schedule
from pgolf.model.inventory import flops_per_token, params_by_group, quant_layout
from pgolf.model.memory import GIB, estimate_train_memory
from pgolf.quant.capfit import cap_target_bytes
from pgolf.quant.plan import format_table, predict_range, predict_table
from pgolf.quant.registry import scheme_for
from pgolf.submit.export import exported_code_bytes


def describe(cfg: RunConfig) -> str:
    """The report as text (golf-style key:value lines, then the size table)."""
    m = cfg.model
    groups = params_by_group(m)
    total = sum(groups.values())
    fl = flops_per_token(m, cfg.train.train_seq_len)
    q = cfg.quant
    code = exported_code_bytes(cfg) if q.count_code_bytes else 0
    layout = quant_layout(m)
    table = predict_table(m, layout, q, code)
    pred = table.artifact_bytes
    low, high = predict_range(m, layout, q, pred)
    lines = [
        f"preset:{cfg.preset} model_params:{total} " + " ".join(f"params_{k}:{v}" for k, v in groups.items()),
        f"layer_applications:{len(layer_schedule(m, True))} flops_per_token_fwd:{fl.per_token_forward:.4g} "
        f"flops_per_token_train:{fl.per_token_train:.4g} seq_len:{cfg.train.train_seq_len}",
        memory_line(cfg),
        f"predicted_artifact_bytes:{pred} code_bytes:{code} predicted_total_bytes:{pred + code} scheme:{q.scheme} "
        f"compressor:{q.compressor} size_cap_bytes:{q.size_cap_bytes} fits:{pred + code <= q.size_cap_bytes}",
        f"predicted_range_bytes:{low}-{high} point:{pred} fits_at_high:{high + code <= q.size_cap_bytes} "
        "(low: the heaviest-tailed weights seen, PR #1855's; high: Gaussian weights + the largest under-prediction "
        "measured; benchmarks/results/planner/table.md)",
        cap_fit_plan(pred, code, groups, q, high),
        clip_levers(m, q, pred) + wd_lever(cfg, pred),
        format_table(table),
    ]
    return "\n".join(lines)


DRY_RUN_WORLD = 8  # the record's GPU count: the micro-batch per GPU is the 8xH100 one


def memory_line(cfg: RunConfig) -> str:
    """Training memory per GPU at the preset's micro-batch on 8 GPUs (bf16 autocast, fp32 state),
    traced on fake tensors as the GPU run computes: compiled unless compile is off."""
    t = cfg.train
    accum = t.grad_accum_steps or 8 // DRY_RUN_WORLD
    seqs = max(t.train_batch_tokens // (DRY_RUN_WORLD * accum * t.train_seq_len), 1)
    compiled = cfg.compile != "off"
    est = estimate_train_memory(
        cfg.model,
        seqs,
        t.train_seq_len,
        world_size=DRY_RUN_WORLD,
        ema=t.ema_decay > 0,
        recur_active=bool(cfg.model.recur_layers),
        compiled=compiled,
    )
    gib = lambda b: f"{b / GIB:.2f}"  # noqa: E731
    return (
        f"memory_per_gpu_gib:{est.total_gib:.2f} micro_batch:{seqs}x{t.train_seq_len} "
        f"mode:{'compiled' if compiled else 'eager'} params:{gib(est.params)} optimizer:{gib(est.optimizer)} "
        f"ema:{gib(est.ema)} ddp_buckets:{gib(est.ddp)} fwd_bwd_peak:{gib(est.fwd_bwd)}"
    )


CLIP_STEP = 0.5  # SDClip k step of the lever report
WD_STEP = 0.005  # Muon weight decay step of the lever report
# Artifact bytes per +WD_STEP of train.muon_weight_decay, as a fraction of the artifact, measured on
# the CPU proxy (BENCHMARKS.md, "Size levers": the commands, the three packs, why it is so small).
WD_LEVER_FRAC = -45 / 520_349


def clip_levers(m, q, pred: int) -> str:
    """Bytes the planner predicts each group's SDClip k buys per +0.5 (a coarser grid: fewer bytes,
    more rounding error) — the cheapest size lever after pruning."""
    if "clip" not in scheme_for(q.scheme).fields or q.clip != "sdclip":
        return f"levers: (SDClip levers apply to schemes with per-group clips, clip=sdclip; not {q.scheme})"
    layout, parts = quant_layout(m), []
    for group in ("attn", "mlp", "embed", "hash"):
        field = f"{group}_clip_sigmas"
        moved = replace(q, **{field: getattr(q, field) + CLIP_STEP})
        delta = predict_table(m, layout, moved).artifact_bytes - pred
        if delta:
            parts.append(f"quant.{field}+{CLIP_STEP:g}:{delta:+d}B")
    return "levers: " + (" ".join(parts) or "none")


def wd_lever(cfg: RunConfig, pred: int) -> str:
    """The Muon weight-decay lever (WD_LEVER_FRAC of the predicted artifact per +WD_STEP)."""
    if not scheme_for(cfg.quant.scheme).shape_term:
        return ""
    return f" train.muon_weight_decay+{WD_STEP:g}:{round(pred * WD_LEVER_FRAC):+d}B(measured_on_proxy)"


# Bits one pruned +-1 code saves, MEASURED on the proxy: cap fitting took a 525,209-byte
# frontier-cpu-proxy artifact to 514,169 bytes by pruning 52,036 codes (BENCHMARKS.md, "Cap fitting
# on a deliberately oversize proxy"). Used only to say in the plan whether pruning can fit.
BITS_PER_PRUNED_CODE = 8 * (525_209 - 514_169) / 52_036


def cap_fit_plan(pred: int, code: int, groups: dict[str, int], q, high: int) -> str:
    """What cap fitting will have to do with the predicted artifact (it measures, at the end), and
    whether pruning within quant.prune_max_frac is expected to fit, at the point estimate and at
    the range's high end."""
    limit = cap_target_bytes(q, code)
    if high <= limit:  # high >= pred
        return f"cap_fit:not_needed target_bytes:{limit + code} headroom:{limit - pred}"
    if not scheme_for(q.scheme).fits_cap:
        return f"cap_fit:unavailable ({q.scheme} scheme) over_by:{pred - limit}: the run would be refused at the end"
    quantized = sum(v for k, v in groups.items() if k != "control")
    share = {
        name: max(b - limit, 0) * 8 / BITS_PER_PRUNED_CODE / max(quantized, 1)
        for name, b in (("point", pred), ("high", high))
    }
    fits = max(share.values()) <= q.prune_max_frac
    return (
        f"cap_fit:planned remove:{max(pred - limit, 0)} bytes by pruning up to {q.prune_max_frac:g} of {quantized} "
        f"quantized weights' +-1 codes, then LQER; expected pruned:{share['point']:.2%} (range high end "
        f"{share['high']:.2%}) at {BITS_PER_PRUNED_CODE:.2f} bits per pruned code measured on the proxy "
        f"fits_after_cap_fit:{fits} (measured at the end; refused in one line if it cannot fit)"
    )
