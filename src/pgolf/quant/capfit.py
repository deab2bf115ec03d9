"""Fitting the cap by construction: when a packed artifact (plus the code counted with it) is over
its target, take bytes away where they cost least, measuring every step, and stop as soon as it
fits.

1. Selective pruning (as the records do): quantized codes of +-1 become 0, cheapest first. The
   cost of zeroing code q = +-1 at (row r, column c) is the output error it adds on the
   calibration data, s_r^2 * H_cc (row scale squared times the Hessian diagonal; without Hessians
   H_cc = 1). Zeros are the most frequent code, so each one shortens the entropy-coded stream.
   How many to prune is found by measurement: pack, measure, interpolate (secant), repeat.
2. If pruning up to `quant.prune_max_frac` of the quantized weights is not enough, the LQER
   corrections are dropped (largest stored factors first), then pruning is searched again.
3. Still over: SizeCapError saying by how much. (Coarser clipping, a third lever, needs GPTQ to
   run again and is not tried here.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from torch import Tensor

from pgolf.core.config import QuantConfig
from pgolf.quant.mixed import LQER_PART_NAMES
from pgolf.quant.pack import PackResult, SizeCapError, pack
from pgolf.quant.state import QuantizedState

CAP_MARGIN_BYTES = 4_096  # default target = cap - this: room for the header of a re-packed artifact
MAX_TRIALS = 8  # packs per pruning search


@dataclass
class FitReport:
    """What fitting did, for the log and summary.json."""

    bytes_before: int
    bytes_after: int = 0
    target: int = 0
    pruned: int = 0  # codes set from +-1 to 0
    quantized_weights: int = 0
    lqer_dropped: list[str] = field(default_factory=list)
    trials: list[tuple[int, int]] = field(default_factory=list)  # (pruned, bytes) of each pack

    @property
    def pruned_frac(self) -> float:
        return self.pruned / max(self.quantized_weights, 1)

    def line(self) -> str:
        return (
            f"cap_fit: bytes:{self.bytes_before}->{self.bytes_after} target:{self.target} pruned:{self.pruned} "
            f"({100 * self.pruned_frac:.3f}% of {self.quantized_weights} quantized weights) "
            f"lqer_dropped:{','.join(self.lqer_dropped) or '-'} packs:{len(self.trials)}"
        )


def cap_target_bytes(qcfg: QuantConfig, code_bytes: int) -> int:
    """Model bytes allowed: quant.target_bytes (or the cap minus CAP_MARGIN_BYTES) minus the code."""
    total = qcfg.target_bytes or qcfg.size_cap_bytes - CAP_MARGIN_BYTES
    return min(total, qcfg.size_cap_bytes) - code_bytes


@dataclass
class PruneOrder:
    """Every +-1 code of the quantized tensors, cheapest first: tensors[ids[k]] at flat index idx[k]."""

    tensors: list[str]
    ids: np.ndarray
    idx: np.ndarray

    def __len__(self) -> int:
        return int(self.idx.size)


def prune_order(qs: QuantizedState, hessians: dict[str, Tensor] | None) -> PruneOrder:
    """The cost of zeroing each +-1 code is s_r^2 * H_cc (see module docstring); vectorised, as a
    frontier model has millions of them."""
    names = sorted(n for n, e in qs.entries.items() if e.get("kind") == "intq")
    costs, ids, flat = [np.zeros(0)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i, name in enumerate(names):
        q = qs.arrays[name + ".q"]
        idx = np.flatnonzero(np.abs(q) == 1)
        rows, cols = np.divmod(idx, q.shape[1])
        scale = qs.arrays[name + ".s"].astype(np.float64)
        h = hessians.get(name) if hessians else None
        hdiag = h.diagonal().double().cpu().numpy() if h is not None else np.ones(q.shape[1])
        costs.append(scale[rows] ** 2 * hdiag[cols])
        ids.append(np.full(idx.size, i, np.int64))
        flat.append(idx)
    order = np.argsort(np.concatenate(costs), kind="stable")
    return PruneOrder(names, np.concatenate(ids)[order], np.concatenate(flat)[order])


def pruned_state(qs: QuantizedState, order: PruneOrder, n: int) -> QuantizedState:
    """A copy of qs with the n cheapest +-1 codes set to 0."""
    arrays = dict(qs.arrays)
    ids, idx = order.ids[:n], order.idx[:n]
    for i in np.unique(ids):
        name = order.tensors[int(i)]
        q = arrays[name + ".q"].copy()
        q.reshape(-1)[idx[ids == i]] = 0
        arrays[name + ".q"] = q
    return QuantizedState(arrays, {k: dict(v) for k, v in qs.entries.items()}, dict(qs.info))


def without_lqer(qs: QuantizedState, name: str) -> QuantizedState:
    arrays = {k: v for k, v in qs.arrays.items() if k not in {f"{name}.{p}" for p in LQER_PART_NAMES}}
    entries = {k: dict(v) for k, v in qs.entries.items()}
    entries[name].pop("lqer", None)
    return QuantizedState(arrays, entries, dict(qs.info))


def _search(qs, order, limit, max_n, packer, report) -> tuple[QuantizedState, PackResult] | None:
    """The fewest prunes (<= max_n) whose pack is <= limit, found by secant steps on measured sizes."""
    lo_n, lo_b = 0, report.trials[-1][1] if report.trials else packer(qs).bytes
    n = min(max_n, max(1, math.ceil((lo_b - limit) * 8 / 2)))  # first guess: ~2 bits saved per prune
    for _ in range(MAX_TRIALS):
        cand = pruned_state(qs, order, n)
        res = packer(cand)
        report.trials.append((n, res.bytes))
        if res.bytes <= limit:
            return cand, res
        if n >= max_n:
            return None
        saved_per = max((lo_b - res.bytes) / max(n - lo_n, 1), 1e-3)
        lo_n, lo_b = n, res.bytes
        n = min(max_n, n + math.ceil(1.05 * (res.bytes - limit) / saved_per))
    return None


def fit_to_cap(
    qs: QuantizedState,
    model_cfg: dict,
    qcfg: QuantConfig,
    path: str | Path,
    limit: int,
    hessians: dict[str, Tensor] | None,
    first: PackResult,
) -> tuple[PackResult, FitReport]:
    """Prune (then drop LQER, then prune again) until the packed artifact is <= limit bytes;
    writes the fitting artifact to `path`. SizeCapError when it cannot fit within
    quant.prune_max_frac of the quantized weights."""
    report = FitReport(bytes_before=first.bytes, target=limit, trials=[(0, first.bytes)])
    fixed = replace(qcfg, compressor=first.codec) if "+" not in first.codec else qcfg  # re-packs reuse the winner

    def packer(state: QuantizedState) -> PackResult:
        return pack(state, model_cfg, fixed, path)

    order = prune_order(qs, hessians)
    report.quantized_weights = sum(int(np.prod(e["shape"])) for e in qs.entries.values() if e.get("kind") == "intq")
    max_n = min(len(order), int(qcfg.prune_max_frac * report.quantized_weights))
    lqer = sorted(
        (n for n, e in qs.entries.items() if e.get("lqer")),
        key=lambda n: -sum(qs.arrays[f"{n}.{p}"].nbytes for p in LQER_PART_NAMES),
    )
    state = qs
    while True:
        found = _search(state, order, limit, max_n, packer, report) if max_n else None
        if found:
            fitted, res = found
            report.pruned, report.bytes_after = report.trials[-1][0], res.bytes
            return res, report
        if not lqer:
            break
        report.lqer_dropped.append(lqer.pop(0))
        state = without_lqer(state, report.lqer_dropped[-1])
        res = packer(state)
        report.trials.append((0, res.bytes))
        if res.bytes <= limit:
            report.bytes_after = res.bytes
            return res, report
    best = min(b for _, b in report.trials)
    Path(path).unlink(missing_ok=True)
    raise SizeCapError(
        f"cannot fit the cap: the artifact is {first.bytes:,} bytes against a target of {limit:,}; "
        f"pruning {100 * qcfg.prune_max_frac:g}% of the quantized weights and dropping every LQER "
        f"correction still leaves {best - limit:,} bytes over (quant.prune_max_frac bounds the "
        "quality loss); use fewer bits or a smaller model"
    )
