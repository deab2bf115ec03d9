"""Build official-format token shards and SentencePiece tokenizers from raw documents.

Follows the challenge exporter (`data/download_hf_docs_and_tokenize.py` of openai/parameter-golf):
each document becomes BOS + sp.encode(raw text) with no EOS and no text clean-up; tokens fill
fixed-size shards (documents may span two shards); the first `num_val_docs` documents go to
`fineweb_val_%06d.bin`, the rest to `fineweb_train_%06d.bin`, and a change of split flushes the
buffer so no shard mixes splits. Also counts tokens, documents and the exact UTF-8 bytes that
the score divides by (`shard_stats`), and validates whole shard folders (`check_data_dir`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.core.constants import BOS_ID
from pgolf.core.errors import MissingInputError, PgolfError, UsageError
from pgolf.data.caseops import CASEOPS_NAME, OPERATORS, caseops_encode
from pgolf.data.guards import (
    BUILD_MANIFEST_NAME,
    DataOverlapError,
    check_folder_vocab,
    check_no_val_docs,
    check_tokenizer_matches,
    decode_fingerprint,
    doc_hash,
    encode_fingerprint,
    file_sha256,
    read_manifest,
)
from pgolf.data.shards import (
    HEADER_BYTES,
    ShardError,
    check_token_range,
    load_shard,
    shard_files,
    write_shard,
)
from pgolf.data.sidecar import (
    caseops_document,
    read_sidecar,
    shard_sidecars,
    sidecar_path,
    surface_byte_table,
    write_sidecar,
)
from pgolf.data.tokenizer import (
    TokenizerError,
    byte_tables,
    check_vocab,
    find_tokenizer,
    load_sentencepiece,
    target_bytes,
)

BUILD_SHARD_SIZE = 10**8  # tokens per shard in the official export
BUILD_NUM_VAL_DOCS = 50_000  # the official validation set is the first 50k documents
ENCODE_BATCH_DOCS = 1024  # documents per SentencePiece batch call (official SP_BATCH_SIZE)
MAX_UINT16_VOCAB = 2**16  # shards store ids as uint16
STATS_CHUNK_TOKENS = 1 << 22  # bound the int64 temporaries of byte counting
SHARD_FILENAME = "fineweb_{split}_{index:06d}.bin"
SHARD_NAME_RE = re.compile(r"^fineweb_(val|train)_(\d{6})\.bin$")
BUILD_TMP_DIR = ".pgolf-build-tmp"  # a build writes here and is moved into place only when complete
SHARD_SPLITS = ("val", "train")

# Trainer settings of the official exporter's SentencePiece BPE tokenizers.
SP_TRAINER_SETTINGS = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}


class DocumentError(PgolfError, ValueError):
    """A document source (jsonl line or text file) that cannot be read as a document."""


# ---------------------------------------------------------------------------------------------
# progress display


class TtyProgress:
    """A progress display for humans: rich (else tqdm) when stderr is a TTY, silent otherwise."""

    def __init__(self, description: str, total: int | None = None, unit: str = "docs", enabled: bool | None = None):
        self.description, self.total, self.unit = description, total, unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._rich = self._task = self._tqdm = None

    def __enter__(self) -> TtyProgress:
        if self.enabled:
            try:
                self._start_rich()
            except ImportError:
                self._start_tqdm()
        return self

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._rich = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
        )
        self._rich.start()
        self._task = self._rich.add_task(self.description, total=self.total, info="")

    def _start_tqdm(self) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._tqdm = tqdm(total=self.total, desc=self.description, unit=f" {self.unit}", file=sys.stderr)

    def advance(self, n: int = 1, info: str = "") -> None:
        """Count n more units done; `info` is a short status text (e.g. tokens so far)."""
        if self._rich is not None:
            self._rich.update(self._task, advance=n, info=info)
        elif self._tqdm is not None:
            self._tqdm.update(n)
            if info:
                self._tqdm.set_postfix_str(info, refresh=False)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
        if self._tqdm is not None:
            self._tqdm.close()


# ---------------------------------------------------------------------------------------------
# document sources


def document_source_files(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand document sources (files or folders, in the order given) into a list of files."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
        elif src.is_file():
            files.append(src)
        else:
            raise MissingInputError(f"{src}: no such document file or folder")
    if not files:
        raise MissingInputError(f"no document files in {', '.join(map(str, sources))}")
    return files


def read_source_texts(path: Path) -> Iterator[str]:
    """Texts of one source: each line's `text` field of a .jsonl file, else the whole file.

    A plain-text file is decoded as UTF-8 without newline translation, so the text reaches
    SentencePiece byte for byte as stored (the exporter passes raw text unchanged).
    """
    if path.suffix != ".jsonl":
        raw = path.read_bytes()
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise DocumentError(f"{path}:{line}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        return
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            yield from _jsonl_text(path, lineno, raw)


def _jsonl_text(path: Path, lineno: int, raw: bytes) -> Iterator[str]:
    """The `text` of one JSONL line (nothing for a blank line); every way the line can be wrong is
    a DocumentError naming the file and line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not line.strip():
        return
    try:
        text = json.loads(line)["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DocumentError(f"{path}:{lineno}: not a JSON object with a 'text' field ({exc})") from None
    if not isinstance(text, str):
        raise DocumentError(f"{path}:{lineno}: 'text' is not a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DocumentError(
            f"{path}:{lineno}: 'text' holds a lone surrogate at character {exc.start} (not encodable as UTF-8)"
        ) from None
    yield text


def iter_documents(sources: str | Path | Iterable[str | Path], max_docs: int | None = None) -> Iterator[str]:
    """All document texts of the sources in order, at most `max_docs` of them."""
    if max_docs is not None and max_docs <= 0:
        return
    count = 0
    for path in document_source_files(sources):
        for text in read_source_texts(path):
            yield text
            count += 1
            if max_docs is not None and count >= max_docs:
                return


def batched_texts(texts: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    """Group texts into lists of at most batch_size (for SentencePiece's threaded batch encode)."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# shard building


class ShardSplitWriter:
    """A fixed-size token buffer flushed to fineweb_<split>_NNNNNN.bin, as the official exporter.

    Tokens of a document that do not fit the current shard continue in the next one; a change
    of split flushes the buffer early so val and train never share a shard. With `sidecars`,
    every shard also gets its raw-byte sidecar (pgolf.data.sidecar), split at the same places.
    """

    def __init__(self, out_dir: Path, shard_size: int, sidecars: bool = False):
        if shard_size <= 0:
            raise UsageError(f"shard_size must be positive, got {shard_size}")
        self.out_dir, self.shard_size = Path(out_dir), shard_size
        self.buf = np.empty(shard_size, dtype=np.uint16)  # pages are only touched as filled
        self.bytes_buf = np.empty(shard_size, dtype=np.uint16) if sidecars else None
        self.fill = 0
        self.split = SHARD_SPLITS[0]
        self.files: dict[str, list[Path]] = {s: [] for s in SHARD_SPLITS}

    def set_split(self, split: str) -> None:
        """Switch to another split, flushing whatever the current one has buffered."""
        if split != self.split:
            self.flush()
            self.split = split

    def append(self, tokens: np.ndarray, nbytes: np.ndarray | None = None) -> None:
        """Add one document's tokens (and their byte counts), writing every shard that fills up."""
        if (nbytes is None) != (self.bytes_buf is None):
            raise UsageError("byte counts must be given exactly when the writer writes sidecars")
        pos = 0
        while pos < tokens.size:
            take = min(self.shard_size - self.fill, tokens.size - pos)
            self.buf[self.fill : self.fill + take] = tokens[pos : pos + take]
            if self.bytes_buf is not None:
                self.bytes_buf[self.fill : self.fill + take] = nbytes[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_size:
                self.flush()

    def flush(self) -> None:
        """Write the buffered tokens as the next shard of the current split (if any)."""
        if self.fill == 0:
            return
        name = SHARD_FILENAME.format(split=self.split, index=len(self.files[self.split]))
        write_shard(self.out_dir / name, self.buf[: self.fill])
        if self.bytes_buf is not None:
            write_sidecar(sidecar_path(self.out_dir / name), self.bytes_buf[: self.fill])
        self.files[self.split].append(self.out_dir / name)
        self.fill = 0


def encode_documents(sp, texts: list[str], vocab_size: int, num_threads: int) -> list[np.ndarray]:
    """BOS + SentencePiece ids of each raw text (no EOS), checked to lie inside the vocabulary."""
    encoded = sp.encode(texts, out_type=int, num_threads=num_threads)
    docs = []
    for ids in encoded:
        toks = np.empty(len(ids) + 1, dtype=np.int64)
        toks[0] = BOS_ID
        toks[1:] = ids
        if toks.size and int(toks.max()) >= vocab_size:
            raise TokenizerError(f"tokenizer produced id {int(toks.max())} >= its vocab_size {vocab_size}")
        docs.append(toks.astype(np.uint16))
    return docs


def encode_caseops_documents(sp, texts: list[str], vocab_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """BOS + ids of each CaseOps-transformed text, with the original bytes charged to each token."""
    docs = []
    surface = surface_byte_table(sp)
    for text in texts:
        toks, nbytes = caseops_document(sp, text, surface)
        if int(toks.max()) >= vocab_size:
            raise TokenizerError(f"tokenizer produced id {int(toks.max())} >= its vocab_size {vocab_size}")
        docs.append((toks.astype(np.uint16), nbytes))
    return docs


SHARD_OUTPUT_GLOBS = (
    "fineweb_train_*.bin",
    "fineweb_val_*.bin",
    "fineweb_*.bytes",
    "fineweb_*.tmp",
    BUILD_MANIFEST_NAME,
)


def remove_stale_shards(out_dir: Path) -> int:
    """Delete old shards, sidecars and a build manifest so a rebuild never mixes old and new files."""
    removed = 0
    for pattern in SHARD_OUTPUT_GLOBS:
        for stale in out_dir.glob(pattern):
            stale.unlink()
            removed += 1
    return removed


def swap_in_build(tmp_dir: Path, out_dir: Path) -> None:
    """Replace out_dir's shard set by the complete one in tmp_dir (manifest moved last)."""
    remove_stale_shards(out_dir)
    manifest = tmp_dir / BUILD_MANIFEST_NAME
    for path in sorted(tmp_dir.iterdir()):
        if path != manifest:
            os.replace(path, out_dir / path.name)
    os.replace(manifest, out_dir / BUILD_MANIFEST_NAME)
    tmp_dir.rmdir()


def new_split_stats() -> dict[str, int]:
    """Zeroed counters with the official manifest's `stats` keys."""
    return {f"{what}_{split}": 0 for what in ("docs", "tokens", "files") for split in ("total",) + SHARD_SPLITS}


def load_build_tokenizer(sp_model_path: str | Path, caseops: bool = False):
    """Load the tokenizer for shard building and check its BOS, uint16 fit and CaseOps symbols."""
    sp = load_sentencepiece(sp_model_path)
    if int(sp.bos_id()) != BOS_ID:
        raise TokenizerError(f"{sp_model_path}: bos_id is {int(sp.bos_id())}, shards need BOS={BOS_ID}")
    if int(sp.vocab_size()) > MAX_UINT16_VOCAB:
        raise TokenizerError(f"{sp_model_path}: vocab_size={int(sp.vocab_size())} does not fit uint16 shards")
    if caseops and not all(sp.piece_to_id(op) != sp.unk_id() for op in OPERATORS):
        raise TokenizerError(
            f"{sp_model_path}: not a CaseOps tokenizer (its vocabulary lacks the case operators; "
            "train one with `pgolf data tokenizer --caseops`)"
        )
    return sp


class _BuildState:
    """Counters and the val fingerprint of a build in progress."""

    def __init__(self, num_val_docs: int):
        self.num_val_docs = num_val_docs
        self.stats = new_split_stats()
        self.val_hashes: set[bytes] = set()

    def add(self, writer: ShardSplitWriter, toks: np.ndarray, nbytes: np.ndarray | None) -> None:
        split = "val" if self.stats["docs_total"] < self.num_val_docs else "train"
        digest = doc_hash(toks)
        if split == "val":
            self.val_hashes.add(digest)
        elif digest in self.val_hashes:
            raise DataOverlapError(
                f"document {self.stats['docs_total']} of the input (a train document) has "
                "the same tokens as a validation document; remove the duplicate"
            )
        writer.set_split(split)
        writer.append(toks, nbytes)
        for key in (f"docs_{split}", "docs_total"):
            self.stats[key] += 1
        for key in (f"tokens_{split}", "tokens_total"):
            self.stats[key] += int(toks.size)


def build_shards(
    docs,
    sp_model_path: str | Path,
    out_dir: str | Path,
    num_val_docs: int = BUILD_NUM_VAL_DOCS,
    shard_size: int = BUILD_SHARD_SIZE,
    *,
    max_docs: int | None = None,
    num_threads: int | None = None,
    progress: bool | None = None,
    caseops: bool = False,
) -> dict[str, int]:
    """Tokenize documents into official-format val/train shards in out_dir; return the stats.

    `docs` is a path or a list of paths: .jsonl files (a `text` field per line), other files
    (one document each) or folders of such files. The shards are written to out_dir/.pgolf-build-tmp
    and replace out_dir's old shard set only once complete (a failed build leaves the old set).
    `build_manifest.json` records the tokenizer (path + sha256), settings, counts, the val
    document range and the val fingerprint. With `caseops`, documents are CaseOps-transformed
    before encoding and every shard gets a raw-byte sidecar (pgolf.data.sidecar).
    """
    if num_val_docs < 0:
        raise UsageError(f"num_val_docs must be >= 0, got {num_val_docs}")
    sp = load_build_tokenizer(sp_model_path, caseops)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir / BUILD_TMP_DIR
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    try:
        writer = ShardSplitWriter(tmp_dir, shard_size, sidecars=caseops)
        state = _BuildState(num_val_docs)
        threads = num_threads or min(os.cpu_count() or 1, 16)
        vocab = int(sp.vocab_size())
        with TtyProgress(f"tokenizing → {out_dir}", enabled=progress) as bar:
            for batch in batched_texts(iter_documents(docs, max_docs), ENCODE_BATCH_DOCS):
                if caseops:
                    for toks, nbytes in encode_caseops_documents(sp, batch, vocab):
                        state.add(writer, toks, nbytes)
                else:
                    for toks in encode_documents(sp, batch, vocab, threads):
                        state.add(writer, toks, None)
                bar.advance(len(batch), info=f"{state.stats['tokens_total']:,} tokens")
        writer.flush()
        stats = state.stats
        for split in SHARD_SPLITS:
            stats[f"files_{split}"] = len(writer.files[split])
        stats["files_total"] = stats["files_val"] + stats["files_train"]
        write_build_manifest(
            tmp_dir, sp_model_path, sp, stats, num_val_docs, shard_size, writer.files, state.val_hashes, caseops
        )
        swap_in_build(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return stats


def write_build_manifest(
    out_dir: Path,
    sp_model_path: str | Path,
    sp,
    stats: dict[str, int],
    num_val_docs: int,
    shard_size: int,
    files: dict[str, list[Path]],
    val_hashes: set[bytes] | None = None,
    caseops: bool = False,
) -> Path:
    """Record which tokenizer (path + sha256) and settings produced the shards, the counts, the
    val document range [first, end) of the input and the val fingerprint."""
    manifest = {
        "tokenizer_path": str(Path(sp_model_path).resolve()),
        "tokenizer_sha256": file_sha256(sp_model_path),
        "vocab_size": int(sp.vocab_size()),
        "bos_id": BOS_ID,
        "append_eos": False,
        "text_transform": CASEOPS_NAME if caseops else "identity",
        "byte_sidecars": bool(caseops),
        "num_val_docs": num_val_docs,
        "val_doc_range": [0, int(stats["docs_val"])],
        "val_fingerprint": encode_fingerprint(val_hashes or ()),
        "shard_size": shard_size,
        "stats": stats,
        "files": {split: [p.name for p in files[split]] for split in SHARD_SPLITS},
    }
    path = out_dir / BUILD_MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def format_build_stats(stats: dict[str, int]) -> list[str]:
    """One `key:value` line per split, for logs and the CLI."""
    return [
        f"split:{s} docs:{stats[f'docs_{s}']} tokens:{stats[f'tokens_{s}']} files:{stats[f'files_{s}']}"
        for s in SHARD_SPLITS
    ]


# ---------------------------------------------------------------------------------------------
# tokenizer training


def tokenizer_training_texts(docs, max_docs: int | None, caseops: bool = False) -> Iterator[str]:
    """Texts for SentencePiece training as the exporter feeds them: NUL→space, stripped, non-empty
    (CaseOps-transformed afterwards when `caseops`).

    `max_docs` limits the documents read (empty ones included), like the exporter's
    `tokenizer_train_docs`.
    """
    for text in iter_documents(docs, max_docs):
        text = text.replace("\x00", " ").strip()
        if text:
            yield caseops_encode(text) if caseops else text


def train_tokenizer(
    docs,
    out_prefix: str | Path,
    vocab_size: int,
    *,
    max_docs: int | None = None,
    num_threads: int | None = None,
    quiet: bool = True,
    caseops: bool = False,
) -> Path:
    """Train a SentencePiece BPE model with the official exporter's settings; return the .model path.

    Writes `<out_prefix>.model` and `<out_prefix>.vocab` (old ones are removed first). Any vocab
    size works (hard_vocab_limit is off, as in the exporter). With `caseops` the model is trained
    on CaseOps-transformed text and the four case operators are user-defined symbols (ids 4-7),
    so an operator is always a piece of its own.
    """
    import sentencepiece as spm

    if not 4 < vocab_size <= MAX_UINT16_VOCAB:
        raise UsageError(f"vocab_size must be in (4, {MAX_UINT16_VOCAB}], got {vocab_size}")
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    model_path = prefix.with_name(prefix.name + ".model")
    for artifact in (model_path, prefix.with_name(prefix.name + ".vocab")):
        artifact.unlink(missing_ok=True)
    kwargs = dict(
        SP_TRAINER_SETTINGS,
        vocab_size=vocab_size,
        model_prefix=str(prefix),
        sentence_iterator=tokenizer_training_texts(docs, max_docs, caseops),
        num_threads=num_threads or min(os.cpu_count() or 1, 16),
    )
    if caseops:
        kwargs["user_defined_symbols"] = list(OPERATORS)
    if quiet:
        kwargs["minloglevel"] = 2  # SentencePiece logs every training step to stderr otherwise
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as exc:  # e.g. vocab too small for 256 byte pieces + required chars
        raise TokenizerError(f"{model_path}: SentencePiece training failed: {exc}") from exc
    if not model_path.is_file():
        raise TokenizerError(f"{model_path}: SentencePiece training wrote no model")
    return model_path


# ---------------------------------------------------------------------------------------------
# statistics and checks


@dataclass
class ShardFileStats:
    """Counts of one shard file."""

    path: Path
    tokens: int
    docs: int  # BOS tokens
    bytes: int  # UTF-8 bytes of the targets that lie in this file


@dataclass
class ShardSetStats:
    """Counts of a sequence of shards read as one token stream (as evaluation reads val)."""

    tokens: int = 0
    docs: int = 0
    bytes: int = 0
    files: list[ShardFileStats] = field(default_factory=list)

    def line(self) -> str:
        """The summary line `tokens:N docs:N bytes:N`."""
        return f"tokens:{self.tokens} docs:{self.docs} bytes:{self.bytes}"


def stream_target_bytes(tokens: np.ndarray, prev: int | None, tables) -> int:
    """Scored bytes of every target in `tokens`; its first token is a target only after `prev`."""
    total = 0
    if prev is not None and tokens.size:
        total += int(target_bytes(np.array([prev]), tokens[:1], tables).sum())
    for start in range(1, tokens.size, STATS_CHUNK_TOKENS):
        end = min(start + STATS_CHUNK_TOKENS, tokens.size)
        total += int(target_bytes(tokens[start - 1 : end - 1], tokens[start:end], tables).sum())
    return total


def shard_stats(paths: Iterable[str | Path], sp) -> ShardSetStats:
    """Tokens, documents (BOS count) and exact scored UTF-8 bytes of shards read in order.

    bytes = sum over targets t = 1..N-1 of target_bytes(tokens[t-1], tokens[t]) over the
    concatenated stream: the very first token has no target, and a shard's first token is the
    target of the previous shard's last token. `sp` is a SentencePiece processor or a .model
    path. Every id must be < the tokenizer's vocab (ShardError naming the file otherwise). When
    the shards have raw-byte sidecars (CaseOps), the bytes are the sidecars' counts instead.
    """
    if isinstance(sp, (str, Path)):
        sp = load_sentencepiece(sp)
    vocab = int(sp.vocab_size())
    tables = byte_tables(sp, vocab)
    bos = int(sp.bos_id()) if int(sp.bos_id()) >= 0 else BOS_ID
    paths = [Path(p) for p in paths]
    sidecars = shard_sidecars(paths)
    result, prev = ShardSetStats(), None
    for i, path in enumerate(paths):
        tokens = load_shard(path)
        check_token_range(tokens, vocab, str(path))
        if sidecars is not None:
            counts = read_sidecar(sidecars[i], path).astype(np.int64)
            nbytes = int(counts.sum()) - (int(counts[0]) if prev is None and counts.size else 0)
        else:
            nbytes = stream_target_bytes(tokens, prev, tables)
        fstats = ShardFileStats(Path(path), int(tokens.size), int(np.count_nonzero(tokens == bos)), nbytes)
        result.files.append(fstats)
        result.tokens += fstats.tokens
        result.docs += fstats.docs
        result.bytes += fstats.bytes
        if tokens.size:
            prev = int(tokens[-1])
    return result


def split_shard_files(data_dir: str | Path) -> dict[str, list[Path]]:
    """The val and train shards of a folder by split, checked to be numbered 0..n-1 without gaps."""
    data_dir = Path(data_dir)
    files = shard_files(data_dir / "fineweb_*.bin")
    by_split: dict[str, list[Path]] = {s: [] for s in SHARD_SPLITS}
    for path in files:
        match = SHARD_NAME_RE.match(path.name)
        if match:
            by_split[match.group(1)].append(path)
    for split, paths in by_split.items():
        for expected, path in enumerate(paths):
            if int(SHARD_NAME_RE.match(path.name).group(2)) != expected:
                missing = data_dir / SHARD_FILENAME.format(split=split, index=expected)
                raise ShardError(f"{missing}: missing {split} shard (the folder has {path.name})")
    if not by_split["val"] and not by_split["train"]:
        raise MissingInputError(f"no fineweb_val_*.bin or fineweb_train_*.bin shards in {data_dir}")
    return by_split


def resolve_check_tokenizer(data_dir: Path, tokenizer: str | Path | None, vocab_size: int | None) -> Path:
    """The tokenizer given, else fineweb_<V>_bpe.model found next to the data."""
    if tokenizer is not None:
        return Path(tokenizer)
    found = find_tokenizer(data_dir, vocab_size) if vocab_size else None
    if found is None:
        raise TokenizerError(f"{data_dir}: no tokenizer given and no fineweb_<V>_bpe.model found next to the data")
    return found


def check_data_dir(
    data_dir: str | Path, tokenizer: str | Path | None = None, vocab_size: int | None = None, report: dict | None = None
) -> dict[str, ShardSetStats]:
    """Validate a shard folder: every header/size, no shard without tokens, the tokenizer against
    the vocab size and against the build manifest's sha256, BOS first, every id < vocab, the
    sidecars of CaseOps shards, and no train document in the manifest's val fingerprint.
    Returns the stats of each split; raises on the first problem. `report`, when given, receives
    tokenizer_sha256, val_doc_range, overlap ('none' / 'unchecked') and bytes_from."""
    data_dir = Path(data_dir)
    by_split = split_shard_files(data_dir)
    tok_path = resolve_check_tokenizer(data_dir, tokenizer, vocab_size)
    sp = load_sentencepiece(tok_path)
    if vocab_size is not None:
        check_vocab(sp, vocab_size, tok_path)
    if int(sp.bos_id()) != BOS_ID:
        raise TokenizerError(f"{tok_path}: bos_id is {int(sp.bos_id())}, the shards use BOS={BOS_ID}")
    manifest = read_manifest(data_dir)
    digest = check_tokenizer_matches(data_dir, manifest, tok_path)
    if manifest is None:
        check_folder_vocab(data_dir, tok_path, int(sp.vocab_size()))
    result = {}
    for split, paths in by_split.items():
        result[split] = shard_stats(paths, sp)
        for fstats in result[split].files:
            if fstats.tokens == 0:
                raise ShardError(f"{fstats.path}: shard holds zero tokens")
        if paths and result[split].files[0].tokens and first_shard_token(paths[0]) != BOS_ID:
            raise ShardError(f"{paths[0]}: the first {split} shard does not start with BOS={BOS_ID}")
    if manifest and manifest.get("byte_sidecars") and by_split["val"] and shard_sidecars(by_split["val"]) is None:
        raise ShardError(
            f"{sidecar_path(by_split['val'][0])}: the manifest says the shards have raw-byte "
            "sidecars but this one is missing"
        )
    overlap = "unchecked"
    if manifest and manifest.get("val_fingerprint"):
        source = data_dir / BUILD_MANIFEST_NAME
        check_no_val_docs(by_split["train"], decode_fingerprint(str(manifest["val_fingerprint"]), source), source)
        overlap = "none"
    if report is not None:
        report.update(
            tokenizer=str(tok_path),
            tokenizer_sha256=digest,
            overlap=overlap,
            val_doc_range=(manifest or {}).get("val_doc_range"),
            bytes_from="sidecars" if by_split["val"] and shard_sidecars(by_split["val"]) else "tables",
            manifest=manifest is not None,
        )
    return result


def first_shard_token(path: Path) -> int:
    """The first token id of an already validated, non-empty shard (reads two bytes)."""
    return int(np.fromfile(path, dtype="<u2", count=1, offset=HEADER_BYTES)[0])
