"""The score: windows cover every target exactly once; batched, split and sliding evaluation equal
the one-target-at-a-time definition; byte counts equal the UTF-8 length of the decoded text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import scoring_model
from pgolf.data.shards import load_shard, split_documents
from pgolf.data.tokenizer import ByteTables, byte_tables, load_sentencepiece, target_bytes
from pgolf.eval.scoring import Score, bits_per_byte, evaluate, plan_windows, score_reference
from pgolf.model.gpt import GPT

V = 48


def synthetic_tables() -> ByteTables:
    """ids 0-3 boundary (0 bytes), 4-9 byte pieces, others 1-4 bytes, half with a leading space."""
    rng = np.random.default_rng(0)
    base = rng.integers(1, 5, V).astype(np.int16)
    base[:4], base[4:10] = 0, 1
    space = rng.random(V) < 0.5
    space[:10] = False
    boundary = np.zeros(V, dtype=bool)
    boundary[:4] = True
    return ByteTables(base, space, boundary)


@pytest.fixture(scope="module")
def model() -> GPT:
    return scoring_model(V)


@pytest.fixture(scope="module")
def stream() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    t = torch.randint(4, V, (203,), generator=g)
    t[[0, 50, 120]] = 1  # BOS
    return t


@pytest.mark.parametrize("T,W,s", [(100, 10, 3), (101, 16, 16), (7, 16, 4), (1000, 64, 64), (999, 64, 1), (65, 64, 8)])
def test_windows_score_each_target_once(T, W, s):
    plan = plan_windows(T, W, s)
    hits = np.zeros(T, dtype=int)
    for start, f in zip(plan.start, plan.score_from):
        assert 0 <= start and start + plan.length <= T
        hits[start + f : start + plan.length] += 1
    if s in (0, W):  # non-overlapping: the official script drops the final partial window
        assert (hits[: (T // W) * W] == 1).all() and (hits[(T // W) * W :] == 0).all()
    else:
        assert (hits == 1).all()
        # context of a scored target = its position in its window + 1 >= min(j + 1, W - s + 1)
        for start, f in zip(plan.start, plan.score_from):
            for j in range(start + f, start + plan.length):
                assert j - start + 1 >= min(j + 1, W - s + 1)


def test_bpb_formula():
    assert bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)
    s = Score(loss_sum=math.log(2) * 30, tokens=10, bytes=15)
    assert s.val_loss == pytest.approx(3 * math.log(2)) and s.val_bpb == pytest.approx(2.0)


@pytest.mark.parametrize("W,s", [(16, 0), (16, 4), (16, 1), (32, 7)])
def test_batched_evaluation_equals_one_target_at_a_time(model, stream, W, s):
    tables = synthetic_tables()
    ref = score_reference(model, stream, tables, W, s)
    for batch in (1, 3, 64):
        got = evaluate(model, stream, tables, W, s, batch_seqs=batch, device=torch.device("cpu"))
        assert (got.tokens, got.bytes) == (ref.tokens, ref.bytes)
        assert got.loss_sum == pytest.approx(ref.loss_sum, rel=1e-5)


@pytest.mark.parametrize("world", [2, 3, 8])
def test_rank_split_sums_to_single_process(model, stream, world):
    tables = synthetic_tables()
    one = evaluate(model, stream, tables, 16, 4, batch_seqs=5)
    parts = [evaluate(model, stream, tables, 16, 4, batch_seqs=5, rank=r, world_size=world) for r in range(world)]
    assert sum(p.tokens for p in parts) == one.tokens and sum(p.bytes for p in parts) == one.bytes
    assert sum(p.loss_sum for p in parts) == pytest.approx(one.loss_sum, rel=1e-6)


def test_non_overlapping_equals_official_definition(model, stream):
    """Official eval_val: reshape to (-1, T) sequences, mean loss, bytes via the LUT."""
    tables, T = synthetic_tables(), 16
    usable = ((stream.numel() - 1) // T) * T
    x, y = stream[:usable].view(-1, T), stream[1 : usable + 1].view(-1, T)
    with torch.no_grad():
        mean = float(model(x, y))
    nbytes = int(target_bytes(x.numpy().ravel(), y.numpy().ravel(), tables).sum())
    official_bpb = mean / math.log(2) * (usable / nbytes)
    got = evaluate(model, stream, tables, T, 0, batch_seqs=2)
    assert got.tokens == usable and got.bytes == nbytes
    assert got.val_bpb == pytest.approx(official_bpb, rel=1e-6)


def test_stride_equal_window_is_non_overlapping(model, stream):
    tables = synthetic_tables()
    a, b = evaluate(model, stream, tables, 16, 16), evaluate(model, stream, tables, 16, 0)
    assert (a.tokens, a.bytes) == (b.tokens, b.bytes) and a.loss_sum == pytest.approx(b.loss_sum)


def test_leading_space_after_boundary_counts_no_space_byte():
    tables = synthetic_tables()
    spaced = int(np.flatnonzero(tables.has_leading_space)[0])
    prev = np.array([1, 20], dtype=np.int64)  # BOS (boundary), then an ordinary token
    tgt = np.array([spaced, spaced], dtype=np.int64)
    got = target_bytes(prev, tgt, tables)
    assert got[0] == tables.base_bytes[spaced] and got[1] == tables.base_bytes[spaced] + 1


def test_out_of_vocab_ids_are_refused(model):
    with pytest.raises(ValueError, match="outside the tokenizer"):
        evaluate(model, torch.tensor([1, 2, 3, V + 5, 4] * 10), synthetic_tables(), 8, 0)


@pytest.mark.data
def test_real_val_bytes_equal_decoded_utf8(sp1024_paths):
    """On the official val sample, the scorer's byte total (sliding: every target) equals the
    UTF-8 length of the decoded documents."""
    data_dir, tok = sp1024_paths
    sp = load_sentencepiece(tok)
    tokens = load_shard(data_dir / "fineweb_val_000000.bin").astype(np.int64)
    decoded = sum(len(sp.decode(d[1:].tolist()).encode("utf-8")) for d in split_documents(tokens))
    tables = byte_tables(sp, 1024)
    assert int(target_bytes(tokens[:-1], tokens[1:], tables).sum()) == decoded == 2_504_310
    score = evaluate(UniformModel(1024), torch.from_numpy(tokens), tables, window=2048, stride=1536, batch_seqs=64)
    assert score.tokens == tokens.size - 1 and score.bytes == decoded
    assert score.val_loss == pytest.approx(math.log(1024), rel=1e-6)  # uniform: ln V per token (fp32 CE)
    assert score.val_bpb == pytest.approx(score.tokens * math.log2(1024) / decoded, rel=1e-6)


class UniformModel(torch.nn.Module):
    """A 'model' predicting the uniform distribution: isolates the scorer's bookkeeping."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def hidden(self, ids):
        return torch.zeros(*ids.shape, 1)

    def logits(self, h):
        return torch.zeros(*h.shape[:-1], self.vocab)
