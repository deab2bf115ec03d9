"""`pgolf seeds`: the same recipe over several seeds, one ordinary training run each, resumable.

Records need several seeds (the README asks for p < 0.01, usually 3 runs), and a several-run job
on a shared machine gets killed. So each seed is a plain `python -m pgolf train` subprocess (its
memory is returned when it ends) with its own RUN_ID `<name>_seed<S>`, run folder
runs/<RUN_ID>/ and log logs/<RUN_ID>.txt, and the job can be rerun with the same command:
- a seed whose runs/<RUN_ID>/summary.json exists is finished and not rerun;
- a seed with runs/<RUN_ID>/checkpoint.safetensors resumes from it (`--resume`; checkpoints are
  written every N steps with `--set train.checkpoint_every=N`);
- a seed with neither starts over (`--overwrite`, when a killed attempt left final_model.* files);
  a log a killed attempt left behind is kept as <RUN_ID>.txt.partial.
A finished or started seed whose stored config differs from the requested one is refused rather
than mixed into the table.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.core.config import RunConfig, config_to_dict
from pgolf.core.errors import PgolfError
from pgolf.submit.runlogs import SUMMARY_NAME, RunResult, load_run

CHECKPOINT_NAME = "checkpoint.safetensors"
# Fields that name where a run lives or which seed it drew, not what it trains: ignored when two
# runs are checked for being "the same recipe" (here and in `pgolf submit`).
PLACE_FIELDS = ("seed", "run_id", "out_dir", "device")
DATA_PLACE_FIELDS = ("data_path", "tokenizer_path")


class SeedRunError(PgolfError, RuntimeError):
    """A seed's training run failed, or its folder holds a run of another recipe."""


def recipe_of(config: dict) -> dict:
    """A run's config without the fields that differ between seeds of one recipe."""
    out = copy.deepcopy(config)
    for key in PLACE_FIELDS:
        out.pop(key, None)
    for key in DATA_PLACE_FIELDS:
        out.get("data", {}).pop(key, None)
    return out


def flatten_config(d: dict, prefix: str = "") -> dict:
    """{'model': {'num_layers': 4}} -> {'model.num_layers': 4}: configs compared option by option."""
    out = {}
    for k, v in d.items():
        out.update(flatten_config(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def recipe_differences(a: dict, b: dict) -> list[str]:
    """'key: a vs b' for every recipe field where two configs differ."""
    fa, fb = flatten_config(recipe_of(a)), flatten_config(recipe_of(b))
    return [f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def seed_run_id(name: str, seed: int) -> str:
    return f"{name}_seed{seed}"


@dataclass
class SeedPlan:
    """What `pgolf seeds` runs: one recipe (the config and the `pgolf train` flags that build it)."""

    name: str
    seeds: list[int]
    config: RunConfig
    train_args: list[str] = field(default_factory=list)  # shared flags; --seed/--run-id are added per seed
    logs_dir: Path = Path("logs")  # where pgolf.train.trainer writes logs/<RUN_ID>.txt (the working dir)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    def run_dir(self, seed: int) -> Path:
        return self.out_dir / seed_run_id(self.name, seed)


@dataclass
class SeedState:
    seed: int
    run_id: str
    state: str  # done | resume | fresh
    checkpoint: Path | None = None
    leftovers: bool = False  # fresh, but a killed attempt left files that `pgolf train` guards


def seed_state(plan: SeedPlan, seed: int) -> SeedState:
    """done (summary.json), resume (a checkpoint), or fresh; refuses a folder of another recipe."""
    run_id, run_dir = seed_run_id(plan.name, seed), plan.run_dir(seed)
    _check_same_recipe(plan, run_dir)
    if (run_dir / SUMMARY_NAME).is_file():
        return SeedState(seed, run_id, "done")
    if (run_dir / CHECKPOINT_NAME).is_file():
        return SeedState(seed, run_id, "resume", run_dir / CHECKPOINT_NAME)
    return SeedState(seed, run_id, "fresh", leftovers=any(run_dir.glob("final_model.*")))


def _check_same_recipe(plan: SeedPlan, run_dir: Path) -> None:
    stored = run_dir / "config.json"
    if not stored.is_file():
        return
    diffs = recipe_differences(json.loads(stored.read_text(encoding="utf-8")), config_to_dict(plan.config))
    if diffs:
        raise SeedRunError(
            f"{run_dir} holds a run of another recipe ({'; '.join(diffs[:3])}); "
            "choose another --name or remove that folder"
        )


def train_command(plan: SeedPlan, st: SeedState) -> list[str]:
    """The `python -m pgolf train` command line of one seed."""
    cmd = [sys.executable, "-m", "pgolf", "train", *plan.train_args, "--seed", str(st.seed), "--run-id", st.run_id]
    if st.checkpoint is not None:
        cmd += ["--resume", str(st.checkpoint)]
    elif st.leftovers:
        cmd += ["--overwrite"]
    return cmd


def run_command(cmd: list[str]) -> int:
    """Run one seed in its own process (memory back after each seed); its output goes to ours."""
    return subprocess.run(cmd, check=False).returncode


def _set_aside_partial_log(plan: SeedPlan, run_id: str) -> None:
    """A fresh start appends to logs/<RUN_ID>.txt: move a killed attempt's log out of the way."""
    log = plan.logs_dir / f"{run_id}.txt"
    if log.is_file():
        log.replace(log.with_name(log.name + ".partial"))


def run_seeds(
    plan: SeedPlan, runner: Callable[[list[str]], int] | None = None, echo: Callable[[str], None] | None = None
) -> list[RunResult]:
    """Run every seed that is not finished, one after another; return every seed's result."""
    runner = runner or run_command
    echo = echo or (lambda msg: print(msg, flush=True))  # before the seed's own output, which shares stdout
    for seed in plan.seeds:
        st = seed_state(plan, seed)
        if st.state == "done":
            echo(f"seed:{seed} run_id:{st.run_id} status:done (summary.json exists, not rerun)")
            continue
        if st.state == "fresh":
            _set_aside_partial_log(plan, st.run_id)
        echo(
            f"seed:{seed} run_id:{st.run_id} status:{'resuming from ' + str(st.checkpoint) if st.checkpoint else 'training'}"
        )
        code = runner(train_command(plan, st))
        if code != 0 or not (plan.run_dir(seed) / SUMMARY_NAME).is_file():
            hint = "rerun the same command to resume" + (
                " from its checkpoint"
                if (plan.run_dir(seed) / CHECKPOINT_NAME).is_file()
                else " (add --set train.checkpoint_every=N to resume mid-run next time)"
            )
            raise SeedRunError(
                f"seed {seed} (run {st.run_id}) stopped with exit code {code} before its summary.json; {hint}"
            )
    return [load_run(plan.run_dir(s)) for s in plan.seeds]


@dataclass(frozen=True)
class Column:
    title: str
    get: Callable[[RunResult], float]
    fmt: str


def _score(part: str, key: str) -> Callable[[RunResult], float]:
    def get(r: RunResult) -> float:
        value = (r.final() if part == "final" else r.summary.get(part) or {}).get(key)
        return float("nan") if value is None else float(value)

    return get


COLUMNS = (
    Column("steps", lambda r: float(r.summary.get("steps", 0)), ".0f"),
    Column("pre_bpb", _score("pre_quant", "val_bpb"), ".5f"),
    Column("pre_loss", _score("pre_quant", "val_loss"), ".5f"),
    Column("rt_bpb", _score("roundtrip", "val_bpb"), ".5f"),
    Column("rt_loss", _score("roundtrip", "val_loss"), ".5f"),
    Column("final_bpb", _score("final", "val_bpb"), ".5f"),
    Column("final_loss", _score("final", "val_loss"), ".5f"),
    Column("artifact_B", lambda r: float(r.summary.get("artifact_bytes", 0)), ".0f"),
    Column("code_B", lambda r: float(r.summary.get("code_bytes", 0)), ".0f"),
    Column("train_s", lambda r: float(r.summary.get("train_time_ms", 0.0)) / 1000.0, ".1f"),
    Column("eval_s", lambda r: r.eval_seconds(), ".1f"),
)


def _cell(value: float, fmt: str) -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def seeds_table(results: list[RunResult]) -> str:
    """Per-seed rows, then mean and (sample) std rows, then one golf-style line."""
    width = 12
    head = f"{'seed':>8}" + "".join(f"{c.title:>{width}}" for c in COLUMNS)
    rows = [f"{r.seed:>8}" + "".join(f"{_cell(c.get(r), c.fmt):>{width}}" for c in COLUMNS) for r in results]
    values = np.array([[c.get(r) for c in COLUMNS] for r in results], dtype=np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if len(results) > 1 else np.full(len(COLUMNS), np.nan)
    wide = {"steps": ".1f", "artifact_B": ".1f", "code_B": ".1f"}
    rows.append(
        f"{'mean':>8}" + "".join(f"{_cell(m, wide.get(c.title, c.fmt)):>{width}}" for m, c in zip(mean, COLUMNS))
    )
    rows.append(f"{'std':>8}" + "".join(f"{_cell(s, wide.get(c.title, c.fmt)):>{width}}" for s, c in zip(std, COLUMNS)))
    final = [c.title for c in COLUMNS].index("final_bpb")
    line = (
        f"seeds n:{len(results)} final_val_bpb_mean:{mean[final]:.8f} final_val_bpb_std:{_cell(std[final], '.8f')} "
        f"final_val_loss_mean:{mean[final + 1]:.8f} final_val_loss_std:{_cell(std[final + 1], '.8f')}"
    )
    return "\n".join([head, *rows, line])
