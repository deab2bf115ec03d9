"""Score-first test-time training: per-document LoRA adapters and global SGD phases.

Per document (PR #1855/#2135): a batch of documents steps together, each with its own LoRA
adapters on the chosen linears (q, k, v, o = attention output, mlp = both MLP matrices, head).
A document is cut into chunks of `chunk` targets; for chunk c every document first *scores* it with
its current adapters — those numbers are final — and only then takes one Adam step (beta1 = 0,
decoupled weight decay) on that chunk's loss. The adapters start every document from the same
state (A from a fixed seeded init, B = 0, so the adapted model starts as the base model), so no
state crosses documents and a document's scores never depend on which documents share its batch,
their order, or the number of ranks.

Global phases: after the first K documents of the stream are all scored, the base weights take
SGD steps (momentum, cosine to 0, `epochs` passes) on exactly those documents' tokens; documents
after K use the updated base. Batches are defined over the whole phase and split across ranks,
gradients all-reduced, so any world size takes the same steps.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

LORA_SEED = 1234  # the adapters' A init (the same for every document)


def lora_modules(model: nn.Module, targets: list[str]) -> list[tuple[str, nn.Linear]]:
    """The model's linears adapted for each target name (head handled by LoraBank itself)."""
    out = []
    for i, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        picks = {
            "q": [("c_q", attn.c_q)],
            "k": [("c_k", attn.c_k)],
            "v": [("c_v", attn.c_v)],
            "o": [("proj", attn.proj)],
            "mlp": [("fc", mlp.fc), ("proj", mlp.proj)],
        }
        for t in targets:
            for name, mod in picks.get(t, []):
                out.append((f"blocks.{i}.{'mlp' if t == 'mlp' else 'attn'}.{name}", mod))
    return out


def _init_a(rank: int, fan_in: int, gen: torch.Generator) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in)  # kaiming-uniform-like for a linear of fan_in inputs
    return (torch.rand(rank, fan_in, generator=gen) * 2 - 1) * bound


class LoraBank:
    """Batched LoRA adapters, one (A, B) pair per document row and adapted linear:
    y += scale * (x A_b^T) B_b^T. `rows` selects which documents the next forward's batch holds."""

    def __init__(self, model: nn.Module, targets: list[str], rank: int, alpha: float, batch: int, device):
        gen = torch.Generator().manual_seed(LORA_SEED)
        self.scale = alpha / rank
        self.mods = lora_modules(model, targets)
        self.a: list[Tensor] = []
        self.b: list[Tensor] = []
        for _, mod in self.mods:
            self._add(mod.in_features, mod.out_features, rank, batch, gen, device)
        self.head = None
        if "head" in targets:
            w = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
            self.head = len(self.a)
            self._add(w.size(1), w.size(0), rank, batch, gen, device)
        self.rows: Tensor | None = None
        self._hooks = []

    def _add(self, fan_in: int, fan_out: int, rank: int, batch: int, gen, device) -> None:
        a = _init_a(rank, fan_in, gen).to(device)[None].repeat(batch, 1, 1)
        self.a.append(a.requires_grad_(True))
        self.b.append(torch.zeros(batch, fan_out, rank, device=device, requires_grad=True))

    def parameters(self) -> list[Tensor]:
        return self.a + self.b

    def delta(self, i: int, x: Tensor) -> Tensor:
        """Adapter i's output for x (rows, T, in) of the selected documents."""
        a, b = self.a[i], self.b[i]
        if self.rows is not None:
            a, b = a[self.rows], b[self.rows]
        return self.scale * torch.bmm(torch.bmm(x, a.transpose(1, 2).to(x.dtype)), b.transpose(1, 2).to(x.dtype))

    @contextmanager
    def attached(self):
        """Forward hooks adding the adapters to the model's linears while inside the block."""

        def hook(i):
            return lambda mod, args, out: out + self.delta(i, args[0])

        self._hooks = [mod.register_forward_hook(hook(i)) for i, (_, mod) in enumerate(self.mods)]
        try:
            yield self
        finally:
            for h in self._hooks:
                h.remove()
            self._hooks = []


def head_logits(model: nn.Module, h: Tensor, bank: LoraBank | None) -> Tensor:
    """Soft-capped logits of hidden states h (rows, C, D), with the head adapter when present."""
    w = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
    z = F.linear(h, w.to(h.dtype))
    if bank is not None and bank.head is not None:
        z = z + bank.delta(bank.head, h)
    return model.softcap(z)


def adapter_optimizer(params: list[Tensor], lr: float, beta2: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with beta1 = 0 and decoupled weight decay (elementwise: documents stay independent)."""
    return torch.optim.AdamW(params, lr=lr, betas=(0.0, beta2), eps=1e-8, weight_decay=weight_decay)


@contextmanager
def frozen(model: nn.Module):
    """Base weights without gradients (the adapters train), restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


@dataclass
class GlobalPhase:
    """One global SGD phase over stream inputs [begin, end) (targets begin+1 .. end)."""

    begin: int
    end: int
    seq_len: int
    lr: float
    momentum: float
    chunk_tokens: int
    epochs: int
    steps: int = 0
    tokens: int = 0
    losses: list[float] = field(default_factory=list)


def global_phase(
    model: nn.Module, tokens: Tensor, ph: GlobalPhase, rank: int, world: int, device, autocast=None
) -> GlobalPhase:
    """SGD on the base weights over the already-scored stream slice (see the module docstring)."""
    n_seq = (ph.end - ph.begin) // ph.seq_len
    if n_seq == 0:
        return ph
    per_step = max(1, ph.chunk_tokens // ph.seq_len)
    batches = [(i, min(i + per_step, n_seq)) for _ in range(ph.epochs) for i in range(0, n_seq, per_step)]
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=ph.lr, momentum=ph.momentum)
    was_training = model.training
    model.eval()
    try:
        for k, (i0, i1) in enumerate(batches):
            for g in opt.param_groups:
                g["lr"] = ph.lr * 0.5 * (1 + math.cos(math.pi * k / len(batches)))
            count = (i1 - i0) * ph.seq_len
            lo, hi = i0 + (i1 - i0) * rank // world, i0 + (i1 - i0) * (rank + 1) // world
            opt.zero_grad(set_to_none=False)
            loss = torch.zeros((), device=device)
            if hi > lo:
                rows = ph.begin + torch.arange(lo, hi)[:, None] * ph.seq_len + torch.arange(ph.seq_len + 1)[None]
                chunk = tokens[rows].to(device=device, dtype=torch.int64)
                with autocast or nullcontext():
                    loss = model(chunk[:, :-1], chunk[:, 1:]) * ((hi - lo) * ph.seq_len / count)
                loss.backward()
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if world > 1 and dist.is_available() and dist.is_initialized():
                for p in params:
                    dist.all_reduce(p.grad)
            opt.step()
            ph.steps += 1
            ph.tokens += count
            ph.losses.append(float(loss.detach()))
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
            p.grad = None
        model.train(was_training)
    return ph
