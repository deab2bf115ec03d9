"""Full-Hessian GPTQ (Frantar et al. 2022, arXiv:2210.17323) for per-row intN weights, and the
calibration pass that collects the Hessians from training data (never validation data).

For a linear layer y = x W^T (W: out x in), rounding W to W^ changes the layer output on the
calibration inputs X by (W - W^) X^T; GPTQ minimises tr((W - W^) H (W - W^)^T) with
H = X^T X / n by quantizing one input column at a time and spreading each column's rounding
error over the columns not yet quantized (through the Cholesky factor of H^-1), in blocks of
`block_size` columns with lazy updates. Options as PR #1855: act-order (columns by descending
diag H), damping (+ damp * mean diag H), dead columns (diag H = 0) zeroed. The row scales are
fixed before GPTQ by the configured clip rule (SDClip in the records), so GPTQ only chooses codes.

Hessians (PR #1855 layout): every linear layer's input (looped layers accumulate all passes); the
tied embedding, used as the output head, gets the final-normed hidden (model.hidden output).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from pgolf.data.loader import TokenStream
from pgolf.quant.lowbit import codes_for, qmax

GPTQ_DAMP_RETRIES = 4  # on a failed Cholesky, multiply the damping by 10 and retry this often


@dataclass
class HessianSet:
    """Per weight name: H = sum x^T x / rows (in x in, fp32, CPU), and how it was gathered."""

    h: dict[str, Tensor] = field(default_factory=dict)
    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0


def linear_weight_names(model: nn.Module) -> dict[str, nn.Module]:
    """'blocks.0.attn.c_q.weight' -> its linear layer, for every nn.Linear in the model (the GPT's
    CastedLinear is one; the quantizer never needs the model's own classes)."""
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _accumulate(store: dict[str, Tensor], counts: dict[str, int], name: str, x: Tensor) -> None:
    x = x.detach().reshape(-1, x.shape[-1]).float()
    xtx = (x.T @ x).cpu()
    store[name] = store[name] + xtx if name in store else xtx
    counts[name] = counts.get(name, 0) + x.shape[0]


def _head_weight_name(model: nn.Module) -> str:
    return "lm_head.weight" if getattr(model, "lm_head", None) is not None else "tok_emb.weight"


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable, time_budget_s: float = 0.0, max_batches: int = 0) -> HessianSet:
    """Run calibration batches (token ids (B, T), or (x, y) pairs) through model.hidden and
    accumulate every linear input's X^T X, plus the head's. Stops after `max_batches` (0 = all)
    or once `time_budget_s` (0 = none) has passed, but always uses at least one batch."""
    t0 = time.perf_counter()
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=n: _accumulate(sums, counts, name, inp[0]))
             for n, m in linear_weight_names(model).items()]
    was_training = model.training
    model.eval()
    out = HessianSet()
    try:
        for batch in batches:
            ids = batch[0] if isinstance(batch, (tuple, list)) else batch
            _accumulate(sums, counts, _head_weight_name(model), model.hidden(ids))
            out.batches += 1
            out.tokens += int(ids.numel())
            if (max_batches and out.batches >= max_batches) or (time_budget_s and time.perf_counter() - t0 > time_budget_s):
                break
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out.h = {n: s / max(counts[n], 1) for n, s in sums.items()}
    out.seconds = time.perf_counter() - t0
    return out


def calibration_batches(train_pattern: str, num_batches: int, seqs: int, seq_len: int, device=None):
    """Calibration token batches (seqs, seq_len) from the start of the TRAINING stream (the same
    shards training read; never validation). A generator, so collection can stop early."""
    stream = TokenStream(train_pattern)
    for _ in range(num_batches):
        chunk = stream.take(seqs * seq_len).astype(np.int64)
        yield torch.from_numpy(chunk).reshape(seqs, seq_len).to(device or "cpu")


def _inverse_cholesky(h: Tensor, damp: float) -> Tensor:
    """Upper Cholesky factor U of (H + damp * mean(diag H) I)^-1, in float64; more damping on failure."""
    h = h.double()
    mean_diag = float(h.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    for attempt in range(GPTQ_DAMP_RETRIES + 1):
        try:
            lower = torch.linalg.cholesky(h + (damp * 10**attempt) * mean_diag * eye)
            hinv = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(hinv, upper=True)
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
            continue
    raise RuntimeError("GPTQ: Hessian is not positive definite even with heavy damping")


def gptq_codes(w: Tensor, h: Tensor, scale: Tensor, bits: int, block_size: int = 128,
               damp: float = 0.01, act_order: bool = True) -> Tensor:
    """int8 codes in [-R, R] of a 2-D weight (out x in) for fixed fp16 row scales, chosen by GPTQ
    against the input Hessian h (in x in)."""
    w = w.detach().float().clone()
    h = h.detach().float().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(h.diagonal(), descending=True, stable=True) if act_order else torch.arange(w.shape[1])
    w, h = w[:, perm], h[perm][:, perm]
    u = _inverse_cholesky(h, damp).float()
    s = scale.float()[:, None]
    r = qmax(bits)
    codes = torch.zeros_like(w, dtype=torch.int8)
    cols = w.shape[1]
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        blk, err = w[:, i1:i2].clone(), torch.zeros(w.shape[0], i2 - i1)
        ublk = u[i1:i2, i1:i2]
        for j in range(i2 - i1):
            q = torch.clamp(torch.round(blk[:, j : j + 1] / s), -r, r)
            codes[:, i1 + j] = q[:, 0].to(torch.int8)
            e = (blk[:, j] - q[:, 0] * s[:, 0]) / ublk[j, j]
            blk[:, j:] -= e[:, None] * ublk[j, j:][None, :]
            err[:, j] = e
        w[:, i2:] -= err @ u[i1:i2, i2:]
    out = torch.empty_like(codes)
    out[:, perm] = codes
    return out


def rtn_codes(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Round-to-nearest codes for the same scales (the GPTQ baseline)."""
    return codes_for(w, scale, bits)


def output_error(w: Tensor, w_hat: Tensor, h: Tensor) -> float:
    """tr((W - W^) H (W - W^)^T): the summed squared change of the layer outputs per input row."""
    e = (w.float() - w_hat.float()).double()
    return float(torch.einsum("ij,jk,ik->", e, h.double(), e))
