"""The record folder `pgolf run` writes for its one finished run, in the challenge's layout:

    records/<track dir>/<date>_<name>/
        README.md  submission.json  train_gpt.py  train_seed<SEED>.log  requirements.txt  *.png

It is `pgolf submit` (pgolf.submit.submitfolder) for a single seed, so a newcomer's first folder
has the same checks and contents as a real submission. Readable names: the run id, or
`<preset>_seed<SEED>` when the run id was generated (a UUID). Track: the 10-minute record track only
with the official 16,000,000-byte cap and a wall-clock cap of at most 600 s; a CPU proxy is a
non-record folder; a run without a wall-clock cap (max_wallclock_seconds 0) is the unlimited-compute
non-record track, with its hours of training in the README. Author and GitHub id come from the
env vars PGOLF_AUTHOR and PGOLF_GITHUB_ID ("unknown" when unset).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from pgolf.core.config import RunConfig
from pgolf.finish.summary import Summary
from pgolf.submit.submitfolder import SubmitOptions, assemble, infer_track

RECORDS_ROOT = Path("records")
AUTHOR_ENV, GITHUB_ENV = "PGOLF_AUTHOR", "PGOLF_GITHUB_ID"


def final_scores(summary: Summary) -> dict:
    """The score a run reports: the configured document evaluation (TTT, tilt) if it ran, else
    sliding-window if evaluated, else the non-overlapping roundtrip."""
    return summary.documents or summary.sliding or summary.roundtrip


def readable_run_name(cfg: RunConfig) -> str:
    """The run id, unless it was generated (a UUID): then `<preset>_seed<SEED>`."""
    try:
        uuid.UUID(cfg.run_id)
    except ValueError:
        return cfg.run_id
    return f"{cfg.preset}_seed{cfg.seed}"


def author_from_env() -> tuple[str, str]:
    return os.environ.get(AUTHOR_ENV) or "unknown", os.environ.get(GITHUB_ENV) or "unknown"


def write_record(cfg: RunConfig, summary: Summary, log_path: Path, root: Path = RECORDS_ROOT) -> Path:
    """The record folder of one finished run. Its summary.json sits next to the artifact: runs/<RUN_ID>/,
    or the rescue folder finalize used when that one was not writable."""
    author, github_id = author_from_env()
    run_dir = Path(summary.artifact_path).parent if summary.artifact_path else Path(cfg.out_dir) / summary.run_id
    opts = SubmitOptions(
        name=readable_run_name(cfg),
        author=author,
        github_id=github_id,
        track=infer_track(cfg),
        out_root=Path(root),
        baseline=[],
        logs_dir=Path(log_path).parent,
        force=True,
    )
    return assemble([str(run_dir)], opts)
