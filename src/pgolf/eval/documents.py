"""The validation stream as documents, and the windows that score each document on its own.

A document starts at a BOS and spans up to and including the next BOS, which is its final target
(the model is charged for predicting where the document ends). With the stream `tokens[0..N]`
(N targets), document d has inputs `tokens[start : start + length]` and targets
`tokens[start + 1 : start + length + 1]`; the documents' targets tile 1..N exactly once. Tokens
before the first BOS (a stream cut mid-document) form a document of their own.

A document is scored from its own BOS: its windows never reach into the previous document, hold
at most `context` tokens, and each scores the targets after the previous window's end, so every
target is scored once with as much same-document context as the window allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgolf.core.errors import ConfigError
from pgolf.data.sidecar import SidecarBytes
from pgolf.data.tokenizer import ByteTables, TokenizerError


@dataclass(frozen=True)
class Documents:
    """Document d: inputs tokens[start[d] : start[d] + length[d]], the same number of targets."""

    start: np.ndarray  # int64 (D,)
    length: np.ndarray  # int64 (D,)

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def num_targets(self) -> int:
        return int(self.length.sum())


def find_documents(tokens: Tensor, bos_id: int) -> Documents:
    """Split the stream at every BOS among its inputs (a BOS that is the very last token is only a
    target: it closes the last document)."""
    n = int(tokens.numel()) - 1
    if n < 1:
        raise ConfigError("the validation stream needs at least two tokens")
    starts = torch.nonzero(tokens[:n] == bos_id).flatten().cpu().numpy().astype(np.int64)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts]).astype(np.int64)
    ends = np.concatenate([starts[1:], [n]]).astype(np.int64)
    return Documents(starts, ends - starts)


def window_ends(length: int, first_end: int, step: int) -> np.ndarray:
    """Ends (exclusive, in targets) of the successive windows of a document of `length` targets:
    first_end, first_end + step, ..., always finishing exactly at length."""
    first = min(first_end, length)
    ends = np.arange(first, length, step, dtype=np.int64)
    return np.concatenate([ends, [length]]).astype(np.int64) if ends.size == 0 or ends[-1] != length else ends


def doc_windows(length: int, context: int, first_end: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, window length, score_from), document-local: window i reads inputs
    [start, start + len) and scores its targets from offset score_from on (the targets after the
    previous window's end). Needs first_end <= context and step <= context."""
    if step <= 0 or step > context or first_end <= 0 or first_end > context:
        raise ConfigError(f"scoring step {step} / first window {first_end} must be in [1, context={context}]")
    ends = window_ends(length, first_end, step)
    starts = np.maximum(ends - context, 0)
    prev = np.concatenate([[0], ends[:-1]])
    return starts, ends - starts, prev - starts


@dataclass(frozen=True)
class Windows:
    """Stream-level windows: inputs tokens[start : start + length], targets scored from offset
    score_from (stream targets start + score_from + 1 .. start + length)."""

    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray
    score_from: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)


def plan_doc_windows(docs: Documents, which: np.ndarray, context: int, stride: int) -> Windows:
    """Sliding windows inside each listed document: the first holds up to `context` targets, each
    later one `stride` more (stride 0 = context: back-to-back windows)."""
    step = stride or context
    parts = []
    for d in which.tolist():
        s, ln, sf = doc_windows(int(docs.length[d]), context, context, step)
        parts.append((np.full(s.size, d, dtype=np.int64), s + docs.start[d], ln, sf))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Windows(empty, empty, empty, empty)
    return Windows(*(np.concatenate(c).astype(np.int64) for c in zip(*parts)))


def length_sorted(values: np.ndarray) -> np.ndarray:
    """Indices ordering `values` longest first (stable, so equal lengths keep stream order)."""
    return np.argsort(-values, kind="stable")


def per_target_bytes(tokens: Tensor, tables: ByteTables | SidecarBytes, device) -> Tensor:
    """(N,) int64 UTF-8 bytes charged to each target tokens[1..N] (index j - 1 for target j):
    the tokenizer's per-piece rule, or a raw-byte sidecar's per-position counts."""
    n = int(tokens.numel())
    if isinstance(tables, SidecarBytes):
        if tables.counts.size < n:
            raise TokenizerError(f"byte sidecar covers {tables.counts.size} positions, the stream has {n}")
        return torch.from_numpy(np.asarray(tables.counts[1:n], dtype=np.int64)).to(device)
    if int(tokens.max()) >= tables.size:
        raise TokenizerError(f"token id {int(tokens.max())} is outside the tokenizer's table of {tables.size} ids")
    base, space, boundary = (
        torch.from_numpy(a).to(device) for a in (tables.base_bytes, tables.has_leading_space, tables.is_boundary)
    )
    tok = tokens.to(device=device, dtype=torch.int64)
    tgt, prev = tok[1:], tok[:-1]
    return base[tgt].to(torch.int64) + (space[tgt] & ~boundary[prev]).to(torch.int64)
