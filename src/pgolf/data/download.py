"""Download the official cached FineWeb export (token shards + tokenizer) from the Hugging Face hub.

Remote layout (dataset repo, as the challenge's `data/cached_challenge_fineweb.py` reads it):
    <prefix>/manifest.json                                   lists `datasets` and `tokenizers`
    <prefix>/datasets/fineweb10B_spN/fineweb_{val,train}_NNNNNN.bin
    <prefix>/<tokenizer artifact path>                       e.g. tokenizers/fineweb_1024_bpe.model
Local layout: <out>/manifest.json, <out>/datasets/fineweb10B_spN/, <out>/tokenizers/.

CaseOps exports (variant `sp8192_lossless_caps_caseops_v1_reserved`, the records' lossless-case
sp8192 from PR #1729, on the hub as romeerp/parameter-golf-caseops-v1) also carry one raw-byte
sidecar per val shard, `fineweb_val_bytes_NNNNNN.bin`; it is stored locally as
`fineweb_val_NNNNNN.bytes` (pgolf.data.sidecar) and checked to hold one count per token of its shard.

The manifest decides how many val shards exist and how many train shards may be asked for.
Downloads are resumable: a file already present and valid is skipped, and a file lands under its
final name only after it was downloaded completely and validated. `hf_hub_download` writes into
`<out>/.hub_download/` (its `local_dir`: same filesystem, so the final step is a rename, and an
interrupted transfer is resumed from there); the file then moves to `<name>.part`, is validated,
and is renamed to its final name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pgolf.core.errors import PgolfError, UsageError
from pgolf.data.build import SHARD_FILENAME, TtyProgress
from pgolf.data.shards import ShardError, read_shard_header
from pgolf.data.sidecar import read_sidecar, read_sidecar_header, sidecar_path

DEFAULT_HUB_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_HUB_REMOTE_ROOT = "datasets"
HUB_REPO_ENV = "MATCHED_FINEWEB_REPO_ID"
# Tokenizations whose cached export is not in the official repo: the records download sp8192 from
# this republish. Used when neither --repo-id nor $MATCHED_FINEWEB_REPO_ID names a repo.
CASEOPS_VARIANT_SUFFIX = "_lossless_caps_caseops_v1_reserved"
CASEOPS_SP8192_VARIANT = "sp8192" + CASEOPS_VARIANT_SUFFIX
VARIANT_HUB_REPO = {"sp8192": "kevclark/parameter-golf", CASEOPS_SP8192_VARIANT: "romeerp/parameter-golf-caseops-v1"}
REMOTE_SIDECAR_FILENAME = "fineweb_val_bytes_{index:06d}.bin"  # the records' name of a val byte sidecar
HUB_ROOT_ENV = "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX"
HUB_MANIFEST_NAME = "manifest.json"
PARTIAL_SUFFIX = ".part"
HUB_STAGING_DIR = ".hub_download"  # hf_hub_download's local_dir inside <out>
TOKENIZER_ARTIFACT_KEYS = ("model_path", "vocab_path", "path")  # manifest keys of tokenizer files
# Class names of transport errors (httpx/httpx2/requests/urllib3) that mean "hub not reachable".
NETWORK_ERROR_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "TimeoutException",
        "ReadTimeout",
        "RemoteProtocolError",
        "NetworkError",
        "ProxyError",
        "NewConnectionError",
        "MaxRetryError",
        "OfflineModeIsEnabled",
    }
)


class DownloadError(PgolfError, RuntimeError):
    """The hub could not be reached, or does not hold what the manifest promises."""


@dataclass
class DownloadSummary:
    """What a download produced: where the shards and tokenizer are, and what was fetched."""

    dataset_dir: Path
    tokenizer_files: list[Path]
    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    @property
    def tokenizer_model(self) -> Path | None:
        """The SentencePiece .model among the tokenizer files (None for non-SP tokenizers)."""
        return next((p for p in self.tokenizer_files if p.suffix == ".model"), None)


def hub_settings(
    repo_id: str | None = None, remote_root: str | None = None, variant: str | None = None
) -> tuple[str, str]:
    """Repo id and remote root prefix: arguments, else the official env vars, else the variant's
    known repo, else the defaults."""
    repo = repo_id or os.environ.get(HUB_REPO_ENV) or VARIANT_HUB_REPO.get(variant or "") or DEFAULT_HUB_REPO_ID
    root = remote_root if remote_root is not None else os.environ.get(HUB_ROOT_ENV, DEFAULT_HUB_REMOTE_ROOT)
    return repo, root.strip().strip("/")


def hub_join(*parts: str) -> str:
    """Join remote path parts with '/', skipping empty ones (an empty prefix means the repo root)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def variant_dataset_dir(variant: str) -> str:
    """Dataset folder of a variant: spN → fineweb10B_spN (byte260 → fineweb10B_byte260, the CaseOps
    spN_lossless_caps_caseops_v1_reserved → fineweb10B_spN_lossless_caps_caseops_v1_reserved)."""
    base = variant[: -len(CASEOPS_VARIANT_SUFFIX)] if is_caseops_variant(variant) else variant
    if (base.startswith("sp") and base[2:].isdigit()) or variant == "byte260":
        return f"fineweb10B_{variant}"
    raise UsageError(f"unknown data variant {variant!r}; expected sp<VOCAB_SIZE> (e.g. sp1024) or byte260")


def is_caseops_variant(variant: str) -> bool:
    """True for a CaseOps export (its val shards come with raw-byte sidecars)."""
    return variant.endswith(CASEOPS_VARIANT_SUFFIX)


def hub_unreachable_error(remote: str, repo_id: str, exc: BaseException) -> DownloadError:
    """The one-line error for an offline machine, saying how to use local data instead."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DownloadError(
        f"could not reach the Hugging Face hub to download {remote} from dataset repo {repo_id} "
        f"({type(exc).__name__}: {reason}); to use local data instead, set DATA_PATH=/path/to/shards "
        f"to a folder of fineweb_*.bin shards, or tokenize your own documents with `pgolf data build`"
    )


def is_network_error(exc: BaseException) -> bool:
    """True for connection/timeout errors of any HTTP stack huggingface_hub may use."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in NETWORK_ERROR_NAMES for cls in type(exc).__mro__)


def hub_fetch(repo_id: str, remote: str, staging: Path) -> Path:
    """Download one file of the dataset repo into the staging folder and return its path."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    path = PurePosixPath(remote)
    subfolder = None if str(path.parent) == "." else str(path.parent)
    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id, filename=path.name, subfolder=subfolder, repo_type="dataset", local_dir=staging
            )
        )
    except LocalEntryNotFoundError as exc:  # offline or hub down, and not in the cache
        raise hub_unreachable_error(remote, repo_id, exc) from exc
    except EntryNotFoundError as exc:
        raise DownloadError(f"{remote} is not in Hugging Face dataset repo {repo_id}") from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"Hugging Face dataset repo {repo_id} not found (check {HUB_REPO_ENV})") from exc
    except Exception as exc:
        if is_network_error(exc):
            raise hub_unreachable_error(remote, repo_id, exc) from exc
        raise


def validate_local_file(path: Path, kind: str) -> None:
    """Raise ShardError/ValueError if a local file is not a complete, valid file of its kind."""
    if kind == "shard":
        read_shard_header(path)
    elif kind == "sidecar":
        read_sidecar_header(path)
    elif kind == "json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.stat().st_size == 0:
        raise DownloadError(f"{path}: empty file")


def local_file_ok(path: Path, kind: str) -> bool:
    """True when the file exists and is valid, so a resumed download may skip it."""
    if not path.is_file():
        return False
    try:
        validate_local_file(path, kind)
    except (ShardError, ValueError, OSError):
        return False
    return True


def stage_part(source: Path, part: Path, staging: Path) -> None:
    """Move a staged download to `part`; link (else copy) a file the hub returned from elsewhere."""
    source = source.resolve(strict=True)  # hub cache entries may be symlinks into blobs/
    if staging.resolve() in source.parents:
        os.replace(source, part)
        return
    try:
        os.link(source, part)
    except OSError:
        shutil.copyfile(source, part)


def place_file(source: Path, dest: Path, kind: str, staging: Path) -> None:
    """Bring a downloaded file to `dest` via `dest.part`, validated before the final rename."""
    part = dest.with_name(dest.name + PARTIAL_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part.unlink(missing_ok=True)
    stage_part(source, part, staging)
    try:
        validate_local_file(part, kind)
    except (ShardError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: downloaded file is invalid ({exc})") from exc
    if dest.exists() and os.path.samefile(part, dest):  # rename() is a no-op between hard links
        part.unlink()
        return
    os.replace(part, dest)  # atomic: the final name only ever holds a complete file


def ensure_hub_file(repo_id: str, remote: str, dest: Path, kind: str, staging: Path) -> bool:
    """Make `dest` a valid copy of the remote file; return False if it was already there."""
    if local_file_ok(dest, kind):
        return False
    place_file(hub_fetch(repo_id, remote, staging), dest, kind, staging)
    return True


def load_hub_manifest(out: Path, repo_id: str, prefix: str) -> dict:
    """The export manifest: the local copy if valid, else downloaded to <out>/manifest.json."""
    dest = out / HUB_MANIFEST_NAME
    ensure_hub_file(repo_id, hub_join(prefix, HUB_MANIFEST_NAME), dest, "json", out / HUB_STAGING_DIR)
    manifest = json.loads(dest.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise DownloadError(f"{dest}: manifest is not a JSON object")
    return manifest


def manifest_dataset(manifest: dict, dataset_dir: str) -> dict:
    """The manifest entry of one dataset, with a list of what exists when it is missing."""
    for entry in manifest.get("datasets", []):
        if entry.get("name") == dataset_dir:
            return entry
    names = ", ".join(str(e.get("name")) for e in manifest.get("datasets", [])) or "none"
    raise DownloadError(f"dataset {dataset_dir} is not in the hub manifest (it has: {names})")


def manifest_tokenizer_artifacts(manifest: dict, dataset: dict) -> list[str]:
    """Repo-relative paths (under the prefix) of the files of the dataset's tokenizer."""
    name = dataset.get("tokenizer_name")
    entry = next((t for t in manifest.get("tokenizers", []) if t.get("name") == name), None)
    if entry is None:
        raise DownloadError(f"tokenizer {name} of dataset {dataset.get('name')} is not in the hub manifest")
    artifacts = [str(entry[k]) for k in TOKENIZER_ARTIFACT_KEYS if entry.get(k)]
    if not artifacts:
        raise DownloadError(f"tokenizer {name} in the hub manifest lists no files")
    for art in artifacts:
        if PurePosixPath(art).is_absolute() or ".." in PurePosixPath(art).parts:
            raise DownloadError(f"tokenizer {name}: artifact path {art!r} is not repo-relative")
    return artifacts


def shard_counts(dataset: dict, train_shards: int) -> int:
    """Number of val shards of a dataset; refuse more train shards than the manifest lists."""
    stats = dataset.get("stats") or {}
    try:
        val_shards, max_train = int(stats["files_val"]), int(stats["files_train"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DownloadError(f"dataset {dataset.get('name')}: manifest lacks stats.files_val/files_train") from exc
    if train_shards > max_train:
        raise DownloadError(
            f"dataset {dataset.get('name')} has only {max_train} train shards on the hub, requested {train_shards}"
        )
    return val_shards


def plan_downloads(
    manifest: dict, variant: str, train_shards: int, out: Path, prefix: str
) -> tuple[Path, list[tuple[str, Path, str]]]:
    """The dataset folder and every (remote path, local path, kind) to fetch for a variant."""
    dataset_name = variant_dataset_dir(variant)
    dataset = manifest_dataset(manifest, dataset_name)
    val_shards = shard_counts(dataset, train_shards)
    artifacts = manifest_tokenizer_artifacts(manifest, dataset)
    local_dir = out / "datasets" / dataset_name
    remote_dir = hub_join(prefix, "datasets", dataset_name)
    plan = []
    for split, count in (("val", val_shards), ("train", train_shards)):
        for i in range(count):
            name = SHARD_FILENAME.format(split=split, index=i)
            plan.append((hub_join(remote_dir, name), local_dir / name, "shard"))
            if split == "val" and is_caseops_variant(variant):
                plan.append(
                    (
                        hub_join(remote_dir, REMOTE_SIDECAR_FILENAME.format(index=i)),
                        sidecar_path(local_dir / name),
                        "sidecar",
                    )
                )
    for art in artifacts:
        plan.append((hub_join(prefix, art), out / "tokenizers" / PurePosixPath(art).name, "file"))
    return local_dir, plan


def download_variant(
    variant: str = "sp1024",
    train_shards: int = 1,
    out: str | Path = "data",
    *,
    repo_id: str | None = None,
    remote_root: str | None = None,
    progress: bool | None = None,
) -> DownloadSummary:
    """Fetch the val shards, the first `train_shards` train shards and the tokenizer of a variant.

    Manifest-driven and resumable (present, valid files are skipped). Raises DownloadError when
    the hub is unreachable or lacks a file, and when more train shards are asked than exist.
    """
    if train_shards < 0:
        raise UsageError(f"train_shards must be >= 0, got {train_shards}")
    repo, prefix = hub_settings(repo_id, remote_root, variant)
    out = Path(out)
    manifest = load_hub_manifest(out, repo, prefix)
    dataset_dir, plan = plan_downloads(manifest, variant, train_shards, out, prefix)
    summary = DownloadSummary(dataset_dir, [dest for _, dest, kind in plan if kind == "file"])
    with TtyProgress(f"downloading {variant}", total=len(plan), unit="files", enabled=progress) as bar:
        for remote, dest, kind in plan:
            fetched = ensure_hub_file(repo, remote, dest, kind, out / HUB_STAGING_DIR)
            (summary.downloaded if fetched else summary.skipped).append(dest)
            bar.advance(1, info=dest.name)
    shutil.rmtree(out / HUB_STAGING_DIR, ignore_errors=True)  # kept only while a resume may need it
    check_downloaded_sidecars(plan)
    return summary


def check_downloaded_sidecars(plan: list[tuple[str, Path, str]]) -> None:
    """Each downloaded sidecar must hold one byte count per token of its shard."""
    for _, dest, kind in plan:
        if kind != "sidecar":
            continue
        shard = dest.with_suffix(".bin")
        try:
            read_sidecar(dest, shard)
        except ShardError as exc:
            raise DownloadError(f"{dest.name}: downloaded sidecar does not match its shard ({exc})") from exc
