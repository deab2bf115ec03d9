"""torch.compile of the training model, and the counter that proves the timed loop compiles nothing.

Every graph the run needs is compiled in the untimed warm-up (pgolf.train.trainer.warmup): the
step without depth recurrence and, when recurrence switches on during the run, the step with it
(the records warm up both; issue 11 measured one guard failure and a full recompile inside the
timed loop when only the first was warmed up). Validation scores the uncompiled model, so no
evaluation shape is compiled. `train.compile_mode` picks torch.compile's mode (`reduce-overhead`
and `max-autotune` add CUDA graphs), `train.compile_fullgraph` refuses graph breaks.

`train.compile_scope` picks what is compiled. `model` traces the whole forward: every block
application unrolled (17 with the frontier's recurrence on), and a second whole graph when
recurrence switches on. `blocks` (regional compilation) compiles one block application
(pgolf.model.gpt.apply_block) that every layer and every loop reuses, plus the head + softcapped
cross-entropy as a second region; recurrence then needs no new graph. Issue 20 measures both
(benchmarks/gpu_check.py, compile stage).
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from pgolf.core.config import ConfigError, RunConfig
from pgolf.model.gpt import GPT, Regions, apply_block, head_loss

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_enabled(cfg: RunConfig, device: torch.device) -> bool:
    """`compile`: on | off | auto (on for CUDA, as the official script). On CPU inductor writes
    C++: without a compiler the run stays eager (compile_note says so) instead of failing."""
    wanted = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    return wanted and (device.type != "cpu" or cpp_compiler() is not None)


def cpp_compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def compile_note(cfg: RunConfig, device: torch.device) -> str:
    """The log line saying whether and how the training model is compiled."""
    if compile_enabled(cfg, device):
        t = cfg.train
        return f"compile:on mode:{t.compile_mode} fullgraph:{t.compile_fullgraph} scope:{t.compile_scope}"
    if cfg.compile == "on" and device.type == "cpu":
        return "compile:off (compile=on, but no C++ compiler for inductor on this CPU machine)"
    return "compile:off"


def compile_model(base: GPT, cfg: RunConfig, scope: str | None = None) -> nn.Module:
    """base compiled with the configured mode, fullgraph and scope (static shapes)."""
    mode = cfg.train.compile_mode
    if mode not in COMPILE_MODES:
        raise ConfigError(f"train.compile_mode={mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    kw = dict(dynamic=False, fullgraph=cfg.train.compile_fullgraph, mode=None if mode == "default" else mode)
    if (scope or cfg.train.compile_scope) == "model":
        return torch.compile(base, **kw)
    return RegionalModel(base, **kw)


class RegionalModel(nn.Module):
    """base's forward with each block application and the head compiled as separate regions
    (the top level, embedding and skip merges run eagerly). Parameters are base's, under
    `base.`; base itself stays uncompiled (evaluation and TTT use it directly)."""

    def __init__(self, base: GPT, **compile_kw):
        super().__init__()
        self.base = base
        self.regions = Regions(torch.compile(apply_block, **compile_kw), torch.compile(head_loss, **compile_kw))

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.base(ids, targets, self.regions)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
