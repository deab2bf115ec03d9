"""Tests of pgolf.data.build: tokenizer training and shard building (official exporter semantics)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_dir
from pgolf.cli.data import register_data_commands
from pgolf.core.constants import BOS_ID
from pgolf.data.build import (
    BUILD_MANIFEST_NAME,
    DocumentError,
    build_shards,
    iter_documents,
    tokenizer_training_texts,
    train_tokenizer,
)
from pgolf.data.guards import file_sha256
from pgolf.data.shards import load_shard, load_shards, write_shard
from pgolf.data.tokenizer import TokenizerError, load_sentencepiece

TINY_VOCAB = 320
WORDS = (
    "the cat dog sat on a mat and ran to big red house with apples in golf score café naïve über 42 2024 7 tokens shard"
).split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """Deterministic small documents with digits, punctuation and non-ASCII letters."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))).capitalize() + "." for _ in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A ~320-piece SentencePiece BPE trained with the official settings on generated text."""
    root = tmp_path_factory.mktemp("tok")
    docs = write_jsonl(root / "train.jsonl", make_sentences(400))
    return train_tokenizer(docs, root / "tiny_bpe", TINY_VOCAB, num_threads=1)


def expected_stream(sp, texts: list[str]) -> np.ndarray:
    """The official per-document token stream: BOS + encode(raw text), no EOS."""
    parts = [[BOS_ID] + sp.encode(t, out_type=int) for t in texts]
    return np.array([i for p in parts for i in p], dtype=np.uint16)


def test_train_tokenizer_official_settings(tiny_model):
    sp = load_sentencepiece(tiny_model)
    assert tiny_model.with_suffix(".vocab").is_file()
    assert sp.vocab_size() == TINY_VOCAB
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.is_byte(sp.piece_to_id("<0xC3>"))  # byte_fallback
    assert [sp.id_to_piece(i) for i in sp.encode("2024")] == ["2", "0", "2", "4"]  # split_digits
    assert not sp.id_to_piece(sp.encode("cat")[0]).startswith("\u2581")  # add_dummy_prefix False
    assert sp.decode(sp.encode("ｃａｔ")) == "cat"  # nmt_nfkc folds full-width letters


def test_training_texts_match_exporter_cleanup(tmp_path):
    docs = write_jsonl(tmp_path / "d.jsonl", ["  a\x00b  ", "   ", "c", "d"])
    assert list(tokenizer_training_texts(docs, None)) == ["a b", "c", "d"]
    assert list(tokenizer_training_texts(docs, 3)) == ["a b", "c"]  # max_docs counts raw documents


def test_build_shards_layout_and_tokens(tiny_model, tmp_path):
    sp = load_sentencepiece(tiny_model)
    texts = make_sentences(40, seed=1)
    stats = build_shards(
        write_jsonl(tmp_path / "d.jsonl", texts), tiny_model, tmp_path / "out", num_val_docs=7, shard_size=100
    )
    val_files = sorted((tmp_path / "out").glob("fineweb_val_*.bin"))
    train_files = sorted((tmp_path / "out").glob("fineweb_train_*.bin"))
    val, train = (
        load_shards(tmp_path / "out" / "fineweb_val_*.bin"),
        load_shards(tmp_path / "out" / "fineweb_train_*.bin"),
    )
    assert np.array_equal(val, expected_stream(sp, texts[:7]))
    assert np.array_equal(train, expected_stream(sp, texts[7:]))
    for files in (val_files, train_files):  # fixed-size shards; only each split's last may be short
        assert all(load_shard(p).size == 100 for p in files[:-1]) and 0 < load_shard(files[-1]).size <= 100
    assert load_shard(train_files[0])[0] == BOS_ID  # the split change flushed the val buffer
    assert stats["docs_val"] == 7 and stats["docs_train"] == 33 and stats["docs_total"] == 40
    assert (stats["tokens_val"], stats["tokens_train"]) == (val.size, train.size)
    assert (stats["files_val"], stats["files_train"]) == (len(val_files), len(train_files))
    assert len(train_files) > 1  # documents spanned shards


def test_build_manifest_and_stale_removal(tiny_model, tmp_path):
    out = tmp_path / "out"
    write_shard(out / "fineweb_train_000099.bin", np.array([1, 5, 6], dtype=np.uint16))
    stats = build_shards(
        write_jsonl(tmp_path / "d.jsonl", make_sentences(5)), tiny_model, out, num_val_docs=2, shard_size=10_000
    )
    assert sorted(p.name for p in out.glob("*.bin")) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    manifest = json.loads((out / BUILD_MANIFEST_NAME).read_text())
    assert manifest["tokenizer_sha256"] == file_sha256(tiny_model)
    assert Path(manifest["tokenizer_path"]) == tiny_model.resolve()
    assert manifest["stats"] == stats and manifest["vocab_size"] == TINY_VOCAB
    assert manifest["files"] == {"val": ["fineweb_val_000000.bin"], "train": ["fineweb_train_000000.bin"]}


def test_build_all_train_when_no_val_docs(tiny_model, tmp_path):
    stats = build_shards(
        write_jsonl(tmp_path / "d.jsonl", make_sentences(3)),
        tiny_model,
        tmp_path / "o",
        num_val_docs=0,
        shard_size=10_000,
    )
    assert stats["files_val"] == 0 and stats["files_train"] == 1
    assert not list((tmp_path / "o").glob("fineweb_val_*"))


def test_text_files_are_raw_documents(tiny_model, tmp_path):
    """Plain-text files are one document each, passed to SentencePiece byte for byte."""
    sp = load_sentencepiece(tiny_model)
    folder = tmp_path / "docs"
    folder.mkdir()
    raw = ["  The cat\r\nsat.  ", "Golf\tscore 42\n\n", "café über"]
    for i, text in enumerate(raw):
        (folder / f"{i}.txt").write_bytes(text.encode("utf-8"))
    assert list(iter_documents(folder)) == raw
    build_shards(folder, tiny_model, tmp_path / "out", num_val_docs=1, shard_size=10_000)
    tokens = load_shards(tmp_path / "out" / "fineweb_*.bin")  # sorted: train before val
    val = load_shard(tmp_path / "out" / "fineweb_val_000000.bin")
    assert np.array_equal(val, expected_stream(sp, raw[:1]))
    assert tokens.size == expected_stream(sp, raw).size


def test_bad_jsonl_names_file_and_line(tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(DocumentError, match=r"bad\.jsonl:2"):
        build_shards(bad, tiny_model, tmp_path / "out", num_val_docs=0, shard_size=100)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list(iter_documents(tmp_path / "missing.jsonl"))


def run_data_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="pgolf")
    register_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_tokenizer_and_build(tmp_path, capsys):
    docs = write_jsonl(tmp_path / "d.jsonl", make_sentences(300, seed=3))
    with pytest.raises(TokenizerError, match="Vocabulary size is smaller than required_chars"):
        train_tokenizer(docs, tmp_path / "small", 270)
    run_data_cli(
        [
            "data",
            "tokenizer",
            str(docs),
            "--vocab-size",
            "320",
            "--out-prefix",
            str(tmp_path / "tok" / "t_bpe"),
            "--max-docs",
            "200",
        ]
    )
    model = tmp_path / "tok" / "t_bpe.model"
    assert f"model:{model}" in capsys.readouterr().out
    run_data_cli(
        [
            "data",
            "build",
            str(docs),
            "--tokenizer",
            str(model),
            "--out",
            str(tmp_path / "out"),
            "--val-docs",
            "10",
            "--shard-size",
            "500",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("split:val docs:10 tokens:")
    assert lines[1].startswith("split:train docs:290 tokens:")
    assert lines[-1].startswith("build:ok")


@pytest.mark.data
def test_build_matches_official_train_shard_prefix(tmp_path):
    """Our builder reproduces the official-format fineweb_train_000000.bin from its documents."""
    data = shared_data_dir()
    docs_path = data / "fineweb_sample" / "train_docs.jsonl"
    official = data / "fineweb_sample" / "sp1024" / "fineweb_train_000000.bin"
    model = data / "tokenizers" / "fineweb_1024_bpe.model"
    if not (docs_path.is_file() and official.is_file() and model.is_file()):
        pytest.skip(f"real FineWeb sample not found under {data} (set PGOLF_SHARED_DATA)")
    with docs_path.open(encoding="utf-8") as f:
        first = [next(f) for _ in range(50)]
    (tmp_path / "first50.jsonl").write_text("".join(first), encoding="utf-8")
    stats = build_shards(tmp_path / "first50.jsonl", model, tmp_path / "out", num_val_docs=0, shard_size=4_000_000)
    ours = load_shard(tmp_path / "out" / "fineweb_train_000000.bin")
    ref = load_shard(official)
    assert stats["docs_train"] == 50 and ours.size == stats["tokens_train"]
    assert np.array_equal(ours, ref[: ours.size])
    assert ref[ours.size] == BOS_ID  # the 51st document starts right after ours end
