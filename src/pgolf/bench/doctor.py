"""`pgolf doctor`: go or no-go before a paid run, on the machine that will train (issue 25).

One table (check, value, OK/WARN/FAIL, what to do) and a last line `doctor: GO` or
`doctor: NO-GO (n failures)`. Every row reuses what the run itself uses, so nothing is measured
twice in two code paths:

  machine     GPUs, versions; under torchrun a 1-second all-reduce bandwidth probe
  memory      the dry run's memory estimate against the GPU's memory (CUDA only)
  attention   the kernel the preset resolves to, a faster one's install, its measured fwd+bwd
              (pgolf.bench.probes, as the GPU check)
  train       cold compile (outside the clock) and a training step timed as the trainer runs
              it -> predicted steps inside the training budget
  eval        the document evaluation's predicted seconds on the real validation stream, fitted
              to eval.time_budget_s as the run will fit it (pgolf.eval.fit)
  size        the planner's range against the cap, cap fitting included, with the exported
              script's bytes
  data        shards present and verified, tokenizer, train/val overlap (the run's own data
              checks, which also fill their cache)
  script      every import of the shipped train_gpt.py importable here; disk room for the run
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pgolf.bench.probes import micro_batch, time_attention, time_training_step
from pgolf.core.config import RunConfig
from pgolf.core.constants import pip_name
from pgolf.core.errors import PgolfError
from pgolf.core.runtime import Runtime
from pgolf.data.source import load_val_data, resolve_data
from pgolf.eval.docplan import EvalBudgetError
from pgolf.eval.docscore import uses_documents
from pgolf.eval.fit import fit_to_budget
from pgolf.model.attention import KERNEL_LABELS, resolve_with_notice
from pgolf.model.gpt import GPT
from pgolf.model.inventory import params_by_group, quant_layout
from pgolf.quant.plan import predict_range, predict_table
from pgolf.submit.bundle import third_party_modules
from pgolf.submit.dryrun import cap_fit_plan
from pgolf.submit.export import bundle_sources, exported_code_bytes, submission_config

OK, WARN, FAIL = "OK", "WARN", "FAIL"
# FlashAttention 3 (Hopper): the wheel the records' READMEs install (PyTorch 2.11 + CUDA 13.0).
FA3_INSTALL = "pip install flash_attn_3 --find-links https://download.pytorch.org/whl/cu130"
CPU_ATTENTION_LIMIT = 2e8  # B x H x T^2 above this is not timed on a CPU (minutes, GBs)
CPU_STEP_TOKENS_LIMIT = 1 << 16  # a CPU times the step only of micro-batches up to this many tokens
ALLREDUCE_BYTES = 1 << 26  # the bandwidth probe's tensor (64 MiB)
RUN_FOLDER_SLACK = 2.0  # disk: twice the weights (raw safetensors, checkpoint) + the cap + logs


def one_line(text: str) -> str:
    """A message on one line (library errors can span several)."""
    return " ".join(str(text).split())


@dataclass
class Row:
    check: str
    value: str
    status: str
    todo: str = ""


def machine_rows(rt: Runtime) -> list[Row]:
    versions = f"torch {torch.__version__}"
    if rt.device.type != "cuda":
        import os
        import platform

        return [Row("machine", f"CPU {platform.machine()}, {os.cpu_count()} cores, {versions}", OK)]
    props = torch.cuda.get_device_properties(rt.device)
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else "-"
    value = (
        f"{torch.cuda.device_count()}x {props.name} ({props.total_memory / 2**30:.0f} GiB), {versions}, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, NCCL {nccl}"
    )
    rows = [Row("machine", value, OK)]
    if rt.distributed and rt.world_size > 1:
        rows.append(allreduce_row(rt))
    elif torch.cuda.device_count() > 1:
        rows.append(Row("all-reduce", "not probed (one process)", WARN, "run under torchrun to probe NCCL bandwidth"))
    return rows


def allreduce_row(rt: Runtime, seconds: float = 1.0) -> Row:
    """All-reduce bus bandwidth over ~1 s (2 (n-1)/n x bytes per call, nccl-tests' definition)."""
    import torch.distributed as dist

    x = torch.ones(ALLREDUCE_BYTES // 4, device=rt.device)
    dist.all_reduce(x)
    torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dist.all_reduce(x)
        calls += 1
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    n = rt.world_size
    busbw = calls * ALLREDUCE_BYTES * 2 * (n - 1) / n / dt / 1e9
    return Row("all-reduce", f"{busbw:.0f} GB/s bus bandwidth over {n} GPUs ({calls} calls of 64 MiB)", OK)


def memory_row(cfg: RunConfig, rt: Runtime) -> Row | None:
    if rt.device.type != "cuda":
        return None
    from pgolf.model.memory import estimate_train_memory

    batch, seq = micro_batch(cfg, rt.world_size)
    est = estimate_train_memory(cfg.model, batch, seq, world_size=rt.world_size, compiled=cfg.compile != "off")
    have = torch.cuda.get_device_properties(rt.device).total_memory / 2**30
    status = OK if est.total_gib < 0.9 * have else (WARN if est.total_gib < have else FAIL)
    todo = "" if status == OK else "a smaller micro-batch (train.grad_accum_steps up) or compile on"
    return Row("memory", f"estimate {est.total_gib:.1f} GiB per GPU of {have:.0f} GiB", status, todo)


def attention_row(cfg: RunConfig, rt: Runtime) -> Row:
    m = cfg.model
    kernel, notice = resolve_with_notice(m.attn_kernel, m.doc_mask, rt.device.type)
    label = KERNEL_LABELS[kernel] + (f" ({notice})" if notice else "")
    status, todo = OK, ""
    if rt.device.type == "cuda" and m.doc_mask and kernel != "fa3":
        major = torch.cuda.get_device_capability(rt.device)[0]
        if major == 9:
            status, todo = WARN, f"FlashAttention 3 is faster on Hopper: {FA3_INSTALL}"
    batch, seq = micro_batch(cfg, rt.world_size)
    dh = m.model_dim // m.num_heads
    if rt.device.type != "cuda" and batch * m.num_heads * seq * seq > CPU_ATTENTION_LIMIT:
        return Row("attention", f"{label}; not timed on a CPU at {batch}x{seq}", WARN, "time it on the GPU machine")
    t = time_attention(kernel, m.doc_mask, batch, seq, m.num_heads, m.num_kv_heads, dh, rt.device, iters=3)
    return Row(
        "attention", f"{label}: {t.ms:.2f} ms fwd+bwd at {batch}x{seq} (inputs {t.build_ms:.2f} ms)", status, todo
    )


def train_row(cfg: RunConfig, rt: Runtime) -> Row:
    t = cfg.train
    batch, seq = micro_batch(cfg, rt.world_size)
    if rt.device.type != "cuda" and batch * seq > CPU_STEP_TOKENS_LIMIT:
        return Row("train", f"not timed on a CPU ({batch}x{seq} tokens per micro-batch)", WARN, "time it on the GPU")
    accum = t.grad_accum_steps or max(8 // rt.world_size, 1)
    timing = time_training_step(cfg, rt.device, rt.world_size, backend="inductor")
    step_s = (accum * timing.fwd_bwd_ms + timing.optimizer_ms) / 1e3
    budget = t.max_wallclock_seconds - t.reserve_seconds if t.max_wallclock_seconds > 0 else 0.0
    compile_note = f", cold compile {timing.compile_s:.0f} s outside the clock" if timing.compiled else ""
    if budget <= 0:
        return Row(
            "train",
            f"{1e3 * step_s:.0f} ms/step, {t.iterations} steps ~{t.iterations * step_s:.0f} s{compile_note}",
            OK,
        )
    steps = int(budget / step_s)
    value = f"{1e3 * step_s:.0f} ms/step -> ~{steps:,} steps in {budget:.0f} s{compile_note}"
    return Row("train", value, OK)


def eval_row(cfg: RunConfig, rt: Runtime) -> Row:
    e = cfg.eval
    if not uses_documents(e) or e.time_budget_s <= 0:
        return Row("eval", "no document evaluation with a time budget configured", OK)
    try:
        val = load_val_data(cfg, resolve_data(cfg, log=lambda _line: None))
    except PgolfError as exc:
        return Row("eval", f"not predicted: {one_line(str(exc))}", WARN, "see the data row")
    model = GPT(cfg.model).to(rt.device)
    lines: list[str] = []
    from pgolf.core.runtime import autocast_for

    try:
        fitted, cost = fit_to_budget(
            model,
            e,
            val.tokens,
            cfg.train.train_seq_len,
            cfg.model.bos_id,
            rt.world_size,
            rt.device,
            autocast_for(rt.device),
            lines.append,
        )
    except EvalBudgetError as exc:
        return Row("eval", one_line(str(exc)), FAIL, "raise eval.time_budget_s or use a plainer evaluation")
    value = f"predicted {cost.predicted_s:.0f} s of {e.time_budget_s:g} s"
    fit = next((line for line in lines if line.startswith("eval_plan:fitted")), "")
    if fitted != e:
        return Row(
            "eval", value + " with a fitted plan: " + fit.split("s) ", 1)[-1], WARN, "the run fits it the same way"
        )
    return Row("eval", value, OK)


def size_row(cfg: RunConfig) -> Row:
    q, m = cfg.quant, cfg.model
    code = exported_code_bytes(cfg) if q.count_code_bytes else 0
    layout = quant_layout(m)
    point = predict_table(m, layout, q, code).artifact_bytes
    low, high = predict_range(m, layout, q, point)
    plan = cap_fit_plan(point, code, params_by_group(m), q, high)
    value = f"artifact {low:,}-{high:,} B (point {point:,}) + code {code:,} B, cap {q.size_cap_bytes:,}; {plan.split(' ', 1)[0]}"
    if low + code > q.size_cap_bytes and "fits_after_cap_fit:True" not in plan:
        return Row("size", value, FAIL, "a smaller model or coarser quantization (pgolf train --dry-run: levers)")
    if "fits_after_cap_fit:False" in plan or "unavailable" in plan:
        return Row("size", value, WARN, "the range's high end may not fit: see the dry run's levers")
    return Row("size", value, OK)


def data_row(cfg: RunConfig) -> Row:
    lines: list[str] = []
    try:
        ds = resolve_data(cfg, log=lines.append)
    except PgolfError as exc:
        return Row("data", one_line(str(exc)), FAIL, "fix or fetch the data (the message says how)")
    overlap = next((x.split("train_val_overlap:", 1)[1].split()[0] for x in lines if "train_val_overlap:" in x), "?")
    value = f"{ds.num_train_shards} train shards at {ds.data_path}, tokenizer {ds.tokenizer_path.name} matches, overlap {overlap}"
    if overlap != "none":
        return Row("data", value, WARN, "the overlap check did not run: pass no --skip-overlap-check")
    return Row("data", value, OK)


def script_rows(cfg: RunConfig) -> list[Row]:
    sources, _ = bundle_sources(submission_config(cfg))
    missing = [m for m in third_party_modules(sources) if importlib.util.find_spec(m) is None]
    if missing:
        pips = " ".join(pip_name(m) for m in missing)
        rows = [Row("script", f"train_gpt.py imports {', '.join(missing)}: not installed", FAIL, f"pip install {pips}")]
    else:
        rows = [Row("script", f"every import of train_gpt.py is installed ({len(third_party_modules(sources))})", OK)]
    out = Path(cfg.out_dir)
    probe = out if out.exists() else Path.cwd()
    free = shutil.disk_usage(probe).free
    params = sum(params_by_group(cfg.model).values())
    need = int(RUN_FOLDER_SLACK * 4 * params + cfg.quant.size_cap_bytes)
    status = OK if free >= 4 * need else (WARN if free >= need else FAIL)
    rows.append(
        Row(
            "disk",
            f"{free / 2**30:.1f} GiB free at {probe}, a run needs ~{need / 2**20:.0f} MiB",
            status,
            "" if status == OK else "free disk space for the run folder",
        )
    )
    return rows


def run_checks(cfg: RunConfig, rt: Runtime) -> list[Row]:
    """Every check on this machine; a check that breaks is a FAIL row, never a crash."""
    rows = machine_rows(rt)
    steps = [
        lambda: memory_row(cfg, rt),
        lambda: attention_row(cfg, rt),
        lambda: train_row(cfg, rt),
        lambda: eval_row(cfg, rt),
        lambda: size_row(cfg),
        lambda: data_row(cfg),
        lambda: script_rows(cfg),
    ]
    names = ("memory", "attention", "train", "eval", "size", "data", "script")
    for name, step in zip(names, steps):
        try:
            got = step()
        except PgolfError as exc:
            got = Row(name, one_line(str(exc)), FAIL)
        except Exception as exc:  # a broken check must not hide the others
            got = Row(name, f"{type(exc).__name__}: {one_line(str(exc))[:200]}", FAIL, "a pgolf bug: report it")
        rows.extend(got if isinstance(got, list) else [got] if got else [])
    return rows


def render(rows: list[Row]) -> str:
    lines = ["| check | value | status | what to do |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.value} | {r.status} | {r.todo} |" for r in rows]
    fails = sum(r.status == FAIL for r in rows)
    lines.append("doctor: GO" if not fails else f"doctor: NO-GO ({fails} failure{'s' if fails > 1 else ''})")
    return "\n".join(lines)
