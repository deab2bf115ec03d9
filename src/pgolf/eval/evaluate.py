"""`pgolf eval`: score saved weights on the validation split with the same scorer as training.

Accepts a pgolf artifact (.pglf, model config inside), a pgolf safetensors file (final model or
checkpoint; model config from the run folder's config.json or the given preset/options), or the
official script's final_model.pt / final_model.int8.ptz (loaded weights-only, no code), so old
runs and new ones are compared on one scorer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from pgolf.core.config import RunConfig, model_config_from_dict
from pgolf.core.errors import UsageError
from pgolf.core.runlog import RunLog
from pgolf.core.runtime import autocast_for, init_runtime, shutdown
from pgolf.data.source import load_val_data, resolve_data
from pgolf.eval.docscore import eval_kind, evaluate_documents, time_split, uses_documents
from pgolf.eval.scoring import evaluate
from pgolf.model.gpt import GPT
from pgolf.model.inventory import param_shapes
from pgolf.model.weights import WeightsMismatchError, load_matching
from pgolf.quant.container import ArtifactError
from pgolf.quant.official import load_official_checkpoint
from pgolf.quant.pack import unpack
from pgolf.quant.registry import validate_config


def weights_kind(path: Path, kind: str = "auto") -> str:
    if kind != "auto":
        return kind
    if path.suffix == ".pglf":
        return "artifact"
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix in (".pt", ".ptz"):
        return "official"
    raise UsageError(f"{path}: cannot tell the weights format from the suffix; pass --kind")


def load_safetensors_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (a training checkpoint's model part); a corrupt or foreign
    file is a one-line ArtifactError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    if any(k.startswith("model.") for k in state):  # a training checkpoint
        state = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    return state


def load_weights(cfg: RunConfig, path: Path, kind: str) -> dict[str, torch.Tensor]:
    """State dict for `path`; updates cfg.model from the artifact or run folder when known."""
    kind = weights_kind(path, kind)
    if kind == "artifact":
        state, meta = unpack(path)
        cfg.model = model_config_from_dict(meta.get("model"), source=str(path))
        return state
    if kind == "safetensors":
        run_cfg = path.parent / "config.json"
        if run_cfg.is_file():
            try:
                saved = json.loads(run_cfg.read_text(encoding="utf-8")).get("model")
            except (ValueError, AttributeError) as exc:
                raise ArtifactError(f"{run_cfg}: not a pgolf run config ({exc})") from None
            cfg.model = model_config_from_dict(saved, source=str(run_cfg))
        return load_safetensors_state(path)
    return load_official_checkpoint(path)


def check_shapes(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: Path) -> None:
    """The weights must be exactly the parameters of the configured model (names and shapes),
    checked against a meta-device build, so a lying config cannot make pgolf allocate a model
    the file does not hold."""
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got == expected:
        return
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    detail = (
        f"missing {missing[:3]}"
        if missing
        else f"unexpected {extra[:3]}"
        if extra
        else f"{wrong[0]} is {list(got[wrong[0]])}, the model has {list(expected[wrong[0]])}"
    )
    raise WeightsMismatchError(f"{source}: weights do not match this model config ({detail})")


def run_documents(cfg: RunConfig, model, val, rt, log) -> dict:
    """The configured document evaluation (windows per document, TTT, global phases, tilt) with
    its budget, time split and score logged."""
    kind = eval_kind(cfg.eval)
    res = evaluate_documents(
        model,
        val.tokens,
        val.tables,
        cfg.eval,
        cfg.train.train_seq_len,
        cfg.model.bos_id,
        rank=rt.rank,
        world_size=rt.world_size,
        device=rt.device,
        autocast=autocast_for(rt.device),
        progress=rt.master,
        log=log,
    )
    log(eval_line(kind, cfg, res))
    out = {
        "val_loss": res.score.val_loss,
        "val_bpb": res.score.val_bpb,
        "tokens": res.score.tokens,
        "bytes": res.score.bytes,
        "seconds": res.seconds,
        "predicted_s": res.predicted_s,
        "over_budget": res.over_budget,
        "tilted": res.tilted,
    }
    return out


def eval_line(kind: str, cfg: RunConfig, res) -> str:
    """`eval:ttt+global+tilt val_loss:… val_bpb:… eval_time:…ms scoring:… ttt:… global:… tilt:…`."""
    e = cfg.eval
    flag = (
        " over_budget:RESEARCH"
        if res.over_budget or (e.over_budget_ok and res.predicted_s > e.time_budget_s > 0)
        else ""
    )
    return (
        f"eval:{kind} context:{e.context or e.eval_seq_len or cfg.train.train_seq_len} val_loss:{res.score.val_loss:.8f} "
        f"val_bpb:{res.score.val_bpb:.8f} tokens:{res.score.tokens} val_bytes:{res.score.bytes} "
        f"{time_split(res)} budget:{e.time_budget_s:g}s tilted:{res.tilted}{flag}"
    )


def run_eval(cfg: RunConfig, path: Path, kind: str = "auto") -> dict:
    """Score weights non-overlapping (official) and, when eval.stride > 0, sliding-window."""
    if not path.is_file():
        raise UsageError(f"{path}: weights file not found")
    validate_config(cfg)
    rt = init_runtime(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    state = load_weights(cfg, path, kind)
    log = RunLog(None, master=rt.master)
    check_shapes(state, param_shapes(cfg.model), path)  # before allocating a model from the config
    model = GPT(cfg.model).to(rt.device)
    load_matching(model, {k: v.to(rt.device) for k, v in state.items()}, path)
    model.set_recurrence(bool(cfg.model.recur_layers) and cfg.model.recur_loops > 1)
    data = resolve_data(cfg, log)
    val = load_val_data(cfg, data)
    log(
        f"eval:weights {path} model_params:{sum(p.numel() for p in model.parameters())} "
        f"val_tokens:{val.tokens.numel() - 1} val_bytes:{val.total_bytes}"
    )
    results = {}
    window = cfg.eval.eval_seq_len or cfg.train.train_seq_len
    runs = [("nonoverlap", cfg.train.train_seq_len, 0)] + (
        [("sliding", window, cfg.eval.stride)] if cfg.eval.stride else []
    )
    if uses_documents(cfg.eval):
        results[eval_kind(cfg.eval)] = run_documents(cfg, model, val, rt, log)
    for name, win, stride in runs:
        t0 = time.perf_counter()
        score = evaluate(
            model,
            val.tokens,
            val.tables,
            window=win,
            stride=stride,
            batch_seqs=cfg.eval.batch_seqs,
            rank=rt.rank,
            world_size=rt.world_size,
            device=rt.device,
            autocast=autocast_for(rt.device),
            progress=rt.master,
        )
        secs = time.perf_counter() - t0
        log(
            f"eval:{name} window:{win} stride:{stride} val_loss:{score.val_loss:.8f} val_bpb:{score.val_bpb:.8f} "
            f"tokens:{score.tokens} val_bytes:{score.bytes} eval_time:{1000 * secs:.0f}ms"
        )
        results[name] = {
            "val_loss": score.val_loss,
            "val_bpb": score.val_bpb,
            "tokens": score.tokens,
            "bytes": score.bytes,
        }
    shutdown(rt)
    return results
