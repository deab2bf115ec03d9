"""Reversible transforms that make quantized weights easier for a general-purpose entropy coder.

Byte transforms act on a whole stream's bytes (named, recorded in the artifact header):
- `none`;
- `shuffleK` (K = 2, 4): byte transposition with stride K -- all byte 0s, then all byte 1s, ...
  The high bytes of fp16/fp32 values are alike and compress well together (the `BSHF` idea of
  PR #1089);
- `bitpackN` (N = 2..7): int8 codes in [-R, R] packed densely at N bits each.

Tensor layouts act on one 2-D code matrix (recorded per tensor):
- `rows` (as is), `cols` (transposed: serialised column-major, PR #1855's per-group path);
- a row permutation from a greedy nearest-neighbour chain under L1 distance, so that similar
  rows sit next to each other (PR #1855 "hot" groups); the permutation is stored as uint16.
"""

from __future__ import annotations

import numpy as np

from pgolf.core.errors import PgolfError
from pgolf.quant.lowbit import pack_bits, qmax, unpack_bits

BYTE_TRANSFORMS = (
    "none",
    "shuffle2",
    "shuffle4",
    "bitpack2",
    "bitpack3",
    "bitpack4",
    "bitpack5",
    "bitpack6",
    "bitpack7",
)
LAYOUTS = ("rows", "cols")
REORDER_MAX_ROWS = 8192  # the greedy chain is O(rows^2 * cols); larger matrices keep their order


class TransformError(PgolfError, ValueError):
    """Unknown transform, or bytes that a transform's inverse cannot take."""


def shuffle_bytes(data: bytes, stride: int) -> bytes:
    """Byte transposition: element i's byte j goes to position j * n + i (n = len // stride);
    a tail shorter than one element is appended unchanged."""
    n = len(data) // stride
    head = np.frombuffer(data, dtype=np.uint8, count=n * stride).reshape(n, stride)
    return head.T.tobytes() + data[n * stride :]


def unshuffle_bytes(data: bytes, stride: int) -> bytes:
    n = len(data) // stride
    head = np.frombuffer(data, dtype=np.uint8, count=n * stride).reshape(stride, n)
    return head.T.tobytes() + data[n * stride :]


def apply_byte_transform(data: bytes, name: str) -> bytes:
    """Forward byte transform by name (see module docstring)."""
    if name == "none":
        return bytes(data)
    if name.startswith("shuffle") and name in BYTE_TRANSFORMS:
        return shuffle_bytes(data, int(name[7:]))
    if name.startswith("bitpack") and name in BYTE_TRANSFORMS:
        return pack_bits(np.frombuffer(data, dtype=np.int8), int(name[7:])).tobytes()
    raise TransformError(f"unknown byte transform {name!r}; expected one of {', '.join(BYTE_TRANSFORMS)}")


def invert_byte_transform(data: bytes, name: str, raw_len: int) -> bytes:
    """Inverse byte transform; `raw_len` is the original length (needed by bitpack)."""
    if name == "none":
        return bytes(data)
    if name.startswith("shuffle") and name in BYTE_TRANSFORMS:
        return unshuffle_bytes(data, int(name[7:]))
    if name.startswith("bitpack") and name in BYTE_TRANSFORMS:
        return unpack_bits(np.frombuffer(data, dtype=np.uint8), int(name[7:]), raw_len).tobytes()
    raise TransformError(f"unknown byte transform {name!r}; expected one of {', '.join(BYTE_TRANSFORMS)}")


def bitpack_fits(data: bytes, bits: int) -> bool:
    """Whether every byte, read as int8, lies in [-R, R] for `bits`."""
    if not data:
        return True
    arr = np.frombuffer(data, dtype=np.int8)
    r = qmax(bits)
    return int(arr.min()) >= -r and int(arr.max()) <= r


def apply_layout(q: np.ndarray, layout: str) -> np.ndarray:
    """Stored form of a 2-D code matrix."""
    if layout == "rows":
        return np.ascontiguousarray(q)
    if layout == "cols":
        return np.ascontiguousarray(q.T)
    raise TransformError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def invert_layout(stored: np.ndarray, layout: str) -> np.ndarray:
    if layout == "rows":
        return stored
    if layout == "cols":
        return np.ascontiguousarray(stored.T)
    raise TransformError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def greedy_row_order(q: np.ndarray) -> np.ndarray:
    """Row permutation (uint16): start at row 0, repeatedly append the unused row nearest (L1) to
    the last one (PR #1855's similarity sort). Deterministic: ties go to the lowest index."""
    rows = q.shape[0]
    if rows > REORDER_MAX_ROWS or rows > np.iinfo(np.uint16).max:
        return np.arange(rows, dtype=np.uint16)
    x = q.astype(np.int16)
    used = np.zeros(rows, dtype=bool)
    order = np.empty(rows, dtype=np.int64)
    cur = 0
    for i in range(rows):
        order[i], used[cur] = cur, True
        if i + 1 == rows:
            break
        dist = np.abs(x - x[cur]).sum(axis=1, dtype=np.int64)
        dist[used] = np.iinfo(np.int64).max
        cur = int(np.argmin(dist))
    return order.astype(np.uint16)


def invert_row_order(stored: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows of `stored` are original rows order[0], order[1], ...: put them back."""
    if order.shape != (stored.shape[0],) or not np.array_equal(
        np.sort(order.astype(np.int64)), np.arange(stored.shape[0])
    ):
        raise TransformError("stored row order is not a permutation of the rows")
    out = np.empty_like(stored)
    out[order.astype(np.int64)] = stored
    return out
