"""Run logging: golf-compatible `key:value` lines to logs/<run_id>.txt, echoed on rank 0."""

from __future__ import annotations

import sys
from pathlib import Path


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
            with open(self.path, "a", encoding="utf-8") as f:
                print(msg, file=f)


def fmt_kv(**items) -> str:
    """'a:1 b:2.5000' with floats at 4 decimals (official style)."""
    parts = []
    for k, v in items.items():
        parts.append(f"{k}:{v:.4f}" if isinstance(v, float) else f"{k}:{v}")
    return " ".join(parts)


def is_tty() -> bool:
    return sys.stdout.isatty()
