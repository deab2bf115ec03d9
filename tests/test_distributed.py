"""torchrun on CPU (gloo): 2 processes train to the same result as 1 process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

TINY_ARGS = [
    "--preset",
    "naive-baseline",
    "--device",
    "cpu",
    "--iterations",
    "6",
    "--max-wallclock-seconds",
    "0",
    "--val-loss-every",
    "0",
    "--set",
    "model.vocab_size=320",
    "--set",
    "model.num_layers=2",
    "--set",
    "model.model_dim=32",
    "--set",
    "model.num_heads=2",
    "--set",
    "model.num_kv_heads=1",
    "--set",
    "train.train_seq_len=32",
    "--set",
    "train.train_batch_tokens=512",
    "--set",
    "train.warmup_steps=1",
    "--set",
    "train.warmdown_iters=2",
    "--set",
    "train.train_log_every=1",
    "--set",
    "eval.val_batch_size=4096",
    "--set",
    "quant.keep_float_max_numel=256",
]


def run(cmd: list[str], cwd) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def final_numbers(out: str) -> dict[str, float]:
    vals = {}
    for key in ("step:6/6 val_loss", "final_int8_zlib_roundtrip_exact val_loss"):
        m = re.search(re.escape(key) + r":([0-9.]+)", out)
        assert m, f"{key} missing in output:\n{out[-2000:]}"
        vals[key] = float(m.group(1))
    train = [float(x) for x in re.findall(r"step:\d+/6 train_loss:([0-9.]+)", out)]
    vals["train_losses"] = train
    return vals


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_dataset, tmp_path):
    data, tok = tiny_dataset
    args = TINY_ARGS + ["--data", str(data), "--tokenizer", str(tok)]
    one = final_numbers(run([sys.executable, "-m", "pgolf", "train", "--run-id", "one"] + args, tmp_path))
    # no run id: rank 0 generates one and every rank must use it (one run folder, one artifact)
    two_out = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf", "train"]
        + args,
        tmp_path,
    )
    assert "world_size:2 grad_accum_steps:4" in two_out
    two = final_numbers(two_out)
    assert len([p for p in (tmp_path / "runs").iterdir() if p.name != "one"]) == 1
    assert len(one["train_losses"]) == len(two["train_losses"]) == 6
    for a, b in zip(one["train_losses"], two["train_losses"]):
        assert a == pytest.approx(b, abs=2e-4)
    for key in ("step:6/6 val_loss", "final_int8_zlib_roundtrip_exact val_loss"):
        assert one[key] == pytest.approx(two[key], abs=2e-4)


FRONTIER_BITS = [  # the frontier's optimizer and model features that touch the distributed step
    "--set",
    "train.grad_clip_norm=0.3",
    "--set",
    "train.muon_row_norm=true",
    "--set",
    "train.muon_weight_decay=0.05",
    "--set",
    "train.muon_ns=polar_express",
    "--set",
    "train.ema_decay=0.9",
    "--set",
    "model.recur_layers=0-1",
    "--set",
    "model.recur_loops=2",
    "--set",
    "model.recur_start_frac=0.5",
]


@pytest.mark.slow
def test_torchrun_sharded_muon_with_clipping_ema_and_recurrence_matches_one(tiny_dataset, tmp_path):
    """Sharded Muon (reduce-scatter, Newton-Schulz on each rank's share, all-gather) with clipping
    over sharded gradients, EMA and a recurrence switch: 2 processes train as 1 does."""
    data, tok = tiny_dataset
    args = TINY_ARGS + FRONTIER_BITS + ["--data", str(data), "--tokenizer", str(tok)]
    one_out = run([sys.executable, "-m", "pgolf", "train", "--run-id", "one"] + args, tmp_path)
    two_out = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pgolf",
            "train",
            "--run-id",
            "two",
        ]
        + args,
        tmp_path,
    )
    one, two = final_numbers(one_out), final_numbers(two_out)
    assert "recurrence:on step:3" in one_out and "recurrence:on step:3" in two_out
    for a, b in zip(one["train_losses"], two["train_losses"]):
        assert a == pytest.approx(b, abs=2e-4)
    for key in ("step:6/6 val_loss", "final_int8_zlib_roundtrip_exact val_loss"):
        assert one[key] == pytest.approx(two[key], abs=2e-4)


@pytest.mark.slow
def test_torchrun_ranks_agree_on_the_cap_with_few_clock_exchanges(tiny_dataset, tmp_path):
    """Under a wall-clock cap the ranks stop at the same step although they exchange their clocks
    only on the planned steps (pgolf.train.hostsync), far fewer than one per step."""
    data, tok = tiny_dataset
    args = [a for a in TINY_ARGS] + ["--data", str(data), "--tokenizer", str(tok)]
    args[args.index("--iterations") + 1] = "100000"
    args[args.index("--max-wallclock-seconds") + 1] = "4"
    args[args.index("train.train_log_every=1")] = "train.train_log_every=0"
    out = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pgolf",
            "train",
            "--run-id",
            "cap",
        ]
        + args,
        tmp_path,
    )
    assert "stopping_early: wallclock_cap" in out
    m = re.search(r"clock_exchanges:(\d+) steps:(\d+)", out)
    assert m, out[-2000:]
    exchanges, steps = int(m.group(1)), int(m.group(2))
    assert steps >= 40 and exchanges <= steps // 4, (exchanges, steps)
