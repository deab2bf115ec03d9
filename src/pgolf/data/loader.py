"""Training-token streaming, equivalent to the official loader.

One global stream walks the sorted train shards in order and wraps around. Each call takes one
contiguous chunk for all ranks and gives rank r its own disjoint span (plus one token so that
targets are inputs shifted by one). With grad_accum = 8 // world_size the same 8 spans make up
every optimizer step whatever the world size, so results do not depend on the GPU count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pgolf.core.errors import ConfigError
from pgolf.data.shards import ShardError, load_shard, read_shard_header, shard_files


@dataclass
class StreamPosition:
    """Where a token stream is: shard index and offset (saved in checkpoints)."""

    file_idx: int = 0
    pos: int = 0


class TokenStream:
    """Reads shards sequentially and wraps around forever (deterministic, no workers). Every
    shard's header is validated up front and a shard without tokens is refused (it would make
    the stream spin forever)."""

    def __init__(self, pattern: str | Path, position: StreamPosition | None = None):
        self.files = shard_files(pattern)
        for path in self.files:
            if read_shard_header(path) == 0:
                raise ShardError(f"{path}: shard holds zero tokens")
        start = position or StreamPosition()
        self.file_idx = start.file_idx % len(self.files)
        self.tokens = load_shard(self.files[self.file_idx])
        self.pos = start.pos

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.file_idx, self.pos)

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens = load_shard(self.files[self.file_idx])
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        """The next n tokens of the stream (crossing shard boundaries as needed)."""
        chunks: list[np.ndarray] = []
        remaining = n
        while remaining > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                self._advance_file()
                continue
            k = min(remaining, avail)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            remaining -= k
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class DistributedTokenLoader:
    """Gives each rank its disjoint span of every global chunk, as (x, y) of shape (B, T)."""

    def __init__(
        self,
        pattern: str | Path,
        rank: int,
        world_size: int,
        device: torch.device,
        position: StreamPosition | None = None,
    ):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(pattern, position)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        if local_tokens < seq_len or local_tokens % seq_len:
            raise ConfigError(
                f"train_batch_tokens={global_tokens} gives {local_tokens} tokens per rank and micro-step "
                f"(world_size={self.world_size}, grad_accum={grad_accum_steps}); it must be a positive "
                f"multiple of train_seq_len={seq_len}"
            )
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        local = torch.from_numpy(chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64))
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
