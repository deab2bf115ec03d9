"""Issue 12's size report in one invocation: exported script bytes per preset, coder bytes per stream group (brotli-11 = 1.000), cap fitting on deliberately
oversize proxy runs (bytes removed, quantization gap added) and planner error on every artifact.

    python benchmarks/size_report.py --coder-artifact RUN/final_model.mixed.pglf \
        --capfit-base RUN --capfit FIT_RUN... --planner RUN... [--out benchmarks/results/size_report.md]

The capfit runs are trainings identical to --capfit-base (fixed steps, one thread: the same
weights) except for a `quant.target_bytes` below the base's artifact; the quantization gap added is
the difference of their roundtrip scores on the same validation tokens. The other sections reuse
benchmarks/bench_coders.py and benchmarks/planner_error.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgolf.core.presets import get_preset  # noqa: E402
from pgolf.submit.export import (  # noqa: E402
    bundle_sources,
    compact_bytes,
    compact_source,
    readable_bundle,
    submission_config,
)

PRESETS = ("frontier", "frontier-cpu-proxy", "naive-baseline")


def export_section() -> list[str]:
    """Every preset's exported script: modules kept, readable and compact (counted) bytes."""
    lines = [
        "## Exported train_gpt.py bytes (literal file size)",
        "",
        "| preset | modules | readable bytes (not counted) | compact bytes (counted) | export s |",
        "|---|---|---|---|---|",
    ]
    for name in PRESETS:
        cfg = submission_config(get_preset(name))
        t0 = time.perf_counter()
        texts, _ = bundle_sources(cfg)
        readable = readable_bundle(cfg)
        shipped = len(compact_bytes(compact_source(cfg)))
        secs = time.perf_counter() - t0
        lines.append(f"| {name} | {len(texts)} | {len(readable.encode()):,} | **{shipped:,}** | {secs:.1f} |")
    return lines


def coder_section(artifact: Path) -> list[str]:
    from bench_coders import code_groups, group_table, measure_groups

    return [
        "## Coders per stream group",
        "",
        group_table(f"{artifact}; bytes relative to brotli-11 = 1.000:", measure_groups(code_groups(artifact))),
    ]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["summary"]


def _refusal(run: Path) -> str:
    """The one-line error a refused run printed (its stdout saved as <runs>/../<run id>.out), if any."""
    out = run.parent.parent / f"{run.name}.out"
    lines = out.read_text().splitlines() if out.is_file() else []
    return next((ln.strip() for ln in lines if "error" in ln.lower()), "no summary.json")


def capfit_section(base: Path, fits: list[Path]) -> list[str]:
    b = _summary(base)
    lines = [
        "## Cap fitting on deliberately oversize proxy runs",
        "",
        "| run | target bytes | artifact before -> after | pruned +-1 codes | LQER dropped | packs | roundtrip val_bpb | gap added | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines.append(
        f"| {base.name} (no target) | - | {b['artifact_bytes']:,} | - | - | 1 | {b['roundtrip']['val_bpb']:.5f} | - | natural size |"
    )
    for run in fits:
        s = _summary(run) if (run / "summary.json").is_file() else None
        if s is None:
            lines.append(f"| {run.name} | - | - | - | - | - | - | - | refused: {_refusal(run)[:200]} |")
            continue
        fit = s.get("cap_fit") or {}
        frac = fit.get("pruned", 0) / max(fit.get("quantized_weights", 0), 1)
        gap = s["roundtrip"]["val_bpb"] - b["roundtrip"]["val_bpb"]
        lines.append(
            f"| {run.name} | {fit.get('target', 0):,} | {fit.get('bytes_before', 0):,} -> {s['artifact_bytes']:,} | "
            f"{fit.get('pruned', 0):,} ({frac:.2%}) | {len(fit.get('lqer_dropped', []))} | "
            f"{len(fit.get('trials', []))} | {s['roundtrip']['val_bpb']:.5f} | {gap:+.5f} | fits |"
        )
    return lines


def planner_section(runs: list[Path]) -> list[str]:
    from planner_error import planner_table

    return ["## Planner error", "", *planner_table(runs)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coder-artifact", type=Path)
    p.add_argument("--capfit-base", type=Path)
    p.add_argument("--capfit", type=Path, nargs="*", default=[])
    p.add_argument("--planner", type=Path, nargs="*", default=[])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    parts = [export_section()]
    if args.coder_artifact:
        parts.append(coder_section(args.coder_artifact))
    if args.capfit_base:
        parts.append(capfit_section(args.capfit_base, args.capfit))
    if args.planner:
        parts.append(planner_section(args.planner))
    text = "\n\n".join("\n".join(x) for x in parts)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
