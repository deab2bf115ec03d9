"""Optimizers: Muon for block matrices, Adam for embeddings/head/control tensors, grouped by the
parameter roles the model declared (pgolf.core.roles).

Muon (modded-nanogpt; https://kellerjordan.github.io/posts/muon/) orthogonalises each matrix's
momentum with a Newton-Schulz iteration. Under torch.distributed each rank orthogonalises every
world_size-th matrix and one all-reduce shares the updates (official scheme).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.core.config import TrainConfig
from pgolf.core.roles import OPT_GROUPS, parameter_roles

NS5_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz coefficients (modded-nanogpt)
# Polar Express per-step coefficients (arXiv:2505.16932, as used from PR #1344 on); longer
# iterations repeat the last tuple.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_coefficients(kind: str, steps: int) -> list[tuple[float, float, float]]:
    if kind == "polar_express":
        return [POLAR_EXPRESS_COEFFS[min(i, len(POLAR_EXPRESS_COEFFS) - 1)] for i in range(steps)]
    return [NS5_COEFFS] * steps


def newton_schulz5(g: Tensor, steps: int, eps: float = 1e-7, kind: str = "ns5") -> Tensor:
    """Approximately orthogonalise a 2-D matrix. bf16 on GPU (fast, official); fp32 on CPU, where
    bf16 matmuls are ~10x slower than fp32."""
    x = g.bfloat16() if g.is_cuda else g.float()
    x = x / (x.norm() + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    for a, b, c in ns_coefficients(kind, steps):
        A = x @ x.T
        B = b * A + c * A @ A
        x = a * x + B @ x
    return x.T if transposed else x


class Muon(torch.optim.Optimizer):
    """Momentum + Newton-Schulz orthogonalised updates, with optional decoupled weight decay."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True,
                 weight_decay: float = 0.0, ns: str = "ns5", row_norm: bool = False):
        defaults = dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                        weight_decay=weight_decay, ns=ns, row_norm=row_norm)
        super().__init__(params, defaults)

    def _update(self, p: Tensor, group: dict) -> Tensor:
        g = p.grad
        buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(g))
        buf.mul_(group["momentum"]).add_(g)
        if group["nesterov"]:
            g = g.add(buf, alpha=group["momentum"])
        if group["row_norm"]:
            g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        u = newton_schulz5(g, group["backend_steps"], kind=group["ns"])
        return u * max(1.0, u.size(0) / u.size(1)) ** 0.5  # scale correction (Muon reference)

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            flat_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=flat_dtype)
            offset = 0
            for i, p in enumerate(params):
                if i % world == rank and p.grad is not None:
                    flat[offset : offset + p.numel()] = self._update(p, group).reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p in params:
                if group["weight_decay"] > 0:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return None


def split_params(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Optimizer group -> parameters (in model order), from the roles the model declared: block
    matrices -> Muon; token embedding and lookup tables -> embedding Adam; an untied head ->
    head Adam; vectors, scalars and control tensors -> scalar Adam (the official split). A
    parameter without a role is a RoleError."""
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in OPT_GROUPS}
    params = dict(model.named_parameters())
    for name, role in parameter_roles(model).items():
        groups[role.opt].append(params[name])
    return groups


def build_optimizers(model: nn.Module, t: TrainConfig, tied: bool) -> list[torch.optim.Optimizer]:
    """[embed Adam, (head Adam), Muon, scalar Adam] with base_lr recorded per group."""
    groups = split_params(model)
    fused = next(model.parameters()).is_cuda

    def adam(params, lr, wd):
        return torch.optim.AdamW([{"params": params, "lr": lr, "base_lr": lr}], betas=(t.beta1, t.beta2),
                                 eps=t.adam_eps, weight_decay=wd, fused=fused)

    opts: list[torch.optim.Optimizer] = [adam(groups["adam-embed"], t.tied_embed_lr if tied else t.embed_lr, t.embed_weight_decay)]
    if groups["adam-head"]:
        opts.append(adam(groups["adam-head"], t.head_lr, t.embed_weight_decay))
    muon = Muon(groups["muon"], lr=t.matrix_lr, momentum=t.muon_momentum, backend_steps=t.muon_backend_steps,
                weight_decay=t.muon_weight_decay, ns=t.muon_ns, row_norm=t.muon_row_norm)
    for g in muon.param_groups:
        g["base_lr"] = t.matrix_lr
    opts.append(muon)
    if groups["adam-scalar"]:
        opts.append(adam(groups["adam-scalar"], t.scalar_lr, t.adam_weight_decay))
    return opts
