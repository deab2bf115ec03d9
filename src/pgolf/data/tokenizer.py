"""SentencePiece tokenizers: loading, vocab checks and the per-token byte tables of the score.

The score counts bytes per *target* token (official `build_sentencepiece_luts`):
- control / unknown / unused pieces are boundary tokens and count 0 bytes;
- byte-fallback pieces (<0xNN>) count 1 byte;
- any other piece counts the UTF-8 length of its text with a leading '▁' removed, plus 1 byte
  for that '▁' unless the previous token is a boundary token (the space is not in the text then:
  the decoder drops a leading space after BOS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.core.errors import PgolfError

SPACE_MARK = "\u2581"  # SentencePiece's '▁'


class TokenizerError(PgolfError, ValueError):
    """A tokenizer that is missing, unreadable or does not match the model/data."""


def load_sentencepiece(path: str | Path):
    """Load a SentencePiece model, with an error that names the file when it cannot."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file not found")
    if path.suffix != ".model":
        raise TokenizerError(f"{path}: expected a SentencePiece .model file")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as exc:
        raise TokenizerError(f"{path}: not a readable SentencePiece model ({exc})") from exc
    return sp


@dataclass(frozen=True)
class ByteTables:
    """Per-token-id tables for byte counting (index = token id)."""

    base_bytes: np.ndarray  # int16: bytes of the piece without its leading '▁'
    has_leading_space: np.ndarray  # bool: piece starts with '▁'
    is_boundary: np.ndarray  # bool: control/unknown/unused (BOS, EOS, PAD, UNK)

    @property
    def size(self) -> int:
        return int(self.base_bytes.shape[0])


def byte_tables(sp, vocab_size: int) -> ByteTables:
    """Build the byte tables of a SentencePiece model, padded to max(sp vocab, model vocab)."""
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)  # ids the tokenizer does not know count 0
    for tid in range(sp_vocab):
        if sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid):
            continue
        boundary[tid] = False
        if sp.is_byte(tid):
            base[tid] = 1
            continue
        piece = sp.id_to_piece(tid)
        if piece.startswith(SPACE_MARK):
            space[tid] = True
            piece = piece[1:]
        base[tid] = len(piece.encode("utf-8"))
    return ByteTables(base, space, boundary)


def target_bytes(prev_ids: np.ndarray, tgt_ids: np.ndarray, tables: ByteTables) -> np.ndarray:
    """Bytes of each target token given the token before it (numpy, int64)."""
    nbytes = tables.base_bytes[tgt_ids].astype(np.int64)
    nbytes += tables.has_leading_space[tgt_ids] & ~tables.is_boundary[prev_ids]
    return nbytes


def check_vocab(sp, vocab_size: int, tokenizer_path: str | Path) -> None:
    """The model's vocab must equal the tokenizer's (official check)."""
    if int(sp.vocab_size()) != vocab_size:
        raise TokenizerError(
            f"{tokenizer_path}: tokenizer has vocab_size={int(sp.vocab_size())} but the model "
            f"expects VOCAB_SIZE={vocab_size}"
        )


def find_tokenizer(data_dir: str | Path, vocab_size: int, name: str | None = None) -> Path | None:
    """Look for fineweb_<V>_bpe.model (or `name`) in and around a shard folder (official layout and ours)."""
    data_dir = Path(data_dir)
    name = name or f"fineweb_{vocab_size}_bpe.model"
    for base in (data_dir, data_dir.parent, data_dir.parent.parent):
        for cand in (base / name, base / "tokenizers" / name):
            if cand.is_file():
                return cand
    return None
