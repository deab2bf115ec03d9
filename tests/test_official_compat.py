"""Compatibility with the official script, against files the official `train_gpt.py` wrote.

The oracle is ../shared/data/official/ (its README has the exact configuration): a checkpoint and
an int8+zlib artifact written by the official script at 2x128 on the FineWeb sample, and the
scores it logged. pgolf must load both, reproduce the logged roundtrip score through `pgolf
eval`, and its own int8 quantizer must reproduce the official artifact's tensors bit for bit."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from pgolf.cli.main import main
from pgolf.core.config import QuantConfig
from pgolf.core.presets import naive_baseline
from pgolf.model.inventory import quant_groups_for
from pgolf.quant.container import ArtifactError
from pgolf.quant.official import load_official_checkpoint
from pgolf.quant.scheme_int8 import quantize_int8, quantize_int8_rows
from pgolf.quant.state import dequantize

# What the official script logged for these files (official/README.md).
OFFICIAL_ROUNDTRIP = {"val_loss": 3.79157570, "val_bpb": 2.27176326}  # final_int8_zlib_roundtrip_exact, 8 decimals
OFFICIAL_FP32 = {"val_loss": 3.7891, "val_bpb": 2.2703}  # the last validation line, 4 decimals
OFFICIAL_SHAPE = [
    "--set",
    "model.num_layers=2",
    "--set",
    "model.model_dim=128",
    "--set",
    "model.num_heads=4",
    "--set",
    "model.num_kv_heads=2",
    "--set",
    "model.mlp_mult=2",
    "--set",
    "train.train_seq_len=256",
]


@pytest.fixture(scope="module")
def official(shared_data) -> Path:
    root = shared_data / "official"
    if not (root / "final_model.int8.ptz").is_file() or not (root / "final_model.pt").is_file():
        pytest.skip(f"official oracle files not found in {root}")
    return root


def official_model_config():
    cfg = naive_baseline()
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult = 2, 128, 4, 2, 2.0
    return cfg.model


def pgolf_eval(path: Path, sp1024_paths, capsys) -> dict[str, float]:
    data, tok = sp1024_paths
    code = main(
        [
            "eval",
            str(path),
            "--preset",
            "naive-baseline",
            "--data",
            str(data),
            "--tokenizer",
            str(tok),
            "--device",
            "cpu",
            *OFFICIAL_SHAPE,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    m = re.search(r"eval:nonoverlap window:256 stride:0 val_loss:(\S+) val_bpb:(\S+) tokens:(\d+)", out)
    assert m, out
    assert int(m.group(3)) == 1_039_872  # the official protocol: the val sample truncated to 256-token windows
    return {"val_loss": float(m.group(1)), "val_bpb": float(m.group(2))}


def test_int8_rows_follow_the_official_rule():
    torch.manual_seed(0)
    w = torch.randn(8, 300)
    w[0, 5] = 40.0  # an outlier beyond the 99.99984th percentile gets clipped
    q, s = quantize_int8_rows(w)
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    scale = (clip / 127).clamp_min(1 / 127)
    assert torch.equal(s, scale.half())
    assert torch.equal(
        q,
        torch.clamp(torch.round(torch.clamp(w, -clip[:, None], clip[:, None]) / scale[:, None]), -127, 127).to(
            torch.int8
        ),
    )
    assert float((q.float() * s.float()[:, None] - w).abs()[:, :5].max()) <= float(s.float().max()) / 2 + 1e-3


def test_pgolf_int8_reproduces_the_official_artifact(official):
    """pgolf's int8 scheme on the official fp32 weights gives exactly the tensors the official
    script's int8+zlib artifact holds (codes, scales and fp16 passthrough)."""
    state = load_official_checkpoint(official / "final_model.pt")
    theirs = load_official_checkpoint(official / "final_model.int8.ptz")
    ours = dequantize(quantize_int8(state, quant_groups_for(official_model_config()), QuantConfig()))
    assert sorted(ours) == sorted(theirs) == sorted(state)
    for name in state:
        assert torch.equal(ours[name].float(), theirs[name]), name
    assert any(not torch.equal(theirs[n], state[n]) for n in state)  # quantization did change the weights


@pytest.mark.slow
def test_pgolf_eval_reproduces_the_official_roundtrip_score(official, sp1024_paths, capsys):
    got = pgolf_eval(official / "final_model.int8.ptz", sp1024_paths, capsys)
    assert abs(got["val_bpb"] - OFFICIAL_ROUNDTRIP["val_bpb"]) < 1e-6, got
    assert abs(got["val_loss"] - OFFICIAL_ROUNDTRIP["val_loss"]) < 1e-6, got


@pytest.mark.slow
def test_pgolf_eval_reproduces_the_official_fp32_score(official, sp1024_paths, capsys):
    got = pgolf_eval(official / "final_model.pt", sp1024_paths, capsys)
    assert abs(got["val_bpb"] - OFFICIAL_FP32["val_bpb"]) <= 5e-5, got  # logged at 4 decimals
    assert abs(got["val_loss"] - OFFICIAL_FP32["val_loss"]) <= 5e-5, got


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    path = tmp_path / "final_model.pt"
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1), "evil": Evil()}, buf, pickle_module=pickle)
    path.write_bytes(buf.getvalue())
    with pytest.raises(ArtifactError, match="weights-only"):
        load_official_checkpoint(path)
