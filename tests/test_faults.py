"""Faults and bad input, each a case that failed before (issue 14): the training clock across a
resume, NaN checkpoints, changed learning rates on resume, config ranges, run folders (reuse,
concurrency, failed set-up, unwritable outputs), artifacts as untrusted input, one-line errors,
and short or loaded runs (EMA, threads, plan, progress)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import types
import zlib
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from pgolf.cli.main import main
from pgolf.core.config import RANGES, RunConfig, numeric_options, validate
from pgolf.core.errors import PgolfError
from pgolf.core.presets import PRESETS
from pgolf.core.progress import track
from pgolf.finish.finalize import finalize
from pgolf.model.gpt import GPT
from pgolf.model.inventory import quant_groups_for
from pgolf.quant.container import PREFIX, ArtifactError
from pgolf.quant.pack import pack, unpack
from pgolf.quant.schemes import quantize
from pgolf.train import trainer as trainer_mod
from pgolf.train.checkpoint import load_checkpoint
from pgolf.train.rundir import RunFolderError, open_run_folder
from pgolf.train.trainer import NonFiniteLossError, run_training


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGOLF_RESCUE_DIR", str(tmp_path / "rescue"))
    return tmp_path


class FakeClock:
    """Training time that advances only when a training step runs (STEP_S per step)."""

    STEP_S = 0.1

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    real = trainer_mod.train_step

    def timed_step(s, st, lr_mul):
        out = real(s, st, lr_mul)
        clock.now += FakeClock.STEP_S
        return out

    monkeypatch.setattr(trainer_mod, "train_step", timed_step)
    return clock


def kill_at(monkeypatch, step: int):
    """Make the run die (like a kill) when it is about to run `step` + 1."""
    real = trainer_mod.train_step

    def dying(s, st, lr_mul):
        if st.step == step:
            raise KeyboardInterrupt
        return real(s, st, lr_mul)

    monkeypatch.setattr(trainer_mod, "train_step", dying)
    return real


# 1. The training clock survives a resume exactly.
def test_resumed_run_stops_where_the_uninterrupted_one_does(tiny_dataset, workdir, fake_clock, monkeypatch):
    cfg = tiny_config(*tiny_dataset, iterations=1000, max_wallclock_seconds=1.0, checkpoint_every=3, warmup_steps=0)
    cfg.run_id = "whole"
    _, whole = run_training(cfg)
    assert whole.step == 10  # 100 ms per step against a 1 s cap
    cfg = tiny_config(*tiny_dataset, iterations=1000, max_wallclock_seconds=1.0, checkpoint_every=3, warmup_steps=0)
    cfg.run_id = "killed"
    timed = kill_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg)
    ckpt = workdir / "runs" / "killed" / "checkpoint.safetensors"
    extra = load_checkpoint(ckpt)[2]
    assert extra["step"] == 6 and extra["training_time_ms"] == pytest.approx(600.0)
    monkeypatch.setattr(trainer_mod, "train_step", timed)
    _, resumed = run_training(cfg, resume_from=ckpt)
    assert resumed.step == whole.step == 10
    assert resumed.training_time_ms == pytest.approx(whole.training_time_ms)


# 2. A NaN never poisons the checkpoint, and the error names the last finite one.
def test_nan_keeps_the_last_finite_checkpoint(tiny_dataset, workdir, monkeypatch):
    real = trainer_mod.train_step

    def poisoning(s, st, lr_mul):
        out = real(s, st, lr_mul)
        if st.step == 4:  # the update of step 5 produces NaN weights
            with torch.no_grad():
                s.base.blocks[0].mlp.fc.weight.fill_(float("nan"))
        return out

    monkeypatch.setattr(trainer_mod, "train_step", poisoning)
    cfg = tiny_config(*tiny_dataset, iterations=8, checkpoint_every=1)
    cfg.run_id = "nan"
    ckpt = Path("runs") / "nan" / "checkpoint.safetensors"
    with pytest.raises(NonFiniteLossError, match=rf"last finite checkpoint is {ckpt} \(step 4\).*--resume {ckpt}"):
        run_training(cfg)
    model, _, extra, _ = load_checkpoint(ckpt)
    assert extra["step"] == 4 and all(torch.isfinite(t).all() for t in model.values())
    assert "checkpoint:skipped step:5 non-finite weights" in (workdir / "logs" / "nan.txt").read_text()
    monkeypatch.setattr(trainer_mod, "train_step", real)
    _, st = run_training(cfg, resume_from=ckpt)  # the advice works
    assert st.step == 8


# 3. A resume uses the new config's learning rates and says so.
def test_resume_applies_new_learning_rates(tiny_dataset, workdir, monkeypatch):
    cfg = tiny_config(*tiny_dataset, iterations=6, checkpoint_every=3)
    cfg.run_id = "lr"
    real = kill_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg)
    monkeypatch.setattr(trainer_mod, "train_step", real)
    cfg = tiny_config(*tiny_dataset, iterations=6, checkpoint_every=3, matrix_lr=0.01, scalar_lr=0.02)
    cfg.run_id = "lr"
    s, _ = run_training(cfg, resume_from=workdir / "runs" / "lr" / "checkpoint.safetensors")
    muon = next(o for o in s.optimizers if type(o).__name__ == "Muon")
    assert muon.param_groups[0]["base_lr"] == 0.01 and s.optimizers[-1].param_groups[0]["base_lr"] == 0.02
    log = (workdir / "logs" / "lr.txt").read_text()
    assert "resume:changed optimizer1.group0.base_lr 0.04 -> 0.01" in log


# 4. Every numeric option has a range, checked in one place.
def test_every_numeric_option_has_a_range_and_presets_fit():
    assert set(numeric_options(RunConfig())) == set(RANGES)
    for make in PRESETS.values():
        validate(make())


@pytest.mark.parametrize(
    "flag,match",
    [
        (["--iterations", "-1"], r"train\.iterations=-1 is outside the allowed range \[0, "),
        (["--set", "train.ema_decay=1.5"], r"train\.ema_decay=1\.5 is outside the allowed range \[0, 1\)"),
        (["--stride", "-64"], r"eval\.stride=-64 is outside"),
        (["--val-max-tokens", "-5"], r"eval\.val_max_tokens=-5 is outside"),
        (["--set", "train.warmup_steps=-2"], r"train\.warmup_steps=-2 is outside"),
        (["--set", "model.num_layers=1e9"], r"model\.num_layers=1000000000 is outside the allowed range \[1, 64\]"),
    ],
)
def test_out_of_range_values_are_one_line_errors(flag, match, capsys):
    assert main(["train", "--preset", "naive-baseline-cpu-proxy", "--dry-run", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pgolf: error: ")
    import re

    assert re.search(match, err), err


# 5. Run folders: no silent reuse, no sharing, no half-made folders, atomic files.
def test_a_finished_run_id_is_refused_unless_overwrite(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=2)
    cfg.run_id = "same"
    finalize(*run_training(cfg), code_bytes=0)
    with pytest.raises(RunFolderError, match="already holds a run .*--resume.*--overwrite"):
        run_training(cfg)
    s, st = run_training(cfg, overwrite=True)
    assert not (workdir / "runs" / "same" / "summary.json").exists()  # the stale summary went first
    finalize(s, st, code_bytes=0)
    folder = workdir / "runs" / "same"
    assert (folder / "summary.json").is_file() and not list(folder.glob("*.tmp"))
    summary = json.loads((folder / "summary.json").read_text())["summary"]
    assert Path(summary["artifact_path"]).is_file()


def test_a_run_folder_in_use_is_refused(tiny_dataset, workdir):
    holder = open_run_folder(workdir / "runs" / "busy", resume=False, overwrite=False)
    cfg = tiny_config(*tiny_dataset, iterations=2)
    cfg.run_id = "busy"
    with pytest.raises(RunFolderError, match="in use by another pgolf process"):
        run_training(cfg)
    holder.release()
    run_training(cfg)


def test_a_run_that_fails_at_start_leaves_nothing(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=2)
    cfg.run_id, cfg.data.data_path = "broken", str(workdir / "no-such-data")
    with pytest.raises(PgolfError):
        run_training(cfg)
    assert not (workdir / "runs" / "broken").exists() and not (workdir / "logs" / "broken.txt").exists()


# 6. Unwritable outputs: refused at start-up, rescued at the end.
def test_unwritable_output_is_refused_before_training(tiny_dataset, workdir):
    (workdir / "blocker").write_text("a file where a folder should be")
    cfg = tiny_config(*tiny_dataset, iterations=2)
    cfg.run_id, cfg.out_dir = "x", str(workdir / "blocker" / "runs")
    with pytest.raises(RunFolderError, match="cannot write to"):
        run_training(cfg)


def test_results_are_rescued_when_the_folder_breaks_at_the_end(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=3)
    cfg.run_id = "late"
    s, st = run_training(cfg)
    run_dir = workdir / "runs" / "late"
    shutil.rmtree(run_dir)
    run_dir.write_text("the folder is gone")  # nothing can be written under it any more
    shutil.rmtree(workdir / "logs")
    (workdir / "logs").write_text("and so is the log folder")
    summary = finalize(s, st, code_bytes=0)
    rescue = workdir / "rescue" / "pgolf-rescue"
    assert Path(summary.artifact_path).parent == rescue / "late" and Path(summary.artifact_path).is_file()
    assert (rescue / "late" / "summary.json").is_file() and (rescue / "late" / "final_model.safetensors").is_file()
    assert "output:rescued" in (rescue / "late.txt").read_text()


# 7. Artifacts are untrusted input.
def small_artifact(tmp_path: Path) -> tuple[Path, RunConfig]:
    cfg = tiny_config(Path("."), Path("."))
    torch.manual_seed(0)
    state = GPT(cfg.model).state_dict()
    q = cfg.quant
    path = tmp_path / "a.pglf"
    pack(quantize(state, quant_groups_for(cfg.model), q), asdict(cfg.model), q, path)
    return path, cfg


def forge(path: Path, edit_header=None, streams=None) -> None:
    """Rewrite an artifact with an edited header (and optionally new stream bytes), every
    checksum recomputed: only the content lies."""
    blob = path.read_bytes()
    magic, version, hlen, _ = PREFIX.unpack_from(blob)
    header = json.loads(zlib.decompress(blob[PREFIX.size : PREFIX.size + hlen]))
    pos, parts = PREFIX.size + hlen, []
    for s in header["streams"]:
        parts.append(blob[pos : pos + s["n"]])
        pos += s["n"]
    if streams:
        for i, data in streams.items():
            parts[i] = data
            header["streams"][i].update(n=len(data), sha256=hashlib.sha256(data).hexdigest())
    if edit_header:
        edit_header(header)
    h = zlib.compress(json.dumps(header).encode())
    crc = zlib.crc32(h, zlib.crc32(struct.pack("<4sBI", magic, version, len(h))))
    path.write_bytes(PREFIX.pack(magic, version, len(h), crc) + h + b"".join(parts))


@pytest.mark.parametrize(
    "case,match",
    [
        ("huge_raw", "declare .* decoded bytes, more than"),
        ("bomb", "expands beyond"),
        ("huge_shape", "lies outside its payload stream"),
        ("bad_types", "'n' and 'raw' must be non-negative integers"),
        ("bad_dtype", "unsupported dtype"),
        ("bad_codec", "unknown codec"),
        ("entry_shape", "does not have shape|do not match its shape"),
        ("entry_dtype", "unknown kind or dtype"),
    ],
)
def test_lying_headers_with_valid_checksums_are_one_line_errors(tmp_path, case, match):
    path, _ = small_artifact(tmp_path)

    def edit(h):
        s0, t0 = h["streams"][0], h["tensors"][0]
        if case == "huge_raw":
            s0["raw"] = 10**12
        elif case == "bomb":  # 100 MB of zeros in ~100 KB, declared as 1,000 bytes
            pass
        elif case == "huge_shape":
            t0["shape"] = [10**6, 10**6]
        elif case == "bad_types":
            s0["n"] = "lots"
        elif case == "bad_dtype":
            t0["dtype"] = "object"
        elif case == "bad_codec":
            s0["codec"] = "pickle"
        elif case == "entry_shape":
            name = next(iter(h["meta"]["entries"]))
            h["meta"]["entries"][name]["shape"] = [10**5, 10**5]
        elif case == "entry_dtype":
            name = next(iter(h["meta"]["entries"]))
            h["meta"]["entries"][name]["dtype"] = "load"

    streams = None
    if case == "bomb":
        streams = {0: zlib.compress(bytes(100_000_000), 9)}
        edit_bomb = edit

        def edit(h):  # noqa: F811
            edit_bomb(h)
            h["streams"][0].update(codec="zlib", transform="none", raw=1000, mid=1000)
            h["tensors"] = [t for t in h["tensors"] if t["stream"] != 0]

    forge(path, edit, streams)
    with pytest.raises(ArtifactError, match=match):
        unpack(path)


@pytest.mark.parametrize(
    "model", [{"num_layers": 10**9}, {"num_layers": "many"}, {"vocab_size": 2**20}, {"num_layers": 3}]
)
def test_a_lying_model_config_is_refused_before_building(tmp_path, tiny_dataset, model, capsys, monkeypatch):
    path, cfg = small_artifact(tmp_path)
    forge(path, lambda h: h["meta"]["model"].update(model))
    built = []
    monkeypatch.setattr("pgolf.eval.evaluate.GPT", lambda *a: built.append(a) or GPT(*a))
    data, tok = tiny_dataset
    code = main(
        [
            "eval",
            str(path),
            "--data",
            str(data),
            "--tokenizer",
            str(tok),
            "--device",
            "cpu",
            "--preset",
            "naive-baseline",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err, err
    assert not built  # refused before any model was allocated


def test_pgolf_size_verifies_the_payload(tmp_path, capsys):
    path, _ = small_artifact(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF  # one payload byte: the header (and its crc) stays valid
    path.write_bytes(bytes(blob))
    assert main(["size", str(path)]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err


def test_garbage_safetensors_is_one_line(tmp_path, tiny_dataset, capsys):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\xff" * 64)
    data, tok = tiny_dataset
    assert main(["eval", str(bad), "--data", str(data), "--tokenizer", str(tok), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a readable safetensors file" in err


# 8. One-line errors where a user can cause them.
def test_rejected_pickle_is_one_line(tmp_path, tiny_dataset, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1), "evil": Evil()}, buf, pickle_module=pickle)
    path = tmp_path / "final_model.pt"
    path.write_bytes(buf.getvalue())
    data, tok = tiny_dataset
    assert main(["eval", str(path), "--data", str(data), "--tokenizer", str(tok), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "print" in err and "never code" in err


def test_toml_typo_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[model]\nnum_layrs = 3\n")
    assert main(["train", "--config", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pgolf: error: {cfg}: unknown config option 'model.num_layrs'"


@pytest.mark.parametrize(
    "line,match",
    [
        (b'{"text": "caf\xe9"}\n', r"docs\.jsonl:2: not UTF-8"),
        (b'{"text": "\\ud800 lone"}\n', r"docs\.jsonl:2: 'text' holds a lone surrogate"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, tiny_dataset, line, match, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b'{"text": "fine"}\n' + line)
    assert main(["data", "build", str(docs), "--tokenizer", str(tiny_dataset[1]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    import re

    assert len(err.splitlines()) == 1 and re.search(match, err), err


# 9. Short and loaded runs.
EMA_MARGIN = 0.02  # bpb the EMA of a 30-step run may lose against its raw weights


def test_ema_of_a_short_run_is_not_dragged_to_its_init(tiny_dataset, workdir):
    """30 steps at decay 0.96: the plain EMA kept 0.96^29 ~ 0.31 of its first weights and scored
    far worse than the raw weights; the warm-started one stays within EMA_MARGIN of them."""
    cfg = tiny_config(*tiny_dataset, iterations=30, ema_decay=0.96, warmdown_iters=0)
    cfg.run_id = "short-ema"
    _, st = run_training(cfg)
    raw, ema = st.history[-2]["val_bpb"], st.history[-1]["val_bpb"]
    assert ema <= raw + EMA_MARGIN, (raw, ema)


def test_warm_start_vanishes_on_long_runs():
    """After a record-length run (4,900 steps at 0.9965) the warm-started EMA is the plain EMA:
    the records' EMA gain is kept."""
    from pgolf.train.trainer import ema_decay_at

    d, n = 0.9965, 4900
    w = torch.randn(n, 4)
    warm, plain = w[0].clone(), w[0].clone()
    for t in range(1, n):
        dt = ema_decay_at(d, t + 1)
        warm = dt * warm + (1 - dt) * w[t]
        plain = d * plain + (1 - d) * w[t]
    assert torch.allclose(warm, plain, atol=1e-3)
    assert (warm - plain).abs().max() < 0.01 * (plain - w[-1]).abs().max()


def test_threads_follow_the_free_cores(monkeypatch):
    monkeypatch.setattr(trainer_mod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(trainer_mod.os, "getloadavg", lambda: (2.7, 0.0, 0.0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    n, why = trainer_mod.cpu_threads(0)
    assert n == 1 and "cores:4 load1:2.70" in why
    monkeypatch.setattr(trainer_mod.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert trainer_mod.cpu_threads(0)[0] == 1  # never below one
    assert trainer_mod.cpu_threads(3) == (3, "threads:3 (set)")


def test_plan_with_durations_is_logged_before_training(tiny_dataset, workdir):
    cfg = tiny_config(*tiny_dataset, iterations=4, warmup_steps=3)
    cfg.run_id, cfg.eval.stride = "plan", 16
    run_training(cfg)
    log = (workdir / "logs" / "plan.txt").read_text()
    plan = next(line for line in log.splitlines() if line.startswith("plan: "))
    for key in ("train:~", "validation:~", "calibration:~", "roundtrip_eval:~", "sliding_eval:~", "total:~", "ms/step"):
        assert key in plan, plan
    assert log.index("plan: ") < log.index("step:1/4 train_loss")
    assert "remaining:" in log


def test_progress_lines_when_output_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr("pgolf.core.progress.is_tty", lambda: False)
    now = [0.0]

    def clock():
        now[0] += 10.0
        return now[0]

    assert list(track(range(10), "scoring", True, every_s=30.0, clock=clock)) == list(range(10))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("scoring_progress:") and "eta:" in line for line in lines)
    assert list(track(range(3), "x", False)) == [0, 1, 2]
    assert capsys.readouterr().out == ""
