"""Finding a run's data and checking it agrees with the tokenizer and the model.

Resolution: DATA_PATH / --data (a folder of fineweb_{train,val}_*.bin); the tokenizer from
TOKENIZER_PATH or found next to the data. When no shards are there, a GPU run of the official
default layout downloads them; otherwise the run stops with a message saying what to do. The
`frontier` preset's default sp8192 folder gives way to the CaseOps sp8192 export next to it when
that one is present.

Checks at start-up (pgolf.data.guards), each a one-line error naming the file: the train pattern
must not match validation shards; every train and val shard is validated (header, size, at least
one token, ids inside the vocabulary); with a build manifest, the tokenizer's sha256 must be the
one the shards were built with and no train document may be a validation document. Validation
bytes come from the raw-byte sidecars when the val shards have them (CaseOps), else from the
tokenizer's byte tables; a CaseOps tokenizer without sidecars is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pgolf.core.config import RunConfig
from pgolf.core.errors import MissingInputError
from pgolf.data.caseops import OPERATORS
from pgolf.data.guards import (
    check_folder_vocab,
    check_shards_usable,
    check_tokenizer_matches,
    check_train_not_val,
    manifest_overlap_check,
    read_manifest,
)
from pgolf.data.shards import check_token_range, load_shards, shard_files
from pgolf.data.sidecar import SidecarBytes, load_sidecars, sidecar_path
from pgolf.data.tokenizer import ByteTables, byte_tables, check_vocab, find_tokenizer, load_sentencepiece, target_bytes

CASEOPS_SP8192_DIR = "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
CASEOPS_SP8192_TOKENIZER = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"


class DataMissingError(MissingInputError):
    """No usable shards or tokenizer where the run looked."""


@dataclass(frozen=True)
class DataSource:
    data_path: Path
    train_pattern: str
    val_pattern: str
    tokenizer_path: Path
    num_train_shards: int
    tokenization: str = ""  # e.g. "sp1024", "caseops-sp8192 (sidecar bytes)"


@dataclass
class ValData:
    """The validation stream and how its target bytes are counted."""

    tokens: Tensor  # 1-D int64 CPU tensor: the (possibly capped) validation stream
    tables: ByteTables | SidecarBytes  # per-id tables, or per-position bytes from the sidecars
    total_bytes: int  # UTF-8 bytes of every target in `tokens`


def _missing_message(path: Path) -> str:
    return (
        f"no training shards (fineweb_train_*.bin) in {path}. Point DATA_PATH or --data at a folder of "
        "official shards (e.g. DATA_PATH=../shared/data/fineweb_sample/sp1024), or download them with "
        "`pgolf data download --variant sp1024` (needs network access to huggingface.co)"
    )


def default_layout_download(cfg: RunConfig, path: Path, log) -> bool:
    """Fetch the official export when a GPU run uses the default layout (./data/datasets/...);
    False when this run should not download. The command line passes this to resolve_data; the
    exported train_gpt.py does not (a submission never downloads), so it carries no download code."""
    variant = f"sp{cfg.model.vocab_size}"
    if not torch.cuda.is_available() or not path.as_posix().endswith(f"datasets/fineweb10B_{variant}"):
        return False
    from pgolf.data.download import download_variant

    log(f"data:downloading {variant} export ({cfg.train_shards} train shards) into {path.parent.parent}")
    download_variant(variant, train_shards=cfg.train_shards, out=path.parent.parent)
    return True


def caseops_alternative(cfg: RunConfig, path: Path) -> tuple[Path, Path] | None:
    """For the frontier preset on its default sp8192 folder: the CaseOps sp8192 export's folder and
    tokenizer when both are present next to it (downloaded with `pgolf data download --variant
    sp8192_lossless_caps_caseops_v1_reserved`), else None."""
    if cfg.preset != "frontier" or path.name != "fineweb10B_sp8192" or cfg.data.tokenizer_path:
        return None
    alt = path.parent / CASEOPS_SP8192_DIR
    tok = find_tokenizer(alt, cfg.model.vocab_size, CASEOPS_SP8192_TOKENIZER)
    if tok is None or not any(alt.glob(cfg.data.train_pattern)):
        return None
    return alt, tok


def is_caseops_tokenizer(sp) -> bool:
    """True when the tokenizer has the CaseOps operators as pieces of their own."""
    unk = int(sp.unk_id())
    return all(int(sp.piece_to_id(op)) != unk for op in OPERATORS)


def resolve_data(cfg: RunConfig, log=print, fetch=None) -> DataSource:
    """Locate shards + tokenizer, check they agree with the model's vocab and with each other.
    `fetch(cfg, path, log) -> bool` may download missing shards (see default_layout_download)."""
    path = Path(cfg.data.data_path)
    tok: Path | None = None
    alt = caseops_alternative(cfg, path)
    if alt is not None:
        path, tok = alt
    elif not any(path.glob(cfg.data.train_pattern)) and not (fetch and fetch(cfg, path, log)):
        raise DataMissingError(_missing_message(path))
    train = shard_files(path / cfg.data.train_pattern)
    val = shard_files(path / cfg.data.val_pattern)
    check_train_not_val(train, val, str(path / cfg.data.train_pattern))
    if tok is None:
        tok = Path(cfg.data.tokenizer_path) if cfg.data.tokenizer_path else find_tokenizer(path, cfg.model.vocab_size)
    if tok is None:
        raise DataMissingError(
            f"no tokenizer fineweb_{cfg.model.vocab_size}_bpe.model next to {path}; set TOKENIZER_PATH or --tokenizer"
        )
    sp = load_sentencepiece(tok)
    check_vocab(sp, cfg.model.vocab_size, tok)
    manifest = read_manifest(path)
    digest = check_tokenizer_matches(path, manifest, tok)
    if manifest is None:
        check_folder_vocab(path, tok, int(sp.vocab_size()))
    check_shards_usable(train + val, cfg.model.vocab_size)
    overlap = manifest_overlap_check(path, manifest, train)
    caseops = is_caseops_tokenizer(sp)
    if caseops and not all(sidecar_path(p).is_file() for p in val):
        raise DataMissingError(
            f"{val[0]}: {tok.name} is a CaseOps tokenizer but the val shards have no raw-byte "
            "sidecars (.bytes); the score would divide by transformed bytes"
        )
    tokenization = f"{'caseops-' if caseops else ''}sp{int(sp.vocab_size())}"
    tokenization += " (sidecar bytes)" if caseops else " (byte tables)"
    log(
        f"data:tokenization {tokenization} path:{path} tokenizer:{tok.name} sha256:{digest[:12]} "
        f"train_val_overlap:{overlap}"
    )
    return DataSource(
        path, str(path / cfg.data.train_pattern), str(path / cfg.data.val_pattern), tok, len(train), tokenization
    )


def load_val_data(cfg: RunConfig, ds: DataSource) -> ValData:
    """Validation tokens (capped at eval.val_max_tokens targets when set) + how bytes are counted."""
    files = shard_files(ds.val_pattern)
    tokens = load_shards(ds.val_pattern)
    check_token_range(tokens, cfg.model.vocab_size, ds.val_pattern)
    if tokens.size < 2 or int(tokens[0]) != cfg.model.bos_id:
        raise DataMissingError(f"{ds.val_pattern}: validation stream must start with BOS={cfg.model.bos_id}")
    counts = load_sidecars(files)
    if cfg.eval.val_max_tokens > 0:
        tokens = tokens[: cfg.eval.val_max_tokens + 1]
    if counts is not None:
        counts = counts[: tokens.size].astype(np.int32)
        tables: ByteTables | SidecarBytes = SidecarBytes(counts, cfg.model.vocab_size)
        total = int(counts[1:].sum())
    else:
        tables = byte_tables(load_sentencepiece(ds.tokenizer_path), cfg.model.vocab_size)
        total = int(target_bytes(tokens[:-1], tokens[1:], tables).sum())
    return ValData(torch.from_numpy(tokens.astype(np.int64)), tables, total)
