"""Raw-byte sidecars: the original UTF-8 bytes each token of a shard is charged by the score.

With a text transform such as CaseOps (pgolf.data.caseops) the tokenizer's pieces no longer spell
the original text, so per-piece byte tables would divide by the wrong number of bytes. A shard
built from transformed text therefore gets a sidecar next to it, `fineweb_val_000000.bytes` for
`fineweb_val_000000.bin`:

    header  256 x int32 little-endian: magic 20260417, version 1, num_tokens, zeros
    body    num_tokens x uint16 little-endian: bytes[i] = original UTF-8 bytes charged to token i
            when it is a target (BOS and operator-only tokens: 0)

The token count must equal the shard's. The CaseOps export of the records stores the same array
as `fineweb_val_bytes_NNNNNN.bin` in the shard format (shard magic 20240520); `read_sidecar`
accepts that magic too, and the downloader stores such files under the `.bytes` name.

Attribution (`document_token_bytes`): the transformed document t is encoded, and its pieces spell
SentencePiece's normalized form of t exactly (byte pieces 1 byte each); `sp.normalize(t,
with_offsets=True)` maps each normalized character back to the character of t it came from, which
gives each piece the index of its first character in t. Every character of t belongs to the last
piece that begins at or before it (characters the normalizer dropped, e.g. a second space, go to
the piece before them, or the first piece), and a piece is charged the sum of
`caseops.original_char_bytes` of its characters. Every character has exactly one owner, so
the bytes of a document's tokens sum to the UTF-8 length of the original document, exactly;
operators cost 0 and a lowered capital costs its capital's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.core.constants import BOS_ID
from pgolf.data.caseops import caseops_encode, original_char_bytes
from pgolf.data.shards import HEADER_BYTES, SHARD_MAGIC, ShardError, read_header_ints, read_shard_header, write_u16_file
from pgolf.data.tokenizer import TokenizerError

SIDECAR_MAGIC = 20260417
SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".bytes"
MAX_TOKEN_BYTES = 2**16 - 1


@dataclass(frozen=True)
class SidecarBytes:
    """Bytes of a validation stream by position: counts[i] = bytes charged when token i is a target.
    Stands in for the per-id ByteTables in scoring; `size` is the vocabulary it was checked against."""

    counts: np.ndarray  # int32 (N,), aligned with the validation tokens
    vocab_size: int

    @property
    def size(self) -> int:
        return int(self.vocab_size)


def sidecar_path(shard: str | Path) -> Path:
    """The sidecar that belongs to a shard: same name, `.bytes` instead of `.bin`."""
    shard = Path(shard)
    return shard.with_name(shard.stem + SIDECAR_SUFFIX)


def write_sidecar(path: str | Path, counts: np.ndarray) -> None:
    """Write per-token byte counts (each < 65536) as a sidecar, atomically."""
    path = Path(path)
    arr = np.asarray(counts)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > MAX_TOKEN_BYTES):
        raise ShardError(f"{path}: byte counts must be in [0, {MAX_TOKEN_BYTES}]")
    write_u16_file(path, SIDECAR_MAGIC, SIDECAR_VERSION, arr)


def read_sidecar_header(path: str | Path) -> int:
    """Validate a sidecar's header and size; return its token count."""
    # the records' fineweb_val_bytes_*.bin carry the shard magic; pgolf's own sidecars their own
    header, size = read_header_ints(path, "byte sidecar", (SIDECAR_MAGIC, SHARD_MAGIC), SIDECAR_VERSION)
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ShardError(f"{path}: header says {count} tokens = {expected} bytes, file has {size} bytes")
    return count


def read_sidecar(path: str | Path, shard: str | Path | None = None) -> np.ndarray:
    """Per-token byte counts of a sidecar (uint16); with `shard`, its count must equal the shard's."""
    path = Path(path)
    count = read_sidecar_header(path)
    if shard is not None:
        tokens = read_shard_header(shard)
        if tokens != count:
            raise ShardError(
                f"{path}: sidecar has {count} byte counts but its shard {Path(shard).name} has {tokens} tokens"
            )
    counts = np.fromfile(path, dtype="<u2", count=count, offset=HEADER_BYTES)
    if counts.size != count:
        raise ShardError(f"{path}: short read ({counts.size} of {count} byte counts)")
    return counts.astype(np.uint16, copy=False)


def shard_sidecars(shards: list[Path]) -> list[Path] | None:
    """The sidecars of a list of shards: all of them, or None when none exists (a partial set is
    an error naming the first shard without one)."""
    paths = [sidecar_path(p) for p in shards]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        missing = shards[present.index(False)]
        raise ShardError(
            f"{sidecar_path(missing)}: missing byte sidecar of {missing.name} (the other shards of the set have one)"
        )
    return paths


def load_sidecars(shards: list[Path]) -> np.ndarray | None:
    """Concatenated byte counts of the shards' sidecars (validated against each shard), or None."""
    paths = shard_sidecars(shards)
    if paths is None:
        return None
    return np.concatenate([read_sidecar(p, s) for p, s in zip(paths, shards)])


def surface_byte_table(sp) -> np.ndarray:
    """UTF-8 bytes each piece spells in SentencePiece's normalized text (byte pieces 1, control 0)."""
    table = np.zeros(int(sp.vocab_size()), dtype=np.int64)
    for tid in range(table.size):
        if sp.is_byte(tid):
            table[tid] = 1
        elif not (sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid)):
            table[tid] = len(sp.id_to_piece(tid).encode("utf-8"))
    return table


def _char_starts(text: str) -> np.ndarray:
    """The UTF-8 byte offset where each character of `text` starts."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    lens = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    return np.cumsum(lens) - lens


def document_token_bytes(sp, transformed: str, surface: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    """SentencePiece ids of a transformed document and the original bytes charged to each.

    Piece begins come from the normalized text (sp.normalize with offsets): the pieces spell it
    exactly, and each normalized character knows the input character it came from.
    """
    surface = surface_byte_table(sp) if surface is None else surface
    ids = [int(i) for i in sp.encode(transformed)]
    counts = np.zeros(len(ids), dtype=np.int64)
    if not ids:
        return ids, counts
    normalized, offsets = sp.normalize(transformed, with_offsets=True)
    lens = surface[np.asarray(ids, dtype=np.int64)]
    norm_starts = _char_starts(normalized)
    if int(lens.sum()) != len(normalized.encode("utf-8")):
        raise TokenizerError(
            f"tokenizer pieces spell {int(lens.sum())} bytes but the normalized text has "
            f"{len(normalized.encode('utf-8'))}; cannot attribute original bytes"
        )
    piece_norm_char = np.searchsorted(norm_starts, np.cumsum(lens) - lens, side="right") - 1
    char_offsets = np.asarray(offsets, dtype=np.int64)
    begins = np.maximum.accumulate(char_offsets[np.clip(piece_norm_char, 0, len(normalized) - 1)])
    char_bytes = np.asarray(original_char_bytes(transformed), dtype=np.int64)
    owner = np.clip(np.searchsorted(begins, np.arange(len(transformed)), side="right") - 1, 0, len(ids) - 1)
    np.add.at(counts, owner, char_bytes)
    return ids, counts


def caseops_document(sp, text: str, surface: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BOS + ids of the CaseOps-transformed text, and the original bytes of each (BOS: 0)."""
    ids, counts = document_token_bytes(sp, caseops_encode(text), surface)
    toks = np.empty(len(ids) + 1, dtype=np.int64)
    toks[0] = BOS_ID
    toks[1:] = ids
    nbytes = np.zeros(len(ids) + 1, dtype=np.int64)
    nbytes[1:] = counts
    return toks, nbytes
