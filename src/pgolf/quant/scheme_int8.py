"""`int8`: the official scheme, numerically identical to the official train_gpt.py.

2-D float tensors larger than quant.keep_float_max_numel (official 65,536) get per-row int8 with
a per-row clip at the 99.99984th percentile of |w| and an fp16 scale; other large float tensors a
per-tensor int8 scale; small float tensors stay float (control tensors fp32, others fp16);
non-float tensors pass through. One stream, one codec (official: zlib).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pgolf.core.config import QuantConfig
from pgolf.quant.container import Stream
from pgolf.quant.lowbit import INT8_CLIP_Q, INT8_MAX, quantize_int8_tensor
from pgolf.quant.registry import Scheme
from pgolf.quant.state import QuantizedState, as_numpy, check_groups, dtype_name

# Official int8+zlib: compressed / raw payload on the official 8xH100 baseline (15,815,847 bytes of a
# 17,178,912-byte payload). CPU-trained proxies compress better (0.744 on the benchmark model), so
# int8 predictions for them run high.
INT8_ZLIB_RATIO = 0.92


def quantize_int8_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-row int8: (int8 q, fp16 scale) for a 2-D tensor."""
    t32 = t.float()
    clip = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
    clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
    scale = (clip / INT8_MAX).clamp_min(1.0 / INT8_MAX)
    q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.to(torch.float16).contiguous()


def passthrough(qs: QuantizedState, name: str, t: Tensor, group: str) -> None:
    """Small float tensors: control tensors in fp32, the rest fp16; non-floats unchanged."""
    entry = {"kind": "raw", "dtype": dtype_name(t), "shape": list(t.shape)}
    if t.is_floating_point():
        store = torch.float32 if group == "control" else torch.float16
        t = t.to(store)
    qs.arrays[name] = as_numpy(t)
    qs.entries[name] = entry


def quantize_int8(state: dict[str, Tensor], groups: dict[str, str], qcfg: QuantConfig) -> QuantizedState:
    """The official int8 scheme."""
    check_groups(state, groups)
    qs = QuantizedState()
    for name, t in state.items():
        t = t.detach().cpu()
        if not t.is_floating_point() or t.numel() <= qcfg.keep_float_max_numel:
            passthrough(qs, name, t, groups[name])
            continue
        q, s = quantize_int8_rows(t) if t.ndim == 2 else quantize_int8_tensor(t)
        kind = "int8_row" if t.ndim == 2 else "int8_tensor"
        qs.arrays[name + ".q"], qs.arrays[name + ".s"] = as_numpy(q), as_numpy(s)
        qs.entries[name] = {"kind": kind, "dtype": dtype_name(t), "shape": list(t.shape)}
    return qs


class Int8Scheme(Scheme):
    name = "int8"
    summary = "official per-row int8 (+ fp16/fp32 passthrough of small tensors), one stream"
    fields = ("keep_float_max_numel", "compressor")

    def quantize(self, state, groups, qcfg, hessians=None, deadline=None) -> QuantizedState:
        return quantize_int8(state, groups, qcfg)

    def streams(self, qs, qcfg):
        return qs.arrays, qs.entries, [Stream(qcfg.compressor, sorted(qs.arrays), ("none",), "all")], {}

    def tensor_bytes(self, group, shape, qcfg, beta) -> float:
        """Small tensors raw (control fp32, others fp16), large ones int8 + fp16 row scales (fp32
        scalar scale if not 2-D), times the measured zlib ratio."""
        n = int(np.prod(shape, dtype=np.int64))
        if n <= qcfg.keep_float_max_numel:
            raw = n * (4 if group == "control" else 2)
        else:
            raw = n + (2 * shape[0] if len(shape) == 2 else 4)
        return raw * INT8_ZLIB_RATIO

    def tensor_width(self, group, shape, qcfg) -> str:
        return "int8" if np.prod(shape) > qcfg.keep_float_max_numel else "float"
