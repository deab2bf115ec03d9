"""`pgolf` command line: thin wrappers over the library (one small function per subcommand).

Errors a user can cause (bad data, tokenizer, artifact, config, over-cap) are pgolf's own
exception types (pgolf.core.errors.PgolfError): they print one line `pgolf: error: …` and exit 2.
Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgolf.cli.bench import register_bench_commands
from pgolf.cli.data import register_data_commands
from pgolf.cli.options import add_config_args, build_config, default_preset_name
from pgolf.cli.record import register_record_commands
from pgolf.cli.size import register_size_commands
from pgolf.core.errors import PgolfError
from pgolf.core.presets import PRESETS, get_preset
from pgolf.quant.registry import validate_config


def cmd_train(args: argparse.Namespace, record: bool = False) -> int:
    """Train, pack, roundtrip-evaluate; with record=True also write the record folder."""
    from pgolf.submit.dryrun import describe

    cfg = build_config(args, default_preset=default_preset_name())
    validate_config(cfg)
    if args.dry_run:
        print(describe(cfg))
        return 0
    from pgolf.core.runtime import shutdown
    from pgolf.data.source import default_layout_download
    from pgolf.finish.finalize import finalize
    from pgolf.submit.export import exported_code_bytes
    from pgolf.submit.record import final_scores, write_record
    from pgolf.train.trainer import run_training

    session, state = run_training(
        cfg, resume_from=args.resume, overwrite=args.overwrite, fetch_data=default_layout_download
    )
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
    from pgolf.submit.export import export_script, submission_config

    cfg = build_config(args, default_preset=default_preset_name())
    nbytes = export_script(submission_config(cfg), args.out, readable=args.readable)
    print(f"export:{args.out} bytes:{nbytes} preset:{cfg.preset} form:{'readable' if args.readable else 'compact'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.eval.evaluate import run_eval

    cfg = build_config(args, default_preset=default_preset_name())
    run_eval(cfg, Path(args.weights), kind=args.kind)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The four evaluation conditions and validation isolation; exit 1 when any fails."""
    from pgolf.submit.check import run_all

    cfg = build_config(args, default_preset=default_preset_name())
    validate_config(cfg)
    print(f"check:preset {cfg.preset} (small model, the preset's evaluation method; see pgolf.submit.check)")
    results = run_all(cfg, isolation=not args.skip_training)
    failed = [r.name for r in results if not r.passed]
    print(f"check:{'FAIL ' + ', '.join(failed) if failed else 'PASS all ' + str(len(results))}")
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Go / no-go before a paid run: one table, `doctor: GO` or `doctor: NO-GO (n failures)`;
    exit 1 on NO-GO. Under torchrun every rank joins the all-reduce probe; rank 0 runs the rest."""
    import torch

    from pgolf.bench.doctor import FAIL, render, run_checks
    from pgolf.core.runtime import barrier, init_runtime, shutdown

    cfg = build_config(args, default_preset=default_preset_name())
    validate_config(cfg)
    rt = init_runtime(cfg.device)
    if rt.device.type == "cpu":  # the trainer's thread policy: oversubscribed cores ran ~15x slower
        from pgolf.train.trainer import cpu_threads

        n, note = cpu_threads(cfg.threads)
        torch.set_num_threads(n)
        print(f"doctor: {note}")
    try:
        if rt.master:
            rows = run_checks(cfg, rt)
            print(f"doctor: preset {cfg.preset}, {rt.world_size} process(es) on {rt.device.type}")
            print(render(rows))
            failed = any(r.status == FAIL for r in rows)
        else:
            from pgolf.bench.doctor import machine_rows

            machine_rows(rt)  # the all-reduce probe is a collective
            failed = False
        barrier(rt)
    finally:
        shutdown(rt)
    return 1 if failed else 0


def cmd_presets(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    for name in sorted(PRESETS):
        if args.name and name != args.name:
            continue
        print(name if not args.name else json.dumps(asdict(get_preset(name)), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgolf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train, pack, roundtrip-evaluate (add --dry-run for the size/FLOPs plan)")
    add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="print params, predicted size and FLOPs; no training")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run that has the same RUN_ID")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "run",
        help="the main job: train on the machine's default recipe, pack, roundtrip-evaluate, write a record folder",
    )
    add_config_args(p)
    p.add_argument("--resume", type=Path, help="continue from a checkpoint.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run that has the same RUN_ID")
    p.set_defaults(func=cmd_run, dry_run=False)
    p = sub.add_parser("export", help="write the self-contained train_gpt.py for a config")
    add_config_args(p)
    p.add_argument("--out", type=Path, default=Path("train_gpt.py"))
    p.add_argument(
        "--readable",
        action="store_true",
        help="the bundle as plain Python, comments kept (what the compact form minifies and compresses)",
    )
    p.set_defaults(func=cmd_export)
    p = sub.add_parser(
        "eval", help="score a pgolf artifact, a pgolf checkpoint or an official final_model.pt/.int8.ptz"
    )
    add_config_args(p)
    p.add_argument("weights", help="artifact (.pglf), checkpoint (.safetensors) or official .pt/.ptz")
    p.add_argument("--kind", choices=["auto", "artifact", "safetensors", "official"], default="auto")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser(
        "check",
        help="prove the evaluation legal: causality, normalisation, score before update, single pass, no validation data in training",
    )
    add_config_args(p)
    p.add_argument(
        "--skip-training", action="store_true", help="only the four evaluation conditions (no short training run)"
    )
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("doctor", help="go / no-go before a paid run: machine, kernels, time, size, data, script")
    add_config_args(p)
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("presets", help="list presets, or print one as JSON")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)
    register_data_commands(sub)
    register_size_commands(sub)
    register_bench_commands(sub)
    register_record_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
    except PgolfError as exc:  # bad input or a refused result; anything else is a bug: traceback
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
