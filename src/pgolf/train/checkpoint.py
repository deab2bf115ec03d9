"""Resumable training checkpoints in safetensors (tensors) + JSON (everything else); no pickle.

A checkpoint holds the model, every optimizer's state, the EMA weights, the loader position,
the step, the training time used and the recurrence switch, so a killed run continues where it
stopped. Files are written to a temporary name and renamed, so a kill mid-write never leaves a
broken checkpoint under the real name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from pgolf.core.errors import PgolfError

CKPT_FORMAT = "pgolf-ckpt-v1"


class CheckpointError(PgolfError, ValueError):
    """A missing, unreadable or mismatching checkpoint."""


def _flatten_optimizer(i: int, sd: dict, tensors: dict[str, Tensor]) -> dict:
    """Move an optimizer state_dict's tensors into `tensors`; return the JSON-able rest."""
    state_meta: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        meta = {}
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"opt{i}.{pid}.{key}"] = val.detach().cpu().contiguous()
                meta[key] = "__tensor__"
            else:
                meta[key] = val
        state_meta[str(pid)] = meta
    return {"state": state_meta, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(i: int, meta: dict, tensors: dict[str, Tensor]) -> dict:
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: tensors[f"opt{i}.{pid}.{k}"] if v == "__tensor__" else v for k, v in st.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, Tensor],
    optimizers: list,
    extra: dict[str, Any],
    ema_state: dict[str, Tensor] | None = None,
) -> None:
    """Write <path> (safetensors) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    if ema_state is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()})
    opt_meta = [_flatten_optimizer(i, opt.state_dict(), tensors) for i, opt in enumerate(optimizers)]
    meta = {"format": CKPT_FORMAT, "optimizers": opt_meta, "extra": extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"pgolf": json.dumps(meta)})
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], list[dict], dict[str, Any], dict[str, Tensor] | None]:
    """Returns (model_state, optimizer_state_dicts, extra, ema_state or None)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("pgolf", "{}"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    if meta.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path}: not a pgolf checkpoint")
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    opts = [_unflatten_optimizer(i, m, tensors) for i, m in enumerate(meta["optimizers"])]
    return model, opts, meta["extra"], ema
