"""Run logging: golf-compatible `key:value` lines to logs/<run_id>.txt, echoed on rank 0.

A log that can no longer be written (disk full, folder removed or made read-only mid-run) does
not stop the run: the lines go on in a rescue file (`rescue_root()/<name>`), and one notice on
the console says where."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

RESCUE_ROOT_ENV = "PGOLF_RESCUE_DIR"  # where outputs go when their own folder is unwritable


def rescue_root() -> Path:
    """$PGOLF_RESCUE_DIR, else <temp dir>/pgolf-rescue."""
    return Path(os.environ.get(RESCUE_ROOT_ENV) or tempfile.gettempdir()) / "pgolf-rescue"


class RunLog:
    """Append-only log of one run; only the master process writes."""

    def __init__(self, path: str | Path | None, master: bool = True, echo: bool = True):
        self.path = Path(path) if path else None
        self.master, self.echo = master, echo
        if self.master and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str, console: bool = True) -> None:
        if not self.master:
            return
        if console and self.echo:
            print(msg, flush=True)
        if self.path is not None:
            try:
                self._append(msg)
            except OSError as exc:
                self._rescue(exc)
                self._append(msg)

    def _append(self, msg: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            print(msg, file=f)

    def _rescue(self, exc: OSError) -> None:
        old, self.path = self.path, rescue_root() / self.path.name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if old.is_file() and not self.path.exists():
            try:
                self.path.write_bytes(old.read_bytes())  # keep what was logged so far
            except OSError:
                pass
        print(
            f"log:rescued {old} is not writable ({exc.strerror or exc}); logging to {self.path}",
            file=sys.stderr,
            flush=True,
        )


def fmt_kv(**items) -> str:
    """'a:1 b:2.5000' with floats at 4 decimals (official style)."""
    parts = []
    for k, v in items.items():
        parts.append(f"{k}:{v:.4f}" if isinstance(v, float) else f"{k}:{v}")
    return " ".join(parts)
