"""Progress for long work: a rich bar on a terminal, and when output goes to a file or pipe
(CI, nohup, torchrun logs) a plain line every PROGRESS_EVERY_S seconds with the elapsed time and
the time left, so a long evaluation is never minutes of silence."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized

PROGRESS_EVERY_S = 30.0


def is_tty() -> bool:
    return sys.stdout.isatty()


def track(seq: Iterable, label: str, enabled: bool, every_s: float = PROGRESS_EVERY_S, clock=time.perf_counter):
    """Iterate `seq` showing progress when enabled (rank 0): a bar on a TTY, else periodic lines
    `<label>_progress:<done>/<total> (<pct>%) elapsed:<s>s eta:<s>s`."""
    if not enabled:
        return seq
    if is_tty():
        from rich.progress import track as rich_track

        return rich_track(seq, description=label, transient=True)
    return _lines(seq, label, every_s, clock)


def _lines(seq: Iterable, label: str, every_s: float, clock) -> Iterator:
    total = len(seq) if isinstance(seq, Sized) else None
    t0 = last = clock()
    for done, item in enumerate(seq):
        now = clock()
        if now - last >= every_s and done:
            last = now
            elapsed = now - t0
            if total:
                eta = elapsed * (total - done) / done
                print(
                    f"{label}_progress:{done}/{total} ({100 * done / total:.0f}%) elapsed:{elapsed:.0f}s "
                    f"eta:{eta:.0f}s",
                    flush=True,
                )
            else:
                print(f"{label}_progress:{done} elapsed:{elapsed:.0f}s", flush=True)
        yield item
