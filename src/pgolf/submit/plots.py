"""`pgolf plot`: training curves of finished runs, read from their train logs, as PNGs.

Two figures, each with a panel against optimizer step and one against the training clock (the
log's train_time, which excludes validation, as the rules count it):
    train_loss.png   the `step:N/M train_loss:…` lines
    val_bpb.png      the `step:N/M val_loss:… val_bpb:…` lines (with val_loss_every=0 only the
                     end of training: one point per run), and each run's final score as an x
Runs of one recipe (same config but for seed and paths, or the same `<name>_seed<S>` name when a
log carries no config) are one colour: their mean as a line and their min..max as a shaded band,
so seed noise is visible next to the difference between recipes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.core.errors import MissingInputError, UsageError
from pgolf.submit.runlogs import SUMMARY_NAME, TrainLog, find_run_log, load_run, parse_train_log
from pgolf.submit.seeds import recipe_of

PLOT_FILES = ("train_loss.png", "val_bpb.png")
_SEED_SUFFIX = re.compile(r"_seed\d+$")
GRID_POINTS = 200


@dataclass
class CurveGroup:
    """Runs of one recipe."""

    label: str
    logs: list[TrainLog] = field(default_factory=list)


def log_for_spec(spec: str | Path, logs_dir: str | Path | None = None) -> TrainLog:
    """A run folder, its summary.json, or a train log -> the parsed train log."""
    path = Path(spec)
    if path.is_dir() or path.name == SUMMARY_NAME:
        run = load_run(path)
        found = find_run_log(run, logs_dir)
        if found is None:
            raise MissingInputError(f"{spec}: no train log logs/{run.run_id}.txt found (pass --logs DIR)")
        return parse_train_log(found)
    return parse_train_log(path)


def _run_name(log: TrainLog) -> str:
    rid = (log.config or {}).get("run_id") or log.path.stem
    return str(rid)


def group_logs(logs: list[TrainLog]) -> list[CurveGroup]:
    """Group runs by recipe, in order of first appearance; a group is named after its runs."""
    groups: dict[str, CurveGroup] = {}
    for log in logs:
        base = _SEED_SUFFIX.sub("", _run_name(log))
        key = json.dumps(recipe_of(log.config), sort_keys=True) if log.config else "name:" + base
        if key not in groups:
            groups[key] = CurveGroup(label=base)
        groups[key].logs.append(log)
    for g in groups.values():
        if len(g.logs) > 1:
            g.label = f"{g.label} ({len(g.logs)} seeds)"
    return list(groups.values())


def _xy(log: TrainLog, kind: str, axis: str) -> tuple[np.ndarray, np.ndarray]:
    points = log.train if kind == "train_loss" else log.val
    x = np.array([p.step if axis == "step" else p.train_time_ms / 1000.0 for p in points], dtype=np.float64)
    y = np.array([getattr(p, kind) for p in points], dtype=np.float64)
    ok = np.isfinite(y)
    return x[ok], y[ok]


def _draw_group(ax, group: CurveGroup, kind: str, axis: str, color) -> None:
    """One run: its line. Several: each faint, their mean bold and the min..max band shaded over
    the range every run covers (runs under a wall-clock cap stop at different steps)."""
    curves = [c for c in (_xy(log, kind, axis) for log in group.logs) if len(c[0])]
    if not curves:
        return
    if len(curves) == 1:
        x, y = curves[0]
        ax.plot(x, y, color=color, marker="o" if len(x) < 3 else None, label=group.label)
        return
    for x, y in curves:
        ax.plot(x, y, color=color, alpha=0.3, linewidth=0.8, marker="o" if len(x) < 3 else None)
    lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
    if hi <= lo:  # one point per run (validation only at the end): show their spread as an error bar
        xs = np.array([c[0][-1] for c in curves])
        ys = np.array([c[1][-1] for c in curves])
        ax.errorbar(
            [xs.mean()],
            [ys.mean()],
            yerr=[[ys.mean() - ys.min()], [ys.max() - ys.mean()]],
            color=color,
            marker="o",
            capsize=4,
            label=group.label,
        )
        return
    grid = np.linspace(lo, hi, GRID_POINTS)
    stack = np.stack([np.interp(grid, x, y) for x, y in curves])
    ax.fill_between(grid, stack.min(axis=0), stack.max(axis=0), color=color, alpha=0.25, linewidth=0)
    ax.plot(grid, stack.mean(axis=0), color=color, linewidth=1.6, label=group.label)


def _draw_finals(ax, group: CurveGroup, axis: str, color) -> None:
    """The score each run reports (final_*_exact: the reloaded artifact, sliding when evaluated) at
    its last step: with EMA or quantization it differs from the last in-training validation."""
    pts = []
    for log in group.logs:
        final = log.final()
        if final is None or not (log.train or log.val):
            continue
        end = max(log.train + log.val, key=lambda p: p.step)
        pts.append((end.step if axis == "step" else end.train_time_ms / 1000.0, final[1]))
    if pts:
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, color=color, marker="x", s=40, zorder=3)


def _figure(groups: list[CurveGroup], kind: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, axis in zip(axes, ("step", "time")):
        for i, group in enumerate(groups):
            _draw_group(ax, group, kind, axis, colors[i % len(colors)])
            if kind == "val_bpb":
                _draw_finals(ax, group, axis, colors[i % len(colors)])
        ax.set_xlabel("step" if axis == "step" else "training time (s, validation excluded)")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    note = "; x: each run's final score (reloaded artifact)" if kind == "val_bpb" else ""
    fig.suptitle(f"{kind} (line: mean over seeds, band: min..max{note})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_runs(logs: list[TrainLog], out_dir: str | Path) -> list[Path]:
    """Write train_loss.png and val_bpb.png for these runs into out_dir; returns the paths."""
    if not logs:
        raise UsageError("pgolf plot: no runs given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_logs(logs)
    return [_figure(groups, kind, out / name) for kind, name in zip(("train_loss", "val_bpb"), PLOT_FILES)]
