"""Causal token n-gram tilt (PR #2135 lineage): hints from the stream's own past, applied to the
model's distribution and renormalised over the whole vocabulary.

Hints. For the target at stream position j, look at the contexts tokens[j-k .. j-1] for
k = order down to min_order. Among the earlier occurrences of the longest context seen before
(occurrence s < j - 1 with the same k tokens, continuation tokens[s + 1] <= position j - 1), the
hint is the most frequent continuation and its confidence is its share of them. Only tokens
before j are read, so the hint never depends on the target or anything after it (condition 1).
All orders are computed at once with sorts and segmented running maxima (torch, on any device):
per order a few sorts of N keys; memory O(N) int64 per order, freed before the next.

Contexts are hashed to 62 bits (two independent 31-bit polynomial hashes); a collision merges two
contexts' statistics (a worse hint, never an illegal one).

Tilt. Where the confidence is >= threshold the hinted token's probability is multiplied by
e^beta and the distribution renormalised:

    p'(v) = p(v) e^{beta [v = h]} / Z,   Z = 1 + p(h) (e^beta - 1)
    -log p'(y) = -log p(y) - beta [y = h] + log(1 + p(h) (e^beta - 1))

so p' sums to one over the full vocabulary (condition 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_P1, _P2 = 2_147_483_647, 2_147_483_629  # two primes below 2^31: products of residues fit int64
_M1, _M2 = 1_000_003, 999_983


@dataclass
class Hints:
    """Per target (index j - 1 for target j): hinted token (-1 = none) and its confidence."""

    token: Tensor  # int64 (N,)
    confidence: Tensor  # float32 (N,)
    order: Tensor  # int8 (N,) context order the hint came from (0 = none)

    def gate(self, threshold: float) -> Tensor:
        """Hint per target where it is confident enough, else -1."""
        return torch.where(self.confidence >= threshold, self.token, torch.full_like(self.token, -1))


def _context_keys(tok: Tensor, k: int, h1: Tensor, h2: Tensor) -> tuple[Tensor, Tensor]:
    """Extend the order-(k-1) hashes of the context ending at each position by the token k-1 back."""
    shifted = torch.full_like(tok, -1)
    shifted[k - 1 :] = tok[: tok.numel() - (k - 1)]
    h1 = (h1 * _M1 + shifted + 2) % _P1
    h2 = (h2 * _M2 + shifted + 2) % _P2
    return h1, h2


def _segments(keys: Tensor) -> tuple[Tensor, Tensor]:
    """For sorted keys: (segment id per element, index of its segment's first element)."""
    new = torch.ones_like(keys, dtype=torch.bool)
    new[1:] = keys[1:] != keys[:-1]
    seg = torch.cumsum(new.to(torch.int64), 0) - 1
    first = torch.nonzero(new).flatten()
    return seg, first[seg]


def _order_stats(ctx: Tensor, nxt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For occurrences i (context key ctx[i], continuation nxt[i]) in stream order: statistics of
    the earlier occurrences of the same context, (count, leader count, leader token)."""
    n = ctx.numel()
    idx = torch.arange(n, device=ctx.device)
    by_ctx = torch.sort(ctx, stable=True).indices  # (context, position)
    c_sorted, y_sorted = ctx[by_ctx], nxt[by_ctx]
    seg, first = _segments(c_sorted)
    # Count of (context, continuation) up to and including each occurrence: order by
    # (context, continuation, position) with two stable sorts, then rank inside each pair group.
    o = torch.sort(y_sorted, stable=True).indices
    o = o[torch.sort(seg[o], stable=True).indices]
    pair = seg[o] * (int(nxt.max()) + 2) + y_sorted[o]
    _, pfirst = _segments(pair)
    pc = torch.empty_like(idx)
    pc[o] = idx - pfirst + 1
    # Running leader inside each context segment: cummax of the pair counts (offset per segment).
    big = n + 1
    vals, arg = torch.cummax(seg * big + pc, 0)
    lead = vals - seg * big
    lead_tok = y_sorted[arg]
    # Statistics *before* each occurrence: the previous element of its segment.
    before = idx - first  # earlier occurrences of the context
    prev = (idx - 1).clamp(min=0)
    lead_b = torch.where(before > 0, lead[prev], torch.zeros_like(lead))
    tok_b = torch.where(before > 0, lead_tok[prev], torch.full_like(lead_tok, -1))
    out = [torch.empty_like(before), torch.empty_like(lead_b), torch.empty_like(tok_b)]
    for dst, src in zip(out, (before, lead_b, tok_b)):
        dst[by_ctx] = src
    return out[0], out[1], out[2]


def ngram_hints(tokens: Tensor, order: int, min_order: int = 1, device=None) -> Hints:
    """Hints for every target tokens[1..N] from the longest earlier-seen context of length
    min_order..order ending just before it (see the module docstring)."""
    device = device or tokens.device
    tok = tokens.to(device=device, dtype=torch.int64)
    n = tok.numel() - 1  # occurrence t: context ends at input t, continuation tok[t + 1]
    hint = torch.full((n,), -1, dtype=torch.int64, device=device)
    conf = torch.zeros(n, dtype=torch.float32, device=device)
    src = torch.zeros(n, dtype=torch.int8, device=device)
    h1 = torch.zeros_like(tok)
    h2 = torch.zeros_like(tok)
    nxt = tok[1:]
    for k in range(1, order + 1):
        h1, h2 = _context_keys(tok, k, h1, h2)
        if k < min_order or k > n:
            continue
        key = (h1[k - 1 : n] << 31) | h2[k - 1 : n]  # occurrences t = k-1 .. n-1
        before, lead, lead_tok = _order_stats(key, nxt[k - 1 :])
        seen = before > 0
        sl = slice(k - 1, n)
        hint[sl] = torch.where(seen, lead_tok, hint[sl])
        conf[sl] = torch.where(seen, lead.float() / before.clamp(min=1).float(), conf[sl])
        src[sl] = torch.where(seen, torch.full_like(src[sl], k), src[sl])
    return Hints(hint, conf, src)


def tilted_nll(logp: Tensor, target: Tensor, hint: Tensor, beta: float) -> Tensor:
    """-log p'(target) for rows of log-probabilities (n, V); hint -1 = no tilt on that row."""
    nll = -logp.gather(-1, target[:, None]).squeeze(-1)
    on = hint >= 0
    if beta == 0 or not bool(on.any()):
        return nll
    log_ph = logp.gather(-1, hint.clamp(min=0)[:, None]).squeeze(-1)
    log_z = torch.log1p(torch.exp(log_ph) * math.expm1(beta))
    adj = log_z - beta * (target == hint).to(logp.dtype)
    return nll + torch.where(on, adj, torch.zeros_like(adj))


def tilted_log_probs(logp: Tensor, hint: Tensor, beta: float) -> Tensor:
    """The full tilted distribution (n, V) as log-probabilities (for the normalisation check)."""
    on = hint >= 0
    boost = torch.zeros_like(logp)
    rows = torch.nonzero(on).flatten()
    boost[rows, hint[rows]] = beta
    log_ph = logp.gather(-1, hint.clamp(min=0)[:, None]).squeeze(-1)
    log_z = torch.where(on, torch.log1p(torch.exp(log_ph) * math.expm1(beta)), torch.zeros_like(log_ph))
    return logp + boost - log_z[:, None]
