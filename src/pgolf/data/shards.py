"""The official token-shard format: read, write and validate `.bin` files.

A shard is a 256 x int32 little-endian header (magic 20240520, version 1, num_tokens, zeros)
followed by num_tokens little-endian uint16 token ids. Every error names the file and says what
is wrong; nothing is ever read short silently.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from pgolf.core.constants import BOS_ID
from pgolf.core.errors import MissingInputError, PgolfError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2


class ShardError(PgolfError, ValueError):
    """A shard file that is missing, truncated, corrupt or not in the official format."""


def read_header_ints(path: str | Path, kind: str, magics: tuple[int, ...], version: int) -> tuple[np.ndarray, int]:
    """(header ints, file size) of an official-format file (256 x int32 header: magic, version,
    count, zeros), after checking it exists, holds a whole header and has a known magic and
    version. Shards and their byte sidecars share this layout."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: no such {kind} file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({size} bytes, need {HEADER_BYTES})")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) not in magics:
        raise ShardError(f"{path}: not a {kind} (magic {int(header[0])}, expected {magics[0]})")
    if int(header[1]) != version:
        raise ShardError(f"{path}: unsupported {kind} version {int(header[1])} (expected {version})")
    return header, size


def read_shard_header(path: str | Path) -> int:
    """Validate the header and file size of one shard and return its token count."""
    header, size = read_header_ints(path, "token shard", (SHARD_MAGIC,), SHARD_VERSION)
    num_tokens = int(header[2])
    if num_tokens < 0:
        raise ShardError(f"{path}: corrupt header (negative token count {num_tokens})")
    expected = HEADER_BYTES + num_tokens * TOKEN_BYTES
    if size != expected:
        kind = "truncated" if size < expected else "has trailing bytes"
        raise ShardError(f"{path}: {kind}: header says {num_tokens} tokens = {expected} bytes, file has {size} bytes")
    return num_tokens


def load_shard(path: str | Path) -> np.ndarray:
    """Read all token ids of one shard as a uint16 array (validated, never short)."""
    path = Path(path)
    num_tokens = read_shard_header(path)
    tokens = np.fromfile(path, dtype="<u2", count=num_tokens, offset=HEADER_BYTES)
    if tokens.size != num_tokens:
        raise ShardError(f"{path}: short read ({tokens.size} of {num_tokens} tokens)")
    return tokens.astype(np.uint16, copy=False)


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write token ids as one shard; ids must fit uint16."""
    path = Path(path)
    toks = np.asarray(tokens)
    if toks.size >= 2**31:
        raise ShardError(f"{path}: {toks.size} tokens do not fit an int32 header")
    if toks.size and (int(toks.min()) < 0 or int(toks.max()) >= 2**16):
        raise ShardError(f"{path}: token ids must be in [0, 65536) to store as uint16")
    write_u16_file(path, SHARD_MAGIC, SHARD_VERSION, toks)


def write_u16_file(path: Path, magic: int, version: int, values: np.ndarray) -> None:
    """Header (magic, version, count) + uint16 values, atomically: a killed writer never leaves a
    half file under the real name. Shards and byte sidecars share this layout."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, values.size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(values.astype("<u2", copy=False).tobytes())
    tmp.replace(path)


def shard_files(pattern: str | Path) -> list[Path]:
    """Sorted shard paths for a glob pattern; an empty match is an error naming the pattern."""
    files = [Path(p) for p in sorted(glob.glob(str(pattern)))]
    if not files:
        raise MissingInputError(f"no shard files match {pattern}")
    return files


def load_shards(pattern: str | Path) -> np.ndarray:
    """All tokens of every shard matching a pattern, concatenated in sorted file order."""
    return np.concatenate([load_shard(p) for p in shard_files(pattern)])


def check_token_range(tokens: np.ndarray, vocab_size: int, source: str) -> None:
    """Fail with a clear message when any token id is >= vocab_size."""
    if tokens.size == 0:
        return
    top = int(tokens.max())
    if top >= vocab_size:
        where = int(np.argmax(tokens >= vocab_size))
        raise ShardError(
            f"{source}: token id {top} at position {where} is outside the vocabulary "
            f"(vocab_size={vocab_size}); the data was tokenized with a different tokenizer"
        )


def split_documents(tokens: np.ndarray, bos_id: int = BOS_ID) -> list[np.ndarray]:
    """Split a token stream into documents at BOS tokens (each piece starts with BOS)."""
    starts = np.flatnonzero(tokens == bos_id)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    bounds = list(starts) + [tokens.size]
    return [tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
