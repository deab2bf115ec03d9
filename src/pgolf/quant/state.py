"""What a quantization scheme produces and how it is rebuilt: QuantizedState (stored arrays + one
entry per original tensor saying how to rebuild it) and `dequantize`, which dispatches on each
entry's kind, so an artifact restores without knowing which scheme wrote it.

Entry kinds: raw (stored as is, float upcast), int8_row (per-row int8 codes + fp16 row scales),
int8_tensor (int8 codes + one scale), intq (per-row intN codes + fp16 scales, optional LQER
factors; pgolf.quant.mixed.restore_intq).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.quant.container import ArtifactError
from pgolf.quant.mixed import restore_intq


@dataclass
class QuantizedState:
    """Stored arrays plus, per original tensor, how to rebuild it ("kind", dtype, shape, ...)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what quantization did (not stored)

    def payload_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())


def as_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_groups(state: dict[str, Tensor], groups: dict[str, str]) -> None:
    """Every tensor must have a quantization group (no name-based default)."""
    missing = [n for n in state if n not in groups]
    if missing:
        raise KeyError(
            f"no quantization group for {len(missing)} tensor(s), e.g. {missing[0]!r}; "
            "pass the model's groups (pgolf.core.roles.quant_groups)"
        )


def _restore(name: str, entry: dict, arrays: dict[str, np.ndarray]) -> Tensor:
    kind, dtype = entry["kind"], getattr(torch, entry["dtype"])
    if kind == "raw":
        return torch.from_numpy(arrays[name].copy()).to(dtype)
    if kind == "intq":
        return restore_intq(name, entry, arrays).to(dtype).contiguous()
    q = torch.from_numpy(arrays[name + ".q"].copy()).float()
    s = torch.from_numpy(arrays[name + ".s"].copy()).float()
    if kind == "int8_row":
        return (q * s.view(q.shape[0], *([1] * (q.ndim - 1)))).to(dtype).contiguous()
    if kind == "int8_tensor":
        return (q * float(s.item())).to(dtype).contiguous()
    raise ArtifactError(f"tensor {name!r}: unknown quantization kind {kind!r}")


def dequantize(qs: QuantizedState) -> dict[str, Tensor]:
    """Rebuild a float state dict from a QuantizedState (dispatch on each entry's kind)."""
    out = {}
    for name, entry in qs.entries.items():
        try:
            t = _restore(name, entry, qs.arrays)
        except KeyError as exc:
            raise ArtifactError(f"tensor {name!r}: stored array {exc} is missing") from None
        if list(t.shape) != list(entry["shape"]):
            raise ArtifactError(f"tensor {name!r}: decoded shape {list(t.shape)} != {entry['shape']}")
        out[name] = t
    return out
