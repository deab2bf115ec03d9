"""Training: set-up, warm-up (undone), the step loop with the official wall-clock semantics,
periodic validation, checkpoints, then finalisation (pgolf.finish.finalize).

Same as the official script: grad_accum = 8 // world_size micro-steps per optimizer step so the
result does not depend on the GPU count; the training clock excludes validation; when the clock
passes MAX_WALLCLOCK_SECONDS the run stops after that step; the LR warmdown is time-based under
a cap. Warm-up steps prime compilation and are then undone (model, optimizers and data reset)
"so we aren't cheating" (modded-nanogpt); they compile every graph the run needs (recurrence off
and on: pgolf.train.compile). The timed loop does not read the device except at log steps
(pgolf.train.hostsync): the loss stays on the device, the ranks agree on the clock only when a
decision can change, the EMA is foreach ops, Muon is batched and sharded (pgolf.train.optim).
"""

from __future__ import annotations

import copy
import json
import os
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

from pgolf.core.config import ConfigError, RunConfig, config_to_dict
from pgolf.core.errors import PgolfError
from pgolf.core.progress import is_tty
from pgolf.core.runlog import RunLog
from pgolf.core.runtime import Runtime, autocast_for, init_runtime, sync_device
from pgolf.data.loader import DistributedTokenLoader, StreamPosition
from pgolf.data.source import ValData, load_val_data, resolve_data
from pgolf.eval.scoring import Score, evaluate
from pgolf.model.attention import attention_log_line
from pgolf.model.fp8 import enable_fp8
from pgolf.model.gpt import GPT
from pgolf.model.weights import load_matching
from pgolf.quant.registry import validate_config
from pgolf.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pgolf.train.compile import compile_enabled, compile_model, compile_note, compiled_graphs
from pgolf.train.eta import log_plan
from pgolf.train.hostsync import ClockSync, LossMonitor, check_due
from pgolf.train.optim import Muon, build_optimizers, clip_grad_norm, split_params
from pgolf.train.rundir import RunFolder, atomic_write_text, check_writable, discard_failed_setup, open_run_folder
from pgolf.train.schedules import lr_multiplier, muon_momentum_at, set_schedules, training_cap_ms


class NonFiniteLossError(PgolfError, RuntimeError):
    """Training produced a NaN/inf loss; the last finite checkpoint (if any) is named."""


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
    ema: dict[str, Tensor] | None = None  # EMA of the weights (fp32; see update_ema)
    autocast: object = None
    ema_steps: int = 0  # updates folded into the EMA
    folder: RunFolder | None = None  # the locked run folder (rank 0)
    last_checkpoint: tuple[Path, int] | None = None  # (path, step) of the newest finite checkpoint
    clock: ClockSync | None = None  # the training clock the ranks agree on (set by train_loop)


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
    """Compiled (pgolf.train.compile) and, under torch.distributed, DDP-wrapped for every
    parameter except Muon's: sharded Muon reduce-scatters those itself (pgolf.train.optim)."""
    model: nn.Module = compile_model(base, cfg) if compile_enabled(cfg, rt.device) else base
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        muon = {id(p) for p in split_params(base)["muon"]}
        ignore = [n for n, p in model.named_parameters() if id(p) in muon]
        DDP._set_params_and_buffers_to_ignore_for_model(model, ignore)
        ids = [rt.local_rank] if rt.device.type == "cuda" else None
        model = DDP(model, device_ids=ids, broadcast_buffers=False)
    return model


def shared_run_id(rt: Runtime) -> str:
    """A fresh run id, the same on every rank (rank 0's, broadcast)."""
    ids = [str(uuid.uuid4())]
    if rt.distributed:
        dist.broadcast_object_list(ids, src=0)
    return ids[0]


def cpu_threads(requested: int) -> tuple[int, str]:
    """(threads, why): the configured count, else the cores not already busy (cores minus the
    1-minute load average, shared among this machine's torchrun processes), at least 1.
    Oversubscribing 2 cores with a second job made steps ~15x slower (issue 14)."""
    if requested > 0:
        return requested, f"threads:{requested} (set)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    n = max(1, int(round(cores - load)) // local)
    return n, f"threads:{n} (auto: cores:{cores} load1:{load:.2f} processes:{local})"


def setup(cfg: RunConfig, resume: bool = False, overwrite: bool = False, fetch_data=None) -> Session:
    """Runtime, run folder (locked), logging, data, model, optimizers, loader. A failure during
    set-up removes the run folder and log it had just created."""
    validate_config(cfg)
    rt = init_runtime(cfg.device)
    threads_note = ""
    if rt.device.type == "cpu":
        n, threads_note = cpu_threads(cfg.threads)
        torch.set_num_threads(n)
    elif cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    cfg.run_id = cfg.run_id or shared_run_id(rt)
    run_dir = Path(cfg.out_dir) / cfg.run_id
    log_path = Path("logs") / f"{cfg.run_id}.txt"
    log_existed, folder = log_path.exists(), None
    if rt.master:
        check_writable(log_path.parent)
        folder = open_run_folder(run_dir, resume, overwrite)
    try:
        return _setup_session(cfg, rt, run_dir, RunLog(log_path, master=rt.master), folder, threads_note, fetch_data)
    except BaseException:
        discard_failed_setup(folder, log_path if rt.master else None, log_existed)
        raise


def _setup_session(
    cfg: RunConfig, rt: Runtime, run_dir: Path, log: RunLog, folder, threads_note: str, fetch_data=None
) -> Session:
    if rt.master:
        atomic_write_text(run_dir / "config.json", json.dumps(config_to_dict(cfg), indent=2) + "\n")
    log(json.dumps(config_to_dict(cfg), sort_keys=True), console=False)
    data = resolve_data(cfg, log, fetch_data)
    val = load_val_data(cfg, data)
    base = build_model(cfg, rt.device)
    if cfg.model.fp8:  # before compile/DDP and the optimizers (same Parameters either way)
        log(enable_fp8(base, rt.device))
    model = wrap_model(base, cfg, rt)
    opts = build_optimizers(base, cfg.train, cfg.model.tie_embeddings)
    accum = grad_accum_steps(cfg, rt.world_size)
    loader = DistributedTokenLoader(data.train_pattern, rt.rank, rt.world_size, rt.device)
    s = Session(
        cfg,
        rt,
        log,
        run_dir,
        base,
        model,
        opts,
        loader,
        data.train_pattern,
        val,
        accum,
        autocast=autocast_for(rt.device),
        folder=folder,
    )
    _log_setup(s, data)
    if threads_note:
        s.log(threads_note)
    return s


def _log_setup(s: Session, data) -> None:
    c, m = s.cfg, s.cfg.model
    s.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={data.tokenizer_path}")
    s.log(f"train_loader:dataset:{Path(data.data_path).name} train_shards:{data.num_train_shards}")
    s.log(
        f"val_loader:shards pattern={data.val_pattern} tokens:{s.val.tokens.numel() - 1} val_bytes:{s.val.total_bytes}"
    )
    s.log(f"model_params:{sum(p.numel() for p in s.base.parameters())}")
    s.log(f"world_size:{s.rt.world_size} grad_accum_steps:{s.grad_accum} device:{s.rt.device.type}")
    s.log(f"attention_mode:gqa num_heads:{m.num_heads} num_kv_heads:{m.num_kv_heads}")
    s.log(attention_log_line(m.attn_kernel, m.doc_mask, s.rt.device.type))
    s.log(compile_note(c, s.rt.device))
    t = c.train
    s.log(
        f"train_batch_tokens:{t.train_batch_tokens} train_seq_len:{t.train_seq_len} iterations:{t.iterations} "
        f"warmup_steps:{t.warmup_steps} max_wallclock_seconds:{t.max_wallclock_seconds:.3f}"
    )
    s.log(f"seed:{c.seed} preset:{c.preset}")


def forward_loss(s: Session, x: Tensor, y: Tensor) -> Tensor:
    with s.autocast:
        return s.model(x, y)


def train_step(s: Session, st: TrainState, lr_mul: float) -> Tensor:
    """One optimizer step over grad_accum micro-batches; returns this rank's mean train loss as a
    device scalar (read on the host only at log steps: pgolf.train.hostsync)."""
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
        clip_grad_norm(list(s.base.parameters()), s.optimizers, t.grad_clip_norm)
    for opt in s.optimizers:
        opt.step()
    for opt in s.optimizers:
        opt.zero_grad(set_to_none=True)
    return total / s.grad_accum


def new_loader(s: Session, position: StreamPosition | None = None) -> DistributedTokenLoader:
    return DistributedTokenLoader(s.train_pattern, s.rt.rank, s.rt.world_size, s.rt.device, position)


def recurrence_later(s: Session) -> bool:
    """Whether depth recurrence is configured and switches on after the first step."""
    m = s.cfg.model
    return bool(m.recur_layers) and m.recur_loops > 1 and m.recur_start_frac > 0


def warmup_plan(s: Session) -> list[bool]:
    """Recurrence flag of each warm-up step: with a compiled model whose recurrence switches on
    during the run, the second half (at least one step) runs with it on, so both graphs are
    compiled before the clock starts; otherwise all steps as the run starts."""
    n = s.cfg.train.warmup_steps
    if n <= 0 or not (compile_enabled(s.cfg, s.rt.device) and recurrence_later(s)):
        return [False] * max(n, 0)
    n = max(n, 2)
    return [i >= n // 2 for i in range(n)]


def warmup(s: Session) -> float | None:
    """Run warmup_steps real steps to prime kernels/compilation, then restore the initial state
    exactly (weights, optimizer state, recurrence flag, data position). Returns the seconds per
    step of the warm-up steps after the first (the pace the plan uses), or None without warm-up."""
    plan = warmup_plan(s)
    n = len(plan)
    if n <= 0:
        return None
    model0 = {k: v.detach().clone() for k, v in s.base.state_dict().items()}
    opts0 = [copy.deepcopy(o.state_dict()) for o in s.optimizers]
    recur0 = s.base.recur_active
    sync_device(s.rt)
    stamps = [time.perf_counter()]
    for i, recur in enumerate(plan):
        s.base.set_recurrence(recur or recur0)
        train_step(s, TrainState(), lr_mul=1.0)
        sync_device(s.rt)
        stamps.append(time.perf_counter())
        if n <= 20 or (i + 1) % 10 == 0 or i + 1 == n:
            s.log(f"warmup_step:{i + 1}/{n}" + (" recurrence:on" if recur else ""))
    s.base.set_recurrence(recur0)
    s.base.load_state_dict(model0, strict=True)
    for o, sd in zip(s.optimizers, opts0, strict=True):
        o.load_state_dict(sd)
    s.loader = new_loader(s)
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    pace = sorted(durations[1:])[(n - 1) // 2] if n > 1 else None  # the first step pays for compilation
    if compile_enabled(s.cfg, s.rt.device):
        s.log(
            f"compile_s:{warmup_compile_seconds(durations, pace):.1f} scope:{s.cfg.train.compile_scope} "
            "(cold compile in the untimed warm-up)"
        )
    return (stamps[-1] - stamps[1]) / (n - 1) if n > 1 else None


def warmup_compile_seconds(durations: list[float], pace: float | None) -> float:
    """Seconds the warm-up spent beyond its steady pace: the compile (each graph's first step)."""
    if pace is None:
        return durations[0] if durations else 0.0
    return sum(max(d - pace, 0.0) for d in durations)


def validate_now(s: Session, st: TrainState, tag: str = "") -> Score:
    """Official mid-training validation: non-overlapping windows of train_seq_len."""
    e, t = s.cfg.eval, s.cfg.train
    seqs = max(e.val_batch_size // (s.rt.world_size * s.grad_accum * t.train_seq_len), 1)
    score = evaluate(
        s.base,
        s.val.tokens,
        s.val.tables,
        window=t.train_seq_len,
        stride=0,
        batch_seqs=seqs,
        rank=s.rt.rank,
        world_size=s.rt.world_size,
        device=s.rt.device,
        autocast=s.autocast,
    )
    s.log(
        f"{tag}step:{st.step}/{t.iterations} val_loss:{score.val_loss:.4f} val_bpb:{score.val_bpb:.4f} "
        f"train_time:{st.training_time_ms:.0f}ms step_avg:{st.training_time_ms / max(st.step, 1):.2f}ms"
    )
    st.history.append(
        {
            "step": st.step,
            "val_loss": score.val_loss,
            "val_bpb": score.val_bpb,
            "train_time_ms": st.training_time_ms,
            "ema": bool(tag),
        }
    )
    return score


EMA_WARMUP = 10  # warm-start constant: decay_t = min(decay, (1 + t) / (EMA_WARMUP + t)) (TensorFlow's num_updates rule)


def ema_decay_at(decay: float, steps: int) -> float:
    """The decay used for the `steps`-th update: short while few weights have been averaged, the
    configured decay once (1 + t) / (10 + t) passes it (t = 215 at 0.96, 2,560 at 0.9965)."""
    return min(decay, (1.0 + steps) / (EMA_WARMUP + steps))


def update_ema(s: Session) -> None:
    """Fold the current weights into the EMA, warm-started: the first update copies the weights
    and the decay grows with the number of updates, so a short run's EMA follows its recent
    weights instead of keeping 0.96^27 ~ 1/3 of its first ones (issue 14: 3.11 -> 3.29 bpb).
    A long run reaches the configured decay early; its final EMA is the records' plain one."""
    decay = s.cfg.train.ema_decay
    if decay <= 0:
        return
    with torch.no_grad():
        if s.ema is None:
            s.ema = {k: v.detach().float().clone() for k, v in s.base.state_dict().items()}
            s.ema_steps = 1
            return
        s.ema_steps += 1
        d = ema_decay_at(decay, s.ema_steps)
        state = s.base.state_dict()
        ema = [s.ema[k] for k in state]
        torch._foreach_mul_(ema, d)  # one fused kernel per dtype on GPU instead of 2 per tensor
        torch._foreach_add_(ema, [v.float() for v in state.values()], alpha=1 - d)


def maybe_switch_recurrence(s: Session, st: TrainState, elapsed_ms: float) -> None:
    """Depth recurrence switches on once the configured fraction of training has passed (by
    step count, or under a cap by the training clock: this process's `elapsed_ms` on one
    process, the clock the ranks last agreed on under torch.distributed). Every rank decides
    alike without a collective here."""
    m, t = s.cfg.model, s.cfg.train
    if st.recur_active or not m.recur_layers or m.recur_loops <= 1:
        return
    cap_ms = training_cap_ms(t)
    if cap_ms:
        agreed = s.clock.agreed_ms if (s.rt.distributed and s.clock is not None) else elapsed_ms
        frac = -1.0 if agreed is None else agreed / cap_ms
    else:
        frac = st.step / max(t.iterations, 1)
    if frac >= m.recur_start_frac:
        st.recur_active = True
        s.base.set_recurrence(True)
        s.log(f"recurrence:on step:{st.step} layers:{m.recur_layers} loops:{m.recur_loops}")


def checkpoint_path(s: Session) -> Path:
    return s.run_dir / "checkpoint.safetensors"


def weights_finite(s: Session) -> bool:
    """Every parameter (and EMA accumulator) finite: a checkpoint is only worth keeping then."""
    tensors = list(s.base.parameters()) + (list(s.ema.values()) if s.ema else [])
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def write_checkpoint(s: Session, st: TrainState, elapsed_ms: float) -> None:
    """Checkpoint with the exact training time used so far (`elapsed_ms`, the live clock, not the
    last validation's), so a resumed run keeps the same wall-clock cap and warmdown. Weights that
    are no longer finite are not written: the last finite checkpoint stays."""
    finite = weights_finite(s)  # every rank computes it (identical weights), only rank 0 writes
    if not finite:
        kept = f"{s.last_checkpoint[0]} (step {s.last_checkpoint[1]})" if s.last_checkpoint else "none"
        s.log(f"checkpoint:skipped step:{st.step} non-finite weights; last finite checkpoint: {kept}")
        return
    path = checkpoint_path(s)
    for opt in s.optimizers:  # sharded Muon: rank 0 must hold every rank's momentum (a collective)
        if isinstance(opt, Muon):
            opt.gather_momentum()
    if s.rt.master:
        extra = {
            "step": st.step,
            "training_time_ms": elapsed_ms,
            "recur_active": st.recur_active,
            "stop_after_step": st.stop_after_step,
            "loader": [s.loader.stream.file_idx, s.loader.stream.pos],
            "history": st.history,
            "world_size": s.rt.world_size,
            "ema_steps": s.ema_steps,
        }
        save_checkpoint(path, s.base.state_dict(), s.optimizers, extra, s.ema)
    s.last_checkpoint = (path, st.step)


def resume(s: Session, path: Path) -> TrainState:
    """Restore model, optimizers, EMA, loader position and clocks from a checkpoint."""
    model_sd, opt_sds, extra, ema = load_checkpoint(path)
    if extra.get("world_size", 1) != s.rt.world_size:
        raise CheckpointError(
            f"{path}: written with world_size={extra.get('world_size')}, resuming with {s.rt.world_size}"
        )
    s.base.set_recurrence(bool(extra["recur_active"]))
    load_matching(s.base, model_sd, path)
    load_optimizers_keeping_config(s, opt_sds, path)
    s.ema = ema
    # checkpoints written before the warm-started EMA: continue at the configured decay
    s.ema_steps = int(extra.get("ema_steps", 10**9))
    s.loader = new_loader(s, StreamPosition(*extra["loader"]))
    st = TrainState(
        step=int(extra["step"]),
        training_time_ms=float(extra["training_time_ms"]),
        recur_active=bool(extra["recur_active"]),
        history=list(extra.get("history", [])),
        stop_after_step=extra.get("stop_after_step"),
    )
    s.last_checkpoint = (path, st.step)
    s.log(f"resumed:{path} step:{st.step} train_time:{st.training_time_ms:.0f}ms")
    return st


def load_optimizers_keeping_config(s: Session, opt_sds: list[dict], path: Path) -> None:
    """Optimizer state (moments, momentum buffers) from the checkpoint, hyperparameters (base
    LRs, weight decay, betas, ...) from the current config: a resume with new learning rates
    uses them, and every change is logged."""
    if len(opt_sds) != len(s.optimizers):
        raise CheckpointError(f"{path}: holds {len(opt_sds)} optimizers, this config builds {len(s.optimizers)}")
    for i, (opt, sd) in enumerate(zip(s.optimizers, opt_sds)):
        wanted = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        try:
            opt.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: optimizer {i} does not match this config ({exc})") from None
        for j, (group, want) in enumerate(zip(opt.param_groups, wanted)):
            for key, value in want.items():
                if key not in ("lr", "momentum") and group.get(key) != value:
                    s.log(f"resume:changed optimizer{i}.group{j}.{key} {group.get(key)} -> {value}")
                group[key] = value


def remaining_s(st: TrainState, t, elapsed_ms: float) -> float:
    """Seconds of training left: to the cap under a wall clock, else steps left at the mean pace."""
    cap_ms = training_cap_ms(t)
    if cap_ms is not None:
        return max(cap_ms - elapsed_ms, 0.0) / 1000.0
    return max(t.iterations - st.step, 0) * elapsed_ms / max(st.step, 1) / 1000.0


def read_loss(s: Session, st: TrainState, monitor: LossMonitor) -> None:
    """Read the device loss record (one host sync); a non-finite loss stops the run."""
    st.last_train_loss, bad = monitor.read(s.rt)
    if bad is not None:
        raise NonFiniteLossError(nan_advice(s, st, bad))


def _after_step(s: Session, st: TrainState, t0: float, monitor: LossMonitor) -> None:
    """Train-loss logging (the only host read of the loss), the wall-clock stop decision on the
    agreed clock, checkpoints."""
    t = s.cfg.train
    approx_ms = st.training_time_ms + 1000.0 * (time.perf_counter() - t0)
    logged = t.train_log_every > 0 and (
        st.step <= 10 or st.step % t.train_log_every == 0 or st.stop_after_step is not None
    )
    if check_due(st.step, t.train_log_every, logged):
        read_loss(s, st, monitor)
    if logged:
        s.log(
            f"step:{st.step}/{t.iterations} train_loss:{st.last_train_loss:.4f} "
            f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / st.step:.2f}ms "
            f"remaining:{remaining_s(st, t, approx_ms):.0f}s"
        )
    checkpoint = t.checkpoint_every > 0 and st.step % t.checkpoint_every == 0
    agreed = s.clock.agree(st.step, approx_ms, force=logged or checkpoint)
    cap_ms = training_cap_ms(t)
    if st.stop_after_step is None and cap_ms is not None and agreed is not None and agreed >= cap_ms:
        st.stop_after_step = st.step
    if checkpoint:
        write_checkpoint(s, st, approx_ms)


def clock_boundaries(s: Session, st: TrainState) -> list[float]:
    """Training-clock values (ms) at which a decision changes: the cap, the recurrence start."""
    cap_ms = training_cap_ms(s.cfg.train)
    if cap_ms is None:
        return []
    out = [cap_ms]
    if not st.recur_active and recurrence_later(s):
        out.append(s.cfg.model.recur_start_frac * cap_ms)
    return out


def train_loop(s: Session, st: TrainState, progress=None) -> TrainState:
    """The official loop: validate on schedule (clock paused), step, stop at the cap."""
    t = s.cfg.train
    monitor = LossMonitor(s.rt.device, st.step)
    s.clock = ClockSync(s.rt, clock_boundaries(s, st), start=(st.step, st.training_time_ms), next_step=st.step)
    graphs0 = compiled_graphs() if compile_enabled(s.cfg, s.rt.device) else None
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
            _loop_end(s, st, monitor, graphs0)
            return st
        elapsed = st.training_time_ms + 1000.0 * (time.perf_counter() - t0)
        maybe_switch_recurrence(s, st, elapsed)
        monitor.record(train_step(s, st, lr_multiplier(st.step, elapsed, t)))
        update_ema(s)
        st.step += 1
        if progress is not None:
            progress(st)
        _after_step(s, st, t0, monitor)


def _loop_end(s: Session, st: TrainState, monitor: LossMonitor, graphs0: int | None) -> None:
    """Last read of the loss record, the early-stop line, and how many graphs were compiled
    inside the timed loop (0 when the warm-up compiled them all)."""
    t = s.cfg.train
    if st.step > 0:
        read_loss(s, st, monitor)
    if st.stop_after_step is not None and st.step < t.iterations:
        s.log(f"stopping_early: wallclock_cap train_time:{st.training_time_ms:.0f}ms step:{st.step}/{t.iterations}")
    if graphs0 is not None:
        s.log(f"compile:graphs_in_timed_loop:{compiled_graphs() - graphs0} mode:{t.compile_mode}")
    if s.rt.distributed:
        s.log(f"clock_exchanges:{s.clock.exchanges} steps:{st.step}")


def nan_advice(s: Session, st: TrainState, bad_step: int) -> str:
    """What a NaN run can do next: resume from the last finite checkpoint with lower learning
    rates (a resume applies the new config's LRs), or rerun with lower ones."""
    head = f"train_loss is {st.last_train_loss} at step {bad_step}"
    if s.last_checkpoint is None:
        return f"{head}; no checkpoint was written (train.checkpoint_every=0): rerun with lower learning rates"
    path, step = s.last_checkpoint
    return (
        f"{head}; the last finite checkpoint is {path} (step {step}): resume it with lower learning rates, "
        f"e.g. --resume {path} --set train.matrix_lr={s.cfg.train.matrix_lr / 2:g}"
    )


def use_ema_weights(s: Session) -> bool:
    """Load the EMA weights (records' final model) into the live model; True if it did."""
    if s.ema is None:
        return False
    with torch.no_grad():
        for k, v in s.base.state_dict().items():
            v.copy_(s.ema[k].to(v.dtype))
    s.log(f"ema:applied decay:{s.cfg.train.ema_decay}")
    return True


def run_training(
    cfg: RunConfig, resume_from: str | Path | None = None, overwrite: bool = False, fetch_data=None
) -> tuple[Session, TrainState]:
    """Set up, warm up, train (optionally resuming); returns the session and final state.
    `fetch_data` may download missing shards (the command line passes one; a submission not)."""
    s = setup(cfg, resume=bool(resume_from), overwrite=overwrite, fetch_data=fetch_data)
    try:
        if resume_from:
            st, step_s = resume(s, Path(resume_from)), None
        else:
            step_s, st = warmup(s), TrainState()
        log_plan(s, step_s)
        with step_progress(s) as progress:
            st = train_loop(s, st, progress)
    except BaseException:
        if s.folder is not None:
            s.folder.release()  # a killed or failed run leaves its folder free to resume
        raise
    if s.rt.device.type == "cuda":
        s.log(
            f"peak memory allocated: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB "
            f"reserved: {torch.cuda.max_memory_reserved() // 1024 // 1024} MiB"
        )
    if use_ema_weights(s):
        validate_now(s, st, tag="ema_")  # the pre-quantization score of the weights actually packed
    return s, st


class _Progress:
    """The training bar: steps out of iterations, or seconds out of the cap under a wall clock
    (a capped run's iterations is only an upper bound, often 1,000,000)."""

    def __init__(self, s: Session):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.cap_s = (training_cap_ms(s.cfg.train) or 0.0) / 1000.0
        unit = "s" if self.cap_s else "steps"
        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} " + unit),
            TextColumn("step {task.fields[step]} loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = self.bar.add_task("train", total=self.cap_s or s.cfg.train.iterations, step=0, loss="-")
        self.t0, self.start_ms = time.perf_counter(), None

    def __call__(self, st: TrainState) -> None:
        if self.start_ms is None:  # a resumed run starts part-way along the clock
            self.start_ms = st.training_time_ms
        done = (self.start_ms / 1000.0 + time.perf_counter() - self.t0) if self.cap_s else st.step
        self.bar.update(
            self.task, completed=min(done, self.cap_s or done), step=st.step, loss=f"{st.last_train_loss:.4f}"
        )


class step_progress:
    """Context manager yielding a progress callback on a TTY (rank 0), else None (then the
    periodic step log lines, with their remaining time, are the progress)."""

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
