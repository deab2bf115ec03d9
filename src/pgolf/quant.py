"""Post-training quantization: state dict in, QuantizedState out (and back), plus packing into
the artifact container and loading of the official script's checkpoints.

The `int8` scheme is the official one, numerically identical: 2-D float tensors larger than
65,536 elements get per-row int8 with a per-row clip at the 99.99984th percentile of |w| and an
fp16 scale; other large float tensors a per-tensor int8 scale; small float tensors stay float
(control tensors fp32, others fp16); non-float tensors pass through unchanged.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.artifact import ArtifactError, Stream, read_artifact, write_artifact
from pgolf.codecs import CODEC_NAMES, compress_best
from pgolf.config import QuantConfig
from pgolf.model import CONTROL_PATTERNS

INT8_CLIP_Q = 99.99984 / 100.0  # official per-row clip quantile
INT8_MAX = 127
ARTIFACT_QUANT_FORMAT = "pgolf-quant-v1"


@dataclass
class QuantizedState:
    """Stored arrays plus, per original tensor, how to rebuild it ("kind", dtype, shape, ...)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def payload_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _dtype_str(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def is_control_name(name: str) -> bool:
    return any(p in name for p in CONTROL_PATTERNS)


def quantize_int8_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-row int8: (int8 q, fp16 scale) for a 2-D tensor."""
    t32 = t.float()
    clip = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1)
    clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
    scale = (clip / INT8_MAX).clamp_min(1.0 / INT8_MAX)
    q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale.to(torch.float16).contiguous()


def quantize_int8_tensor(t: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-tensor int8 for non-matrix tensors: (int8 q, fp32 scalar scale)."""
    t32 = t.float()
    clip = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip / INT8_MAX if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale


def _passthrough(qs: QuantizedState, name: str, t: Tensor) -> None:
    """Small float tensors: control tensors in fp32, the rest fp16; non-floats unchanged."""
    entry = {"kind": "raw", "dtype": _dtype_str(t), "shape": list(t.shape)}
    if t.is_floating_point():
        store = torch.float32 if is_control_name(name) else torch.float16
        t = t.to(store)
    qs.arrays[name] = _np(t)
    qs.entries[name] = entry


def quantize_int8(state: dict[str, Tensor], qcfg: QuantConfig) -> QuantizedState:
    """The official int8 scheme."""
    qs = QuantizedState()
    for name, t in state.items():
        t = t.detach().cpu()
        if not t.is_floating_point() or t.numel() <= qcfg.keep_float_max_numel:
            _passthrough(qs, name, t)
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


QUANT_SCHEMES = {"int8": quantize_int8}


def quantize(state: dict[str, Tensor], qcfg: QuantConfig) -> QuantizedState:
    """Apply the configured scheme."""
    try:
        fn = QUANT_SCHEMES[qcfg.scheme]
    except KeyError:
        raise ValueError(f"quant.scheme={qcfg.scheme!r}: expected one of {sorted(QUANT_SCHEMES)}") from None
    return fn(state, qcfg)


@dataclass
class PackResult:
    path: Path
    bytes: int
    codec: str
    codec_sizes: dict[str, int]  # size of the payload under every codec tried
    payload_bytes: int  # uncompressed stored arrays


def pack(qs: QuantizedState, model_cfg: dict, qcfg: QuantConfig, path: str | Path) -> PackResult:
    """Write a QuantizedState + model config as one artifact; `auto` picks the smallest codec."""
    names = sorted(qs.arrays)
    codec, sizes = qcfg.compressor, {}
    if codec == "auto":
        raw = b"".join(np.ascontiguousarray(qs.arrays[n]).tobytes() for n in names)
        codec, _, sizes = compress_best(raw, tuple(c for c in CODEC_NAMES if c != "raw"))
    meta = {"format": ARTIFACT_QUANT_FORMAT, "model": model_cfg, "scheme": qcfg.scheme, "entries": qs.entries}
    size = write_artifact(path, qs.arrays, meta, [Stream(codec, names)])
    sizes.setdefault(codec, size)
    return PackResult(Path(path), size, codec, sizes, qs.payload_bytes())


def unpack(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an artifact back into a float state dict and its metadata."""
    arrays, meta = read_artifact(path)
    if meta.get("format") != ARTIFACT_QUANT_FORMAT:
        raise ArtifactError(f"{path}: unknown artifact content format {meta.get('format')!r}")
    return dequantize(QuantizedState(arrays, meta["entries"])), meta


def load_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """State dict from the official script's `final_model.pt` or `final_model.int8.ptz`.
    Loaded with torch.load(weights_only=True): tensors and plain containers only, no code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    raw = path.read_bytes()
    if path.suffix == ".ptz":
        try:
            raw = zlib.decompress(raw)
        except zlib.error as exc:
            raise ArtifactError(f"{path}: not a zlib-compressed official int8 checkpoint ({exc})") from exc
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise ArtifactError(f"{path}: cannot load as a weights-only torch checkpoint ({exc})") from exc
    if isinstance(obj, dict) and obj.get("__quant_format__") == "int8_clean_per_row_v1":
        return _dequantize_official(obj)
    if isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
        return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}
    raise ArtifactError(f"{path}: not an official state dict or int8 checkpoint")


def _dequantize_official(obj: dict) -> dict[str, Tensor]:
    """Official int8 object -> float32 state dict, rounding through each tensor's recorded
    original dtype first (e.g. bf16 on GPU) so the values equal what the official roundtrip used."""
    out: dict[str, Tensor] = {}
    orig = obj.get("passthrough_orig_dtypes", {})
    for name, q in obj["quantized"].items():
        s = obj["scales"][name]
        if s.ndim > 0:
            w = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        else:
            w = q.float() * float(s.item())
        out[name] = w.to(getattr(torch, obj["dtypes"][name])).float()
    for name, t in obj["passthrough"].items():
        if t.is_floating_point():
            t = t.to(getattr(torch, orig[name])) if name in orig else t
            t = t.float()
        out[name] = t
    return out
