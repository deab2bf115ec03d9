"""The CaseOps sp8192 export (romeerp/parameter-golf-caseops-v1, records' PR #1729 lineage): its
repo is the variant's default, its val byte sidecars are fetched next to the val shards under the
`.bytes` name and checked against them. A fake local hub stands in for the network."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest

from pgolf.data.download import (
    CASEOPS_SP8192_VARIANT,
    DownloadError,
    download_variant,
    hub_settings,
    variant_dataset_dir,
)
from pgolf.data.shards import write_shard
from pgolf.data.sidecar import read_sidecar
from test_download import FakeHub

REPO = "romeerp/parameter-golf-caseops-v1"
DATASET = "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
TOKENIZER = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"


def make_caseops_hub(root: Path, sidecar_tokens: int | None = None) -> None:
    base = root / "datasets"
    ds = base / "datasets" / DATASET
    manifest = {
        "datasets": [{"name": DATASET, "tokenizer_name": "caseops8192", "stats": {"files_val": 1, "files_train": 2}}],
        "tokenizers": [{"name": "caseops8192", "model_path": f"tokenizers/{TOKENIZER}"}],
    }
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    val = np.array([1, 4, 9, 300, 1, 5, 6], dtype=np.uint16)
    write_shard(ds / "fineweb_val_000000.bin", val)
    # the records store the sidecar in the shard format: same header magic, uint16 counts
    write_shard(ds / "fineweb_val_bytes_000000.bin", np.array([0, 0, 3, 4, 0, 2, 1][:sidecar_tokens], dtype=np.uint16))
    for i in range(2):
        write_shard(ds / f"fineweb_train_{i:06d}.bin", np.array([1, 7, 8 + i], dtype=np.uint16))
    (base / "tokenizers").mkdir()
    (base / "tokenizers" / TOKENIZER).write_bytes(b"fake caseops model")


@pytest.fixture()
def clean_env(monkeypatch):
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", raising=False)


def test_caseops_variant_names_and_repo(clean_env):
    assert variant_dataset_dir(CASEOPS_SP8192_VARIANT) == DATASET
    assert hub_settings(variant=CASEOPS_SP8192_VARIANT) == (REPO, "datasets")


def test_caseops_download_fetches_and_checks_sidecars(clean_env, tmp_path, monkeypatch):
    make_caseops_hub(tmp_path / "hub")
    fake = FakeHub(tmp_path / "hub", tmp_path / "cache", repo=REPO)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    summary = download_variant(CASEOPS_SP8192_VARIANT, 1, tmp_path / "data")
    ds = tmp_path / "data" / "datasets" / DATASET
    assert sorted(p.name for p in ds.iterdir()) == [
        "fineweb_train_000000.bin",
        "fineweb_val_000000.bin",
        "fineweb_val_000000.bytes",
    ]
    assert read_sidecar(ds / "fineweb_val_000000.bytes", ds / "fineweb_val_000000.bin").tolist() == [
        0,
        0,
        3,
        4,
        0,
        2,
        1,
    ]
    assert f"datasets/datasets/{DATASET}/fineweb_val_bytes_000000.bin" in fake.calls
    assert summary.tokenizer_model == tmp_path / "data" / "tokenizers" / TOKENIZER
    fake.calls.clear()
    download_variant(CASEOPS_SP8192_VARIANT, 1, tmp_path / "data")  # resumable: all present and valid
    assert fake.calls == ["datasets/manifest.json"] or fake.calls == []


def test_caseops_sidecar_not_matching_its_shard_is_refused(clean_env, tmp_path, monkeypatch):
    make_caseops_hub(tmp_path / "hub", sidecar_tokens=5)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(tmp_path / "hub", tmp_path / "cache", repo=REPO))
    with pytest.raises(DownloadError, match="fineweb_val_000000.bytes: downloaded sidecar does not match its shard"):
        download_variant(CASEOPS_SP8192_VARIANT, 1, tmp_path / "data")
