"""Where the bytes go: the exact per-group size table of an artifact, a PNG bar chart, and a planner
that predicts the artifact size of a config before training.

The planner (mixed scheme) adds, per tensor, what the packer will store:
- intN codes: numel x H x CODER_OVERHEAD bits, H the entropy of the codes of a unit-variance
  generalized-normal weight (shape GENNORM_BETA, fitted to trained weights) on the grid the clip
  rule gives (step = clip / R, clamped at +-R);
- fp16 row scales, fp16 passthrough tensors and LQER factors at measured compression ratios;
- the header, exactly: the real packer runs on zero arrays of the planned shapes.
The int8 scheme uses the official baseline's measured bytes per parameter. Constants are
MEASURED (see each comment; benchmarks/bench_compression.py prints predicted vs real).

What the weights change (issue 12, item 3): with SDClip (clip = k x row std) the codes depend on
the SHAPE of the row-standardised weights, not on their RMS. At the grids used (step <= 0.45 row
std) the code entropy is ~ h(w / std_row) - log2(step), and the Gaussian has the largest h of all
unit-variance shapes, so a trained model saves its negentropy (bits/weight) against the Gaussian
point estimate, nearly the same at every grid (gennorm 1.6: 0.0077 bits at int6/k13, 0.0082 at
int8/k14). `weight_betas` measures it on a state dict as the heavy-tailed gennorm beta (<= 2) with
the weights' own code entropy, `predict_from_weights` plans with it, and `predict_range` (no
weights yet) spans the shapes seen on trained weights, the record's included
(benchmarks/planner_error.py, benchmarks/results/planner/table.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.core.config import ModelConfig, QuantConfig
from pgolf.core.constants import SIZE_CAP_BYTES
from pgolf.core.roles import QUANT_GROUPS
from pgolf.quant.container import read_header
from pgolf.quant.lowbit import DEFAULT_PERCENTILE, qmax
from pgolf.quant.mixed import group_bits_and_k, treatment
from pgolf.quant.registry import scheme_for

# What the planner needs of a model: parameter name -> (shape, quantization group), in state-dict
# order (pgolf.model.inventory.param_specs gives it; the planner never builds a model itself).
Layout = dict[str, tuple[tuple[int, ...], str]]

# Shape of the generalized normal whose code entropy matches the trained weights' (beta = 2 is
# Gaussian). Measured with `benchmarks/bench_compression.py --fit-planner` on the 4x256 benchmark
# model (250 Muon steps on the FineWeb sample): with beta = 2 the predicted order-0 code entropy is
# within 0.2% of the empirical one for int5/k8, int6/k11.5, int6/k13, int7/k14, int8/k20 in every
# group, although the rows' kurtosis (embed 2.89, attn 3.42, mlp 3.49) fits beta 2.1/1.7/1.6: the
# few outliers set the kurtosis, the bulk sets the entropy.
GENNORM_BETA = {"embed": 2.0, "hash": 2.0, "attn": 2.0, "mlp": 2.0}  # hash: not fitted, as embed
# Compressed code bits / empirical order-0 entropy (best codec and transform of each group stream;
# brotli won everywhere), same measurement, mean over the five grids above. Embedding rows carry
# structure the coder finds (< 1).
CODER_OVERHEAD = {"embed": 0.986, "hash": 0.986, "attn": 1.013, "mlp": 1.009}  # hash: as embed
# Compressed bytes / raw bytes of the fp16 stream of row scales + small control tensors
# (16,283 of 23,632 bytes, shuffle2+brotli, int5/int5/int7 GPTQ+LQER on the benchmark model).
FP16_STREAM_RATIO = 0.69
# ... and of large weight matrices kept in fp16 (quant.embed_bits=16: tok_emb 524,288 raw bytes
# + scales -> 455,394 bytes in that stream on the benchmark model).
FP16_WEIGHT_RATIO = 0.87
# Compressed bits per LQER factor code (int4 codes, rank 4, top 3): 11,264 codes -> 4,375 bytes.
LQER_CODE_BITS = 3.1
ARRAY_SUFFIXES = (".q", ".s", ".lqa", ".lqas", ".lqb", ".lqbs", ".perm")
BETA_FLOOR = 0.5  # heaviest shape `fit_beta` returns (Laplace is 1)
# The heaviest effective shape seen on trained weights: the beta with which the planner predicts PR
# #1855's published model bytes for `frontier` (BENCHMARKS.md, "Planner: the record's shape").
RECORD_BETA = 1.185  # 1.190 rounded down, so the range holds seed 42
# The top of the dry run's range: the largest under-prediction of the point estimate on the trained
# artifacts in benchmarks/results/planner/table.md (-0.64%, rounded up; GPTQ codes carry ~0.4% more
# entropy than round-to-nearest ones, and the LQER tensors chosen differ from the planner's guess).
PLAN_HIGH_MARGIN = 0.01


@dataclass
class GroupRow:
    """One line of a size table."""

    group: str
    params: int
    width: str  # "int6", "fp16", "int6+int8", ...
    bytes: float

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.bytes / self.params if self.params else 0.0


@dataclass
class SizeTable:
    """Artifact (measured or predicted) + code bytes against the cap, by group."""

    rows: list[GroupRow] = field(default_factory=list)
    header_bytes: int = 0
    artifact_bytes: int = 0
    code_bytes: int = 0
    cap: int = SIZE_CAP_BYTES
    predicted: bool = False

    @property
    def total(self) -> int:
        return self.artifact_bytes + self.code_bytes

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)


def _gennorm_scale(beta: float) -> float:
    """Scale parameter of the unit-variance generalized normal of shape beta."""
    return math.sqrt(math.gamma(1.0 / beta) / math.gamma(3.0 / beta))


def code_probabilities(bits: int, step_sigmas: float, beta: float) -> np.ndarray:
    """P(code = -R..R) for a unit-variance gennorm(beta) weight, step in units of sigma."""
    from scipy.stats import gennorm

    r = qmax(bits)
    edges = (np.arange(-r, r) + 0.5) * step_sigmas
    cdf = gennorm.cdf(edges, beta, scale=_gennorm_scale(beta))
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def code_entropy_bits(bits: int, step_sigmas: float, beta: float) -> float:
    """Order-0 entropy (bits/weight) of the codes."""
    p = code_probabilities(bits, step_sigmas, beta)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def clip_sigmas(qcfg: QuantConfig, bits: int, k: float, cols: int, beta: float) -> float:
    """The clip in units of the row std that the configured rule gives for a row of `cols`."""
    from scipy.stats import gennorm

    if qcfg.clip == "sdclip":
        return k
    if qcfg.clip == "percentile":  # ~ the expected max |w| of the row at the official quantile
        tail = max(1.0 - DEFAULT_PERCENTILE / 100.0, 1.0 / (cols + 1))
        return float(gennorm.ppf(1.0 - tail / 2.0, beta, scale=_gennorm_scale(beta)))
    return search_clip_sigmas(bits, beta)


def search_clip_sigmas(bits: int, beta: float) -> float:
    """k minimising the expected squared rounding+clipping error of a gennorm(beta) weight."""
    from scipy.stats import gennorm

    x = np.linspace(-12, 12, 24001)
    pdf = gennorm.pdf(x, beta, scale=_gennorm_scale(beta))
    r = qmax(bits)
    best_k, best_err = 1.0, float("inf")
    for k in np.linspace(1.5, 16.0, 30):
        step = k / r
        err = float((((np.clip(np.round(x / step), -r, r) * step - x) ** 2) * pdf).sum())
        if err < best_err:
            best_k, best_err = float(k), err
    return best_k


def intq_bytes(rows: int, cols: int, bits: int, sigmas: float, group: str, beta: float | None = None) -> float:
    """Predicted stored bytes of one intq matrix: codes + fp16 row scales (beta: the group's
    GENNORM_BETA unless given)."""
    h = code_entropy_bits(bits, sigmas / qmax(bits), beta or GENNORM_BETA.get(group, 2.0))
    return rows * cols * h * CODER_OVERHEAD.get(group, 1.0) / 8.0 + rows * 2.0 * FP16_STREAM_RATIO


def _orig_name(array_name: str, entries: dict) -> str:
    """The state-dict tensor an artifact array belongs to ('x.weight.q' -> 'x.weight')."""
    if array_name in entries:
        return array_name
    for suf in ARRAY_SUFFIXES:
        if array_name.endswith(suf) and array_name[: -len(suf)] in entries:
            return array_name[: -len(suf)]
    return array_name


def _width(entry: dict, stored_dtype: str) -> str:
    if entry.get("kind") == "intq":
        return f"int{entry['bits']}"
    if entry.get("kind", "").startswith("int8"):
        return "int8"
    return {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}.get(stored_dtype, stored_dtype)


def _rows_from(params: dict[str, int], nbytes: dict[str, float], widths: dict[str, set]) -> list[GroupRow]:
    order = list(QUANT_GROUPS) + sorted(set(params) - set(QUANT_GROUPS))
    return [
        GroupRow(g, params.get(g, 0), "+".join(sorted(widths.get(g, set()))) or "-", nbytes.get(g, 0.0))
        for g in order
        if params.get(g, 0) or nbytes.get(g, 0.0)
    ]


def measure_table(
    path: str | Path, groups: dict[str, str], code_bytes: int = 0, cap: int = SIZE_CAP_BYTES
) -> SizeTable:
    """Exact bytes per group of an artifact: each stream's compressed bytes are shared among its
    tensors in proportion to their raw bytes (exact for the per-group code streams). Quantized
    entries carry their group; `groups` (name -> group, from the model the artifact's config
    builds) gives it for the rest."""
    header = read_header(path)
    entries = header["meta"].get("entries", {})
    stream_raw = [max(int(s["raw"]), 1) for s in header["streams"]]
    params: dict[str, int] = {}
    nbytes: dict[str, float] = {}
    widths: dict[str, set] = {}
    for name, e in entries.items():
        g = e.get("group") or _group_of(groups, name)
        params[g] = params.get(g, 0) + int(np.prod(e["shape"], dtype=np.int64))
    for t in header["tensors"]:
        orig = _orig_name(t["name"], entries)
        e = entries.get(orig, {})
        g = e.get("group") or _group_of(groups, orig)
        raw = int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(t["dtype"]).itemsize
        s = header["streams"][t["stream"]]
        nbytes[g] = nbytes.get(g, 0.0) + int(s["n"]) * raw / stream_raw[t["stream"]]
        if orig == t["name"] or t["name"].endswith(".q"):
            widths.setdefault(g, set()).add(_width(e, t["dtype"]))
        if t["name"].endswith(".lqa"):
            widths.setdefault(g, set()).add("lqer")
    size = Path(path).stat().st_size
    return SizeTable(_rows_from(params, nbytes, widths), header["header_bytes"], size, code_bytes, cap)


def _group_of(groups: dict[str, str], name: str) -> str:
    if name not in groups:
        raise KeyError(f"tensor {name!r} is not a parameter of the artifact's model")
    return groups[name]


def predict_table(
    model_cfg: ModelConfig,
    layout: Layout,
    qcfg: QuantConfig,
    code_bytes: int = 0,
    betas: dict[str, float] | None = None,
) -> SizeTable:
    """Predicted artifact size of a model (its config and parameter layout), by group, before
    training (see module docstring); `betas` (group -> shape, from `weight_betas`) replace
    GENNORM_BETA."""
    params: dict[str, int] = {}
    nbytes: dict[str, float] = {}
    widths: dict[str, set] = {}
    scheme = scheme_for(qcfg.scheme)
    for shape, g in layout.values():
        params[g] = params.get(g, 0) + int(np.prod(shape, dtype=np.int64))
        nbytes[g] = nbytes.get(g, 0.0) + scheme.tensor_bytes(g, shape, qcfg, (betas or {}).get(g))
        widths.setdefault(g, set()).add(scheme.tensor_width(g, shape, qcfg))
    header = scheme.planned_extra_bytes(model_cfg, layout, qcfg, nbytes)
    table = SizeTable(_rows_from(params, nbytes, widths), header, 0, code_bytes, qcfg.size_cap_bytes, predicted=True)
    table.artifact_bytes = int(round(header + sum(r.bytes for r in table.rows)))
    return table


def predict_bytes(model_cfg: ModelConfig, layout: Layout, qcfg: QuantConfig) -> int:
    """Predicted artifact bytes (without code)."""
    return predict_table(model_cfg, layout, qcfg).artifact_bytes


def standardised_code_entropy(mats: list[np.ndarray], bits: int, k: float) -> float:
    """Order-0 entropy (bits/weight) of the round-to-nearest SDClip codes (clip k x row std) of
    2-D weight matrices, pooled."""
    r = qmax(bits)
    counts = np.zeros(2 * r + 1)
    for w in mats:
        w = np.asarray(w, dtype=np.float64)
        std = w.std(axis=1, keepdims=True)
        z = w / np.where(std > 0, std, 1.0)
        counts += np.bincount((np.clip(np.rint(z * (r / k)), -r, r) + r).astype(np.int64).ravel(), minlength=2 * r + 1)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def fit_beta(bits: int, step_sigmas: float, entropy: float) -> float:
    """The gennorm shape <= 2 (heavy side) whose codes on this grid have this entropy; 2 (the
    Gaussian, the most entropy) when the weights have as much or more."""
    from scipy.optimize import brentq

    gap = lambda b: code_entropy_bits(bits, step_sigmas, b) - entropy  # noqa: E731
    if gap(2.0) <= 0:
        return 2.0
    if gap(BETA_FLOOR) >= 0:
        return BETA_FLOOR
    return float(brentq(gap, BETA_FLOOR, 2.0, xtol=1e-4))


def weight_betas(state: dict, groups: dict[str, str], qcfg: QuantConfig) -> dict[str, float]:
    """Each quantized group's effective shape, measured on its weights (a state dict, or an
    artifact's dequantized weights): the code entropy of its row-standardised matrices on the
    group's SDClip grid (bits, k), as a gennorm beta (`fit_beta`). Groups the config keeps in
    float, and matrices it does not quantize, are left out."""
    mats: dict[str, list[np.ndarray]] = {}
    for name, t in state.items():
        g = groups.get(name)
        if g is None or getattr(t, "ndim", 0) != 2 or treatment(g, tuple(t.shape), True, qcfg) != "intq":
            continue
        mats.setdefault(g, []).append(t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t))
    betas = {}
    for g, ws in mats.items():
        bits, k = group_bits_and_k(qcfg, g)
        betas[g] = fit_beta(bits, k / qmax(bits), standardised_code_entropy(ws, bits, k))
    return betas


def predict_from_weights(
    model_cfg: ModelConfig, layout: Layout, qcfg: QuantConfig, state: dict, groups: dict[str, str], code_bytes: int = 0
) -> SizeTable:
    """The planner's table with every group's shape measured on these weights (`weight_betas`)."""
    return predict_table(model_cfg, layout, qcfg, code_bytes, weight_betas(state, groups, qcfg))


def predict_range(
    model_cfg: ModelConfig, layout: Layout, qcfg: QuantConfig, point: int | None = None
) -> tuple[int, int]:
    """(low, high) artifact bytes before training: low with the heaviest shape seen on trained
    weights (RECORD_BETA in every group), high the point estimate (the Gaussian, the most code
    entropy; pass `point` when it is already computed) plus PLAN_HIGH_MARGIN. The int8 scheme has
    no shape term: its point estimate twice."""
    if point is None:
        point = predict_table(model_cfg, layout, qcfg).artifact_bytes
    if not scheme_for(qcfg.scheme).shape_term:
        return point, point
    low = predict_table(model_cfg, layout, qcfg, betas={g: RECORD_BETA for g in QUANT_GROUPS}).artifact_bytes
    return min(low, point), int(round(point * (1.0 + PLAN_HIGH_MARGIN)))


def format_table(t: SizeTable) -> str:
    """The human table plus golf-style key:value totals."""
    what = "predicted" if t.predicted else "measured"
    lines = [f"{'group':<9}{'params':>12}  {'width':<14}{'bytes':>12}{'bits/param':>12}{'share':>8}"]
    for r in t.rows:
        share = r.bytes / t.total if t.total else 0.0
        lines.append(
            f"{r.group:<9}{r.params:>12,}  {r.width:<14}{r.bytes:>12,.0f}{r.bits_per_param:>12.3f}{share:>8.1%}"
        )
    for label, n in (("header", t.header_bytes), ("code", t.code_bytes)):
        lines.append(f"{label:<9}{'':>12}  {'':<14}{n:>12,}{'':>12}{(n / t.total if t.total else 0):>8.1%}")
    bpp = 8.0 * t.artifact_bytes / t.params if t.params else 0.0
    lines.append(f"{'total':<9}{t.params:>12,}  {'':<14}{t.total:>12,}{bpp:>12.3f}")
    verdict = "fits" if t.total <= t.cap else f"OVER by {t.total - t.cap:,} bytes"
    lines.append(
        f"{what}_artifact_bytes:{t.artifact_bytes} code_bytes:{t.code_bytes} total_bytes:{t.total} "
        f"size_cap_bytes:{t.cap} headroom_bytes:{t.cap - t.total} bits_per_param:{bpp:.4f} ({verdict})"
    )
    return "\n".join(lines)


def plot_table(t: SizeTable, png: str | Path) -> Path:
    """Horizontal bar chart of bytes per group (+ header, code), with the cap in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.group} ({r.width})" for r in t.rows] + ["header", "code"]
    values = [r.bytes for r in t.rows] + [t.header_bytes, t.code_bytes]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.5))
    bars = ax.barh(labels[::-1], values[::-1], color="#4477aa")
    for bar, v in zip(bars, values[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:,.0f}", va="center", fontsize=8)
    what = "predicted" if t.predicted else "measured"
    ax.set_xlabel("bytes")
    ax.set_title(f"{what}: {t.total:,} of {t.cap:,} bytes ({t.total / t.cap:.1%} of the cap)", fontsize=10)
    ax.set_xlim(0, max(values + [1]) * 1.25)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
