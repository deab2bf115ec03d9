"""`pgolf data …`: download, build, tokenizer, stats and check subcommands.

Each handler takes the parsed args, prints golf-style `key:value` lines and lets errors
(ShardError, TokenizerError, DownloadError, DocumentError, FileNotFoundError) propagate to the
main CLI, which turns them into one-line messages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pgolf.data.build import (
    BUILD_NUM_VAL_DOCS,
    BUILD_SHARD_SIZE,
    build_shards,
    check_data_dir,
    format_build_stats,
    shard_stats,
    train_tokenizer,
)
from pgolf.data.download import download_variant

DATACLI_DEFAULT_ROOT = "data"  # local root of downloads: data/datasets/…, data/tokenizers/…
DATACLI_DEFAULT_VOCAB = 1024


def cmd_data_download(args: argparse.Namespace) -> None:
    """Download the official cached shards and tokenizer of a variant."""
    summary = download_variant(
        args.variant, args.train_shards, args.out, repo_id=args.repo_id, remote_root=args.remote_root
    )
    print(f"download:ok variant:{args.variant} downloaded:{len(summary.downloaded)} skipped:{len(summary.skipped)}")
    print(f"DATA_PATH={summary.dataset_dir}")
    if summary.tokenizer_model is not None:
        print(f"TOKENIZER_PATH={summary.tokenizer_model}")


def cmd_data_build(args: argparse.Namespace) -> None:
    """Tokenize documents into official-format val/train shards."""
    stats = build_shards(
        args.docs,
        args.tokenizer,
        args.out,
        num_val_docs=args.val_docs,
        shard_size=args.shard_size,
        max_docs=args.max_docs,
        caseops=args.caseops,
    )
    for line in format_build_stats(stats):
        print(line)
    print(
        f"build:ok out:{args.out} docs:{stats['docs_total']} tokens:{stats['tokens_total']} "
        f"files:{stats['files_total']}" + (" caseops:on sidecars:on" if args.caseops else "")
    )


def cmd_data_tokenizer(args: argparse.Namespace) -> None:
    """Train a SentencePiece BPE tokenizer with the official exporter's settings."""
    model = train_tokenizer(args.docs, args.out_prefix, args.vocab_size, max_docs=args.max_docs, caseops=args.caseops)
    print(f"tokenizer:ok vocab_size:{args.vocab_size} model:{model}" + (" caseops:on" if args.caseops else ""))


def cmd_data_stats(args: argparse.Namespace) -> None:
    """Per-file lines, then one summary line `tokens:N docs:N bytes:N` for the files in order."""
    stats = shard_stats(args.files, args.tokenizer)
    for f in stats.files:
        print(f"file:{f.path} tokens:{f.tokens} docs:{f.docs} bytes:{f.bytes}")
    print(stats.line())


def cmd_data_check(args: argparse.Namespace) -> None:
    """Validate every shard of a folder, the tokenizer/vocab agreement and the id range."""
    report: dict = {}
    result = check_data_dir(args.data, args.tokenizer, args.vocab_size, report=report)
    nfiles = 0
    for split, stats in result.items():
        nfiles += len(stats.files)
        print(f"split:{split} files:{len(stats.files)} {stats.line()}")
    val_range = report["val_doc_range"]
    print(f"tokenizer:{report['tokenizer']} sha256:{report['tokenizer_sha256']}")
    print(
        f"manifest:{'yes' if report['manifest'] else 'none'} "
        f"val_docs:{f'{val_range[0]}..{val_range[1]}' if val_range else 'unknown'} "
        f"train_val_overlap:{report['overlap']} bytes_from:{report['bytes_from']} "
        f"val_bytes:{result['val'].bytes} train_bytes:{result['train'].bytes}"
    )
    print(f"check:ok data:{args.data} files:{nfiles}")


def add_download_parser(sub) -> None:
    """`data download`: official cached shards from the Hugging Face hub."""
    p = sub.add_parser("download", help="download official cached FineWeb shards + tokenizer from the HF hub")
    p.add_argument(
        "--variant",
        default="sp1024",
        help="tokenizer family, sp<VOCAB> (default sp1024), or the "
        "CaseOps export sp8192_lossless_caps_caseops_v1_reserved (val byte sidecars included)",
    )
    p.add_argument(
        "--train-shards",
        type=int,
        default=1,
        help="train shards to fetch (100M tokens each; val is always fetched; default 1)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(DATACLI_DEFAULT_ROOT),
        help="local root: <out>/datasets/fineweb10B_<variant>/ and <out>/tokenizers/ (default data)",
    )
    p.add_argument(
        "--repo-id",
        default=None,
        help="HF dataset repo (default $MATCHED_FINEWEB_REPO_ID, else "
        "kevclark/parameter-golf for sp8192, romeerp/parameter-golf-caseops-v1 for "
        "sp8192_lossless_caps_caseops_v1_reserved, else willdepueoai/parameter-golf)",
    )
    p.add_argument(
        "--remote-root",
        default=None,
        help="folder inside the repo (default $MATCHED_FINEWEB_REMOTE_ROOT_PREFIX or datasets)",
    )
    p.set_defaults(func=cmd_data_download)


def add_build_parser(sub) -> None:
    """`data build`: documents → shards."""
    p = sub.add_parser("build", help="tokenize documents (jsonl with 'text', or text files) into shards")
    p.add_argument("docs", nargs="+", type=Path, help=".jsonl files, text files (one doc each) or folders")
    p.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece .model")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (its old shard set is replaced once the new one is complete)",
    )
    p.add_argument(
        "--val-docs",
        type=int,
        default=BUILD_NUM_VAL_DOCS,
        help=f"first N documents form the val split (default {BUILD_NUM_VAL_DOCS})",
    )
    p.add_argument(
        "--shard-size", type=int, default=BUILD_SHARD_SIZE, help=f"tokens per shard (default {BUILD_SHARD_SIZE})"
    )
    p.add_argument("--max-docs", type=int, default=None, help="stop after this many documents")
    p.add_argument(
        "--caseops",
        action="store_true",
        help="CaseOps-transform the text (needs a `data tokenizer --caseops` model) and write "
        "raw-byte sidecars (.bytes) next to every shard",
    )
    p.set_defaults(func=cmd_data_build)


def add_tokenizer_parser(sub) -> None:
    """`data tokenizer`: train a SentencePiece BPE model."""
    p = sub.add_parser("tokenizer", help="train a SentencePiece BPE tokenizer (official exporter settings)")
    p.add_argument("docs", nargs="+", type=Path, help=".jsonl files, text files (one doc each) or folders")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=DATACLI_DEFAULT_VOCAB,
        help=f"vocabulary size (default {DATACLI_DEFAULT_VOCAB})",
    )
    p.add_argument(
        "--out-prefix",
        type=Path,
        required=True,
        help="writes <prefix>.model and <prefix>.vocab, e.g. data/tokenizers/fineweb_1024_bpe",
    )
    p.add_argument("--max-docs", type=int, default=None, help="train on at most this many documents")
    p.add_argument(
        "--caseops",
        action="store_true",
        help="train on CaseOps-transformed text with the case operators as user-defined symbols",
    )
    p.set_defaults(func=cmd_data_tokenizer)


def add_stats_parser(sub) -> None:
    """`data stats`: token/doc/scored-byte counts."""
    p = sub.add_parser("stats", help="tokens, documents and exact scored UTF-8 bytes of shards")
    p.add_argument("files", nargs="+", type=Path, help="shard files, read in order as one stream")
    p.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece .model of the shards")
    p.set_defaults(func=cmd_data_stats)


def add_check_parser(sub) -> None:
    """`data check`: validate a shard folder."""
    p = sub.add_parser("check", help="validate every shard, the tokenizer/vocab agreement and the id range")
    p.add_argument("--data", type=Path, required=True, help="folder of fineweb_{val,train}_*.bin shards")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="SentencePiece .model (default: fineweb_<V>_bpe.model found near --data)",
    )
    p.add_argument("--vocab-size", type=int, default=None, help="the model's VOCAB_SIZE; must equal the tokenizer's")
    p.set_defaults(func=cmd_data_check)


def register_data_commands(subparsers) -> argparse.ArgumentParser:
    """Add the `data` command group (download, build, tokenizer, stats, check) to a subparsers
    object; each leaf parser sets `func` to its handler. Returns the `data` parser."""
    data = subparsers.add_parser("data", help="get, build, inspect and check token shards")
    sub = data.add_subparsers(dest="data_command", metavar="{download,build,tokenizer,stats,check}")
    sub.required = True
    for add in (add_download_parser, add_build_parser, add_tokenizer_parser, add_stats_parser, add_check_parser):
        add(sub)
    return data
