"""Guards against data mistakes: train data holding validation documents or matching val files,
a tokenizer other than the one the shards were built with, bad or empty later shards, partial
builds, undecodable text files, and CaseOps tokenizers without byte sidecars. Each is a one-line
PgolfError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_VOCAB, tiny_config, tiny_texts
from pgolf.core.errors import PgolfError
from pgolf.core.presets import naive_baseline
from pgolf.data.build import DocumentError, build_shards, check_data_dir, train_tokenizer
from pgolf.data.guards import (
    BUILD_MANIFEST_NAME,
    DataOverlapError,
    decode_fingerprint,
    doc_hash,
    iter_stream_docs,
)
from pgolf.data.loader import TokenStream
from pgolf.data.shards import ShardError, load_shard, split_documents, write_shard
from pgolf.data.sidecar import sidecar_path
from pgolf.data.source import (
    CASEOPS_SP8192_DIR,
    CASEOPS_SP8192_TOKENIZER,
    DataMissingError,
    caseops_alternative,
    load_val_data,
    resolve_data,
)
from pgolf.data.tokenizer import TokenizerError


def quiet(*_args) -> None:
    pass


@pytest.fixture()
def built(tiny_dataset, tmp_path) -> tuple[Path, Path]:
    """A private copy of the tiny dataset (with its manifest) that a test may damage."""
    data, model = tiny_dataset
    copy = tmp_path / "shards"
    shutil.copytree(data, copy)
    return copy, model


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert isinstance(exc, PgolfError) and "\n" not in text
    return text


def test_clean_build_passes_every_guard(built):
    data, model = built
    lines: list[str] = []
    ds = resolve_data(tiny_config(data, model), log=lines.append)
    assert ds.tokenization == "sp320 (byte tables)"
    assert any("train_val_overlap:none" in line and "sha256:" in line for line in lines)
    manifest = json.loads((data / BUILD_MANIFEST_NAME).read_text())
    assert manifest["val_doc_range"] == [0, 40]
    assert len(decode_fingerprint(manifest["val_fingerprint"], "m")) == 40


def test_train_pattern_matching_val_is_refused(built):
    data, model = built
    cfg = tiny_config(data, model)
    cfg.data.train_pattern = "fineweb_val_*.bin"
    with pytest.raises(
        DataOverlapError, match="fineweb_val_000000.bin: the train pattern .* matches a validation shard"
    ) as info:
        resolve_data(cfg, log=quiet)
    one_line(info.value)


def test_train_shard_holding_a_val_document_is_refused(built):
    data, model = built
    val_doc = split_documents(load_shard(data / "fineweb_val_000000.bin"))[3]
    train = data / "fineweb_train_000001.bin"
    tokens = load_shard(train)
    first_bos = int(np.flatnonzero(tokens == 1)[0])
    write_shard(train, np.concatenate([tokens[:first_bos], val_doc, tokens[first_bos:]]))
    with pytest.raises(
        DataOverlapError, match="fineweb_train_000001.bin: train shard holds a validation document"
    ) as info:
        resolve_data(tiny_config(data, model), log=quiet)
    one_line(info.value)
    with pytest.raises(DataOverlapError, match="validation document"):
        check_data_dir(data, model, TINY_VOCAB)


def test_build_refuses_input_with_a_val_document_in_train(tiny_dataset, tmp_path):
    _, model = tiny_dataset
    texts = tiny_texts(12, 5)
    texts.append(texts[1])  # the second val document again, in the train part
    docs = tmp_path / "d.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    with pytest.raises(DataOverlapError, match="document 12 of the input"):
        build_shards(docs, model, tmp_path / "out", num_val_docs=4, shard_size=1000)
    assert not list((tmp_path / "out").glob("fineweb_*"))


def test_docs_spanning_shards_are_hashed_whole(tmp_path):
    a, b = tmp_path / "fineweb_train_000000.bin", tmp_path / "fineweb_train_000001.bin"
    write_shard(a, np.array([7, 1, 5, 6, 1, 8], dtype=np.uint16))
    write_shard(b, np.array([9, 10, 1, 4], dtype=np.uint16))
    docs = [d.tolist() for d, _ in iter_stream_docs([a, b])]
    assert docs == [[1, 5, 6], [1, 8, 9, 10], [1, 4]]
    assert doc_hash(np.array([1, 8, 9, 10])) == doc_hash(np.array([1, 8, 9, 10], dtype=np.uint16))


def test_wrong_tokenizer_is_refused(built, tmp_path):
    data, _ = built
    other_docs = tmp_path / "other.jsonl"
    other_docs.write_text("".join(json.dumps({"text": t.upper()}) + "\n" for t in tiny_texts(200, 9)), encoding="utf-8")
    other = train_tokenizer(other_docs, tmp_path / "other_320", TINY_VOCAB, num_threads=1)
    with pytest.raises(TokenizerError, match="is not the tokenizer the shards in .* were built with") as info:
        resolve_data(tiny_config(data, other), log=quiet)
    one_line(info.value)
    with pytest.raises(TokenizerError, match="were built with"):
        check_data_dir(data, other, TINY_VOCAB)


def test_official_shards_without_manifest_still_work(sp1024_paths):
    data, tok = sp1024_paths
    cfg = naive_baseline()
    cfg.data.data_path, cfg.data.tokenizer_path = str(data), str(tok)
    lines: list[str] = []
    ds = resolve_data(cfg, log=lines.append)
    assert ds.num_train_shards == 3 and "train_val_overlap:unchecked" in lines[-1]
    assert load_val_data(cfg, ds).total_bytes == 2_504_310


def test_bad_later_shard_fails_at_start_up(built):
    data, model = built
    last = sorted(data.glob("fineweb_train_*.bin"))[-1]
    tokens = load_shard(last).copy()
    tokens[5] = 1000
    write_shard(last, tokens)
    with pytest.raises(ShardError, match=f"{last.name}: token id 1000 at position 5 is outside the vocabulary"):
        resolve_data(tiny_config(data, model), log=quiet)


def test_empty_shard_fails_at_start_up_and_in_the_loader(built):
    data, model = built
    last = sorted(data.glob("fineweb_train_*.bin"))[-1]
    write_shard(last, np.array([], dtype=np.uint16))
    with pytest.raises(ShardError, match=f"{last.name}: shard holds zero tokens"):
        resolve_data(tiny_config(data, model), log=quiet)
    with pytest.raises(ShardError, match="zero tokens"):
        TokenStream(data / "fineweb_train_*.bin")
    with pytest.raises(ShardError, match="zero tokens"):
        check_data_dir(data, model, TINY_VOCAB)


def test_failed_build_keeps_the_old_shards(built, tmp_path):
    data, model = built
    before = {p.name: p.read_bytes() for p in data.glob("fineweb_*.bin")}
    docs = tmp_path / "d.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in tiny_texts(30, 2)) + "{not json\n", encoding="utf-8"
    )
    with pytest.raises(DocumentError, match=r"d.jsonl:31: not a JSON object"):
        build_shards(docs, model, data, num_val_docs=5, shard_size=1000)
    assert {p.name: p.read_bytes() for p in data.glob("fineweb_*.bin")} == before
    assert not (data / ".pgolf-build-tmp").exists()
    check_data_dir(data, model, TINY_VOCAB)  # still a complete, valid set


def test_plain_text_that_is_not_utf8_names_file_and_line(tiny_dataset, tmp_path):
    _, model = tiny_dataset
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("fine text\n", encoding="utf-8")
    (folder / "b.txt").write_bytes(b"line one\nline two\nbad \xff byte\n")
    with pytest.raises(DocumentError, match=r"b.txt:3: not UTF-8"):
        build_shards(folder, model, tmp_path / "out", num_val_docs=1, shard_size=1000)
    (folder / "b.txt").write_bytes(b"ok\nlone surrogate \xed\xa0\x80\n")
    with pytest.raises(DocumentError, match=r"b.txt:2: not UTF-8"):
        build_shards(folder, model, tmp_path / "out", num_val_docs=1, shard_size=1000)


def test_caseops_tokenizer_without_sidecars_is_refused(tmp_path):
    texts = [f"The NASA Report number {i} said McDonald went home" for i in range(60)]
    docs = tmp_path / "d.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    model = train_tokenizer(docs, tmp_path / "cops", TINY_VOCAB, num_threads=1, caseops=True)
    data = tmp_path / "shards"
    build_shards(docs, model, data, num_val_docs=10, shard_size=1000, caseops=True)
    cfg = tiny_config(data, model)
    ds = resolve_data(cfg, log=quiet)
    assert ds.tokenization.startswith("caseops-sp320")
    val = load_val_data(cfg, ds)
    assert val.total_bytes == sum(len(t.encode()) for t in texts[:10])
    sidecar_path(data / "fineweb_val_000000.bin").unlink()
    with pytest.raises(DataMissingError, match="CaseOps tokenizer but the val shards have no raw-byte sidecars"):
        resolve_data(cfg, log=quiet)


def test_frontier_prefers_the_caseops_export_when_present(tmp_path):
    cfg = naive_baseline()
    cfg.preset = "frontier"
    default = tmp_path / "datasets" / "fineweb10B_sp8192"
    cfg.data.data_path = str(default)
    assert caseops_alternative(cfg, default) is None
    alt = tmp_path / "datasets" / CASEOPS_SP8192_DIR
    write_shard(alt / "fineweb_train_000000.bin", np.array([1, 5], dtype=np.uint16))
    (tmp_path / "tokenizers").mkdir()
    (tmp_path / "tokenizers" / CASEOPS_SP8192_TOKENIZER).write_bytes(b"x")
    assert caseops_alternative(cfg, default) == (alt, tmp_path / "tokenizers" / CASEOPS_SP8192_TOKENIZER)
    cfg.preset = "naive-baseline"
    assert caseops_alternative(cfg, default) is None


def test_tokenizer_of_another_vocab_on_official_shards_is_refused(sp1024_paths, shared_data):
    data, _ = sp1024_paths
    other = shared_data / "tokenizers" / "candidates" / "fineweb_4096_bpe.pr1708_rebuild.model"
    if not other.is_file():
        pytest.skip(f"{other} not staged")
    cfg = naive_baseline()
    cfg.model.vocab_size = 4096
    cfg.data.data_path, cfg.data.tokenizer_path = str(data), str(other)
    with pytest.raises(TokenizerError, match="vocab_size=4096 but the shards in .* are named for sp1024") as info:
        resolve_data(cfg, log=quiet)
    one_line(info.value)
    with pytest.raises(TokenizerError, match="named for sp1024"):
        check_data_dir(data, other, 4096)
