"""`pgolf check`: prove a configuration's evaluation legal before spending a run on it.

1. The four conditions (pgolf.eval.legality) on the preset's own evaluator — its document windows,
   TTT (targets, chunking, optimizer, global phases) and tilt — scaled to a small model: the
   model keeps every architecture option of the preset at width 32 / vocab 32 with perturbed
   random weights; the evaluation keeps its method with context 32, chunk <= 8, rank 4, 3
   documents a batch, phases at proportionally early document counts, tilt order <= 8.
2. Validation isolation: a short training run of the preset's training recipe (warm-up, steps,
   GPTQ calibration, final scoring) on a tiny self-built dataset, with every token batch that
   reaches the model recorded. Validation tokens are loaded at start-up for scoring (as the
   official script does); what the check proves is that no forward pass outside the scorer ever
   holds a validation window (any 16 consecutive validation tokens).
"""

from __future__ import annotations

import copy
import io
import json
import random
import sys
import tempfile
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import torch

from pgolf.core.config import ModelConfig, RunConfig, parse_phase_docs
from pgolf.eval.legality import BOS, CHECK_VOCAB, CheckCase, CheckResult, check_tables, planted_stream, run_checks
from pgolf.model.gpt import GPT

WINDOW = 16  # validation n-gram length that counts as a leak
WORDS = (
    "golf bytes model tokens score rule cap run fast slow text data check legal time one two three "
    "four five six seven eight nine ten eleven twelve"
).split()


def small_model_config(m: ModelConfig) -> ModelConfig:
    """The preset's architecture at check size (vocab 32, 2 layers x 32 wide, 2 heads / 1 KV)."""
    s = copy.copy(m)
    s.vocab_size, s.num_layers, s.model_dim, s.num_heads, s.num_kv_heads = CHECK_VOCAB, 2, 32, 2, 1
    s.rope_dims = min(m.rope_dims, 8)
    s.recur_layers = "1" if m.recur_layers else ""
    s.parallel_from = 1 if m.parallel_from >= 0 else -1
    s.ve_layers = "1" if m.ve_layers else ""
    s.bigram_buckets, s.bigram_dim = (64, 8) if m.bigram_buckets else (0, m.bigram_dim)
    s.ve_dim, s.attn_gate_dims = min(m.ve_dim, 8), min(m.attn_gate_dims, 8)
    s.bos_id = BOS
    return s


def small_eval_config(cfg: RunConfig, n_docs: int):
    """The preset's evaluation method at check size (see the module docstring)."""
    e = copy.copy(cfg.eval)
    e.doc_aware = True
    e.context, e.eval_seq_len, e.doc_batch, e.time_budget_s = 32, 32, 3, 0.0
    e.stride = min(e.stride, 16)
    e.ttt_chunk, e.ttt_rank, e.ttt_global_chunk_tokens = min(e.ttt_chunk, 8), 4, 64
    phases = parse_phase_docs(e.ttt_phase_docs)
    e.ttt_phase_docs = ",".join(str(2 * (i + 1)) for i in range(len(phases)) if 2 * (i + 1) < n_docs)
    if e.tilt_order:
        e.tilt_order = min(e.tilt_order, 8)
        e.tilt_min_order = min(e.tilt_min_order, e.tilt_order)
    return e


def legality_case(cfg: RunConfig, seed: int = 0) -> tuple[CheckCase, slice, slice]:
    torch.manual_seed(seed)
    model = GPT(small_model_config(cfg.model))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.set_recurrence(bool(model.cfg.recur_layers) and model.cfg.recur_loops > 1)
    e = small_eval_config(cfg, n_docs=9)
    tokens, first, second = planted_stream(e.ttt_chunk if e.ttt else 8, n_docs=7, seed=seed)
    return CheckCase(model.eval(), tokens, check_tables(CHECK_VOCAB), e, 32), first, second


# ----------------------------------------------------------------------------- validation isolation


def tiny_dataset(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(shard folder, tokenizer) built from random word documents: 30 val docs, ~300 train docs."""
    from pgolf.data.build import build_shards, train_tokenizer

    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90))) for _ in range(330)]
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tok = train_tokenizer(docs, root / "fineweb_320_bpe", 320, num_threads=1)
    build_shards(docs, tok, root / "shards", num_val_docs=30, shard_size=8_000, progress=False)
    return root / "shards", tok


def val_windows(tokens: torch.Tensor) -> set[tuple[int, ...]]:
    t = tokens.tolist()
    return {tuple(t[i : i + WINDOW]) for i in range(len(t) - WINDOW + 1)}


class ForwardLog:
    """Token batches reaching the model's embedding outside the scorer."""

    def __init__(self):
        self.in_eval = 0
        self.batches: list[torch.Tensor] = []

    def hook(self, module, args):
        if not self.in_eval:
            self.batches.append(args[0].detach().cpu())

    def leaks(self, windows: set) -> int:
        found = 0
        for ids in self.batches:
            for row in ids.reshape(-1, ids.size(-1)).tolist():
                found += any(tuple(row[i : i + WINDOW]) in windows for i in range(len(row) - WINDOW + 1))
        return found


@contextmanager
def instrumented(log: ForwardLog):
    """Record the token batches of every model the trainer builds; scorers mark their calls."""
    import pgolf.train.trainer as trainer

    original_build = trainer.build_model

    def build(cfg, device):
        model = original_build(cfg, device)
        model.tok_emb.register_forward_pre_hook(log.hook)
        return model

    def scorer(fn):
        def wrapped(*a, **k):
            log.in_eval += 1
            try:
                return fn(*a, **k)
            finally:
                log.in_eval -= 1

        return wrapped

    patched = [(trainer, "build_model", build)]
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("pgolf."):
            for name in ("evaluate", "evaluate_documents"):
                fn = getattr(mod, name, None)
                if callable(fn) and getattr(fn, "__module__", "").startswith("pgolf.eval"):
                    patched.append((mod, name, scorer(fn)))
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patched]
    for mod, name, new in patched:
        setattr(mod, name, new)
    try:
        yield log
    finally:
        for mod, name, old in saved:
            setattr(mod, name, old)


def isolation_config(cfg: RunConfig, data: Path, tok: Path, out: Path) -> RunConfig:
    c = copy.deepcopy(cfg)
    m = c.model
    small = small_model_config(m)
    small.vocab_size = 320
    c.model = small
    t = c.train
    t.iterations, t.warmup_steps, t.max_wallclock_seconds, t.val_loss_every = 4, 2, 0.0, 2
    t.train_seq_len, t.train_batch_tokens, t.grad_accum_steps, t.train_log_every = 32, 256, 1, 1
    t.warmdown_iters, t.reserve_seconds, t.checkpoint_every = 2, 0.0, 0
    c.eval.val_batch_size, c.eval.batch_seqs, c.eval.eval_seq_len, c.eval.stride = 2048, 8, 32, min(c.eval.stride, 16)
    c.eval.context, c.eval.doc_batch, c.eval.ttt_rank, c.eval.ttt_chunk = 32, 3, 4, min(c.eval.ttt_chunk, 8)
    c.eval.ttt_phase_docs, c.eval.time_budget_s, c.eval.tilt_order = "", 0.0, min(c.eval.tilt_order, 4)
    c.eval.tilt_min_order = min(c.eval.tilt_min_order, max(c.eval.tilt_order, 1))
    q = c.quant
    q.gptq_calib_batches, q.gptq_time_budget_s, q.keep_float_max_numel, q.count_code_bytes = 2, 0.0, 256, False
    q.size_cap_bytes, q.compressor = 10**9, "zlib" if q.compressor == "auto" else q.compressor
    c.data.data_path, c.data.tokenizer_path, c.out_dir = str(data), str(tok), str(out)
    c.device, c.threads, c.run_id, c.compile = "cpu", 1, "legality-check", "off"
    return c


def check_isolation(cfg: RunConfig) -> CheckResult:
    """Train the recipe briefly and prove no forward pass outside the scorer saw validation data."""
    from pgolf.core.runlog import RunLog
    from pgolf.data.source import load_val_data, resolve_data
    from pgolf.finish.finalize import finalize
    from pgolf.train.trainer import run_training

    with tempfile.TemporaryDirectory(prefix="pgolf-check-") as tmp:
        root = Path(tmp)
        data, tok = tiny_dataset(root)
        c = isolation_config(cfg, data, tok, root / "runs")
        windows = val_windows(load_val_data(c, resolve_data(c, RunLog(None, master=False))).tokens)
        with instrumented(ForwardLog()) as log, redirect_stdout(io.StringIO()):  # the run's own log lines
            s, st = run_training(c)
            finalize(s, st, code_bytes=0)
        leaks = log.leaks(windows)
    n = sum(b.shape[0] for b in log.batches)
    return CheckResult(
        "V  validation isolation",
        leaks == 0 and n > 0,
        f"{len(log.batches)} forward batches outside the scorer ({n} rows: warm-up, training, "
        f"GPTQ calibration); rows holding a {WINDOW}-token validation window: {leaks}",
    )


def run_all(cfg: RunConfig, isolation: bool = True, echo=print) -> list[CheckResult]:
    case, first, second = legality_case(cfg)
    results = []
    for r in run_checks(case, first, second):
        echo(r.line())
        results.append(r)
    if isolation:
        r = check_isolation(cfg)
        echo(r.line())
        results.append(r)
    return results
