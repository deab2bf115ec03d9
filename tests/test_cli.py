"""The CLI: bad input gets one line naming the problem (exit 2); dry-run reports the plan."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import TINY_VOCAB
from pgolf.cli.main import main
from pgolf.data.shards import HEADER_BYTES


def run_cli(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("pgolf: error: ")
    return lines[0]


def copy_dataset(tiny_dataset, tmp_path):
    data, tok = tiny_dataset
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst, tok


TRAIN = [
    "train",
    "--preset",
    "naive-baseline",
    "--device",
    "cpu",
    "--iterations",
    "1",
    "--max-wallclock-seconds",
    "0",
    "--set",
    f"model.vocab_size={TINY_VOCAB}",
    "--set",
    "model.num_layers=1",
    "--set",
    "model.model_dim=16",
    "--set",
    "model.num_heads=2",
    "--set",
    "model.num_kv_heads=1",
    "--set",
    "train.train_seq_len=16",
    "--set",
    "train.train_batch_tokens=128",
    "--set",
    "train.warmup_steps=0",
]


def test_truncated_shard_is_named(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, tok = copy_dataset(tiny_dataset, tmp_path)
    victim = sorted(data.glob("fineweb_train_*.bin"))[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    code, _, err = run_cli(capsys, TRAIN + ["--data", str(data), "--tokenizer", str(tok)])
    line = one_line_error(err)
    assert code == 2 and victim.name in line and "truncated" in line


def test_foreign_file_is_named(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, tok = copy_dataset(tiny_dataset, tmp_path)
    victim = sorted(data.glob("fineweb_train_*.bin"))[0]
    victim.write_bytes(b"\x89PNG" + bytes(HEADER_BYTES))
    code, _, err = run_cli(capsys, TRAIN + ["--data", str(data), "--tokenizer", str(tok)])
    assert code == 2 and "not a token shard" in one_line_error(err)


def test_mismatched_tokenizer_is_refused(tiny_dataset, sp1024_paths, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, _ = tiny_dataset
    _, sp1024 = sp1024_paths
    code, _, err = run_cli(capsys, TRAIN + ["--data", str(data), "--tokenizer", str(sp1024)])
    line = one_line_error(err)
    assert code == 2 and "vocab_size=1024" in line and f"VOCAB_SIZE={TINY_VOCAB}" in line


def test_data_with_ids_beyond_the_vocab_is_refused(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, tok = copy_dataset(tiny_dataset, tmp_path)
    victim = sorted(data.glob("fineweb_train_*.bin"))[0]
    raw = bytearray(victim.read_bytes())
    raw[HEADER_BYTES + 10 : HEADER_BYTES + 12] = np.array([900], dtype="<u2").tobytes()
    victim.write_bytes(bytes(raw))
    code, _, err = run_cli(capsys, TRAIN + ["--data", str(data), "--tokenizer", str(tok)])
    assert code == 2 and "outside the vocabulary" in one_line_error(err)


def test_missing_data_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, TRAIN + ["--data", str(tmp_path / "nowhere")])
    line = one_line_error(err)
    assert code == 2 and "DATA_PATH" in line and "pgolf data download" in line


@pytest.mark.slow
def test_tampered_artifact_is_rejected(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, tok = tiny_dataset
    code, _, _ = run_cli(capsys, TRAIN + ["--data", str(data), "--tokenizer", str(tok), "--run-id", "t"])
    assert code == 0
    art = next((tmp_path / "runs" / "t").glob("*.pglf"))
    raw = bytearray(art.read_bytes())
    raw[-20] ^= 0x40
    art.write_bytes(bytes(raw))
    code, _, err = run_cli(capsys, ["eval", str(art), "--data", str(data), "--tokenizer", str(tok), "--device", "cpu"])
    line = one_line_error(err)
    assert code == 2 and art.name in line and ("sha256" in line or "checksum" in line)


@pytest.mark.slow
def test_dry_run_prints_params_size_and_flops(capsys):
    code, out, _ = run_cli(capsys, ["train", "--preset", "frontier", "--dry-run"])
    assert (
        code == 0 and "model_params:35945671" in out and "flops_per_token" in out and "predicted_artifact_bytes:" in out
    )


def test_bad_option_is_one_line(capsys):
    code, _, err = run_cli(capsys, ["train", "--preset", "naive-baseline", "--set", "model.depth=3", "--dry-run"])
    assert code == 2 and "model.depth" in one_line_error(err)


def test_weights_for_another_model_are_one_line(tiny_dataset, tmp_path, capsys, monkeypatch):
    """Official-format weights of a different shape: named file, one line, no traceback."""
    import torch

    from conftest import tiny_config
    from pgolf.model.gpt import GPT

    monkeypatch.chdir(tmp_path)
    data, tok = tiny_dataset
    cfg = tiny_config(data, tok)
    cfg.model.model_dim = 64
    torch.save(GPT(cfg.model).state_dict(), tmp_path / "final_model.pt")
    code, _, err = run_cli(
        capsys,
        [
            "eval",
            str(tmp_path / "final_model.pt"),
            "--preset",
            "naive-baseline",
            "--data",
            str(data),
            "--tokenizer",
            str(tok),
            "--device",
            "cpu",
            "--set",
            f"model.vocab_size={TINY_VOCAB}",
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
        ],
    )
    line = one_line_error(err)
    assert code == 2 and "final_model.pt" in line and "do not match" in line


def test_only_pgolf_errors_are_one_line_a_bug_shows_its_traceback(monkeypatch, capsys):
    """User errors (PgolfError) -> one line, exit 2; any other exception is a bug and propagates."""
    import pgolf.cli.main as cli_main
    from pgolf.core.errors import UsageError

    def raise_(exc):
        def cmd(args):
            raise exc

        return cmd

    monkeypatch.setattr(cli_main, "cmd_presets", raise_(UsageError("bad input")))
    assert main(["presets"]) == 2
    assert capsys.readouterr().err.strip() == "pgolf: error: bad input"
    for bug in (ValueError("a bug"), KeyError("k"), FileNotFoundError("f"), RuntimeError("r")):
        monkeypatch.setattr(cli_main, "cmd_presets", raise_(bug))
        with pytest.raises(type(bug)):
            main(["presets"])
