"""The score: val_loss (nats/token) and val_bpb (bits per UTF-8 byte), exactly as the challenge.

    val_bpb = (sum of target cross-entropies in nats / ln 2) / (sum of target bytes)

Target bytes come from the tokenizer's byte tables (see pgolf.data.tokenizer), or, for shards of
transformed text (CaseOps), from the per-position counts of their raw-byte sidecars
(pgolf.data.sidecar.SidecarBytes): a target at stream position i is charged counts[i], the
original UTF-8 bytes it covers, whatever window or rank scores it. Evaluation is a set
of windows over the validation stream; each window scores a contiguous run of its last targets:

- non-overlapping (official): windows of W tokens back to back, every target of a window scored;
  the final partial window is dropped, exactly as the official script does;
- sliding (stride s): the first window scores its W targets, every later window ends s targets
  further and scores only those s new targets, so every target is scored exactly once with
  min(position+1, W - s + 1 .. W) tokens of context; the tail is scored too.

Windows are split contiguously across ranks and batched; the sums are float64 (loss) and int64
(tokens, bytes), so any batch size or world size gives the same score up to float summation.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from pgolf.core.errors import ConfigError
from pgolf.core.progress import track
from pgolf.data.sidecar import SidecarBytes
from pgolf.data.tokenizer import ByteTables, TokenizerError


@dataclass
class Score:
    """Summed evaluation statistics; combine across ranks with all_reduce."""

    loss_sum: float  # nats, summed over scored targets
    tokens: int  # scored targets
    bytes: int  # UTF-8 bytes of the scored targets

    @property
    def val_loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def val_bpb(self) -> float:
        return bits_per_byte(self.loss_sum, self.bytes)


def bits_per_byte(loss_sum_nats: float, num_bytes: int) -> float:
    """Total nats -> bits, divided by total bytes."""
    if num_bytes <= 0:
        raise ValueError("cannot compute bpb over zero bytes")
    return loss_sum_nats / math.log(2.0) / num_bytes


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a stream of N+1 tokens (N targets): window i reads inputs
    tokens[start[i] : start[i] + length] and scores its targets from offset score_from[i] on."""

    start: np.ndarray  # int64 (n,)
    score_from: np.ndarray  # int64 (n,)
    length: int

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def scored_targets(self) -> int:
        return int((self.length - self.score_from).sum())


def plan_windows(num_targets: int, window: int, stride: int = 0) -> WindowPlan:
    """Non-overlapping windows (stride 0 or == window) or sliding windows (0 < stride < window)."""
    if window <= 0:
        raise ConfigError(f"window must be positive, got {window}")
    if stride < 0 or stride > window:
        raise ConfigError(f"stride must be in [0, window={window}], got {stride}")
    if stride in (0, window):
        n = num_targets // window
        if n == 0:
            raise ConfigError(f"validation split has {num_targets} targets, fewer than one window of {window}")
        return WindowPlan(np.arange(n, dtype=np.int64) * window, np.zeros(n, dtype=np.int64), window)
    if num_targets <= window:
        return WindowPlan(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), num_targets)
    ends = np.concatenate([[window], np.arange(window + stride, num_targets + stride, stride)])
    ends = np.minimum(ends, num_targets)
    ends = ends[np.concatenate([[True], ends[1:] > ends[:-1]])]
    starts = ends - window
    prev_end = np.concatenate([[0], ends[:-1]])
    return WindowPlan(starts.astype(np.int64), (prev_end - starts).astype(np.int64), window)


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Contiguous share of n items for one rank (official split)."""
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


def _window_batch(
    tokens: Tensor, plan: WindowPlan, idx: np.ndarray, device, counts: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    offs = torch.arange(plan.length + 1)
    rows = torch.from_numpy(plan.start[idx])[:, None] + offs[None, :]
    chunk = tokens[rows].to(device=device, dtype=torch.int64)  # (b, L+1)
    x, y = chunk[:, :-1], chunk[:, 1:]
    pos = torch.arange(plan.length, device=device)[None, :]
    scored = pos >= torch.from_numpy(plan.score_from[idx]).to(device)[:, None]  # (b, L)
    tgt_bytes = None if counts is None else counts[rows[:, 1:]].to(device=device, dtype=torch.int64)
    return x, y, scored, tgt_bytes


def _batch_stats(
    model,
    x: Tensor,
    y: Tensor,
    scored: Tensor,
    tables_t: tuple[Tensor, Tensor, Tensor] | None,
    tgt_bytes: Tensor | None = None,
) -> tuple[Tensor, int, Tensor]:
    hidden = model.hidden(x)  # (b, L, D)
    logits = model.logits(hidden[scored])  # (n, V): the head only where targets are scored
    nll = F.cross_entropy(logits.float(), y[scored], reduction="sum")
    prev, tgt = x[scored], y[scored]
    if tgt_bytes is not None:  # sidecar: bytes by stream position
        nbytes = tgt_bytes[scored]
    else:
        base, space, boundary = tables_t
        nbytes = base[tgt].to(torch.int64) + (space[tgt] & ~boundary[prev]).to(torch.int64)
    return nll.double(), int(tgt.numel()), nbytes.sum()


@torch.no_grad()
def evaluate(
    model,
    tokens: Tensor,
    tables: ByteTables | SidecarBytes,
    window: int,
    stride: int = 0,
    batch_seqs: int = 32,
    rank: int = 0,
    world_size: int = 1,
    device=None,
    autocast=None,
    progress: bool = False,
) -> Score:
    """Score `tokens` (a 1-D CPU tensor of the validation stream) with `model`.

    `model` must provide hidden(ids) -> (B, T, D) and logits(h) -> (..., V). Returns the global
    Score (all-reduced across ranks when torch.distributed is initialised). `tables` is the
    tokenizer's ByteTables, or SidecarBytes aligned with `tokens` (a prefix of the stream they
    were loaded for).
    """
    device = device or next(model.parameters()).device
    if int(tokens.max()) >= tables.size:
        raise TokenizerError(f"token id {int(tokens.max())} is outside the tokenizer's table of {tables.size} ids")
    plan = plan_windows(int(tokens.numel()) - 1, window, stride)
    mine = np.arange(len(plan))[rank_slice(len(plan), rank, world_size)]
    counts, tables_t = _byte_source(tables, int(tokens.numel()), device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    ntok = 0
    was_training = model.training
    model.eval()
    batches = range(0, mine.size, max(batch_seqs, 1))
    for b0 in track(batches, "scoring", progress):
        x, y, scored, tgt_bytes = _window_batch(tokens, plan, mine[b0 : b0 + batch_seqs], device, counts)
        with autocast or nullcontext():
            batch_loss, n, nb = _batch_stats(model, x, y, scored, tables_t, tgt_bytes)
        loss += batch_loss
        nbytes += nb
        ntok += n
    model.train(was_training)
    return _all_reduce_score(loss, ntok, nbytes, device)


def _byte_source(tables: ByteTables | SidecarBytes, num_tokens: int, device) -> tuple[Tensor | None, tuple | None]:
    """(per-position counts on CPU, None) for sidecar bytes, else (None, per-id tables on device)."""
    if isinstance(tables, SidecarBytes):
        if tables.counts.size < num_tokens:
            raise TokenizerError(f"byte sidecar covers {tables.counts.size} positions, the stream has {num_tokens}")
        return torch.from_numpy(np.asarray(tables.counts[:num_tokens], dtype=np.int64)), None
    return None, tuple(
        torch.from_numpy(a).to(device) for a in (tables.base_bytes, tables.has_leading_space, tables.is_boundary)
    )


def _all_reduce_score(loss: Tensor, ntok: int, nbytes: Tensor, device) -> Score:
    if dist.is_available() and dist.is_initialized():
        counts = torch.tensor([ntok], dtype=torch.int64, device=device)
        dist.all_reduce(loss)
        dist.all_reduce(counts)
        dist.all_reduce(nbytes)
        ntok = int(counts.item())
    return Score(float(loss.item()), ntok, int(nbytes.item()))


def score_reference(model, tokens: Tensor, tables: ByteTables | SidecarBytes, window: int, stride: int = 0) -> Score:
    """The simple definition, one target at a time: each target is predicted from exactly the
    context its window gives it. Slow; for tests of `evaluate`."""
    plan = plan_windows(int(tokens.numel()) - 1, window, stride)
    loss, ntok, nb = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for s, f in zip(plan.start.tolist(), plan.score_from.tolist()):
            for j in range(s + f, s + plan.length):
                ctx = tokens[s : j + 1].long()[None]
                logit = model.logits(model.hidden(ctx)[0, -1]).float()
                tgt, prev = int(tokens[j + 1]), int(tokens[j])
                loss += float(F.cross_entropy(logit[None], torch.tensor([tgt])))
                ntok += 1
                if isinstance(tables, SidecarBytes):
                    nb += int(tables.counts[j + 1])
                else:
                    nb += int(tables.base_bytes[tgt]) + int(
                        tables.has_leading_space[tgt] and not tables.is_boundary[prev]
                    )
    return Score(loss, ntok, nb)
