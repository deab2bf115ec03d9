"""Tests of shard statistics (exact scored bytes) and shard-folder checks."""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_dir
from pgolf.cli.data import register_data_commands
from pgolf.core.constants import BOS_ID
from pgolf.data.build import check_data_dir, shard_stats, train_tokenizer
from pgolf.data.shards import HEADER_BYTES, ShardError, load_shard, split_documents, write_shard
from pgolf.data.tokenizer import TokenizerError, load_sentencepiece

TINY_VOCAB = 320
WORDS = "the cat sat on a mat golf score 42 café naïve über shard ½ 東京 tokens".split()


def make_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) + rng.choice([".", "!", "\n", ""])
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    docs = root / "d.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(300, 0)), encoding="utf-8")
    return train_tokenizer(docs, root / "tiny_bpe", TINY_VOCAB, num_threads=1)


def tokens_of(sp, texts: list[str]) -> np.ndarray:
    return np.array([i for t in texts for i in [BOS_ID] + sp.encode(t, out_type=int)], dtype=np.uint16)


def decoded_utf8_bytes(sp, tokens: np.ndarray) -> int:
    """Sum over documents of len(utf8(decode(doc ids without BOS)))."""
    return sum(len(sp.decode(d[1:].tolist()).encode("utf-8")) for d in split_documents(tokens))


def test_stats_bytes_equal_decoded_text(tiny_model, tmp_path):
    sp = load_sentencepiece(tiny_model)
    texts = make_texts(60, 1) + ["rare chars fall back to bytes: 🐍 ʘ ∰", "ʘ"]
    tokens = tokens_of(sp, texts)
    assert any(sp.is_byte(int(t)) for t in tokens)  # byte-fallback pieces are exercised
    write_shard(tmp_path / "s.bin", tokens)
    stats = shard_stats([tmp_path / "s.bin"], sp)
    assert (stats.tokens, stats.docs) == (tokens.size, 62)
    assert stats.bytes == decoded_utf8_bytes(sp, tokens)


def test_stats_stream_across_files(tiny_model, tmp_path):
    """Two shards that split a document mid-way count like one concatenated shard."""
    sp = load_sentencepiece(tiny_model)
    tokens = tokens_of(sp, make_texts(20, 2))
    cut = int(np.flatnonzero(tokens == BOS_ID)[7]) + 3  # inside document 7
    write_shard(tmp_path / "all.bin", tokens)
    write_shard(tmp_path / "a.bin", tokens[:cut])
    write_shard(tmp_path / "b.bin", tokens[cut:])
    whole = shard_stats([tmp_path / "all.bin"], str(tiny_model))
    parts = shard_stats([tmp_path / "a.bin", tmp_path / "b.bin"], sp)
    assert (parts.tokens, parts.docs, parts.bytes) == (whole.tokens, whole.docs, whole.bytes)
    assert sum(f.bytes for f in parts.files) == parts.bytes and len(parts.files) == 2


def corrupt_shards(tmp_path: Path) -> dict[str, Path]:
    """One shard per corruption kind, built from a valid 10-token shard."""
    good = tmp_path / "good.bin"
    write_shard(good, np.array([1] + list(range(4, 13)), dtype=np.uint16))
    raw = good.read_bytes()
    paths = {k: tmp_path / f"{k}.bin" for k in ("truncated", "magic", "trailing", "header")}
    paths["truncated"].write_bytes(raw[:-3])
    paths["magic"].write_bytes(np.int32(12345).tobytes() + raw[4:])
    paths["trailing"].write_bytes(raw + b"\x00\x00")
    paths["header"].write_bytes(raw[: HEADER_BYTES // 2])
    return paths


@pytest.mark.parametrize(
    "kind,message",
    [("truncated", "truncated"), ("magic", "magic"), ("trailing", "trailing bytes"), ("header", "truncated header")],
)
def test_corrupt_shard_raises_shard_error_naming_file(tiny_model, tmp_path, kind, message):
    path = corrupt_shards(tmp_path)[kind]
    with pytest.raises(ShardError, match=message) as info:
        shard_stats([path], tiny_model)
    assert str(path) in str(info.value)


def test_ids_outside_vocab_are_a_clear_error(tiny_model, tmp_path):
    bad = tmp_path / "fineweb_val_000000.bin"
    write_shard(bad, np.array([1, 5, 6, 1000, 7], dtype=np.uint16))
    with pytest.raises(ShardError, match=r"token id 1000 at position 3 is outside the vocabulary") as info:
        shard_stats([bad], tiny_model)
    assert str(bad) in str(info.value)
    with pytest.raises(ShardError, match="outside the vocabulary"):
        check_data_dir(tmp_path, tiny_model)


def make_data_dir(sp, root: Path) -> Path:
    root.mkdir()
    write_shard(root / "fineweb_val_000000.bin", tokens_of(sp, make_texts(5, 3)))
    write_shard(root / "fineweb_train_000000.bin", tokens_of(sp, make_texts(8, 4)))
    write_shard(root / "fineweb_train_000001.bin", tokens_of(sp, make_texts(8, 5)))
    return root


def test_check_data_dir_ok(tiny_model, tmp_path):
    sp = load_sentencepiece(tiny_model)
    data = make_data_dir(sp, tmp_path / "d")
    result = check_data_dir(data, tiny_model, TINY_VOCAB)
    assert (result["val"].docs, result["train"].docs) == (5, 16)
    assert len(result["train"].files) == 2


def test_check_vocab_mismatch_is_tokenizer_error(tiny_model, tmp_path):
    data = make_data_dir(load_sentencepiece(tiny_model), tmp_path / "d")
    with pytest.raises(TokenizerError, match=r"vocab_size=320 but the model expects VOCAB_SIZE=1024"):
        check_data_dir(data, tiny_model, 1024)
    with pytest.raises(TokenizerError, match="no tokenizer given"):
        check_data_dir(data, None, 1024)


def test_check_finds_gaps_and_corruption(tiny_model, tmp_path):
    sp = load_sentencepiece(tiny_model)
    data = make_data_dir(sp, tmp_path / "d")
    (data / "fineweb_train_000001.bin").rename(data / "fineweb_train_000002.bin")
    with pytest.raises(ShardError, match="fineweb_train_000001.bin: missing train shard"):
        check_data_dir(data, tiny_model)
    (data / "fineweb_train_000002.bin").rename(data / "fineweb_train_000001.bin")
    with open(data / "fineweb_train_000001.bin", "ab") as f:
        f.write(b"\x01")
    with pytest.raises(ShardError, match="fineweb_train_000001.bin: has trailing bytes"):
        check_data_dir(data, tiny_model)
    with pytest.raises(FileNotFoundError):
        check_data_dir(tmp_path / "empty", tiny_model)


def run_data_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="pgolf")
    register_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_stats_and_check(tiny_model, tmp_path, capsys):
    sp = load_sentencepiece(tiny_model)
    data = make_data_dir(sp, tmp_path / "d")
    files = sorted(data.glob("fineweb_train_*.bin"))
    run_data_cli(["data", "stats", *map(str, files), "--tokenizer", str(tiny_model)])
    lines = capsys.readouterr().out.splitlines()
    expected = shard_stats(files, sp)
    assert lines[-1] == f"tokens:{expected.tokens} docs:16 bytes:{expected.bytes}"
    assert sum(1 for ln in lines if re.fullmatch(r"tokens:\d+ docs:\d+ bytes:\d+", ln)) == 1
    run_data_cli(["data", "check", "--data", str(data), "--tokenizer", str(tiny_model), "--vocab-size", "320"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("check:ok")
    with pytest.raises(TokenizerError):
        run_data_cli(["data", "check", "--data", str(data), "--tokenizer", str(tiny_model), "--vocab-size", "1024"])


def real_val_paths() -> tuple[Path, Path, Path]:
    data = shared_data_dir()
    paths = (
        data / "fineweb_sample" / "sp1024" / "fineweb_val_000000.bin",
        data / "tokenizers" / "fineweb_1024_bpe.model",
        data / "fineweb_sample" / "val_docs.jsonl",
    )
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real FineWeb sample not found under {data} (set PGOLF_SHARED_DATA)")
    return paths


@pytest.mark.data
def test_real_val_bytes_equal_decoded_utf8():
    """On official val docs 0..900: scored bytes == UTF-8 length of the decoded documents."""
    val_bin, model, val_jsonl = real_val_paths()
    sp = load_sentencepiece(model)
    stats = shard_stats([val_bin], sp)
    tokens = load_shard(val_bin)
    assert (stats.tokens, stats.docs) == (1_040_060, 901)
    assert stats.bytes == decoded_utf8_bytes(sp, tokens)
    with val_jsonl.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    assert len(texts) == 901
    assert stats.bytes == sum(len(t.encode("utf-8")) for t in texts)


@pytest.mark.data
def test_real_sample_folder_checks(tmp_path):
    val_bin, model, _ = real_val_paths()
    result = check_data_dir(val_bin.parent, model, 1024)
    assert result["val"].docs == 901 and result["train"].docs == 3000
    wrong = shared_data_dir() / "tokenizers" / "candidates" / "fineweb_4096_bpe.pr1708_rebuild.model"
    if wrong.is_file():
        with pytest.raises(TokenizerError, match="4096"):
            check_data_dir(val_bin.parent, wrong, 1024)
