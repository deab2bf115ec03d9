"""torchrun on CPU (gloo): 2 processes train to the same result as 1 process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

TINY_ARGS = [
    "--preset", "naive-baseline", "--device", "cpu", "--iterations", "6", "--max-wallclock-seconds", "0",
    "--val-loss-every", "0", "--set", "model.vocab_size=320", "--set", "model.num_layers=2",
    "--set", "model.model_dim=32", "--set", "model.num_heads=2", "--set", "model.num_kv_heads=1",
    "--set", "train.train_seq_len=32", "--set", "train.train_batch_tokens=512", "--set", "train.warmup_steps=1",
    "--set", "train.warmdown_iters=2", "--set", "train.train_log_every=1", "--set", "eval.val_batch_size=4096",
    "--set", "quant.keep_float_max_numel=256",
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
    two_out = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "pgolf", "train"] + args, tmp_path)
    assert "world_size:2 grad_accum_steps:4" in two_out
    two = final_numbers(two_out)
    assert len([p for p in (tmp_path / "runs").iterdir() if p.name != "one"]) == 1
    assert len(one["train_losses"]) == len(two["train_losses"]) == 6
    for a, b in zip(one["train_losses"], two["train_losses"]):
        assert a == pytest.approx(b, abs=2e-4)
    for key in ("step:6/6 val_loss", "final_int8_zlib_roundtrip_exact val_loss"):
        assert one[key] == pytest.approx(two[key], abs=2e-4)
