"""Finding a run's data and checking it agrees with the tokenizer and the model.

Resolution: DATA_PATH / --data (a folder of fineweb_{train,val}_*.bin); the tokenizer from
TOKENIZER_PATH or found next to the data. When no shards are there, a GPU run of the official
default layout downloads them; otherwise the run stops with a message saying what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pgolf.core.errors import MissingInputError
from pgolf.core.config import RunConfig
from pgolf.data.shards import check_token_range, load_shard, load_shards, shard_files
from pgolf.data.tokenizer import ByteTables, byte_tables, check_vocab, find_tokenizer, load_sentencepiece, target_bytes


class DataMissingError(MissingInputError):
    """No usable shards or tokenizer where the run looked."""


@dataclass(frozen=True)
class DataSource:
    data_path: Path
    train_pattern: str
    val_pattern: str
    tokenizer_path: Path
    num_train_shards: int


@dataclass
class ValData:
    """The validation stream and its byte tables."""

    tokens: Tensor  # 1-D int64 CPU tensor: the (possibly capped) validation stream
    tables: ByteTables
    total_bytes: int  # UTF-8 bytes of every target in `tokens`


def _missing_message(path: Path) -> str:
    return (
        f"no training shards (fineweb_train_*.bin) in {path}. Point DATA_PATH or --data at a folder of "
        "official shards (e.g. DATA_PATH=../shared/data/fineweb_sample/sp1024), or download them with "
        "`pgolf data download --variant sp1024` (needs network access to huggingface.co)"
    )


def _maybe_download(cfg: RunConfig, path: Path, log) -> None:
    """Fetch the official export when a GPU run uses the default layout (./data/datasets/...)."""
    variant = f"sp{cfg.model.vocab_size}"
    if not torch.cuda.is_available() or not path.as_posix().endswith(f"datasets/fineweb10B_{variant}"):
        raise DataMissingError(_missing_message(path))
    from pgolf.data.download import download_variant

    log(f"data:downloading {variant} export ({cfg.train_shards} train shards) into {path.parent.parent}")
    download_variant(variant, train_shards=cfg.train_shards, out=path.parent.parent)


def resolve_data(cfg: RunConfig, log=print) -> DataSource:
    """Locate shards + tokenizer and check they agree with the model's vocab."""
    path = Path(cfg.data.data_path)
    if not any(path.glob(cfg.data.train_pattern)):
        _maybe_download(cfg, path, log)
    train = shard_files(path / cfg.data.train_pattern)
    shard_files(path / cfg.data.val_pattern)
    tok = Path(cfg.data.tokenizer_path) if cfg.data.tokenizer_path else find_tokenizer(path, cfg.model.vocab_size)
    if tok is None:
        raise DataMissingError(
            f"no tokenizer fineweb_{cfg.model.vocab_size}_bpe.model next to {path}; set TOKENIZER_PATH or --tokenizer"
        )
    sp = load_sentencepiece(tok)
    check_vocab(sp, cfg.model.vocab_size, tok)
    check_token_range(load_shard(train[0]), cfg.model.vocab_size, str(train[0]))
    return DataSource(path, str(path / cfg.data.train_pattern), str(path / cfg.data.val_pattern), tok, len(train))


def load_val_data(cfg: RunConfig, ds: DataSource) -> ValData:
    """Validation tokens (capped at eval.val_max_tokens targets when set) + byte tables."""
    tokens = load_shards(ds.val_pattern)
    check_token_range(tokens, cfg.model.vocab_size, ds.val_pattern)
    if tokens.size < 2 or int(tokens[0]) != cfg.model.bos_id:
        raise DataMissingError(f"{ds.val_pattern}: validation stream must start with BOS={cfg.model.bos_id}")
    if cfg.eval.val_max_tokens > 0:
        tokens = tokens[: cfg.eval.val_max_tokens + 1]
    tables = byte_tables(load_sentencepiece(ds.tokenizer_path), cfg.model.vocab_size)
    total = int(target_bytes(tokens[:-1], tokens[1:], tables).sum())
    return ValData(torch.from_numpy(tokens.astype(np.int64)), tables, total)
