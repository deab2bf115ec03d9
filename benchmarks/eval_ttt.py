"""Evaluation methods side by side on one trained model (issue 9's benchmark).

    python benchmarks/eval_ttt.py --budget 600                 # train frontier-cpu-proxy 600 s, then evaluate
    python benchmarks/eval_ttt.py --artifact runs/X/final_model.mixed.pglf

One invocation scores the same reloaded artifact on the whole val sample with: non-overlapping
windows (official), sliding windows, document-aware windows, + per-document LoRA TTT, + a global
phase, + n-gram tilt (the preset's own settings for each, `frontier-cpu-proxy` unless --preset);
it reports val_bpb, eval seconds, scored tokens/s, and projects the full `frontier` TTT evaluation
on 8xH100 from FLOPs (assumptions printed with it). Results: benchmarks/results/eval_ttt/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
OUT = Path(__file__).resolve().parent / "results" / "eval_ttt"
H100_BF16 = 989e12


def train(args) -> Path:
    run_id = f"eval_ttt_{int(time.time())}"
    cmd = [
        sys.executable,
        "-m",
        "pgolf",
        "train",
        "--preset",
        args.preset,
        "--max-wallclock-seconds",
        str(args.budget),
        "--run-id",
        run_id,
        "--data",
        args.data,
        "--tokenizer",
        args.tokenizer,
        "--set",
        f"threads={args.threads}",
        "--set",
        "eval.ttt=false",
        "--set",
        "eval.tilt_order=0",
        "--set",
        "eval.final_sliding=false",
    ]
    subprocess.run(cmd, check=True, cwd=args.out, stdout=subprocess.DEVNULL)
    return next((args.out / "runs" / run_id).glob("final_model.*.pglf"))


def methods(cfg) -> list[tuple[str, object]]:
    """(name, eval config) from plain to the preset's full evaluation."""
    from pgolf.core.config import EvalConfig

    full = cfg.eval
    docs = copy.copy(full)
    docs.ttt, docs.tilt_order, docs.doc_aware, docs.time_budget_s = False, 0, True, 0.0
    ttt = copy.copy(full)
    ttt.ttt_phase_docs, ttt.tilt_order, ttt.time_budget_s = "", 0, 0.0
    glob = copy.copy(full)
    glob.tilt_order, glob.time_budget_s = 0, 0.0
    every = copy.copy(full)
    every.time_budget_s = 0.0
    assert isinstance(full, EvalConfig)
    return [("docs", docs), ("+ttt", ttt), ("+global", glob), ("+tilt", every)]


def run(args) -> dict:
    from pgolf.core.config import model_config_from_dict
    from pgolf.core.presets import get_preset
    from pgolf.core.runlog import RunLog
    from pgolf.data.source import load_val_data, resolve_data
    from pgolf.eval.docscore import evaluate_documents
    from pgolf.eval.scoring import evaluate
    from pgolf.model.gpt import GPT
    from pgolf.quant.pack import unpack

    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    cfg.data.data_path, cfg.data.tokenizer_path = args.data, args.tokenizer
    cfg.eval.val_max_tokens = args.val_tokens
    state, meta = unpack(args.artifact)
    cfg.model = model_config_from_dict(meta["model"], source=str(args.artifact))
    model = GPT(cfg.model)
    model.load_state_dict(state)
    model.eval()
    val = load_val_data(cfg, resolve_data(cfg, RunLog(None, master=False)))
    rows = []
    res = {
        "preset": args.preset,
        "artifact": str(args.artifact),
        "threads": args.threads,
        "rows": rows,
        "eval_config": dict(vars(cfg.eval)),
        "projection": projection(val),
    }

    def record(name, score, secs, extra=None):
        rows.append(
            {
                "method": name,
                "val_bpb": score.val_bpb,
                "val_loss": score.val_loss,
                "tokens": score.tokens,
                "bytes": score.bytes,
                "seconds": secs,
                "tokens_per_s": score.tokens / secs,
                **(extra or {}),
            }
        )
        print(f"{name:>12}  val_bpb {score.val_bpb:.4f}  {secs:7.1f} s  {score.tokens / secs:9.0f} tok/s", flush=True)
        (args.out / "results.json").write_text(
            json.dumps(res, indent=2, default=str) + "\n"
        )  # kept if a later one fails

    T = cfg.train.train_seq_len
    for name, win, stride in [("nonoverlap", T, 0), ("sliding", cfg.eval.eval_seq_len or T, cfg.eval.stride)]:
        t0 = time.perf_counter()
        s = evaluate(model, val.tokens, val.tables, window=win, stride=stride, batch_seqs=cfg.eval.batch_seqs)
        record(name, s, time.perf_counter() - t0)
    for name, e in methods(cfg):
        res = evaluate_documents(model, val.tokens, val.tables, e, T, cfg.model.bos_id, log=lambda line: None)
        record(
            name,
            res.score,
            res.seconds["total"],
            {"split_s": res.seconds, "predicted_s": res.predicted_s, "tilted": res.tilted},
        )
    return res


def projection(val) -> dict:
    """Full `frontier` TTT eval on 8xH100 from FLOPs; every assumption is a key of the result."""
    from pgolf.core.presets import get_preset
    from pgolf.eval.budget import plan_work
    from pgolf.eval.docplan import resolve
    from pgolf.model.inventory import flops_per_token

    cfg = get_preset("frontier")
    st = resolve(cfg.eval, val.tokens, cfg.train.train_seq_len, cfg.model.bos_id)
    docs_sample, tok_ratio = len(st.docs), 47_851_520 / 62_021_846  # sp8192-CaseOps / sp1024 val tokens
    docs_full = 50_000
    # the sample's document lengths, in sp8192 tokens, stand for the full split's
    st.docs = type(st.docs)(st.docs.start, (st.docs.length * tok_ratio).astype("int64").clip(min=1))
    st.groups = [st.groups[0]]
    work = plan_work(st, world=8)
    scale = docs_full / docs_sample
    ttt_tokens = work["ttt"] * scale  # padded tokens through forward+backward, slowest of 8 ranks
    f = flops_per_token(cfg.model, cfg.eval.context)
    per_token = f.per_token_train  # forward + backward (3x forward; the adapters' backward skips base weight grads)
    mfu = 0.25
    glob_tokens = 2_500 / docs_full * 47_851_520 / 8
    seconds = (ttt_tokens + glob_tokens) * per_token / (H100_BF16 * mfu)
    return {
        "ttt_padded_tokens_per_rank": ttt_tokens,
        "global_tokens_per_rank": glob_tokens,
        "flops_per_token_fwd": f.per_token_forward,
        "assumed_mfu": mfu,
        "seconds_8xH100": seconds,
        "assumptions": [
            "doc lengths of the 901-document sample, scaled to sp8192 by 47,851,520/62,021,846 "
            "tokens and to 50,000 documents",
            "fwd+bwd = 3x forward FLOPs (an upper bound: the "
            "adapters' backward skips the base weight gradients, ~2x forward)",
            "25% of 989 TFLOP/s bf16 per GPU "
            "(records' training runs at 25-37%; TTT's small chunked batches are assumed lower)",
            "tilt precompute and scoring-only overheads not included",
            "8 ranks share documents by tokens",
        ],
    }


def projection_from_data(args) -> dict:
    from pgolf.core.presets import get_preset
    from pgolf.core.runlog import RunLog
    from pgolf.data.source import load_val_data, resolve_data

    cfg = get_preset(args.preset)
    cfg.data.data_path, cfg.data.tokenizer_path = args.data, args.tokenizer
    return projection(load_val_data(cfg, resolve_data(cfg, RunLog(None, master=False))))


def table(res: dict) -> str:
    base = next(r for r in res["rows"] if r["method"] == "sliding")["val_bpb"]
    lines = ["| method | val_bpb | vs sliding | eval s | scored tok/s |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['method']} | {r['val_bpb']:.4f} | {r['val_bpb'] - base:+.4f} | {r['seconds']:.1f} | "
            f"{r['tokens_per_s']:,.0f} |"
        )
    p = res["projection"]
    lines.append("")
    lines.append(
        f"frontier TTT eval on 8xH100, projected: {p['seconds_8xH100']:.0f} s "
        f"({p['ttt_padded_tokens_per_rank']:.3g} padded TTT tokens/rank at {p['assumed_mfu']:.0%} MFU)"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path)
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds when no --artifact")
    ap.add_argument("--preset", default="frontier-cpu-proxy")
    ap.add_argument("--data", default=str(SHARED / "fineweb_sample" / "sp1024"))
    ap.add_argument("--tokenizer", default=str(SHARED / "tokenizers" / "fineweb_1024_bpe.model"))
    ap.add_argument("--val-tokens", type=int, default=0, help="score only the first N val tokens (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--projection-only", action="store_true", help="only the 8xH100 projection (no model needed)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.projection_only:
        print(json.dumps(projection_from_data(args), indent=2))
        return 0
    args.artifact = args.artifact or train(args)
    res = run(args)
    (args.out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (args.out / "table.md").write_text(table(res) + "\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
