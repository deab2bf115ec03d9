"""What one document evaluation will do: the documents, their phase groups, each rank's share,
the chunk schedule of TTT — resolved from the config and the stream before anything runs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from pgolf.core.config import EvalConfig, parse_chunk_by_len, parse_phase_docs
from pgolf.core.errors import ConfigError, PgolfError
from pgolf.eval.documents import Documents, doc_windows, find_documents


class EvalBudgetError(PgolfError):
    """The evaluation plan is predicted to exceed eval.time_budget_s."""


@dataclass
class Setup:
    """What one evaluation needs, resolved from the config and the stream."""

    cfg: EvalConfig
    context: int
    seq_len: int
    docs: Documents
    groups: list[np.ndarray]  # document indices per phase group, stream order
    targets: list[str]
    chunk_rules: list[tuple[int, int]]

    def chunk_of(self, length: int) -> int:
        for max_len, chunk in self.chunk_rules:
            if length <= max_len:
                return min(chunk, self.context)
        return min(self.cfg.ttt_chunk, self.context)


def resolve(cfg: EvalConfig, tokens: Tensor, seq_len: int, bos_id: int) -> Setup:
    context = cfg.context or cfg.eval_seq_len or seq_len
    if cfg.stride > context:
        raise ConfigError(f"eval.stride={cfg.stride} must be <= the context {context}")
    docs = find_documents(tokens, bos_id)
    bounds = [b for b in parse_phase_docs(cfg.ttt_phase_docs) if b < len(docs)] if cfg.ttt else []
    edges = [0] + bounds + [len(docs)]
    groups = [np.arange(a, b, dtype=np.int64) for a, b in zip(edges[:-1], edges[1:])]
    targets = [t.strip() for t in cfg.ttt_targets.split(",") if t.strip()]
    return Setup(cfg, context, seq_len, docs, groups, targets, parse_chunk_by_len(cfg.ttt_chunk_by_len))


def rank_docs(docs: Documents, group: np.ndarray, rank: int, world: int) -> np.ndarray:
    """A contiguous share of the group's documents with about 1/world of its targets."""
    if world == 1 or group.size == 0:
        return group
    cum = np.cumsum(docs.length[group])
    total = int(cum[-1])
    lo = np.searchsorted(cum, total * rank / world, side="right") if rank else 0
    hi = np.searchsorted(cum, total * (rank + 1) / world, side="right") if rank < world - 1 else group.size
    return group[lo:hi]


def chunk_plan(st: Setup, lengths: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per document: (window start, window length, score_from) of each chunk, document-local."""
    out = []
    for ln in lengths.tolist():
        c = st.chunk_of(int(ln))
        out.append(doc_windows(int(ln), st.context, c, c))
    return out
