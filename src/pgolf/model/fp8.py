"""FP8 training of the block linears (attention q/k/v/output and MLP projections) through torchao's
float8 training: dynamic tensorwise scales, e4m3 forward / e5m2 gradients, the fp32 master weights
kept (issue 11, item 8; #538 claimed 1.3-1.5x with TransformerEngine). Off by default
(`model.fp8`): switch it on only where the GPU check measures a gain at equal loss.

torchao is optional (`pip install pgolf[gpu]`) and imported by name at run time, so the exported
script does not require it. FP8 GEMMs need compute capability 8.9+ (Ada, Hopper); elsewhere the
run keeps its bf16 linears and logs why. Emulation (`emulate=True`, fp32 math on the FP8-rounded
values) runs on CPU and is what the tests use.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import torch
from torch import nn

from pgolf.core.roles import ROLES_ATTR, declare

FP8_TARGETS = ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")
FP8_MIN_CAPABILITY = (8, 9)
FP8_DIM_MULTIPLE = 16  # torch._scaled_mm needs both matrix dims divisible by 16


def fp8_problem(device: torch.device) -> str | None:
    """Why FP8 training cannot run on `device` (None when it can)."""
    if device.type != "cuda":
        return "needs a CUDA GPU of compute capability 8.9+"
    cap = torch.cuda.get_device_capability(device)
    if cap < FP8_MIN_CAPABILITY:
        return f"compute capability {cap[0]}.{cap[1]} has no FP8 matmul"
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    return None


def fp8_eligible(name: str, module: nn.Module) -> bool:
    """A block's attention or MLP projection whose dims FP8 GEMMs accept."""
    return (
        isinstance(module, nn.Linear)
        and name.endswith(FP8_TARGETS)
        and module.in_features % FP8_DIM_MULTIPLE == 0
        and module.out_features % FP8_DIM_MULTIPLE == 0
    )


def convert_to_fp8(model: nn.Module, emulate: bool = False) -> list[str]:
    """Swap the eligible linears for torchao Float8Linear in place (same weight Parameters, same
    state-dict names, the declared roles carried over); returns the converted module names."""
    float8 = importlib.import_module("torchao.float8")
    names = [n for n, m in model.named_modules() if fp8_eligible(n, m)]
    roles = {n: dict(m.__dict__.get(ROLES_ATTR, {})) for n, m in model.named_modules() if n in names}
    config = float8.Float8LinearConfig(emulate=emulate)
    float8.convert_to_float8_training(model, config=config, module_filter_fn=lambda mod, fqn: fqn in roles)
    for name, module in model.named_modules():
        for local, role in roles.get(name, {}).items():
            declare(module, local, role)
    return names


def enable_fp8(model: nn.Module, device: torch.device) -> str:
    """Convert when the device supports it; the run-log line says what happened (a missing
    library or GPU is a one-line notice, never a crash)."""
    problem = fp8_problem(device)
    if problem:
        warnings.warn(f"model.fp8: {problem}; training with bf16 linears", stacklevel=2)
        return f"fp8:off ({problem})"
    return f"fp8:on linears:{len(convert_to_fp8(model))}"
