"""`pgolf` command line: thin wrappers over the library (one small function per subcommand).

Errors a user can cause (bad data, tokenizer, artifact, config, over-cap) print one line
`pgolf: error: …` and exit 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgolf.config import ConfigError, RunConfig, apply_env, load_config_file, set_option
from pgolf.presets import PRESETS, get_preset

# CLI flag -> dotted config option (the most used knobs; any other via --set).
FLAG_OPTIONS = {
    "data": "data.data_path",
    "tokenizer": "data.tokenizer_path",
    "run_id": "run_id",
    "seed": "seed",
    "device": "device",
    "iterations": "train.iterations",
    "max_wallclock_seconds": "train.max_wallclock_seconds",
    "val_loss_every": "train.val_loss_every",
    "stride": "eval.stride",
    "window": "eval.eval_seq_len",
    "batch_seqs": "eval.batch_seqs",
    "val_max_tokens": "eval.val_max_tokens",
    "scheme": "quant.scheme",
    "compressor": "quant.compressor",
    "out_dir": "out_dir",
}


def add_config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    """Preset, config file, --set and the common shortcut flags."""
    p.add_argument("--preset", default=default_preset, help=f"named preset: {', '.join(sorted(PRESETS))}")
    p.add_argument("--config", type=Path, help="TOML/JSON config file applied over the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config option, e.g. --set model.num_layers=4 (repeatable)")
    for flag, dotted in FLAG_OPTIONS.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None, help=f"sets {dotted}")


def build_config(args: argparse.Namespace, default_preset: str) -> RunConfig:
    """preset -> config file -> official env vars -> CLI flags."""
    cfg = get_preset(args.preset or default_preset)
    if args.config:
        load_config_file(cfg, args.config)
    apply_env(cfg)
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        set_option(cfg, key.strip(), value.strip(), source=f"--set {key.strip()}")
    for flag, dotted in FLAG_OPTIONS.items():
        value = getattr(args, flag, None)
        if value is not None:
            set_option(cfg, dotted, str(value), source="--" + flag.replace("_", "-"))
    return cfg


def cmd_train(args: argparse.Namespace, record: bool = False) -> int:
    """Train, pack, roundtrip-evaluate; with record=True also write the record folder."""
    from pgolf.config import validate
    from pgolf.sizing import describe

    cfg = build_config(args, default_preset=default_preset_name())
    validate(cfg)
    if args.dry_run:
        print(describe(cfg))
        return 0
    from pgolf.distributed import shutdown
    from pgolf.export import exported_code_bytes
    from pgolf.finalize import finalize
    from pgolf.record import final_scores, write_record
    from pgolf.trainer import run_training

    session, state = run_training(cfg, resume_from=args.resume)
    summary = finalize(session, state, code_bytes=exported_code_bytes(cfg))
    if session.rt.master:
        print(f"summary:{session.run_dir / 'summary.json'} final_val_bpb:{final_scores(summary)['val_bpb']:.8f}")
        if record:
            print(f"record:{write_record(cfg, summary, session.log.path)}")
    rt = session.rt
    del session, state
    shutdown(rt)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return cmd_train(args, record=True)


def cmd_export(args: argparse.Namespace) -> int:
    from pgolf.export import export_script, submission_config

    cfg = build_config(args, default_preset=default_preset_name())
    nbytes = export_script(submission_config(cfg), args.out, readable=args.readable)
    print(f"export:{args.out} bytes:{nbytes} preset:{cfg.preset} form:{'readable' if args.readable else 'compact'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.evaluate import run_eval

    cfg = build_config(args, default_preset=default_preset_name())
    run_eval(cfg, Path(args.weights), kind=args.kind)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    for name in sorted(PRESETS):
        if args.name and name != args.name:
            continue
        print(name if not args.name else json.dumps(asdict(get_preset(name)), indent=2))
    return 0


def default_preset_name() -> str:
    """The best recipe for the machine found: full frontier on GPU, its CPU proxy otherwise."""
    import torch

    if torch.cuda.is_available():
        return "frontier"
    return "frontier-cpu-proxy" if "frontier-cpu-proxy" in PRESETS else "frontier"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgolf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train, pack, roundtrip-evaluate (add --dry-run for the size/FLOPs plan)")
    add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="print params, predicted size and FLOPs; no training")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint.safetensors")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("run", help="the main job: train on the machine's default recipe, pack, roundtrip-evaluate, write a record folder")
    add_config_args(p)
    p.add_argument("--resume", type=Path, help="continue from a checkpoint.safetensors")
    p.set_defaults(func=cmd_run, dry_run=False)
    p = sub.add_parser("export", help="write the self-contained train_gpt.py for a config")
    add_config_args(p)
    p.add_argument("--out", type=Path, default=Path("train_gpt.py"))
    p.add_argument("--readable", action="store_true", help="the plain bundle instead of the compact exec form")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("eval", help="score a pgolf artifact, a pgolf checkpoint or an official final_model.pt/.int8.ptz")
    add_config_args(p)
    p.add_argument("weights", help="artifact (.pglf), checkpoint (.safetensors) or official .pt/.ptz")
    p.add_argument("--kind", choices=["auto", "artifact", "safetensors", "official"], default="auto")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("presets", help="list presets, or print one as JSON")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)
    from pgolf.bench import register_bench_commands
    from pgolf.datacli import register_data_commands
    from pgolf.sizecli import register_size_commands

    register_data_commands(sub)
    register_size_commands(sub)
    register_bench_commands(sub)
    return parser


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a refused result, not a bug: reported in one line.
    (Our own errors derive from ValueError / FileNotFoundError, or are listed here.)"""
    from pgolf.bench import BenchError
    from pgolf.download import DownloadError
    from pgolf.trainer import NonFiniteLossError

    return (ValueError, FileNotFoundError, DownloadError, NonFiniteLossError, BenchError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
    except user_error_types() as exc:
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
