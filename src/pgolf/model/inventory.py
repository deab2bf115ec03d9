"""The model's inventory before training: every parameter's shape and role, parameters per
quantization group, and matmul FLOPs per token.

Shapes and roles come from building the model on the `meta` device (no memory, no init cost),
so they can never drift from the model code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pgolf.core.config import ModelConfig
from pgolf.core.roles import QUANT_GROUPS, Role, parameter_roles
from pgolf.model.gpt import GPT, layer_schedule


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as the planners see it."""

    shape: tuple[int, ...]
    role: Role

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def group(self) -> str:
        """The quantization group."""
        return self.role.quant


def param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """name -> (shape, role) of every parameter, without allocating weights."""
    with torch.device("meta"):
        model = GPT(cfg)
    roles = parameter_roles(model)
    return {n: ParamSpec(tuple(p.shape), roles[n]) for n, p in model.named_parameters()}


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """name -> shape of every parameter."""
    return {n: s.shape for n, s in param_specs(cfg).items()}


def params_by_group(cfg: ModelConfig) -> dict[str, int]:
    """Parameter count per quantization group (every group, in table order)."""
    out = dict.fromkeys(QUANT_GROUPS, 0)
    for spec in param_specs(cfg).values():
        out[spec.group] += spec.numel
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


def quant_groups_for(cfg: ModelConfig) -> dict[str, str]:
    """Parameter name -> quantization group of the model a config builds (what pgolf.quant takes)."""
    return {n: s.group for n, s in param_specs(cfg).items()}


def quant_layout(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Parameter name -> (shape, quantization group): the layout the size planner takes."""
    return {n: (s.shape, s.group) for n, s in param_specs(cfg).items()}
