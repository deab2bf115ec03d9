"""Guards against the data mistakes that silently produce wrong scores.

- Train/val overlap: a build records a fingerprint of its validation documents in
  `build_manifest.json` (`val_fingerprint`: base64 of the sorted 8-byte BLAKE2b digests of each
  val document's token ids, BOS included, as uint16 little-endian), and every train document is
  checked against it at build time, by `pgolf data check` and when a run starts.
- A train pattern that matches validation shards (`fineweb_val_*`).
- A tokenizer other than the one the shards were built with (`tokenizer_sha256` in the manifest).
- Shards that cannot be streamed: every shard's header and size, no shard without tokens, every
  id inside the vocabulary.

Shards without a build manifest (the official export) skip the manifest checks and keep the
vocabulary and range checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pgolf.core.constants import BOS_ID
from pgolf.core.errors import PgolfError
from pgolf.data.shards import ShardError, check_token_range, load_shard
from pgolf.data.tokenizer import TokenizerError

BUILD_MANIFEST_NAME = "build_manifest.json"
DOC_HASH_BYTES = 8
VAL_SHARD_PREFIX = "fineweb_val_"
FOLDER_VOCAB_RE = re.compile(r"(?:^|_)sp(\d+)(?:_|$)")  # fineweb10B_sp1024, sp1024, fineweb10B_sp8192_lossless_…


class DataOverlapError(PgolfError, ValueError):
    """Training (or calibration) data that contains validation data."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def doc_hash(tokens: np.ndarray) -> bytes:
    """The 8-byte digest of one document's token ids (uint16 little-endian)."""
    data = np.ascontiguousarray(tokens, dtype="<u2").tobytes()
    return hashlib.blake2b(data, digest_size=DOC_HASH_BYTES).digest()


def encode_fingerprint(hashes: Iterable[bytes]) -> str:
    """A compact, order-free text form of a set of document digests."""
    return base64.b64encode(b"".join(sorted(set(hashes)))).decode("ascii")


def decode_fingerprint(text: str, source: str | Path) -> set[bytes]:
    """The digest set of an encoded fingerprint (ShardError naming `source` when malformed)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ShardError(f"{source}: val_fingerprint is not base64 ({exc})") from None
    if len(raw) % DOC_HASH_BYTES:
        raise ShardError(f"{source}: val_fingerprint length {len(raw)} is not a multiple of {DOC_HASH_BYTES}")
    return {raw[i : i + DOC_HASH_BYTES] for i in range(0, len(raw), DOC_HASH_BYTES)}


def iter_stream_docs(paths: Iterable[Path], bos_id: int = BOS_ID) -> Iterator[tuple[np.ndarray, Path]]:
    """Every document of shards read as one stream (a document may span two shards), with the
    shard its first token is in. Tokens before the first BOS are not a document."""
    carry: list[np.ndarray] = []
    carry_file: Path | None = None
    for path in paths:
        tokens = load_shard(path)
        starts = np.flatnonzero(tokens == bos_id)
        head_end = int(starts[0]) if starts.size else tokens.size
        if carry:
            carry.append(tokens[:head_end])
            if starts.size:
                yield np.concatenate(carry), carry_file
                carry = []
        for a, b in zip(starts[:-1], starts[1:]):
            yield tokens[a:b], path
        if starts.size:
            carry, carry_file = [tokens[int(starts[-1]) :]], path
    if carry:
        yield np.concatenate(carry), carry_file


def read_manifest(data_dir: str | Path) -> dict | None:
    """The build manifest of a shard folder, or None when there is none (official shards)."""
    path = Path(data_dir) / BUILD_MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: unreadable build manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: build manifest is not a JSON object")
    return manifest


def check_tokenizer_matches(data_dir: str | Path, manifest: dict | None, tokenizer: str | Path) -> str:
    """The tokenizer's sha256; TokenizerError when the manifest names a different one."""
    digest = file_sha256(tokenizer)
    expected = (manifest or {}).get("tokenizer_sha256")
    if expected and expected != digest:
        built = manifest.get("tokenizer_path", "?")
        raise TokenizerError(
            f"{tokenizer}: sha256 {digest[:12]}… is not the tokenizer the shards in {data_dir} were built with "
            f"({built}, sha256 {str(expected)[:12]}…); the score would be wrong"
        )
    return digest


def check_folder_vocab(data_dir: str | Path, tokenizer: str | Path, tokenizer_vocab: int) -> None:
    """Shards without a manifest: a folder named for a vocabulary (…_sp1024) must get a tokenizer
    of that vocabulary (a 4096 tokenizer on sp1024 shards passes every id check but scores wrong)."""
    match = FOLDER_VOCAB_RE.search(Path(data_dir).name)
    if match and int(match.group(1)) != tokenizer_vocab:
        raise TokenizerError(
            f"{tokenizer}: vocab_size={tokenizer_vocab} but the shards in {data_dir} are named for "
            f"sp{match.group(1)}; they were tokenized with a different tokenizer"
        )


def check_train_not_val(train_files: list[Path], val_files: list[Path], pattern: str) -> None:
    """Refuse a train pattern that matches validation shards."""
    val = {p.resolve() for p in val_files}
    for path in train_files:
        if path.resolve() in val or path.name.startswith(VAL_SHARD_PREFIX):
            raise DataOverlapError(
                f"{path}: the train pattern {pattern} matches a validation shard; "
                "training on validation data is not allowed"
            )


def check_no_val_docs(train_files: list[Path], fingerprint: set[bytes], source: str | Path) -> int:
    """Refuse train shards holding a document of the val fingerprint; return the docs checked."""
    checked = 0
    for doc, path in iter_stream_docs(train_files):
        checked += 1
        if doc_hash(doc) in fingerprint:
            raise DataOverlapError(
                f"{path}: train shard holds a validation document "
                f"(its token hash is in the val fingerprint of {source})"
            )
    return checked


def check_shards_usable(files: list[Path], vocab_size: int) -> int:
    """Every shard: valid header and size, at least one token, every id < vocab_size. Returns
    the total token count."""
    total = 0
    for path in files:
        tokens = load_shard(path)  # validates header and size
        if tokens.size == 0:
            raise ShardError(f"{path}: shard holds zero tokens (a loader would wait on it forever)")
        check_token_range(tokens, vocab_size, str(path))
        total += int(tokens.size)
    return total


def manifest_overlap_check(data_dir: str | Path, manifest: dict | None, train_files: list[Path]) -> str:
    """Check train shards against the manifest's val fingerprint; a status word for logs:
    'none' (checked, no overlap) or 'unchecked' (no manifest or no fingerprint)."""
    if not manifest or not manifest.get("val_fingerprint"):
        return "unchecked"
    source = Path(data_dir) / BUILD_MANIFEST_NAME
    fingerprint = decode_fingerprint(str(manifest["val_fingerprint"]), source)
    check_no_val_docs(train_files, fingerprint, source)
    return "none"
