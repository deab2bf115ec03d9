"""`pgolf seeds | compare | submit | plot`: from runs to a record (the work is in pgolf.submit).

pgolf seeds --preset P --seeds 42,0,1234 [--name N] [--set k=v ...] [train flags]
pgolf compare A B            each side: run folders, summary.json, train logs, record folders or
                             leaderboard:NAME, comma-separated, globs allowed ('runs/x_seed*')
pgolf submit RUNS... --name N --author A --github-id G [--track 10min_16mb|non_record|unlimited]
             [--out records] [--baseline leaderboard:top | SIDE | none]
pgolf plot RUNS... --out DIR
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pgolf.cli.options import FLAG_OPTIONS, add_config_args, build_config, default_preset_name
from pgolf.core.errors import UsageError
from pgolf.quant.registry import validate_config

PER_SEED_FLAGS = ("seed", "run_id")  # set by `pgolf seeds` for each seed


def register_record_commands(subparsers) -> None:
    """Add seeds, compare, submit and plot to the pgolf CLI."""
    p = subparsers.add_parser("seeds", help="train one recipe over several seeds (resumable), then the seed table")
    add_config_args(p)
    p.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 42,0,1234")
    p.add_argument("--name", default=None, help="run name prefix: runs are <name>_seed<S> (default: the preset)")
    p.add_argument("--dry-run", action="store_true", help="print each seed's state and command; train nothing")
    p.set_defaults(func=cmd_seeds)

    p = subparsers.add_parser(
        "compare", help="one-sided Welch t-test: is A lower than B (val_loss, val_bpb), by both rules"
    )
    p.add_argument("a", help="side A (the candidate): comma-separated results or globs")
    p.add_argument("b", help="side B (the baseline), e.g. leaderboard:top, leaderboard:1855, leaderboard:naive")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("submit", help="assemble a records/<track>/<date>_<name>/ folder from finished seeds")
    p.add_argument("runs", nargs="+", help="run folders (or their summary.json); globs allowed")
    p.add_argument("--name", required=True, help="submission name (the folder is <date>_<name>)")
    p.add_argument("--author", default=os.environ.get("PGOLF_AUTHOR") or "unknown", help="default: $PGOLF_AUTHOR")
    p.add_argument(
        "--github-id", default=os.environ.get("PGOLF_GITHUB_ID") or "unknown", help="default: $PGOLF_GITHUB_ID"
    )
    p.add_argument(
        "--track",
        choices=["10min_16mb", "non_record", "unlimited"],
        default=None,
        help="default: 10min_16mb only for official-cap runs capped at <= 600 s, else non_record "
        "(unlimited when training had no wall-clock cap)",
    )
    p.add_argument("--out", type=Path, default=Path("records"), help="records root (default ./records)")
    p.add_argument(
        "--baseline",
        action="append",
        default=None,
        metavar="SIDE",
        help="what to test against (repeatable; like a compare side); default leaderboard:top; 'none' for no test",
    )
    p.add_argument("--logs", type=Path, default=None, help="folder of the train logs (default: logs/ next to runs/)")
    p.add_argument("--blurb", default="", help="one or two sentences for submission.json")
    p.add_argument("--date", default="", help="YYYY-MM-DD of the folder name (default today)")
    p.add_argument("--force", action="store_true", help="replace an existing folder of the same name")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("plot", help="train loss and val_bpb against step and wall-clock, seeds as bands (PNG)")
    p.add_argument("runs", nargs="+", help="run folders, summary.json files or train logs; globs allowed")
    p.add_argument("--out", type=Path, default=Path("plots"), help="output folder (default ./plots)")
    p.add_argument("--logs", type=Path, default=None, help="folder of the train logs (default: logs/ next to runs/)")
    p.set_defaults(func=cmd_plot)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected distinct integers")
    return seeds


def train_flags(args: argparse.Namespace, preset: str) -> list[str]:
    """The `pgolf train` flags that rebuild this config in each seed's process."""
    out = ["--preset", preset]
    if args.config:
        out += ["--config", str(args.config)]
    for item in args.set:
        out += ["--set", item]
    for flag in FLAG_OPTIONS:
        value = getattr(args, flag, None)
        if value is not None and flag not in PER_SEED_FLAGS:
            out += ["--" + flag.replace("_", "-"), str(value)]
    return out


def cmd_seeds(args: argparse.Namespace) -> int:
    from pgolf.submit.seeds import SeedPlan, run_seeds, seed_state, seeds_table, train_command
    from pgolf.submit.submitfolder import safe_name

    if args.seed is not None or args.run_id is not None:
        raise UsageError("pgolf seeds: give seeds with --seeds and the prefix with --name, not --seed/--run-id")
    preset = args.preset or default_preset_name()
    args.preset = preset
    cfg = build_config(args, default_preset=preset)
    validate_config(cfg)
    plan = SeedPlan(
        name=safe_name(args.name or preset),
        seeds=parse_seeds(args.seeds),
        config=cfg,
        train_args=train_flags(args, preset),
    )
    if args.dry_run:
        for seed in plan.seeds:
            st = seed_state(plan, seed)
            print(f"seed:{seed} run_id:{st.run_id} status:{st.state} command:{' '.join(train_command(plan, st))}")
        return 0
    results = run_seeds(plan)
    print(seeds_table(results))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pgolf.submit.compare import compare_samples, format_comparison, load_side

    print(format_comparison(compare_samples(load_side(args.a), load_side(args.b))))
    return 0


def _expand(specs: list[str]) -> list[str]:
    from pgolf.submit.compare import split_specs

    return [s for text in specs for s in split_specs(text)]


def cmd_submit(args: argparse.Namespace) -> int:
    from pgolf.submit.runlogs import load_run
    from pgolf.submit.submitfolder import SubmitOptions, assemble, infer_track, run_config

    runs = _expand(args.runs)
    baseline = args.baseline if args.baseline is not None else ["leaderboard:top"]
    baseline = [] if [b.lower() for b in baseline] == ["none"] else baseline
    track = args.track or infer_track(run_config(load_run(runs[0])))
    opts = SubmitOptions(
        name=args.name,
        author=args.author,
        github_id=args.github_id,
        track=track,
        out_root=args.out,
        baseline=baseline,
        logs_dir=args.logs,
        blurb=args.blurb,
        date=args.date,
        force=args.force,
        plots=not args.no_plots,
    )
    folder = assemble(runs, opts)
    print(f"record:{folder} track:{track} files:{','.join(sorted(p.name for p in folder.iterdir()))}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pgolf.submit.plots import log_for_spec, plot_runs

    for path in plot_runs([log_for_spec(s, args.logs) for s in _expand(args.runs)], args.out):
        print(f"plot:{path}")
    return 0
