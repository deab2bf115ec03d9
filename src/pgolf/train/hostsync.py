"""What the timed loop reads on the host, and when (issue 11: no host sync in the hot loop).

- The train loss stays on the device: each step folds it into a device record (the latest loss
  and the first step whose loss was not finite); the host reads both in one transfer only at
  log steps (all-reduced across ranks there), or every NAN_CHECK_EVERY steps when logging is off,
  and at the end. A NaN is still named with the exact step it appeared at.
- The wall-clock cap and the recurrence switch are decided from host clocks. One process reads
  its own clock every step (free: no device sync). Under torch.distributed every rank must take
  the same decision at the same step, so the ranks exchange their clocks (max over ranks) only at
  steps every rank computes the same way: at every log and checkpoint step, and at a `next_step`
  planned from the last exchange -- half of the steps the agreed pace says are left before the
  nearest clock boundary (the cap, the recurrence start), so exchanges thin out far from a
  boundary and come every step close to it. A slowdown of up to 2x between two exchanges still
  lands the decision within one step of the boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from pgolf.core.runtime import Runtime

NAN_CHECK_EVERY = 100  # steps between host reads of the loss record when no train loss is logged
NO_BAD_STEP = 2**62  # "no non-finite loss yet" in the device record (exact in float64)
CLOCK_SAFETY = 0.5  # plan the next clock exchange after this fraction of the steps left to a boundary
NEVER = 2**62  # no boundary ahead: exchange only at log / checkpoint steps


class LossMonitor:
    """The latest train loss and the first step with a non-finite loss, kept on the device."""

    def __init__(self, device: torch.device, step: int):
        self.step = torch.full((), step, dtype=torch.int64, device=device)
        self.first_bad = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device)
        self.loss = torch.full((), float("nan"), device=device)

    def record(self, loss: Tensor) -> None:
        """Fold one step's mean loss into the record (device ops only)."""
        self.step += 1
        self.loss = loss.detach()
        self.first_bad = torch.where(
            torch.isfinite(self.loss), self.first_bad, torch.minimum(self.first_bad, self.step)
        )

    def read(self, rt: Runtime) -> tuple[float, int | None]:
        """(mean loss over ranks, first step with a non-finite loss on any rank or None): one host
        read; a collective under torch.distributed, so every rank calls it at the same steps."""
        loss, bad = self.loss.float().clone(), self.first_bad.clone()
        if rt.distributed:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
        value, first = torch.stack([loss.double(), bad.double()]).tolist()
        return value, (int(first) if first < NO_BAD_STEP else None)


def check_due(step: int, log_every: int, logged: bool) -> bool:
    """Whether the loss record is read after `step`: at log steps, else every NAN_CHECK_EVERY."""
    return logged or (log_every <= 0 and step % NAN_CHECK_EVERY == 0)


@dataclass
class ClockSync:
    """The training clock every rank agrees on (module docstring). `boundaries_ms`: clock values
    at which a decision changes; `start` = (step, ms) where this process's loop began."""

    rt: Runtime
    boundaries_ms: list[float] = field(default_factory=list)
    start: tuple[int, float] = (0, 0.0)
    next_step: int = 0
    agreed_ms: float | None = None
    exchanges: int = 0

    def agree(self, step: int, local_ms: float, force: bool = False) -> float | None:
        """The agreed clock after `step`: this process's own on one process (every step), the max
        over ranks at exchange steps (None between them) under torch.distributed."""
        if not self.rt.distributed:
            self.agreed_ms = local_ms
            return local_ms
        if not force and step < self.next_step:
            return None
        t = torch.tensor([local_ms], dtype=torch.float64, device=self.rt.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        self.agreed_ms = float(t.item())
        self.exchanges += 1
        self.next_step = step + self.gap(step, self.agreed_ms)
        return self.agreed_ms

    def gap(self, step: int, ms: float) -> int:
        """Steps to the next planned exchange: CLOCK_SAFETY of the steps left to the nearest
        boundary ahead at the agreed pace (identical on every rank: it only reads agreed values)."""
        ahead = [b - ms for b in self.boundaries_ms if b > ms]
        if not ahead:
            return NEVER
        steps = step - self.start[0]
        if steps <= 0 or ms <= self.start[1]:
            return 1
        pace = (ms - self.start[1]) / steps
        return max(1, math.floor(CLOCK_SAFETY * min(ahead) / pace))
