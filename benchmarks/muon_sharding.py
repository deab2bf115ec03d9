"""Muon step time on 2 CPU processes (gloo), gradient communication included (issue 11):

- replicated: all-reduce every gradient (what DDP does), every rank orthogonalises every matrix;
- round-robin (the code before issue 11): gradients all-reduced, rank r orthogonalises matrices
  i % world == r into a zero-filled flat buffer, one all-reduce of the whole buffer;
- sharded (pgolf.train.optim.Muon now): one reduce-scatter per shape, Newton-Schulz batched on
  this rank's share, one all-gather per shape.

Matrices: the frontier's 6 per layer (q, k, v, o, MLP up, MLP down) at `--dim` (512 = frontier:
q/o 512x512, k/v 256x512, up 2048x512, down 512x2048), `--layers` of them. fp32 (CPU).

    python benchmarks/muon_sharding.py --layers 11 --dim 512 --steps 3 --out muon.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pgolf.train.optim import Muon, newton_schulz5

VARIANTS = ("replicated", "round_robin", "sharded")
LR, MOMENTUM, NS_STEPS = 0.02, 0.95, 5


def shapes(layers: int, dim: int) -> list[tuple[int, int]]:
    kv = dim // 2
    return [
        s for _ in range(layers) for s in ((dim, dim), (kv, dim), (kv, dim), (dim, dim), (4 * dim, dim), (dim, 4 * dim))
    ]


def orthogonal_update(g: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    buf.mul_(MOMENTUM).add_(g)
    u = newton_schulz5(g.add(buf, alpha=MOMENTUM), NS_STEPS)
    return u * max(1.0, u.size(0) / u.size(1)) ** 0.5


def replicated_step(params, bufs, world) -> None:
    for p in params:
        dist.all_reduce(p.grad)
        p.grad.div_(world)
    for p, b in zip(params, bufs):
        p.add_(orthogonal_update(p.grad, b), alpha=-LR)


def round_robin_step(params, bufs, world, rank) -> None:
    for p in params:
        dist.all_reduce(p.grad)
        p.grad.div_(world)
    flat = torch.zeros(sum(p.numel() for p in params))
    offset = 0
    for i, (p, b) in enumerate(zip(params, bufs)):
        if i % world == rank:
            flat[offset : offset + p.numel()] = orthogonal_update(p.grad, b).reshape(-1)
        offset += p.numel()
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.add_(flat[offset : offset + p.numel()].view_as(p), alpha=-LR)
        offset += p.numel()


def _worker(rank: int, world: int, init: str, out: str, layers: int, dim: int, steps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    grads = [torch.randn(*s, generator=g) for s in shapes(layers, dim)]
    times = {}
    for variant in VARIANTS * 2:  # each variant twice, interleaved; the first round warms up
        params = [nn.Parameter(torch.zeros(*s)) for s in shapes(layers, dim)]
        bufs = [torch.zeros(*s) for s in shapes(layers, dim)]
        muon = Muon(params, lr=LR, momentum=MOMENTUM, backend_steps=NS_STEPS)
        for _ in range(steps):
            for p, gr in zip(params, grads):
                p.grad = gr.clone()
            dist.barrier()
            t0 = time.perf_counter()
            with torch.no_grad():
                if variant == "replicated":
                    replicated_step(params, bufs, world)
                elif variant == "round_robin":
                    round_robin_step(params, bufs, world, rank)
                else:
                    muon.step()
            dist.barrier()
            times.setdefault(variant, []).append(time.perf_counter() - t0)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({v: statistics.median(ts[steps:]) for v, ts in times.items()}, f)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=11)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res_path = os.path.join(tmp, "res.json")
        mp.spawn(
            _worker,
            args=(args.world, os.path.join(tmp, "init"), res_path, args.layers, args.dim, args.steps),
            nprocs=args.world,
        )
        res = json.load(open(res_path))
    res = {
        "layers": args.layers,
        "dim": args.dim,
        "world": args.world,
        "seconds_per_step": res,
        "sharded_vs_replicated": res["replicated"] / res["sharded"],
        "sharded_vs_round_robin": res["round_robin"] / res["sharded"],
    }
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
