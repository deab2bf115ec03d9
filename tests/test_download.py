"""Tests of pgolf.data.download against a fake local hub (never the network)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from pgolf.cli.data import register_data_commands
from pgolf.data.download import DownloadError, download_variant, hub_join, variant_dataset_dir
from pgolf.data.shards import load_shard, write_shard

REPO = "willdepueoai/parameter-golf"
TRAIN_SHARDS_ON_HUB = 3
MANIFEST = {
    "datasets": [
        {
            "name": "fineweb10B_sp1024",
            "tokenizer_name": "sp_bpe_1024",
            "stats": {"files_val": 1, "files_train": TRAIN_SHARDS_ON_HUB},
        },
        {"name": "fineweb10B_sp4096", "tokenizer_name": "sp_bpe_4096", "stats": {"files_val": 1, "files_train": 1}},
    ],
    "tokenizers": [
        {
            "name": "sp_bpe_1024",
            "model_path": "tokenizers/fineweb_1024_bpe.model",
            "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
        },
        {"name": "sp_bpe_4096", "model_path": "tokenizers/fineweb_4096_bpe.model"},
    ],
}


class FakeHub:
    """Stands in for hf_hub_download: serves files of a local folder laid out like the repo.

    Like the real one it writes into `local_dir` when given; with honor_local_dir=False it
    returns a path in its own cache instead (what older hub versions / the cache mode do).
    """

    def __init__(self, root: Path, cache: Path, repo: str = REPO, honor_local_dir: bool = True):
        self.root, self.cache, self.repo, self.honor_local_dir = root, cache, repo, honor_local_dir
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}  # remote path → exception to raise
        self.offline: BaseException | None = None

    def __call__(self, repo_id, filename, *, subfolder=None, repo_type=None, local_dir=None, **kwargs):
        assert repo_type == "dataset" and repo_id == self.repo
        remote = hub_join(subfolder or "", filename)
        self.calls.append(remote)
        if self.offline is not None:
            raise self.offline
        if remote in self.fail:
            raise self.fail[remote]
        source = self.root / remote
        if not source.is_file():
            raise EntryNotFoundError(f"{remote} not found")
        base = Path(local_dir) if local_dir is not None and self.honor_local_dir else self.cache
        cached = base / remote
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, cached)
        return str(cached)


def shard_tokens(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([[1], rng.integers(4, 1024, size=50 + seed)]).astype(np.uint16)


def make_hub(root: Path, prefix: str = "datasets") -> Path:
    """Write a tiny export in the remote layout under root/prefix."""
    base = root / prefix if prefix else root
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    ds = base / "datasets" / "fineweb10B_sp1024"
    write_shard(ds / "fineweb_val_000000.bin", shard_tokens(0))
    for i in range(TRAIN_SHARDS_ON_HUB):
        write_shard(ds / f"fineweb_train_{i:06d}.bin", shard_tokens(i + 1))
    (base / "tokenizers").mkdir()
    (base / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(b"fake sentencepiece model")
    (base / "tokenizers" / "fineweb_1024_bpe.vocab").write_text("<pad>\t0\n", encoding="utf-8")
    return base


@pytest.fixture(params=["local_dir", "cache"])
def hub(tmp_path, monkeypatch, request) -> FakeHub:
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", raising=False)
    make_hub(tmp_path / "hub")
    fake = FakeHub(tmp_path / "hub", tmp_path / "cache", honor_local_dir=request.param == "local_dir")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return fake


def test_variant_dataset_dir():
    assert variant_dataset_dir("sp1024") == "fineweb10B_sp1024"
    assert variant_dataset_dir("sp8192") == "fineweb10B_sp8192"
    with pytest.raises(ValueError, match="unknown data variant"):
        variant_dataset_dir("gpt2")


def test_download_layout_and_manifest_counts(hub, tmp_path):
    out = tmp_path / "data"
    summary = download_variant("sp1024", 2, out)
    ds = out / "datasets" / "fineweb10B_sp1024"
    assert summary.dataset_dir == ds
    assert sorted(p.name for p in ds.iterdir()) == [
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_val_000000.bin",
    ]
    assert summary.tokenizer_model == out / "tokenizers" / "fineweb_1024_bpe.model"
    assert (out / "tokenizers" / "fineweb_1024_bpe.vocab").is_file() and (out / "manifest.json").is_file()
    assert np.array_equal(load_shard(ds / "fineweb_train_000001.bin"), shard_tokens(2))
    assert hub.calls == [
        "datasets/manifest.json",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/tokenizers/fineweb_1024_bpe.model",
        "datasets/tokenizers/fineweb_1024_bpe.vocab",
    ]
    assert len(summary.downloaded) == 5 and not summary.skipped
    assert not list(out.rglob("*.part")) and not (out / ".hub_download").exists()


def test_present_files_are_skipped_even_offline(hub, tmp_path):
    out = tmp_path / "data"
    download_variant("sp1024", 1, out)
    hub.calls.clear()
    hub.offline = LocalEntryNotFoundError("cannot reach the hub")
    summary = download_variant("sp1024", 1, out)
    assert hub.calls == [] and summary.downloaded == [] and len(summary.skipped) == 4


def test_resume_after_interrupted_download(hub, tmp_path):
    import httpx2

    out = tmp_path / "data"
    ds = out / "datasets" / "fineweb10B_sp1024"
    hub.fail["datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin"] = httpx2.ConnectError("reset")
    with pytest.raises(DownloadError, match="could not reach the Hugging Face hub"):
        download_variant("sp1024", 3, out)
    assert (ds / "fineweb_train_000000.bin").is_file() and not (ds / "fineweb_train_000001.bin").exists()
    # leftovers of an interrupted copy: a half-written final file from elsewhere and a stale .part
    raw = (ds / "fineweb_train_000000.bin").read_bytes()
    (ds / "fineweb_train_000000.bin").write_bytes(raw[:-10])
    (ds / "fineweb_train_000001.bin.part").write_bytes(b"junk")
    hub.fail.clear()
    hub.calls.clear()
    summary = download_variant("sp1024", 3, out)
    assert [c.rsplit("/", 1)[1] for c in hub.calls] == [
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_train_000002.bin",
        "fineweb_1024_bpe.model",
        "fineweb_1024_bpe.vocab",
    ]  # the first run stopped before these
    assert summary.skipped == [ds / "fineweb_val_000000.bin"]  # (the manifest is not counted)
    for i in range(3):
        assert np.array_equal(load_shard(ds / f"fineweb_train_{i:06d}.bin"), shard_tokens(i + 1))
    assert not list(out.rglob("*.part"))


def test_invalid_download_never_lands_under_final_name(hub, tmp_path):
    remote = hub.root / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin"
    remote.write_bytes(remote.read_bytes()[:-4])  # the hub serves a truncated shard
    with pytest.raises(DownloadError, match="fineweb_val_000000.bin: downloaded file is invalid"):
        download_variant("sp1024", 0, tmp_path / "data")
    ds = tmp_path / "data" / "datasets" / "fineweb10B_sp1024"
    assert not (ds / "fineweb_val_000000.bin").exists() and not list(ds.glob("*.part"))


def test_refuses_more_train_shards_than_exist(hub, tmp_path):
    with pytest.raises(DownloadError, match=f"only {TRAIN_SHARDS_ON_HUB} train shards on the hub, requested 4"):
        download_variant("sp1024", 4, tmp_path / "data")
    assert hub.calls == ["datasets/manifest.json"]  # nothing else was fetched
    with pytest.raises(ValueError):
        download_variant("sp1024", -1, tmp_path / "data")


def test_unknown_dataset_and_missing_remote_file(hub, tmp_path):
    with pytest.raises(DownloadError, match=r"fineweb10B_sp2048 is not in the hub manifest.*fineweb10B_sp1024"):
        download_variant("sp2048", 0, tmp_path / "data")
    with pytest.raises(DownloadError, match=r"fineweb_val_000000.bin is not in Hugging Face dataset repo"):
        download_variant("sp4096", 0, tmp_path / "data")  # listed in the manifest, absent on the hub


def offline_errors() -> list[BaseException]:
    import httpx2

    return [
        LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we "
            "cannot find the requested files in the local cache.\nCheck your connection."
        ),
        httpx2.ConnectError("[Errno -3] Temporary failure in name resolution"),
        ConnectionError("network unreachable"),
    ]


@pytest.mark.parametrize("error", offline_errors(), ids=lambda e: type(e).__name__)
def test_offline_is_one_line_error_with_local_alternatives(hub, tmp_path, error):
    hub.offline = error
    with pytest.raises(DownloadError) as info:
        download_variant("sp1024", 1, tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message
    assert "could not reach the Hugging Face hub" in message
    assert "DATA_PATH=/path/to/shards" in message and "pgolf data build" in message
    assert not (tmp_path / "data" / "manifest.json").exists()


def test_env_overrides_repo_and_prefix(tmp_path, monkeypatch):
    make_hub(tmp_path / "hub", prefix="exports/v2")
    fake = FakeHub(tmp_path / "hub", tmp_path / "cache", repo="someone/golf-data")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/golf-data")
    monkeypatch.setenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "/exports/v2/")
    download_variant("sp1024", 1, tmp_path / "data")
    assert fake.calls[0] == "exports/v2/manifest.json"
    assert (tmp_path / "data" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin").is_file()


def test_cli_download_prints_paths(hub, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="pgolf")
    register_data_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "data"
    args = parser.parse_args(["data", "download", "--variant", "sp1024", "--train-shards", "1", "--out", str(out)])
    args.func(args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "download:ok variant:sp1024 downloaded:4 skipped:0"
    assert f"DATA_PATH={out / 'datasets' / 'fineweb10B_sp1024'}" in lines
    assert f"TOKENIZER_PATH={out / 'tokenizers' / 'fineweb_1024_bpe.model'}" in lines


def test_repo_choice_arg_then_env_then_variant_then_default(monkeypatch):
    """sp8192 is not in the official repo: without --repo-id or the env var, its republish is used."""
    from pgolf.data.download import DEFAULT_HUB_REPO_ID, VARIANT_HUB_REPO, hub_settings

    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    assert hub_settings(variant="sp8192")[0] == VARIANT_HUB_REPO["sp8192"] != DEFAULT_HUB_REPO_ID
    assert hub_settings(variant="sp1024")[0] == hub_settings()[0] == DEFAULT_HUB_REPO_ID
    assert hub_settings("me/data", variant="sp8192")[0] == "me/data"
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "env/data")
    assert hub_settings(variant="sp8192")[0] == "env/data"
