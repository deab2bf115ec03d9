"""`pgolf bench proxy`: compare whole recipes fairly on a small CPU machine.

Each recipe trains for the same wall-clock budget on the local FineWeb sample, packs under its own
scheme, and is scored on the val sample with its own evaluation; all in fresh subprocesses with
a fixed thread count. Repeats run interleaved (the order alternates) so machine drift hits every
recipe alike; each metric is the median over repeats, with the spread (max - min). The matmul
peak is measured in the same run, so MFU is a ratio of two measurements on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.bench.perf import measure_matmul_peak
from pgolf.core.config import RunConfig, apply_mapping
from pgolf.core.constants import SIZE_CAP_BYTES
from pgolf.core.errors import PgolfError
from pgolf.core.presets import get_preset
from pgolf.model.inventory import flops_per_token

# The official naive baseline's int8+zlib model bytes: the cap is scaled by 16e6 / this.
OFFICIAL_NAIVE_MODEL_BYTES = 15_815_847
OFFICIAL_CAP = SIZE_CAP_BYTES
DEFAULT_RECIPES = ("naive-baseline-cpu-proxy", "frontier-cpu-proxy")


class BenchError(PgolfError, RuntimeError):
    """A benchmark run that failed; its log file says why."""


@dataclass
class RunResult:
    """One training run of one recipe, read from its summary.json."""

    recipe: str
    repeat: int
    seed: int
    params: int
    artifact_bytes: int
    steps: int
    tokens_seen: int
    train_seconds: float
    pre_quant_bpb: float
    roundtrip_bpb: float
    final_bpb: float
    eval_seconds: float
    wall_seconds: float
    mfu: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / max(self.train_seconds, 1e-9)


def run_order(recipes: list[str], repeats: int) -> list[tuple[int, str]]:
    """Interleaved schedule: every repeat runs every recipe; odd repeats reverse the order."""
    out = []
    for r in range(repeats):
        seq = recipes if r % 2 == 0 else list(reversed(recipes))
        out.extend((r, name) for name in seq)
    return out


def parse_recipe(spec: str) -> tuple[str, list[str]]:
    """'preset@key=value@key=value' -> (preset, ['key=value', ...]): a preset with overrides."""
    preset, *sets = spec.split("@")
    return preset, [s for s in sets if s]


def run_label(spec: str, limit: int = 120) -> str:
    """A file-system-safe run id for a recipe spec; long specs keep a prefix plus a hash of the
    whole spec, so two recipes that share a long prefix never share a run folder."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
    if len(safe) <= limit and safe == spec:
        return safe
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return f"{safe[: limit - 11]}-{digest}"


def train_command(
    recipe: str,
    budget: float,
    seed: int,
    run_id: str,
    out_dir: Path,
    data: str | None,
    tokenizer: str | None,
    threads: int,
    extra: list[str],
) -> list[str]:
    recipe, own = parse_recipe(recipe)
    extra = own + list(extra)
    cmd = [
        sys.executable,
        "-m",
        "pgolf",
        "train",
        "--preset",
        recipe,
        "--max-wallclock-seconds",
        str(budget),
        "--seed",
        str(seed),
        "--run-id",
        run_id,
        "--out-dir",
        str(out_dir),
        "--device",
        "cpu",
        "--set",
        f"threads={threads}",
    ]
    if data:
        cmd += ["--data", data]
    if tokenizer:
        cmd += ["--tokenizer", tokenizer]
    for item in extra:
        cmd += ["--set", item]
    return cmd


def read_result(recipe: str, repeat: int, seed: int, summary_path: Path, wall: float, peak: float) -> RunResult:
    data = json.loads(summary_path.read_text())
    s, cfg = data["summary"], data["config"]
    final = s.get("documents") or s["sliding"] or s["roundtrip"]
    res = RunResult(
        recipe,
        repeat,
        seed,
        s["params"],
        s["artifact_bytes"],
        s["steps"],
        s["tokens_seen"],
        s["train_time_ms"] / 1000.0,
        s["pre_quant"].get("val_bpb", float("nan")),
        s["roundtrip"]["val_bpb"],
        final["val_bpb"],
        s["eval_seconds"]["documents" if s.get("documents") else "sliding" if s["sliding"] else "roundtrip"],
        wall,
    )
    res.mfu = res.tokens_per_s * mean_train_flops(cfg) / peak if peak > 0 else 0.0
    return res


def mean_train_flops(cfg_dict: dict) -> float:
    """Training FLOPs per token averaged over the run (recurrence is on for 1 - start_frac of it)."""
    cfg = RunConfig()
    apply_mapping(cfg, cfg_dict, "summary config")
    m, seq = cfg.model, cfg.train.train_seq_len
    off = flops_per_token(m, seq, recur_active=False).per_token_train
    if not m.recur_layers or m.recur_loops <= 1:
        return off
    on = flops_per_token(m, seq, recur_active=True).per_token_train
    return m.recur_start_frac * off + (1 - m.recur_start_frac) * on


def run_one(recipe: str, repeat: int, seed: int, args, out_dir: Path, peak: float, log) -> RunResult:
    run_id = f"{run_label(recipe)}-r{repeat}"
    cmd = train_command(
        recipe, args.budget, seed, run_id, out_dir / "runs", args.data, args.tokenizer, args.threads, args.set
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(out_dir / f"{run_id}.log", "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=out_dir)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(
            f"{recipe} (repeat {repeat}) failed with exit code {proc.returncode}; see {out_dir / (run_id + '.log')}"
        )
    res = read_result(recipe, repeat, seed, out_dir / "runs" / run_id / "summary.json", wall, peak)
    log(f"bench:{recipe} repeat:{repeat} steps:{res.steps} final_val_bpb:{res.final_bpb:.4f} wall:{wall:.0f}s")
    return res


def median_spread(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), (max(values) - min(values)) if len(values) > 1 else 0.0


def aggregate(results: list[RunResult], baseline: str) -> list[dict]:
    """One row per recipe: medians, spreads, ratio of final bpb to the baseline recipe's."""
    rows = []
    by = {}
    for r in results:
        by.setdefault(r.recipe, []).append(r)
    base = median_spread([r.final_bpb for r in by[baseline]])[0] if baseline in by else float("nan")
    base_bytes = median_spread([r.artifact_bytes for r in by[baseline]])[0] if baseline in by else float("nan")
    cap = base_bytes * OFFICIAL_CAP / OFFICIAL_NAIVE_MODEL_BYTES
    for name, rs in by.items():
        row = {"recipe": name, "repeats": len(rs)}
        for key in (
            "params",
            "artifact_bytes",
            "steps",
            "tokens_seen",
            "pre_quant_bpb",
            "roundtrip_bpb",
            "final_bpb",
            "eval_seconds",
            "tokens_per_s",
            "mfu",
        ):
            row[key], row[key + "_spread"] = median_spread([float(getattr(r, key)) for r in rs])
        row["ratio_to_baseline"] = row["final_bpb"] / base
        row["scaled_cap_bytes"] = cap
        row["fits_scaled_cap"] = row["artifact_bytes"] <= cap
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| recipe | params | artifact bytes | bits/param | fits cap | steps | tokens seen | pre-quant bpb "
        "| roundtrip bpb | final bpb (± spread) | eval s | ratio | tok/s | MFU |\n|" + "---|" * 14
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['params']:,.0f} | {r['artifact_bytes']:,.0f} | {8 * r['artifact_bytes'] / r['params']:.2f} "
            f"| {'yes' if r['fits_scaled_cap'] else 'NO'} "
            f"| {r['steps']:.0f} | {r['tokens_seen']:,.0f} | {r['pre_quant_bpb']:.4f} | {r['roundtrip_bpb']:.4f} "
            f"| {r['final_bpb']:.4f} ± {r['final_bpb_spread']:.4f} | {r['eval_seconds']:.0f} | {r['ratio_to_baseline']:.4f} "
            f"| {r['tokens_per_s']:,.0f} | {r['mfu']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    names = [r["recipe"] for r in rows]
    ax.barh(names, [r["final_bpb"] for r in rows], xerr=[r["final_bpb_spread"] / 2 for r in rows], color="#4c72b0")
    ax.set_xlabel("final val_bpb (lower is better)")
    lo = min(r["final_bpb"] for r in rows)
    ax.set_xlim(lo * 0.9, max(r["final_bpb"] for r in rows) * 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_proxy(args, log=print) -> list[dict]:
    """Run the proxy track; writes results.json, table.md and final_bpb.png into args.out."""
    import torch

    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    for name in args.recipes:
        get_preset(parse_recipe(name)[0])  # unknown names fail before any training
    peak_before = measure_matmul_peak()
    log(
        f"bench:start recipes:{','.join(args.recipes)} budget:{args.budget}s repeats:{args.repeats} "
        f"threads:{args.threads} matmul_peak:{peak_before / 1e9:.1f}GFLOP/s"
    )
    results = [
        run_one(name, r, args.seed + r, args, out_dir, peak_before, log)
        for r, name in run_order(args.recipes, args.repeats)
    ]
    peak_after = measure_matmul_peak()
    rows = aggregate(results, args.recipes[0])
    table = markdown_table(rows)
    meta = {
        "budget_s": args.budget,
        "repeats": args.repeats,
        "threads": args.threads,
        "baseline": args.recipes[0],
        "matmul_peak_flops": [peak_before, peak_after],
        "extra_set": args.set,
    }
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "runs": [vars(r) for r in results]}, indent=2)
    )
    (out_dir / "table.md").write_text(table + "\n")
    plot(rows, out_dir / "final_bpb.png")
    log(table)
    log(f"bench:done matmul_peak_before:{peak_before / 1e9:.1f} after:{peak_after / 1e9:.1f} GFLOP/s out:{out_dir}")
    return rows
