"""Raw-byte sidecars: the file format and its validation, the attribution of original bytes to
CaseOps tokens (exact per document, and 2,504,310 on the real val sample like sp1024), and scoring
from the sidecar (sliding, non-overlapping and rank-split evaluation charge the same bytes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import scoring_model
from pgolf.cli.data import register_data_commands
from pgolf.core.config import ModelConfig
from pgolf.data import caseops
from pgolf.data.build import build_shards, check_data_dir, load_build_tokenizer, shard_stats, train_tokenizer
from pgolf.data.shards import ShardError, load_shard, write_shard
from pgolf.data.sidecar import (
    SIDECAR_MAGIC,
    SidecarBytes,
    caseops_document,
    load_sidecars,
    read_sidecar,
    sidecar_path,
    surface_byte_table,
    write_sidecar,
)
from pgolf.data.tokenizer import TokenizerError, byte_tables, load_sentencepiece, target_bytes
from pgolf.eval.scoring import evaluate, score_reference
from pgolf.model.gpt import GPT

VAL_SAMPLE_BYTES = 2_504_310
MIXED_WORDS = (
    "The NASA report said McDonald's iPhone sales in PARIS fell; Élan ΣΑΣ straße İstanbul "
    "the cat sat on a mat 42 times, GOLF scores Rose"
).split()


def mixed_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(MIXED_WORDS, size=int(rng.integers(8, 60)))) for _ in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def caseops_tiny(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(CaseOps tokenizer, shard folder with sidecars, the documents) from generated mixed-case text."""
    root = tmp_path_factory.mktemp("caseops")
    texts = mixed_texts(300, 0)
    docs = write_jsonl(root / "docs.jsonl", texts)
    model = train_tokenizer(docs, root / "cops", 320, num_threads=1, caseops=True)
    build_shards(docs, model, root / "shards", num_val_docs=30, shard_size=4_000, caseops=True)
    return model, root / "shards", texts


def test_sidecar_roundtrip_and_validation(tmp_path):
    counts = np.array([0, 3, 1, 4, 0, 2], dtype=np.uint16)
    shard = tmp_path / "fineweb_val_000000.bin"
    write_shard(shard, np.array([1, 5, 6, 7, 1, 8], dtype=np.uint16))
    write_sidecar(sidecar_path(shard), counts)
    assert sidecar_path(shard).name == "fineweb_val_000000.bytes"
    assert np.array_equal(read_sidecar(sidecar_path(shard), shard), counts)
    header = np.fromfile(sidecar_path(shard), dtype="<i4", count=3)
    assert header.tolist() == [SIDECAR_MAGIC, 1, 6]
    write_shard(shard, np.array([1, 5, 6], dtype=np.uint16))  # token count no longer matches
    with pytest.raises(ShardError, match="6 byte counts but its shard fineweb_val_000000.bin has 3 tokens"):
        read_sidecar(sidecar_path(shard), shard)
    with open(sidecar_path(shard), "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ShardError, match="fineweb_val_000000.bytes: header says 6 tokens"):
        read_sidecar(sidecar_path(shard))
    sidecar_path(shard).write_bytes(b"\x00" * 1030)
    with pytest.raises(ShardError, match="not a byte sidecar"):
        read_sidecar(sidecar_path(shard))


def test_partial_sidecar_set_is_an_error(tmp_path):
    a, b = tmp_path / "fineweb_val_000000.bin", tmp_path / "fineweb_val_000001.bin"
    for p in (a, b):
        write_shard(p, np.array([1, 5], dtype=np.uint16))
    assert load_sidecars([a, b]) is None
    write_sidecar(sidecar_path(a), np.array([0, 1]))
    with pytest.raises(ShardError, match="fineweb_val_000001.bytes: missing byte sidecar"):
        load_sidecars([a, b])


def test_caseops_build_bytes_are_exact_per_document(caseops_tiny):
    model, shards, texts = caseops_tiny
    sp = load_sentencepiece(model)
    for split, first in (("val", 0), ("train", 30)):
        files = sorted(shards.glob(f"fineweb_{split}_*.bin"))
        tokens = np.concatenate([load_shard(p) for p in files])
        counts = load_sidecars(files)
        assert counts.size == tokens.size
        starts = list(np.flatnonzero(tokens == 1)) + [tokens.size]
        for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            text = texts[first + k]
            assert int(counts[a]) == 0  # BOS
            assert int(counts[a:b].sum()) == len(text.encode("utf-8"))
            assert caseops.decode(sp.decode(tokens[a + 1 : b].tolist())) == text
    ops = [sp.piece_to_id(op) for op in caseops.OPERATORS]
    assert np.isin(tokens, ops).any()  # the text has capitals, so operators occur
    assert int(counts[np.isin(tokens, ops)].sum()) == 0  # ... and cost no bytes


def test_caseops_check_and_stats_use_sidecars(caseops_tiny):
    model, shards, texts = caseops_tiny
    report: dict = {}
    result = check_data_dir(shards, model, 320, report=report)
    assert result["val"].bytes == sum(len(t.encode()) for t in texts[:30])
    assert result["train"].bytes == sum(len(t.encode()) for t in texts[30:])
    assert report["bytes_from"] == "sidecars" and report["overlap"] == "none"
    assert report["val_doc_range"] == [0, 30]


def test_caseops_build_needs_a_caseops_tokenizer(tiny_dataset, tmp_path):
    _, model = tiny_dataset
    with pytest.raises(TokenizerError, match="not a CaseOps tokenizer"):
        load_build_tokenizer(model, caseops=True)


def test_cli_tokenizer_and_build_caseops(tmp_path, capsys):
    docs = write_jsonl(tmp_path / "d.jsonl", mixed_texts(80, 3))
    parser = argparse.ArgumentParser(prog="pgolf")
    register_data_commands(parser.add_subparsers(dest="command"))
    for argv in (
        ["data", "tokenizer", str(docs), "--vocab-size", "300", "--out-prefix", str(tmp_path / "tok"), "--caseops"],
        [
            "data",
            "build",
            str(docs),
            "--tokenizer",
            str(tmp_path / "tok.model"),
            "--out",
            str(tmp_path / "out"),
            "--val-docs",
            "10",
            "--caseops",
        ],
        ["data", "check", "--data", str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok.model")],
    ):
        args = parser.parse_args(argv)
        args.func(args)
    out = capsys.readouterr().out
    assert "tokenizer:ok vocab_size:300" in out and "caseops:on sidecars:on" in out
    assert "train_val_overlap:none bytes_from:sidecars" in out and "val_docs:0..10" in out
    assert (tmp_path / "out" / "fineweb_val_000000.bytes").is_file()


# ---------------------------------------------------------------------------------------------
# scoring from the sidecar

V = 48


@pytest.fixture(scope="module")
def model() -> GPT:
    return scoring_model(V)


@pytest.fixture(scope="module")
def stream_and_counts() -> tuple[torch.Tensor, SidecarBytes]:
    g = torch.Generator().manual_seed(3)
    t = torch.randint(4, V, (301,), generator=g)
    t[[0, 77, 150]] = 1
    counts = torch.randint(0, 9, (301,), generator=g).numpy().astype(np.int32)
    counts[[0, 77, 150]] = 0
    return t, SidecarBytes(counts, V)


@pytest.mark.parametrize("W,s", [(32, 0), (32, 8), (50, 1), (64, 64)])
def test_sidecar_scoring_equals_reference(model, stream_and_counts, W, s):
    tokens, side = stream_and_counts
    got = evaluate(model, tokens, side, window=W, stride=s, batch_seqs=3)
    ref = score_reference(model, tokens, side, W, s)
    assert got.bytes == ref.bytes and got.tokens == ref.tokens
    assert got.loss_sum == pytest.approx(ref.loss_sum, rel=1e-5)


@pytest.mark.parametrize("W,s", [(32, 0), (32, 8)])
def test_sidecar_rank_split_sums_to_single_process(model, stream_and_counts, W, s):
    tokens, side = stream_and_counts
    whole = evaluate(model, tokens, side, window=W, stride=s)
    parts = [evaluate(model, tokens, side, window=W, stride=s, rank=r, world_size=3) for r in range(3)]
    assert sum(p.bytes for p in parts) == whole.bytes
    assert sum(p.tokens for p in parts) == whole.tokens


def test_sliding_with_tail_charges_every_target_once(model, stream_and_counts):
    tokens, side = stream_and_counts
    score = evaluate(model, tokens, side, window=40, stride=7)
    assert score.bytes == int(side.counts[1:].sum())


def test_sidecar_shorter_than_stream_is_refused(model, stream_and_counts):
    tokens, side = stream_and_counts
    with pytest.raises(TokenizerError, match="byte sidecar covers"):
        evaluate(model, tokens, SidecarBytes(side.counts[:100], V), window=32)


# ---------------------------------------------------------------------------------------------
# the real val sample


@pytest.fixture(scope="module")
def real_caseops_tokenizer(shared_data, tmp_path_factory) -> Path:
    """A small CaseOps sp1024 trained on the first 300 train docs of the sample (a few seconds)."""
    root = tmp_path_factory.mktemp("real_caseops")
    return train_tokenizer(
        shared_data / "fineweb_sample" / "train_docs.jsonl", root / "cops_1024", 1024, max_docs=300, caseops=True
    )


def test_real_val_caseops_bytes_equal_sp1024_total(shared_data, real_caseops_tokenizer, sp1024_paths):
    sp = load_build_tokenizer(real_caseops_tokenizer, caseops=True)
    surface = surface_byte_table(sp)
    texts = [
        json.loads(line)["text"]
        for line in (shared_data / "fineweb_sample" / "val_docs.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(texts) == 901
    total = transformed_total = 0
    for text in texts:
        toks, nbytes = caseops_document(sp, text, surface)
        assert int(nbytes.sum()) == len(text.encode("utf-8"))
        assert caseops.decode(sp.decode(toks[1:].tolist())) == text
        total += int(nbytes.sum())
        transformed_total += len(caseops.encode(text).encode("utf-8"))
    # the sp1024 shard's byte total (per-token tables) is the same number
    val_dir, sp1024 = sp1024_paths
    assert shard_stats([val_dir / "fineweb_val_000000.bin"], sp1024).bytes == total == VAL_SAMPLE_BYTES
    # the wrong denominator: bytes of the transformed text (operators counted 3 bytes each)
    assert transformed_total != VAL_SAMPLE_BYTES and transformed_total > VAL_SAMPLE_BYTES


def test_real_sidecar_tables_agree_with_sp1024_tables(sp1024_paths, model):
    """A sidecar made from the sp1024 tables scores exactly like the tables themselves."""
    val_dir, tok = sp1024_paths
    tokens = load_shard(val_dir / "fineweb_val_000000.bin")[:4097].astype(np.int64)
    tables = byte_tables(load_sentencepiece(tok), 1024)
    counts = np.zeros(tokens.size, dtype=np.int32)
    counts[1:] = target_bytes(tokens[:-1], tokens[1:], tables)
    m = GPT(ModelConfig(vocab_size=1024, num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1)).eval()
    t = torch.from_numpy(tokens)
    for W, s in ((256, 0), (256, 64)):
        a = evaluate(m, t, tables, window=W, stride=s)
        b = evaluate(m, t, SidecarBytes(counts, 1024), window=W, stride=s)
        assert a.bytes == b.bytes and a.loss_sum == pytest.approx(b.loss_sum, rel=1e-9)
