"""No host sync in the timed loop except at log steps (issue 11): every way pgolf code can make the
host wait for the device (Tensor.item / tolist / cpu / __float__ / __int__ / __bool__,
torch.cuda.synchronize, pgolf's sync_device, collectives) is counted while train_loop runs,
and the count must equal the logging schedule's (one read per log step, one at the end)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import pgolf
from conftest import tiny_config
from pgolf.train import trainer as trainer_mod

PGOLF_DIR = str(Path(pgolf.__file__).parent)
TENSOR_SYNCS = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__")
COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "all_gather_into_tensor",
    "all_gather_single",
    "reduce_scatter_tensor",
    "reduce_scatter_single",
    "barrier",
    "broadcast_object_list",
    "all_gather_object",
)


class SyncCounter:
    """Records (what, file:line) of every counted call made from pgolf code while active."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str]] = []
        self.active = False
        for name in TENSOR_SYNCS:
            self._wrap(monkeypatch, torch.Tensor, name)
        for name in COLLECTIVES:
            if hasattr(dist, name):
                self._wrap(monkeypatch, dist, name)
        self._wrap(monkeypatch, torch.cuda, "synchronize")
        self._wrap(monkeypatch, trainer_mod, "sync_device")

    def _wrap(self, monkeypatch, owner, name: str) -> None:
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if self.active and caller.startswith(PGOLF_DIR):
                self.calls.append((name, f"{Path(caller).name}:{sys._getframe(1).f_lineno}"))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def counted_loop(monkeypatch, counter: SyncCounter):
    """train_loop with the counter on and validation stubbed (it syncs by design, outside the
    training clock)."""
    real_loop = trainer_mod.train_loop
    monkeypatch.setattr(trainer_mod, "validate_now", lambda *a, **k: None)

    def loop(*args, **kwargs):
        counter.active = True
        try:
            return real_loop(*args, **kwargs)
        finally:
            counter.active = False

    monkeypatch.setattr(trainer_mod, "train_loop", loop)


def log_steps(iterations: int, every: int) -> int:
    return len([s for s in range(1, iterations + 1) if s <= 10 or s % every == 0])


@pytest.mark.parametrize("cap", [0.0, 600.0])
def test_timed_loop_reads_the_device_only_at_log_steps(tiny_dataset, tmp_path, monkeypatch, cap):
    """A frontier-like tiny run (EMA, clipping, row-normalised Muon, recurrence switching on by
    step count, a wall-clock cap or none): syncs = one loss read per log step + one at the end,
    plus sync_device around the clock (loop start, final validation)."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(
        *tiny_dataset,
        iterations=30,
        train_log_every=10,
        ema_decay=0.9,
        grad_clip_norm=0.3,
        max_wallclock_seconds=cap,
        muon_row_norm=True,
    )
    cfg.run_id = f"syncs{cap}"
    cfg.model.recur_layers, cfg.model.recur_loops, cfg.model.recur_start_frac = "0-1", 2, 0.5
    counter = SyncCounter(monkeypatch)
    counted_loop(monkeypatch, counter)
    _, st = trainer_mod.run_training(cfg)
    assert st.step == 30
    reads = [c for c in counter.calls if c[0] == "tolist"]
    assert len(reads) == log_steps(30, 10) + 1 and all(c[1].startswith("hostsync.py") for c in reads)
    others = [c for c in counter.calls if c[0] not in ("tolist", "sync_device")]
    assert others == [], others
    assert len([c for c in counter.calls if c[0] == "sync_device"]) == 3  # loop start, around the last validation
    if cap == 0:
        assert st.recur_active  # the switch itself needed no sync


def test_without_train_logging_the_loss_is_read_every_nan_check(tiny_dataset, tmp_path, monkeypatch):
    from pgolf.train.hostsync import NAN_CHECK_EVERY

    monkeypatch.chdir(tmp_path)
    steps = NAN_CHECK_EVERY + 5
    cfg = tiny_config(*tiny_dataset, iterations=steps, train_log_every=0, warmup_steps=0)
    cfg.run_id = "nolog"
    counter = SyncCounter(monkeypatch)
    counted_loop(monkeypatch, counter)
    trainer_mod.run_training(cfg)
    assert len([c for c in counter.calls if c[0] == "tolist"]) == 2  # step NAN_CHECK_EVERY and the end
