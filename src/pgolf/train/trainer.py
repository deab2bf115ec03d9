"""Training: set-up, warm-up (undone), the step loop with the official wall-clock semantics,
periodic validation, checkpoints, then finalisation (pgolf.submit.finalize).

Same as the official script: grad_accum = 8 // world_size micro-steps per optimizer step so the
result does not depend on the GPU count; the training clock excludes validation; when the clock
passes MAX_WALLCLOCK_SECONDS the run stops after that step; the LR warmdown is time-based under
a cap. Warm-up steps prime compilation and are then undone (model, optimizers and data reset)
"so we aren't cheating" (modded-nanogpt).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.core.config import ConfigError, RunConfig, config_to_dict, validate
from pgolf.core.errors import PgolfError
from pgolf.core.runlog import RunLog, is_tty
from pgolf.core.runtime import Runtime, autocast_for, broadcast_flag, init_runtime, sync_device
from pgolf.data.loader import DistributedTokenLoader, StreamPosition
from pgolf.data.source import ValData, load_val_data, resolve_data
from pgolf.eval.scoring import Score, evaluate
from pgolf.model.gpt import GPT
from pgolf.model.weights import load_matching
from pgolf.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pgolf.train.optim import build_optimizers
from pgolf.train.schedules import lr_multiplier, muon_momentum_at, set_schedules, training_cap_ms


class NonFiniteLossError(PgolfError, RuntimeError):
    """Training produced a NaN/inf loss; the last checkpoint (if any) is intact."""


@dataclass
class TrainState:
    """Everything the loop carries between steps (and into checkpoints)."""

    step: int = 0
    training_time_ms: float = 0.0
    stop_after_step: int | None = None
    recur_active: bool = False
    last_train_loss: float = float("nan")
    history: list[dict] = field(default_factory=list)  # val results along the way


@dataclass
class Session:
    """The live objects of a run."""

    cfg: RunConfig
    rt: Runtime
    log: RunLog
    run_dir: Path
    base: GPT
    model: nn.Module  # possibly compiled / DDP-wrapped
    optimizers: list
    loader: DistributedTokenLoader
    train_pattern: str
    val: ValData
    grad_accum: int
    ema: dict[str, Tensor] | None = None
    autocast: object = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def grad_accum_steps(cfg: RunConfig, world: int) -> int:
    if cfg.train.grad_accum_steps > 0:
        return cfg.train.grad_accum_steps
    if 8 % world:
        raise ConfigError(f"WORLD_SIZE={world} must divide 8 so grad_accum_steps = 8 // world_size is integral")
    return 8 // world


def build_model(cfg: RunConfig, device: torch.device) -> GPT:
    seed_everything(cfg.seed)
    return GPT(cfg.model).to(device)


def wrap_model(base: GPT, cfg: RunConfig, rt: Runtime) -> nn.Module:
    model: nn.Module = base
    if cfg.compile == "on" or (cfg.compile == "auto" and rt.device.type == "cuda"):
        model = torch.compile(base, dynamic=False)
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [rt.local_rank] if rt.device.type == "cuda" else None
        model = DDP(model, device_ids=ids, broadcast_buffers=False)
    return model


def shared_run_id(rt: Runtime) -> str:
    """A fresh run id, the same on every rank (rank 0's, broadcast)."""
    ids = [str(uuid.uuid4())]
    if rt.distributed:
        dist.broadcast_object_list(ids, src=0)
    return ids[0]


def setup(cfg: RunConfig) -> Session:
    """Runtime, logging, data, model, optimizers, loader."""
    validate(cfg)
    rt = init_runtime(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    cfg.run_id = cfg.run_id or shared_run_id(rt)
    run_dir = Path(cfg.out_dir) / cfg.run_id
    log = RunLog(Path("logs") / f"{cfg.run_id}.txt", master=rt.master)
    if rt.master:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    log(json.dumps(config_to_dict(cfg), sort_keys=True), console=False)
    data = resolve_data(cfg, log)
    val = load_val_data(cfg, data)
    base = build_model(cfg, rt.device)
    model = wrap_model(base, cfg, rt)
    opts = build_optimizers(base, cfg.train, cfg.model.tie_embeddings)
    accum = grad_accum_steps(cfg, rt.world_size)
    loader = DistributedTokenLoader(data.train_pattern, rt.rank, rt.world_size, rt.device)
    s = Session(cfg, rt, log, run_dir, base, model, opts, loader, data.train_pattern, val, accum,
                autocast=autocast_for(rt.device))
    _log_setup(s, data)
    return s


def _log_setup(s: Session, data) -> None:
    c, m = s.cfg, s.cfg.model
    s.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={data.tokenizer_path}")
    s.log(f"train_loader:dataset:{Path(data.data_path).name} train_shards:{data.num_train_shards}")
    s.log(f"val_loader:shards pattern={data.val_pattern} tokens:{s.val.tokens.numel() - 1} val_bytes:{s.val.total_bytes}")
    s.log(f"model_params:{sum(p.numel() for p in s.base.parameters())}")
    s.log(f"world_size:{s.rt.world_size} grad_accum_steps:{s.grad_accum} device:{s.rt.device.type}")
    s.log(f"attention_mode:gqa num_heads:{m.num_heads} num_kv_heads:{m.num_kv_heads}")
    t = c.train
    s.log(f"train_batch_tokens:{t.train_batch_tokens} train_seq_len:{t.train_seq_len} iterations:{t.iterations} "
          f"warmup_steps:{t.warmup_steps} max_wallclock_seconds:{t.max_wallclock_seconds:.3f}")
    s.log(f"seed:{c.seed} preset:{c.preset}")


def forward_loss(s: Session, x: Tensor, y: Tensor) -> Tensor:
    with s.autocast:
        return s.model(x, y)


def train_step(s: Session, st: TrainState, lr_mul: float) -> float:
    """One optimizer step over grad_accum micro-batches; returns the mean train loss."""
    for opt in s.optimizers:
        opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=s.rt.device)
    t = s.cfg.train
    for micro in range(s.grad_accum):
        x, y = s.loader.next_batch(t.train_batch_tokens, t.train_seq_len, s.grad_accum)
        sync = nullcontext() if (not s.rt.distributed or micro == s.grad_accum - 1) else s.model.no_sync()
        with sync:
            loss = forward_loss(s, x, y)
            (loss / s.grad_accum).backward()
        total += loss.detach()
    set_schedules(s.optimizers, lr_mul, muon_momentum_at(st.step, t))
    if t.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(s.base.parameters(), t.grad_clip_norm)
    for opt in s.optimizers:
        opt.step()
    for opt in s.optimizers:
        opt.zero_grad(set_to_none=True)
    total /= s.grad_accum
    if s.rt.distributed:  # log the global mean, so the number does not depend on the world size
        dist.all_reduce(total, op=dist.ReduceOp.AVG)
    return float(total.item())


def new_loader(s: Session, position: StreamPosition | None = None) -> DistributedTokenLoader:
    return DistributedTokenLoader(s.train_pattern, s.rt.rank, s.rt.world_size, s.rt.device, position)


def warmup(s: Session) -> None:
    """Run warmup_steps real steps to prime kernels/compilation, then restore the initial state."""
    n = s.cfg.train.warmup_steps
    if n <= 0:
        return
    model0 = {k: v.detach().clone() for k, v in s.base.state_dict().items()}
    opts0 = [copy.deepcopy(o.state_dict()) for o in s.optimizers]
    for i in range(n):
        train_step(s, TrainState(), lr_mul=1.0)
        if n <= 20 or (i + 1) % 10 == 0 or i + 1 == n:
            s.log(f"warmup_step:{i + 1}/{n}")
    s.base.load_state_dict(model0, strict=True)
    for o, sd in zip(s.optimizers, opts0, strict=True):
        o.load_state_dict(sd)
    s.loader = new_loader(s)


def validate_now(s: Session, st: TrainState, tag: str = "") -> Score:
    """Official mid-training validation: non-overlapping windows of train_seq_len."""
    e, t = s.cfg.eval, s.cfg.train
    seqs = max(e.val_batch_size // (s.rt.world_size * s.grad_accum * t.train_seq_len), 1)
    score = evaluate(s.base, s.val.tokens, s.val.tables, window=t.train_seq_len, stride=0, batch_seqs=seqs,
                     rank=s.rt.rank, world_size=s.rt.world_size, device=s.rt.device, autocast=s.autocast)
    s.log(f"{tag}step:{st.step}/{t.iterations} val_loss:{score.val_loss:.4f} val_bpb:{score.val_bpb:.4f} "
          f"train_time:{st.training_time_ms:.0f}ms step_avg:{st.training_time_ms / max(st.step, 1):.2f}ms")
    st.history.append({"step": st.step, "val_loss": score.val_loss, "val_bpb": score.val_bpb,
                       "train_time_ms": st.training_time_ms, "ema": bool(tag)})
    return score


def update_ema(s: Session) -> None:
    decay = s.cfg.train.ema_decay
    if decay <= 0:
        return
    with torch.no_grad():
        if s.ema is None:
            s.ema = {k: v.detach().clone().float() for k, v in s.base.state_dict().items()}
            return
        for k, v in s.base.state_dict().items():
            s.ema[k].mul_(decay).add_(v.float(), alpha=1 - decay)


def maybe_switch_recurrence(s: Session, st: TrainState, elapsed_ms: float) -> None:
    """Depth recurrence switches on once the configured fraction of training has passed (by
    step count, or by the training clock `elapsed_ms` when a cap is set)."""
    m, t = s.cfg.model, s.cfg.train
    if st.recur_active or not m.recur_layers or m.recur_loops <= 1:
        return
    cap_ms = training_cap_ms(t)
    if cap_ms:
        frac = elapsed_ms / cap_ms
    else:
        frac = st.step / max(t.iterations, 1)
    if broadcast_flag(s.rt, frac >= m.recur_start_frac):
        st.recur_active = True
        s.base.set_recurrence(True)
        s.log(f"recurrence:on step:{st.step} layers:{m.recur_layers} loops:{m.recur_loops}")


def checkpoint_path(s: Session) -> Path:
    return s.run_dir / "checkpoint.safetensors"


def write_checkpoint(s: Session, st: TrainState) -> None:
    if not s.rt.master:
        return
    extra = {"step": st.step, "training_time_ms": st.training_time_ms, "recur_active": st.recur_active,
             "loader": [s.loader.stream.file_idx, s.loader.stream.pos], "history": st.history,
             "world_size": s.rt.world_size}
    save_checkpoint(checkpoint_path(s), s.base.state_dict(), s.optimizers, extra, s.ema)


def resume(s: Session, path: Path) -> TrainState:
    """Restore model, optimizers, EMA, loader position and clocks from a checkpoint."""
    model_sd, opt_sds, extra, ema = load_checkpoint(path)
    if extra.get("world_size", 1) != s.rt.world_size:
        raise CheckpointError(f"{path}: written with world_size={extra.get('world_size')}, resuming with {s.rt.world_size}")
    s.base.set_recurrence(bool(extra["recur_active"]))
    load_matching(s.base, model_sd, path)
    for o, sd in zip(s.optimizers, opt_sds, strict=True):
        o.load_state_dict(sd)
    s.ema = ema
    s.loader = new_loader(s, StreamPosition(*extra["loader"]))
    st = TrainState(step=int(extra["step"]), training_time_ms=float(extra["training_time_ms"]),
                    recur_active=bool(extra["recur_active"]), history=list(extra.get("history", [])))
    s.log(f"resumed:{path} step:{st.step} train_time:{st.training_time_ms:.0f}ms")
    return st


def _after_step(s: Session, st: TrainState, t0: float) -> None:
    """Train-loss logging, the wall-clock stop decision, checkpoints."""
    t = s.cfg.train
    approx_ms = st.training_time_ms + 1000.0 * (time.perf_counter() - t0)
    if t.train_log_every > 0 and (st.step <= 10 or st.step % t.train_log_every == 0 or st.stop_after_step is not None):
        s.log(f"step:{st.step}/{t.iterations} train_loss:{st.last_train_loss:.4f} "
              f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / st.step:.2f}ms")
    cap_ms = training_cap_ms(t)
    cap_hit = cap_ms is not None and approx_ms >= cap_ms
    if st.stop_after_step is None and broadcast_flag(s.rt, cap_hit):
        st.stop_after_step = st.step
    if t.checkpoint_every > 0 and st.step % t.checkpoint_every == 0:
        write_checkpoint(s, st)


def train_loop(s: Session, st: TrainState, progress=None) -> TrainState:
    """The official loop: validate on schedule (clock paused), step, stop at the cap."""
    t = s.cfg.train
    sync_device(s.rt)
    t0 = time.perf_counter()
    while True:
        last = st.step == t.iterations or (st.stop_after_step is not None and st.step >= st.stop_after_step)
        if last or (t.val_loss_every > 0 and st.step % t.val_loss_every == 0):
            sync_device(s.rt)
            st.training_time_ms += 1000.0 * (time.perf_counter() - t0)
            validate_now(s, st)
            sync_device(s.rt)
            t0 = time.perf_counter()
        if last:
            if st.stop_after_step is not None and st.step < t.iterations:
                s.log(f"stopping_early: wallclock_cap train_time:{st.training_time_ms:.0f}ms step:{st.step}/{t.iterations}")
            return st
        elapsed = st.training_time_ms + 1000.0 * (time.perf_counter() - t0)
        maybe_switch_recurrence(s, st, elapsed)
        st.last_train_loss = train_step(s, st, lr_multiplier(st.step, elapsed, t))
        if not math.isfinite(st.last_train_loss):
            raise NonFiniteLossError(f"train_loss is {st.last_train_loss} at step {st.step + 1}; "
                                     f"lower the learning rates or resume from {checkpoint_path(s)}")
        update_ema(s)
        st.step += 1
        if progress is not None:
            progress(st)
        _after_step(s, st, t0)


def use_ema_weights(s: Session) -> bool:
    """Load the EMA weights (records' final model) into the live model; True if it did."""
    if s.ema is None:
        return False
    with torch.no_grad():
        for k, v in s.base.state_dict().items():
            v.copy_(s.ema[k].to(v.dtype))
    s.log(f"ema:applied decay:{s.cfg.train.ema_decay}")
    return True


def run_training(cfg: RunConfig, resume_from: str | Path | None = None) -> tuple[Session, TrainState]:
    """Set up, warm up, train (optionally resuming); returns the session and final state."""
    s = setup(cfg)
    if resume_from:
        st = resume(s, Path(resume_from))
    else:
        warmup(s)
        st = TrainState()
    with step_progress(s) as progress:
        st = train_loop(s, st, progress)
    if s.rt.device.type == "cuda":
        s.log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB "
              f"reserved: {torch.cuda.max_memory_reserved() // 1024 // 1024} MiB")
    if use_ema_weights(s):
        validate_now(s, st, tag="ema_")  # the pre-quantization score of the weights actually packed
    return s, st


class _Progress:
    def __init__(self, s: Session):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), transient=True)
        self.task = self.bar.add_task("train", total=s.cfg.train.iterations, loss="-")

    def __call__(self, st: TrainState) -> None:
        self.bar.update(self.task, completed=st.step, loss=f"{st.last_train_loss:.4f}")


class step_progress:
    """Context manager yielding a progress callback on a TTY (rank 0), else None."""

    def __init__(self, s: Session):
        self.p = _Progress(s) if (s.rt.master and is_tty()) else None

    def __enter__(self):
        if self.p is None:
            return None
        self.p.bar.start()
        return self.p

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.bar.stop()
        return False
