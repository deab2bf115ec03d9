"""benchmarks/gpu_check.py at toy size on CPU (what CI runs so the prepared GPU check cannot rot):
every stage reports a status in the order of value, the ones that can run on CPU pass, the
100-step loss falls, the JSON is complete after the run and a stage selection runs only those."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402

ORDER = ["step", "attention", "ttt", "eval", "gptq", "export", "compile", "fp8", "memory"]


def run(tmp_path, *extra) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gc.json"
    # Timeouts are sized for the GPU; a shared 2-core CPU gets three times as long.
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--budget-scale",
            "3",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads(out.read_text())


def test_stages_run_in_the_order_of_value():
    assert list(gpu_check.STAGES) == ORDER
    assert gpu_check.TOTAL_BUDGET_S <= 360


def test_projection_from_measured_pieces():
    """steps = 588 s / (fwd+bwd + optimizer/8 + modelled all-reduce), by hand."""
    results = {"step": {"params": 36_000_000, "recur_on": {"fwd_bwd_ms": 100.0, "optimizer_ms": 16.0}}}
    p = gpu_check.projection(results)
    allreduce_ms = 1e3 * 2 * 7 / 8 * 4 * 36e6 / 370e9
    assert p["allreduce_ms"] == pytest.approx(allreduce_ms)
    assert p["steps_in_588s"] == int(588_000 / (100 + 2 + allreduce_ms))
    assert gpu_check.projection({"step": {"status": "timeout"}}) is None


@pytest.mark.slow
def test_stage_selection_runs_only_those_and_writes_partial_json(tmp_path):
    proc, results = run(tmp_path, "--stages", "memory,attention")
    assert [k for k in results if k in ORDER] == ["attention", "memory"]  # the order of value, not of the flag
    assert results["attention"]["status"] == "ok" and results["attention"]["auto"] == "dense-mask"
    assert results["projection"] is None  # toy shapes project nothing


@pytest.mark.slow
def test_gpu_check_runs_at_toy_size_on_cpu(tmp_path):
    proc, results = run(tmp_path)
    assert [k for k in results if k in ORDER] == ORDER
    for name in ORDER:
        want = "skipped" if name == "fp8" else "ok"  # FP8 needs sm89+ and torchao
        assert results[name]["status"] == want, (name, results[name])
    step = results["step"]
    assert step["train100"]["loss_falls"] is True and step["graph_breaks"] == 0
    assert step["unique_graphs"] <= 5  # regional: a few block variants + the head, whatever the depth
    assert results["compile"]["model_graph_breaks"] == 0
    assert results["export"]["last_step_line"].startswith("step:20/20")
    assert "| stage | status |" in proc.stdout
