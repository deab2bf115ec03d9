"""Reading finished runs back: summary.json (written by pgolf.finish.finalize) and the golf-style
train logs (logs/<RUN_ID>.txt), so the seeds table, `pgolf compare`, `pgolf submit` and `pgolf plot`
agree on what a run scored. The log is the evidence a record folder ships, so its lines are parsed
here rather than trusted from the summary alone.

Log lines read (written by pgolf.train.trainer and pgolf.finish.finalize):
    {"data": ..., "seed": ...}                         first line: the run's config as JSON
    step:12/100 train_loss:3.1234 train_time:1234ms step_avg:102.83ms
    step:12/100 val_loss:3.0000 val_bpb:1.7000 train_time:1234ms step_avg:...
    Code size: 49012 bytes
    Serialized model mixed+brotli: 519465 bytes (...)      Total submission size mixed+brotli: 568477 bytes
    final_<scheme>_<codec>_roundtrip_exact val_loss:... val_bpb:...
    final_sliding_window_exact val_loss:... val_bpb:...
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.core.errors import MissingInputError, UsageError

SUMMARY_NAME = "summary.json"

_TRAIN_RE = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+) train_time:(\d+(?:\.\d+)?)ms")
_VAL_RE = re.compile(r"^step:(\d+)/\d+ val_loss:(\S+) val_bpb:(\S+) train_time:(\d+(?:\.\d+)?)ms")
_EXACT_RE = re.compile(r"^final_(\w+?)_exact val_loss:(\S+) val_bpb:(\S+)")
_CODE_RE = re.compile(r"^Code size: (\d+) bytes")
_SERIALIZED_RE = re.compile(r"^Serialized model (\S+): (\d+) bytes")
_TOTAL_RE = re.compile(r"^Total submission size (\S+): (\d+) bytes")
_SEED_RE = re.compile(r"^seed:(\d+) preset:(\S+)")
_WORLD_RE = re.compile(r"^world_size:(\d+) grad_accum_steps:\d+ device:(\w+)")


@dataclass
class TrainPoint:
    step: int
    train_time_ms: float
    train_loss: float = float("nan")
    val_loss: float = float("nan")
    val_bpb: float = float("nan")


@dataclass
class TrainLog:
    """Everything a train log says about its run (the last value wins where a line repeats)."""

    path: Path
    config: dict | None = None
    seed: int | None = None
    preset: str = ""
    world_size: int | None = None
    device: str = ""  # cpu | cuda, as the run found it
    train: list[TrainPoint] = field(default_factory=list)
    val: list[TrainPoint] = field(default_factory=list)
    exact: dict[str, tuple[float, float]] = field(default_factory=dict)  # tag -> (val_loss, val_bpb)
    code_bytes: int | None = None
    serialized_bytes: int | None = None  # the packed artifact (labelled line), not the raw safetensors
    total_bytes: int | None = None  # packed artifact + code (labelled line)

    @property
    def roundtrip(self) -> tuple[float, float] | None:
        tags = [t for t in self.exact if t.endswith("_roundtrip")]
        return self.exact[tags[-1]] if tags else None

    @property
    def finished(self) -> bool:
        """A run's log is complete once the roundtrip score of the reloaded artifact is in it."""
        return self.roundtrip is not None

    def final(self) -> tuple[float, float] | None:
        """(val_loss, val_bpb) the run reports: sliding-window when evaluated, else the roundtrip."""
        return self.exact.get("sliding_window") or self.roundtrip


def _append_point(series: list[TrainPoint], point: TrainPoint) -> None:
    """A resumed run logs again from its checkpoint's step: later lines replace the earlier ones."""
    while series and series[-1].step >= point.step:
        series.pop()
    series.append(point)


def _first_line_config(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "model" in data else None


def parse_train_log(path: str | Path) -> TrainLog:
    """Parse a pgolf (or official) train log; unknown lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: train log not found")
    log = TrainLog(path=path)
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if log.config is None and (cfg := _first_line_config(line)) is not None:
            log.config = cfg
        elif m := _TRAIN_RE.match(line):
            _append_point(log.train, TrainPoint(int(m[1]), float(m[3]), train_loss=float(m[2])))
        elif m := _VAL_RE.match(line):
            _append_point(log.val, TrainPoint(int(m[1]), float(m[4]), val_loss=float(m[2]), val_bpb=float(m[3])))
        elif m := _EXACT_RE.match(line):
            log.exact[m[1]] = (float(m[2]), float(m[3]))
        elif m := _CODE_RE.match(line):
            log.code_bytes = int(m[1])
        elif m := _SERIALIZED_RE.match(line):
            log.serialized_bytes = int(m[2])
        elif m := _TOTAL_RE.match(line):
            log.total_bytes = int(m[2])
        elif m := _SEED_RE.match(line):
            log.seed, log.preset = int(m[1]), m[2]
        elif m := _WORLD_RE.match(line):
            log.world_size, log.device = int(m[1]), m[2]
    if log.seed is None and log.config is not None:
        log.seed = int(log.config.get("seed", 0))
    return log


@dataclass
class RunResult:
    """One finished run as summary.json records it."""

    run_dir: Path
    summary: dict  # the Summary fields (pgolf.finish.finalize.Summary)
    config: dict  # the RunConfig as a nested dict
    history: list = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.config.get("run_id") or self.run_dir.name)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def final(self) -> dict:
        """The score the run reports: sliding-window if evaluated, else the non-overlapping roundtrip."""
        return self.summary.get("documents") or self.summary.get("sliding") or self.summary.get("roundtrip") or {}

    def eval_seconds(self) -> float:
        return float(sum((self.summary.get("eval_seconds") or {}).values()))


def summary_path(spec: str | Path) -> Path:
    """A run folder or its summary.json -> the summary.json path (which must exist)."""
    path = Path(spec)
    path = path / SUMMARY_NAME if path.is_dir() else path
    if not path.is_file():
        raise MissingInputError(f"{spec}: no {SUMMARY_NAME} (is it a finished run folder?)")
    return path


def load_run(spec: str | Path) -> RunResult:
    """Load a finished run from its folder or summary.json."""
    path = summary_path(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        summary, config = data["summary"], data["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a pgolf summary.json ({exc})") from None
    return RunResult(run_dir=path.parent, summary=summary, config=config, history=data.get("history") or [])


def find_run_log(run: RunResult, logs_dir: str | Path | None = None) -> Path | None:
    """The train log of a run: --logs DIR if given, else logs/<run_id>.txt next to the folder that
    holds the runs (the layout `pgolf train` writes from its working directory), else ./logs."""
    name = f"{run.run_id}.txt"
    candidates = [Path(logs_dir) / name] if logs_dir else []
    candidates += [run.run_dir.parent.parent / "logs" / name, Path("logs") / name, run.run_dir / "train.log"]
    return next((p for p in candidates if p.is_file()), None)
