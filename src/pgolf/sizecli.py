"""`pgolf size`: where the bytes of an artifact go, or where they will go (`--plan`).

    pgolf size ARTIFACT [--code-bytes N | --code train_gpt.py] [--png out.png]
    pgolf size --plan [--preset P] [--set quant.mlp_bits=5 ...] [--code-bytes N] [--png out.png]

Prints a per-group table (params, width, bytes, bits/param, share), the header and code bytes,
and the total against the cap; exits 1 when the total is over the cap.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register_size_commands(subparsers) -> None:
    """Add the `size` subcommand to the pgolf CLI."""
    from pgolf.cli import add_config_args

    p = subparsers.add_parser("size", help="per-group size table of an artifact, or a prediction (--plan)")
    p.add_argument("artifact", nargs="?", type=Path, help="a .pglf artifact")
    p.add_argument("--plan", action="store_true", help="predict the artifact of a config before training")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--code-bytes", type=int, default=None, help="bytes of the submitted script")
    group.add_argument("--code", type=Path, default=None, help="the submitted script (its literal bytes count)")
    p.add_argument("--png", type=Path, default=None, help="also write a bar chart here")
    add_config_args(p)
    p.set_defaults(func=cmd_size)


def _code_bytes(args: argparse.Namespace, cfg=None) -> int:
    if args.code is not None:
        if not args.code.is_file():
            raise FileNotFoundError(f"{args.code}: script not found")
        return args.code.stat().st_size
    if args.code_bytes is not None:
        return int(args.code_bytes)
    if cfg is None:
        return 0
    from pgolf.export import exported_code_bytes

    return exported_code_bytes(cfg)


def cmd_size(args: argparse.Namespace) -> int:
    """Print the measured (artifact) or predicted (--plan) size table; 1 when over the cap."""
    from pgolf.sizeplan import format_table, measure_table, plot_table, predict_table

    if args.plan == (args.artifact is not None):
        raise ValueError("pgolf size: give an ARTIFACT or --plan (not both)")
    if args.plan:
        from pgolf.cli import build_config, default_preset_name
        from pgolf.config import validate

        cfg = build_config(args, default_preset=default_preset_name())
        validate(cfg)
        table = predict_table(cfg.model, cfg.quant, _code_bytes(args, cfg))
        print(f"preset:{cfg.preset} scheme:{cfg.quant.scheme} clip:{cfg.quant.clip} gptq:{cfg.quant.gptq} "
              f"lqer_rank:{cfg.quant.lqer_rank}")
    else:
        table = measure_table(args.artifact, _code_bytes(args))
    print(format_table(table))
    if args.png:
        print(f"chart:{plot_table(table, args.png)}")
    return 0 if table.total <= table.cap else 1
