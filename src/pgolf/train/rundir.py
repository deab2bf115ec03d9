"""Run folders that cannot clobber each other or lose work.

- A run folder is locked (an exclusive `flock` on `<run_dir>/.lock`) while a process uses it: a
  second run with the same RUN_ID is refused instead of silently sharing the folder and log.
- A folder that already holds a finished run (summary.json or an artifact) is refused unless the
  run resumes it or `--overwrite` is given; overwriting first removes the old results, so no stale
  summary can point at a file that is gone.
- Writability is checked at start-up (before minutes of training); if the folder becomes
  unwritable at the end, results go to a clearly named rescue folder instead of being lost.
- Files are written to a temporary name and renamed when complete (`atomic_write_*`).
- A run that fails during set-up removes the folder and log it had just created.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgolf.core.errors import PgolfError
from pgolf.core.runlog import rescue_root

LOCK_NAME = ".lock"
FINISHED_MARKERS = ("summary.json", "final_model.*.pglf", "final_model.safetensors", "checkpoint.safetensors")


class RunFolderError(PgolfError, RuntimeError):
    """A run folder that is in use, already finished, or cannot be written."""


@dataclass
class RunFolder:
    """The locked folder of a live run (rank 0 only holds the lock)."""

    path: Path
    created: bool  # made by this run (so a failed set-up may remove it)
    lock_fd: int | None = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor drops the flock
            self.lock_fd = None


def finished_files(path: Path) -> list[Path]:
    return sorted(p for pattern in FINISHED_MARKERS for p in path.glob(pattern))


def check_writable(folder: Path) -> None:
    """Create the folder if needed and write + remove a probe file, or a RunFolderError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pgolf-probe-"):
            pass
    except OSError as exc:
        raise RunFolderError(
            f"cannot write to {folder} ({exc.strerror or exc}); choose another --out-dir or working directory"
        ) from None


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise RunFolderError(
                f"run folder {path} is in use by another pgolf process; wait for it or pick another RUN_ID"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def open_run_folder(path: Path, resume: bool, overwrite: bool) -> RunFolder:
    """Lock the run folder; refuse a finished one unless resuming or overwriting (which first
    removes its old results)."""
    created = not path.exists()
    check_writable(path)
    folder = RunFolder(path, created, _lock(path))
    old = finished_files(path)
    if old and not (resume or overwrite):
        folder.release()
        raise RunFolderError(
            f"{path} already holds a run ({old[0].name}); use --resume to continue it, "
            "--overwrite to replace it, or another RUN_ID"
        )
    if old and overwrite:
        for p in old:
            p.unlink()
    return folder


def discard_failed_setup(folder: RunFolder | None, log_path: Path | None, log_existed: bool) -> None:
    """After a failure during set-up: remove what this run had just created."""
    if folder is None:
        return
    folder.release()
    if folder.created:
        shutil.rmtree(folder.path, ignore_errors=True)
    if log_path is not None and not log_existed:
        log_path.unlink(missing_ok=True)


def rescue_dir(run_id: str) -> Path:
    """Where a run's results go when its own folder cannot be written at the end."""
    return rescue_root() / run_id


def usable_output_dir(path: Path, run_id: str) -> tuple[Path, bool]:
    """(folder to write results in, whether it is the rescue folder): the run folder while it is
    writable, else the rescue folder (never lose finished training to a bad disk or permission)."""
    try:
        check_writable(path)
        return path, False
    except RunFolderError:
        out = rescue_dir(run_id)
        check_writable(out)
        return out, True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
