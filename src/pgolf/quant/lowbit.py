"""Low-bit building blocks: per-row symmetric intN (N = 2..8) with clip rules, and bit packing of
sub-byte values.

A row r of a 2-D weight W (out x in) is stored as int8 codes q in [-R, R], R = 2^(N-1) - 1, and one
fp16 scale s_r = clip_r / R, so w ~ q * s_r. The clip rule chooses clip_r:

- percentile: the p-th quantile of |W_r| (the official int8 rule uses p = 99.99984 %);
- sdclip: k * std(W_r) (PR #1855; k = 13 attention / 11.5 MLP / 14 embeddings at int6/int7).
  With entropy coding the step s = k * std / R sets the rate: a coarse step means few distinct
  symbols near zero and fewer bits, at the price of rounding noise;
- search: per row, the k from CLIP_SEARCH_GRID minimising the squared rounding error.

Codes are computed against the fp16-rounded scale, so dequantization is bit-exact everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MIN_BITS, MAX_BITS = 2, 8
INT8_CLIP_Q = 99.99984 / 100.0  # official per-row clip quantile
INT8_MAX = 127
DEFAULT_PERCENTILE = 99.99984  # official int8 clip quantile, in percent
CLIP_SEARCH_GRID = tuple(float(k) for k in np.linspace(1.5, 16.0, 30))  # k candidates (x row std)
MIN_SCALE = 1e-8  # all-zero rows get this scale (codes are 0 anyway)
CLIP_RULES = ("percentile", "sdclip", "search")


def qmax(bits: int) -> int:
    """Largest code magnitude R of symmetric intN: 2^(N-1) - 1 (int2 -> {-1, 0, 1})."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits={bits}: expected {MIN_BITS}..{MAX_BITS}")
    return (1 << (bits - 1)) - 1


def fp16_row_scale(clip: Tensor, bits: int) -> Tensor:
    """clip / R rounded to fp16 (the stored scale), never zero or subnormal-tiny."""
    return (clip.float() / qmax(bits)).clamp_min(MIN_SCALE).to(torch.float16).clamp_min(6.2e-5)


def codes_for(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """int8 codes of a 2-D float w for fp16 row scales (round to nearest, clamp to +-R)."""
    r = qmax(bits)
    return torch.clamp(torch.round(w.float() / scale.float()[:, None]), -r, r).to(torch.int8)


def search_clip(w: Tensor, bits: int, grid: tuple[float, ...] = CLIP_SEARCH_GRID) -> Tensor:
    """Per-row clip = k * std with k from `grid` minimising the row's squared rounding error."""
    w = w.float()
    std = w.std(dim=1, unbiased=False)
    best_err = torch.full((w.shape[0],), float("inf"))
    best = std * grid[0]
    for k in grid:
        scale = fp16_row_scale(std * k, bits).float()
        err = ((codes_for(w, scale, bits).float() * scale[:, None] - w) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, std * k, best)
    return best


def row_clip(w: Tensor, bits: int, rule: str, k: float = 12.0, percentile: float = DEFAULT_PERCENTILE) -> Tensor:
    """Per-row clip value (rows,) of a 2-D tensor under `rule` (see module docstring)."""
    w = w.float()
    if rule == "sdclip":
        return k * w.std(dim=1, unbiased=False)
    if rule == "percentile":
        return torch.quantile(w.abs(), percentile / 100.0, dim=1)
    if rule == "search":
        return search_clip(w, bits)
    raise ValueError(f"clip rule {rule!r}: expected one of {', '.join(CLIP_RULES)}")


def quantize_rows(
    w: Tensor, bits: int, rule: str = "sdclip", k: float = 12.0, percentile: float = DEFAULT_PERCENTILE
) -> tuple[Tensor, Tensor]:
    """Per-row symmetric intN of a 2-D tensor: (int8 codes in [-R, R], fp16 scales)."""
    if w.ndim != 2:
        raise ValueError(f"quantize_rows needs a 2-D tensor, got shape {tuple(w.shape)}")
    scale = fp16_row_scale(row_clip(w, bits, rule, k, percentile), bits)
    return codes_for(w, scale, bits), scale


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    """codes * row scale, in fp32."""
    return q.float() * scale.float()[:, None]


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack int8 codes in [-R, R] into a dense little-endian bitstream of `bits` bits each
    (uint8 array of ceil(n * bits / 8) bytes). Codes are offset by +R to be unsigned."""
    r = qmax(bits)
    flat = codes.reshape(-1).astype(np.int16) + r
    if flat.size and (flat.min() < 0 or flat.max() > 2 * r):
        raise ValueError(f"codes outside [-{r}, {r}] cannot be packed in {bits} bits")
    planes = ((flat[:, None] >> np.arange(bits, dtype=np.int16)) & 1).astype(np.uint8)  # (n, bits)
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: `count` int8 codes."""
    need = (count * bits + 7) // 8
    if packed.size != need:
        raise ValueError(f"bit-packed data has {packed.size} bytes, expected {need} for {count} x {bits}-bit codes")
    planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits).astype(np.int16)
    vals = (planes << np.arange(bits, dtype=np.int16)).sum(axis=1)
    return (vals - qmax(bits)).astype(np.int8)


def quantize_int8_tensor(t: Tensor) -> tuple[Tensor, Tensor]:
    """Official per-tensor int8 for non-matrix tensors: (int8 q, fp32 scalar scale)."""
    t32 = t.float()
    clip = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip / INT8_MAX if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
    return q.contiguous(), scale
