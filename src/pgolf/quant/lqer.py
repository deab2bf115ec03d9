"""LQER: low-rank reconstruction of the quantization error (Zhang et al. 2024, arXiv:2402.02446;
in Parameter Golf PR #1797 / #1855).

After quantizing W to W^, the error E = W - W^ is approximated by a rank-k product A B
(A: out x k, B: k x in) from a truncated SVD and stored next to W^; the model uses W^ + A B.
With a Hessian available, E is first scaled column-wise by sqrt(diag H) (the activation-aware
"L2QER" variant of the paper), so the kept directions are those that matter for the layer's
outputs. The singular values are split evenly between the factors (A = U sqrt(S),
B = sqrt(S) V^T) and both factors are stored as per-row symmetric intN codes with fp16 scales
(A transposed, so each of its k columns is one row with one scale). Only the `top_k` tensors whose
error drops the most get a correction: it costs (out + in) * k codes per tensor.

Device: with a Hessian diagonal the SVD runs on its device (the GPU after a GPU calibration,
issue 11); the factors come back on the error's device, so the stored codes do not depend on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pgolf.quant.lowbit import dequantize_rows, quantize_rows

LQER_FACTOR_BITS = 4  # bits per factor code (PR #1855 used int2 for A and group-wise int4 for B)
LQER_COL_WEIGHT_FLOOR = 1e-6  # relative floor of sqrt(diag H) so dead inputs do not blow up B


def lqer_factors(err: Tensor, rank: int, h_diag: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Float factors (A: out x rank, B: rank x in) with A @ B ~ err, optionally activation-weighted,
    computed on h_diag's device when given."""
    home = err.device
    e = err.detach().double().to(h_diag.device if h_diag is not None else home)
    w = None
    if h_diag is not None:
        w = h_diag.double().clamp_min(0).sqrt()
        w = w.clamp_min(LQER_COL_WEIGHT_FLOOR * float(w.max().clamp_min(1e-30)))
        e = e * w[None, :]
    u, s, vh = torch.linalg.svd(e, full_matrices=False)
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    a, b = u[:, :k] * root[None, :], root[:, None] * vh[:k]
    if w is not None:
        b = b / w[None, :]
    return a.float().to(home), b.float().to(home)


def quantize_factors(a: Tensor, b: Tensor, bits: int = LQER_FACTOR_BITS) -> dict[str, Tensor]:
    """int codes + fp16 scales of both factors: {'lqa', 'lqas', 'lqb', 'lqbs'} (A stored as A^T)."""
    qa, sa = quantize_rows(a.T.contiguous(), bits, rule="percentile", percentile=100.0)
    qb, sb = quantize_rows(b.contiguous(), bits, rule="percentile", percentile=100.0)
    return {"lqa": qa, "lqas": sa, "lqb": qb, "lqbs": sb}


def lqer_correction(parts: dict[str, Tensor]) -> Tensor:
    """The dequantized low-rank product A B (out x in), fp32."""
    a_t = dequantize_rows(parts["lqa"], parts["lqas"])  # (k, out)
    b = dequantize_rows(parts["lqb"], parts["lqbs"])  # (k, in)
    return a_t.T @ b


def weighted_error(err: Tensor, h_diag: Tensor | None) -> float:
    """Squared error, each input column weighted by its activation energy diag(H) when known."""
    e2 = err.double() ** 2
    return float((e2 * h_diag.double().to(e2.device)[None, :]).sum() if h_diag is not None else e2.sum())


def lqer_candidate(
    w: Tensor, w_hat: Tensor, rank: int, h_diag: Tensor | None = None, bits: int = LQER_FACTOR_BITS
) -> tuple[float, dict[str, Tensor]]:
    """(error reduction, quantized factor parts) of correcting w_hat towards w at `rank`."""
    err = w.float() - w_hat.float()
    parts = quantize_factors(*lqer_factors(err, rank, h_diag), bits)
    gain = weighted_error(err, h_diag) - weighted_error(err - lqer_correction(parts), h_diag)
    return gain, parts
