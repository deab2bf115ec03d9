"""Compatibility with the official script: int8 numerics, and scoring its checkpoints
(`final_model.pt`, `final_model.int8.ptz`) with pgolf's scorer."""

from __future__ import annotations

import io
import zlib

import pytest
import torch

from conftest import tiny_config
from pgolf.config import QuantConfig
from pgolf.evaluate import run_eval
from pgolf.model import GPT
from pgolf.quant import dequantize, load_official_checkpoint, quantize_int8, quantize_int8_rows

def test_int8_rows_follow_the_official_rule():
    torch.manual_seed(0)
    w = torch.randn(8, 300)
    w[0, 5] = 40.0  # an outlier beyond the 99.99984th percentile gets clipped
    q, s = quantize_int8_rows(w)
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    scale = (clip / 127).clamp_min(1 / 127)
    assert torch.equal(s, scale.half())
    assert torch.equal(q, torch.clamp(torch.round(torch.clamp(w, -clip[:, None], clip[:, None]) / scale[:, None]), -127, 127).to(torch.int8))
    assert float((q.float() * s.float()[:, None] - w).abs()[:, :5].max()) <= float(s.float().max()) / 2 + 1e-3

def official_int8_object(state: dict) -> dict:
    """The official `quantize_state_dict_int8` object layout, built from pgolf's int8 numerics."""
    qs = quantize_int8(state, QuantConfig(keep_float_max_numel=256))
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": {}, "scales": {}, "dtypes": {},
           "passthrough": {}, "qmeta": {}, "passthrough_orig_dtypes": {}}
    for name, e in qs.entries.items():
        if e["kind"] == "raw":
            obj["passthrough"][name] = torch.from_numpy(qs.arrays[name].copy())
            if obj["passthrough"][name].dtype == torch.float16:
                obj["passthrough_orig_dtypes"][name] = "float32"
        else:
            obj["quantized"][name] = torch.from_numpy(qs.arrays[name + ".q"].copy())
            obj["scales"][name] = torch.from_numpy(qs.arrays[name + ".s"].copy())
            obj["dtypes"][name] = "float32"
            obj["qmeta"][name] = {"scheme": "per_row", "axis": 0}
    return obj, dequantize(qs)

def test_official_checkpoints_load_exactly(tiny_dataset, tmp_path):
    cfg = tiny_config(*tiny_dataset)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = model.state_dict()
    torch.save(state, tmp_path / "final_model.pt")
    obj, deq = official_int8_object(state)
    buf = io.BytesIO()
    torch.save(obj, buf)
    (tmp_path / "final_model.int8.ptz").write_bytes(zlib.compress(buf.getvalue(), 9))

    raw = load_official_checkpoint(tmp_path / "final_model.pt")
    assert all(torch.equal(raw[k], state[k]) for k in state)
    loaded = load_official_checkpoint(tmp_path / "final_model.int8.ptz")
    assert all(torch.equal(loaded[k], deq[k].float()) for k in state)

@pytest.mark.parametrize("kind", ["pt", "ptz"])
def test_pgolf_eval_scores_official_files(tiny_dataset, tmp_path, kind):
    cfg = tiny_config(*tiny_dataset)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    state = model.state_dict()
    if kind == "pt":
        torch.save(state, tmp_path / "final_model.pt")
        path = tmp_path / "final_model.pt"
    else:
        obj, _ = official_int8_object(state)
        buf = io.BytesIO()
        torch.save(obj, buf)
        path = tmp_path / "final_model.int8.ptz"
        path.write_bytes(zlib.compress(buf.getvalue(), 9))
    res = run_eval(cfg, path)["nonoverlap"]
    # the same weights scored directly by pgolf's scorer give the same numbers
    from pgolf.datasource import load_val_data, resolve_data
    from pgolf.scoring import evaluate

    model.load_state_dict(load_official_checkpoint(path))
    val = load_val_data(cfg, resolve_data(cfg))
    direct = evaluate(model, val.tokens, val.tables, cfg.train.train_seq_len, 0, batch_seqs=cfg.eval.batch_seqs)
    assert (res["tokens"], res["bytes"]) == (direct.tokens, direct.bytes)
    assert res["val_bpb"] == pytest.approx(direct.val_bpb, rel=1e-6)

def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    path = tmp_path / "final_model.pt"
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1), "evil": Evil()}, buf, pickle_module=pickle)
    path.write_bytes(buf.getvalue())
    from pgolf.artifact import ArtifactError

    with pytest.raises(ArtifactError, match="weights-only"):
        load_official_checkpoint(path)
