"""Host syncs per training step (issue 11), counted, not timed: every Tensor.item / tolist / cpu /
__float__ / __int__ / __bool__, torch.cuda.synchronize, pgolf's sync_device (host syncs) and every
collective (reported apart: on NCCL a collective without a host read does not stop the host)
called from pgolf code while the timed loop runs, attributed to the step in progress. A tiny
frontier-like model (EMA, clipping, row-normalised Muon, a wall-clock cap, recurrence by the
clock) on the FineWeb sample, 40 steps, train loss logged at steps 1-10 only. Works on old and new
code alike (it patches trainer.train_loop / train_step / validate_now):

    PYTHONPATH=/tmp/old/src python benchmarks/sync_count.py --out old.json
    python benchmarks/sync_count.py --out new.json
    python benchmarks/sync_count.py --world 2 --out new2.json      # 2 gloo processes (torchrun)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist

import pgolf
from pgolf.core.presets import get_preset
from pgolf.train import trainer as trainer_mod

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
PGOLF_DIR = str(Path(pgolf.__file__).parent)
STEPS, LOGGED = 40, 10
TENSOR_SYNCS = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__")
COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "all_gather_into_tensor",
    "all_gather_single",
    "reduce_scatter_tensor",
    "reduce_scatter_single",
    "barrier",
)


def config():
    cfg = get_preset("frontier-cpu-proxy")
    m, t = cfg.model, cfg.train
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.bigram_buckets, m.parallel_from = 2, 64, 2, 1, 0, 1
    m.recur_layers, m.recur_loops, m.recur_start_frac = "0-1", 2, 0.5
    t.iterations, t.max_wallclock_seconds, t.reserve_seconds, t.warmup_steps = STEPS, 3600.0, 0.0, 1
    t.train_seq_len, t.train_batch_tokens, t.train_log_every, t.val_loss_every = 128, 2048, 1000, 0
    cfg.eval.val_max_tokens, cfg.eval.final_sliding = 8192, False
    data = SHARED / "fineweb_sample" / "sp1024"
    cfg.data.data_path, cfg.data.tokenizer_path = str(data), str(SHARED / "tokenizers" / "fineweb_1024_bpe.model")
    cfg.device, cfg.threads, cfg.seed = "cpu", 1, 1337
    return cfg


class Counts:
    def __init__(self):
        self.active, self.step, self.by_step = False, 0, {}

    def wrap(self, owner, name: str) -> None:
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            if self.active and sys._getframe(1).f_code.co_filename.startswith(PGOLF_DIR):
                self.by_step.setdefault(self.step, Counter())[name] += 1
            return real(*args, **kwargs)

        setattr(owner, name, counted)


def instrument() -> Counts:
    c = Counts()
    for name in TENSOR_SYNCS:
        c.wrap(torch.Tensor, name)
    for name in COLLECTIVES:
        if hasattr(dist, name):
            c.wrap(dist, name)
    c.wrap(torch.cuda, "synchronize")
    c.wrap(trainer_mod, "sync_device")
    from pgolf.train import optim as optim_mod

    for name in ("_reduce_scatter", "_all_gather"):  # sharded Muon's collectives (new code)
        if hasattr(optim_mod, name):
            c.wrap(optim_mod, name)
    real_loop, real_step = trainer_mod.train_loop, trainer_mod.train_step

    def loop(*a, **k):
        c.active = True
        try:
            return real_loop(*a, **k)
        finally:
            c.active = False

    def step(s, st, lr_mul):
        c.step = st.step + 1
        return real_step(s, st, lr_mul)

    trainer_mod.train_loop, trainer_mod.train_step = loop, step
    trainer_mod.validate_now = lambda *a, **k: None
    return c


def summary(c: Counts) -> dict:
    """Per step: unlogged steps 11..39 (the last step also holds the loop's end: the final read and
    the clock syncs around the last validation), logged steps 1..10 (step 1 also the loop start)."""
    quiet = [sum(c.by_step.get(s, Counter()).values()) for s in range(LOGGED + 1, STEPS)]
    logged = [sum(c.by_step.get(s, Counter()).values()) for s in range(1, LOGGED + 1)]
    kinds = Counter()
    for s in range(LOGGED + 1, STEPS):
        kinds.update(c.by_step.get(s, Counter()))
    host = set(TENSOR_SYNCS) | {"synchronize", "sync_device"}
    return {
        "steps": STEPS,
        "calls_per_unlogged_step": sum(quiet) / len(quiet),
        "calls_per_logged_step": sum(logged) / len(logged),
        "host_syncs_per_unlogged_step": sum(v for k, v in kinds.items() if k in host) / len(quiet),
        "collectives_per_unlogged_step": sum(v for k, v in kinds.items() if k not in host) / len(quiet),
        "unlogged_kinds_per_step": {k: v / len(quiet) for k, v in kinds.items()},
        "last_step": dict(c.by_step.get(STEPS, Counter())),
        "total_in_loop": sum(sum(v.values()) for v in c.by_step.values()),
    }


def worker(out: str) -> None:
    c = instrument()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        cfg = config()
        cfg.run_id = "syncs"
        trainer_mod.run_training(cfg)
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{out}.rank{rank}").write_text(json.dumps(summary(c)) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--out", default="/tmp/sync_count.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker or args.world == 1:
        worker(args.out)
    else:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={args.world}",
                __file__,
                "--worker",
                "--out",
                args.out,
            ],
            check=True,
            env=env,
        )
    res = json.loads(Path(f"{args.out}.rank0").read_text())
    print(json.dumps(res, indent=1))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
