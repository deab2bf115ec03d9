"""Schedules: the LR multiplier (official step/time-based warmdown, or PR #1855's flat-then-linear
fraction with a floor), the Muon momentum ramp, and the training clock's cap."""

from __future__ import annotations

import torch

from pgolf.core.config import TrainConfig
from pgolf.train.optim import Muon


def muon_momentum_at(step: int, t: TrainConfig) -> float:
    """Linear ramp from muon_momentum_warmup_start to muon_momentum (official)."""
    if t.muon_momentum_warmup_steps <= 0:
        return t.muon_momentum
    frac = min(step / t.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * t.muon_momentum_warmup_start + frac * t.muon_momentum


def training_cap_ms(t: TrainConfig) -> float | None:
    """The training clock's cap: the wall-clock budget minus the post-training reserve."""
    return 1000.0 * (t.max_wallclock_seconds - t.reserve_seconds) if t.max_wallclock_seconds > 0 else None


def lr_multiplier(step: int, elapsed_ms: float, t: TrainConfig) -> float:
    """Official warmdown: linear to 0 over the last warmdown_iters steps; under a wall-clock cap
    the warmdown length is warmdown_iters * (current mean step time) before the cap.
    With warmdown_frac > 0 (PR #1855): flat, then linear over that final fraction of training
    (of the clock under a cap, else of the steps), never below min_lr_frac."""
    cap_ms = training_cap_ms(t)
    if t.warmdown_frac > 0:
        frac = elapsed_ms / cap_ms if cap_ms else step / max(t.iterations, 1)
        return max(min(1.0, (1.0 - frac) / t.warmdown_frac), t.min_lr_frac)
    if t.warmdown_iters <= 0:
        return 1.0
    if cap_ms is None:
        start = max(t.iterations - t.warmdown_iters, 0)
        if start <= step < t.iterations:
            return max((t.iterations - step) / max(t.warmdown_iters, 1), 0.0)
        return 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = t.warmdown_iters * step_ms
    remaining_ms = max(cap_ms - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def set_schedules(opts: list[torch.optim.Optimizer], lr_mul: float, momentum: float) -> None:
    for opt in opts:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr_mul
            if isinstance(opt, Muon):
                group["momentum"] = momentum
