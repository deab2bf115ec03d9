"""The official script's checkpoints: `final_model.pt` (a state dict) and `final_model.int8.ptz`
(its int8 object, zlib-compressed), loaded weights-only (tensors and plain containers, no code)
and dequantized exactly as the official roundtrip does."""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path

import torch
from torch import Tensor

from pgolf.quant.container import ArtifactError


def load_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """State dict from the official script's `final_model.pt` or `final_model.int8.ptz`.
    Loaded with torch.load(weights_only=True): tensors and plain containers only, no code."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    raw = path.read_bytes()
    if path.suffix == ".ptz":
        try:
            raw = zlib.decompress(raw)
        except zlib.error as exc:
            raise ArtifactError(f"{path}: not a zlib-compressed official int8 checkpoint ({exc})") from exc
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise ArtifactError(f"{path}: cannot load as a weights-only torch checkpoint ({_one_line(exc)})") from None
    if isinstance(obj, dict) and obj.get("__quant_format__") == "int8_clean_per_row_v1":
        return _dequantize_official(obj)
    if isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
        return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}
    raise ArtifactError(f"{path}: not an official state dict or int8 checkpoint")


def _one_line(exc: Exception) -> str:
    """torch's refusal runs to several lines of advice; what matters is which object was refused."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"refused: the pickle holds the Python object {found.group(1)}; pgolf loads tensors only, never code"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


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
