"""Post-training quantization schemes: state dict in, QuantizedState (stored arrays + how to rebuild
each tensor) out, and back. Every function takes `groups`, the quantization group of each tensor
(pgolf.core.roles, from the model's declared parameter roles); a tensor without one is an error.

The `int8` scheme is the official one, numerically identical: 2-D float tensors larger than
65,536 elements get per-row int8 with a per-row clip at the 99.99984th percentile of |w| and an
fp16 scale; other large float tensors a per-tensor int8 scale; small float tensors stay float
(control tensors fp32, others fp16); non-float tensors pass through unchanged.

The `mixed` scheme (pgolf.quant.mixed) is per-group intN + GPTQ + LQER.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.core.config import ConfigError, QuantConfig
from pgolf.quant.container import ArtifactError
from pgolf.quant.lowbit import INT8_CLIP_Q, INT8_MAX, quantize_int8_tensor
from pgolf.quant.mixed import quantize_mixed_arrays, restore_intq


@dataclass
class QuantizedState:
    """Stored arrays plus, per original tensor, how to rebuild it ("kind", dtype, shape, ...)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # what quantization did (not stored)

    def payload_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _dtype_str(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_groups(state: dict[str, Tensor], groups: dict[str, str]) -> None:
    """Every tensor must have a quantization group (no name-based default)."""
    missing = [n for n in state if n not in groups]
    if missing:
        raise KeyError(
            f"no quantization group for {len(missing)} tensor(s), e.g. {missing[0]!r}; "
            "pass the model's groups (pgolf.core.roles.quant_groups)"
        )


def quantize_int8_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-row int8: (int8 q, fp16 scale) for a 2-D tensor."""
    t32 = t.float()
    clip = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
    clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
    scale = (clip / INT8_MAX).clamp_min(1.0 / INT8_MAX)
    q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.to(torch.float16).contiguous()


def _passthrough(qs: QuantizedState, name: str, t: Tensor, group: str) -> None:
    """Small float tensors: control tensors in fp32, the rest fp16; non-floats unchanged."""
    entry = {"kind": "raw", "dtype": _dtype_str(t), "shape": list(t.shape)}
    if t.is_floating_point():
        store = torch.float32 if group == "control" else torch.float16
        t = t.to(store)
    qs.arrays[name] = _np(t)
    qs.entries[name] = entry


def quantize_int8(state: dict[str, Tensor], groups: dict[str, str], qcfg: QuantConfig) -> QuantizedState:
    """The official int8 scheme."""
    check_groups(state, groups)
    qs = QuantizedState()
    for name, t in state.items():
        t = t.detach().cpu()
        if not t.is_floating_point() or t.numel() <= qcfg.keep_float_max_numel:
            _passthrough(qs, name, t, groups[name])
            continue
        q, s = quantize_int8_rows(t) if t.ndim == 2 else quantize_int8_tensor(t)
        kind = "int8_row" if t.ndim == 2 else "int8_tensor"
        qs.arrays[name + ".q"], qs.arrays[name + ".s"] = _np(q), _np(s)
        qs.entries[name] = {"kind": kind, "dtype": _dtype_str(t), "shape": list(t.shape)}
    return qs


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


def quantize_mixed(
    state: dict[str, Tensor],
    groups: dict[str, str],
    qcfg: QuantConfig,
    hessians: dict[str, Tensor] | None = None,
    deadline: float | None = None,
) -> QuantizedState:
    """Per-group intN (+ GPTQ with Hessians, + LQER): see pgolf.quant.mixed."""
    check_groups(state, groups)
    arrays, entries, info = quantize_mixed_arrays(state, groups, qcfg, hessians, deadline)
    return QuantizedState(arrays, entries, info)


QUANT_SCHEMES = ("int8", "mixed")


def quantize(
    state: dict[str, Tensor],
    groups: dict[str, str],
    qcfg: QuantConfig,
    hessians: dict[str, Tensor] | None = None,
    deadline: float | None = None,
) -> QuantizedState:
    """Apply the configured scheme. `groups`: tensor name -> quantization group. `hessians` (name
    -> H, from pgolf.quant.gptq.collect_hessians) turn on GPTQ when quant.gptq is set; without them
    the mixed scheme rounds to nearest. `deadline` (a time.perf_counter() value) bounds GPTQ time:
    later tensors fall back to rounding."""
    if qcfg.scheme == "int8":
        return quantize_int8(state, groups, qcfg)
    if qcfg.scheme == "mixed":
        return quantize_mixed(state, groups, qcfg, hessians, deadline)
    raise ConfigError(f"quant.scheme={qcfg.scheme!r}: expected one of {', '.join(QUANT_SCHEMES)}")
