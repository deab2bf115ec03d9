"""`pgolf bench …`: the benchmark subcommands (the work is in pgolf.bench)."""

from __future__ import annotations

from pgolf.bench.proxy import DEFAULT_RECIPES, bench_proxy


def register_bench_commands(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks")
    sub = p.add_subparsers(dest="bench_command", required=True)
    q = sub.add_parser("proxy", help="CPU proxy track: recipes at equal wall-clock, median of interleaved repeats")
    q.add_argument(
        "--recipes",
        type=lambda s: s.split(","),
        default=list(DEFAULT_RECIPES),
        help="comma-separated presets, each optionally with overrides: preset@key=value@...; "
        "the first is the baseline of the ratio",
    )
    q.add_argument("--budget", type=float, default=600.0, help="training seconds per run (default 600)")
    q.add_argument("--repeats", type=int, default=1)
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--seed", type=int, default=1337)
    q.add_argument("--data", default=None, help="shard folder (default: each preset's)")
    q.add_argument("--tokenizer", default=None)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applied to every recipe")
    q.add_argument("--out", default="benchmarks/results/proxy")
    q.set_defaults(func=lambda a: bench_proxy(a) and 0)
