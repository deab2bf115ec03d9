"""torch.compile of the training model, and the counter that proves the timed loop compiles nothing.

Every graph the run needs is compiled in the untimed warm-up (pgolf.train.trainer.warmup): the
step without depth recurrence and, when recurrence switches on during the run, the step with it
(the records warm up both; issue 11 measured one guard failure and a full recompile inside the
timed loop when only the first was warmed up). Validation scores the uncompiled model, so no
evaluation shape is compiled. `train.compile_mode` picks torch.compile's mode (`reduce-overhead`
and `max-autotune` add CUDA graphs), `train.compile_fullgraph` refuses graph breaks.
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from pgolf.core.config import ConfigError, RunConfig

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
        return f"compile:on mode:{cfg.train.compile_mode} fullgraph:{cfg.train.compile_fullgraph}"
    if cfg.compile == "on" and device.type == "cpu":
        return "compile:off (compile=on, but no C++ compiler for inductor on this CPU machine)"
    return "compile:off"


def compile_model(base: nn.Module, cfg: RunConfig) -> nn.Module:
    """torch.compile(base) with the configured mode and fullgraph, static shapes."""
    mode = cfg.train.compile_mode
    if mode not in COMPILE_MODES:
        raise ConfigError(f"train.compile_mode={mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    return torch.compile(base, dynamic=False, fullgraph=cfg.train.compile_fullgraph,
                         mode=None if mode == "default" else mode)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
