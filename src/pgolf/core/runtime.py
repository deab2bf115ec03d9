"""Process/device set-up: one process, or torchrun (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import gc
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pgolf.core.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Who and where this process is."""

    distributed: bool
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def pick_device(requested: str = "auto") -> str:
    """'auto' -> cuda when available, else cpu; an explicit cuda request without a GPU is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but no CUDA GPU is available (use --device cpu)")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {requested!r}")
    return requested


def init_runtime(requested_device: str = "auto") -> Runtime:
    """Read torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) and initialise the process group."""
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 0:
        raise ConfigError(f"WORLD_SIZE must be positive, got {world}")
    kind = pick_device(requested_device)
    device = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    if distributed and not dist.is_initialized():
        if kind == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        dist.barrier()
    return Runtime(distributed, rank, local_rank, world, device)


def shutdown(rt: Runtime) -> None:
    """Collect what the caller released (DDP reducers keep gloo work objects alive in reference
    cycles; freeing those during interpreter teardown aborts the process), wait for every rank,
    then tear the group down. Callers drop their model references before calling this."""
    if rt.distributed and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def autocast_for(device: torch.device):
    """bf16 autocast on GPU (official); fp32 on CPU (no native bf16: ~10x slower there)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def sync_device(rt: Runtime) -> None:
    """Wait for queued GPU work (before reading a clock); nothing to wait for on CPU."""
    if rt.device.type == "cuda":
        torch.cuda.synchronize()


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def broadcast_flag(rt: Runtime, flag: bool) -> bool:
    """Max-reduce a boolean so every rank agrees (e.g. the wall-clock stop)."""
    if not rt.distributed:
        return flag
    t = torch.tensor(int(flag), device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
