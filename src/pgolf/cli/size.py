"""`pgolf size`: where the bytes of an artifact go, or where they will go (`--plan`).

    pgolf size ARTIFACT [--code-bytes N | --code train_gpt.py] [--png out.png]
    pgolf size --plan [--preset P] [--set quant.mlp_bits=5 ...] [--code-bytes N] [--png out.png]

Prints a per-group table (params, width, bytes, bits/param, share), the header and code bytes,
and the total against the cap; exits 1 when the total is over the cap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pgolf.cli.options import add_config_args, build_config, default_preset_name
from pgolf.core.config import model_config_from_dict
from pgolf.core.errors import MissingInputError, UsageError
from pgolf.model.inventory import quant_groups_for, quant_layout
from pgolf.quant.container import read_artifact
from pgolf.quant.plan import SizeTable, format_table, measure_table, plot_table, predict_table
from pgolf.quant.registry import validate_config
from pgolf.submit.export import exported_code_bytes


def register_size_commands(subparsers) -> None:
    """Add the `size` subcommand to the pgolf CLI."""
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
            raise MissingInputError(f"{args.code}: script not found")
        return args.code.stat().st_size
    if args.code_bytes is not None:
        return int(args.code_bytes)
    if cfg is None:
        return 0
    return exported_code_bytes(cfg)


def planned_table(args: argparse.Namespace) -> SizeTable:
    """The planner's table for the config the arguments build."""
    cfg = build_config(args, default_preset=default_preset_name())
    validate_config(cfg)
    print(
        f"preset:{cfg.preset} scheme:{cfg.quant.scheme} clip:{cfg.quant.clip} gptq:{cfg.quant.gptq} "
        f"lqer_rank:{cfg.quant.lqer_rank}"
    )
    counted = cfg if cfg.quant.count_code_bytes else None  # CPU proxies cap model bytes only
    return predict_table(cfg.model, quant_layout(cfg.model), cfg.quant, _code_bytes(args, counted))


def measured_table(args: argparse.Namespace) -> SizeTable:
    """The exact table of an artifact; groups of its float tensors come from the model its
    header's config builds."""
    _, meta = read_artifact(args.artifact)  # the whole payload verified, not only the header
    model_cfg = model_config_from_dict(meta.get("model"), source=str(args.artifact))
    return measure_table(args.artifact, quant_groups_for(model_cfg), _code_bytes(args))


def cmd_size(args: argparse.Namespace) -> int:
    """Print the measured (artifact) or predicted (--plan) size table; 1 when over the cap."""
    if args.plan == (args.artifact is not None):
        raise UsageError("pgolf size: give an ARTIFACT or --plan (not both)")
    table = planned_table(args) if args.plan else measured_table(args)
    print(format_table(table))
    if args.png:
        print(f"chart:{plot_table(table, args.png)}")
    return 0 if table.total <= table.cap else 1
