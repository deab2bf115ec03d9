"""Token loading: the official stream semantics; every world size sees the same micro-batches."""

from __future__ import annotations

import numpy as np
import torch

from pgolf.data.loader import DistributedTokenLoader, StreamPosition, TokenStream
from pgolf.data.shards import write_shard


def make_shards(tmp_path, sizes=(1000, 333, 777)) -> str:
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", (np.arange(start, start + n) % 60000).astype(np.uint16))
        start += n
    return str(tmp_path / "fineweb_train_*.bin")


def test_stream_crosses_shards_and_wraps(tmp_path):
    s = TokenStream(make_shards(tmp_path))
    a = s.take(1200)
    assert a.tolist() == list(range(1200))
    s.take(900)  # now at token 2100 of 2110
    b = s.take(20)
    assert b[:10].tolist() == list(range(2100, 2110)) and b[10:].tolist() == list(range(10))  # wrapped


def test_stream_position_resumes_exactly(tmp_path):
    pattern = make_shards(tmp_path)
    s = TokenStream(pattern)
    s.take(1500)
    pos = s.position
    expected = s.take(500)
    resumed = TokenStream(pattern, StreamPosition(pos.file_idx, pos.pos))
    assert np.array_equal(resumed.take(500), expected)


def micro_batches(pattern, world, accum, steps, global_tokens=256, seq=16):
    """Per step: the list of (x, y) micro-batches of all ranks in rank-major-per-call order."""
    loaders = [DistributedTokenLoader(pattern, r, world, torch.device("cpu")) for r in range(world)]
    out = []
    for _ in range(steps):
        step = []
        for _ in range(accum):
            for ld in loaders:
                step.append(ld.next_batch(global_tokens, seq, accum))
        out.append(step)
    return out


def test_world_sizes_see_the_same_spans(tmp_path):
    """grad_accum = 8 // world: world 1, 2, 4 and 8 consume the same 8 spans per step."""
    pattern = make_shards(tmp_path)

    def spans(world):
        return [
            sorted(tuple(x.flatten().tolist()) for x, _ in step)
            for step in micro_batches(pattern, world, 8 // world, 3)
        ]

    ref = spans(1)
    for world in (2, 4, 8):
        assert spans(world) == ref


def test_targets_are_inputs_shifted(tmp_path):
    x, y = DistributedTokenLoader(make_shards(tmp_path), 0, 1, torch.device("cpu")).next_batch(64, 16, 1)
    assert x.shape == (4, 16) and torch.equal(x.flatten()[1:], y.flatten()[:-1])
