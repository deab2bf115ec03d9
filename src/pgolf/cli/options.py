"""Run options shared by the subcommands that build a config: --preset, --config, --set and the
shortcut flags, applied in the documented order (preset -> file -> env vars -> flags)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pgolf.core.config import ConfigError, RunConfig, apply_env, load_config_file, set_option
from pgolf.core.presets import PRESETS, get_preset
from pgolf.quant.registry import codecs, schemes

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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config option, e.g. --set model.num_layers=4 (repeatable)",
    )
    for flag, dotted in FLAG_OPTIONS.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None, help=flag_help(flag, dotted))
    p.add_argument(
        "--over-budget-ok",
        action="store_true",
        help="run an evaluation predicted over eval.time_budget_s (research mode, marked in the log)",
    )


def flag_help(flag: str, dotted: str) -> str:
    """`sets quant.scheme`, with the registered choices for scheme and compressor."""
    if flag == "scheme":
        choices = "; ".join(f"{n}: {s.summary}" for n, s in sorted(schemes().items()))
        return f"sets {dotted} ({choices})"
    if flag == "compressor":
        return f"sets {dotted}: {', '.join(sorted(n for n in codecs() if n != 'raw'))} or auto (smallest per stream)"
    return f"sets {dotted}"


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
    if getattr(args, "over_budget_ok", False):
        cfg.eval.over_budget_ok = True
    return cfg


def default_preset_name() -> str:
    """The best recipe for the machine found: full frontier on GPU, its CPU proxy otherwise."""
    import torch

    if torch.cuda.is_available():
        return "frontier"
    return "frontier-cpu-proxy" if "frontier-cpu-proxy" in PRESETS else "frontier"
