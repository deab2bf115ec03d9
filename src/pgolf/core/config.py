"""Typed configuration: the single source of truth for a run.

Precedence (later wins): preset -> config file (TOML/JSON) -> official env vars -> CLI flags.
Every field has a comment; the official script's env-var knobs map onto fields via ENV_KNOBS.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from pgolf.core.constants import BOS_ID, SIZE_CAP_BYTES
from pgolf.core.errors import ConfigError


@dataclass
class ModelConfig:
    """Model shape and every architecture option (a technique is a field, not a fork)."""

    vocab_size: int = 1024  # tokens; must equal the tokenizer's vocab
    num_layers: int = 9  # transformer blocks (unique weights)
    model_dim: int = 512  # residual width
    num_heads: int = 8  # query heads
    num_kv_heads: int = 4  # key/value heads (GQA when < num_heads)
    mlp_mult: float = 2.0  # MLP hidden = round(mlp_mult * model_dim)
    activation: str = "relu2"  # relu2 (modded-nanogpt) | leaky_relu2 (LeakyReLU(slope)^2, records)
    leaky_slope: float = 0.5  # negative slope of leaky_relu2
    tie_embeddings: bool = True  # output head shares the token embedding
    tied_embed_init_std: float = 0.005  # init std of the (tied) embedding
    logit_softcap: float = 30.0  # cap*tanh(logit/cap) on positive logits (and negative unless set below)
    logit_softcap_neg: float = 0.0  # separate cap for negative logits (0 = same as logit_softcap)
    softcap_learned: bool = False  # learn the two caps (asymmetric softcap, PR #1923/#2135)
    rope_base: float = 10000.0  # rotary base
    rope_dims: int = 0  # rotated dims per head (0 = all; partial RoPE, records use 16 of 64)
    qk_norm: bool = True  # RMS-normalise q and k per head before RoPE (baseline)
    qk_gain_init: float = 1.5  # init of the learned per-head query gain (records: 5.0)
    ln_scale: bool = False  # scale block-norm outputs by 1/sqrt(layer+1) (PR #315)
    ortho_init: bool = False  # orthogonal init of q/k/v/MLP-up matrices (records)
    unet_skips: bool = True  # encoder->decoder skip connections with learned weights (baseline)
    skip_gates: bool = False  # gate each skip: sigmoid(g)*x + (1-sigmoid(g))*w*skip (records)
    xsa_layers: str = ""  # exclusive self-attention layers: "", "all", "3-5,9" (PR #265/#478)
    smear_gate: bool = False  # previous-token embedding mix, gated per token, masked at BOS (PR #1855)
    bigram_buckets: int = 0  # BigramHash table rows (0 = off; PR #1019 used 3072)
    bigram_dim: int = 128  # BigramHash embedding width before projection to model_dim
    ve_layers: str = ""  # layers whose values get a shared value embedding added (PR #374: "9,10")
    ve_dim: int = 128  # value-embedding table width before projection to the kv width
    value_residual: bool = False  # add sigmoid(a)*v_first to each later layer's values (ResFormer)
    recur_layers: str = ""  # contiguous layers looped by depth recurrence, e.g. "3-5" (PR #1344)
    recur_loops: int = 1  # total passes through recur_layers once recurrence is on (records: 3)
    recur_start_frac: float = 0.0  # fraction of training after which recurrence switches on (0.35)
    parallel_from: int = -1  # first layer of the two parallel residual lanes (-1 = off; records 8)
    attn_gate: str = "none"  # attention output gate per head: none | dense | sparse (PR #1787)
    attn_gate_dims: int = 12  # input dims read by the sparse gate
    attn_gate_scale: float = 1.0  # multiplier inside the sparse gate's sigmoid (records 0.5)
    doc_mask: bool = False  # block attention across documents (BOS boundaries)
    bos_id: int = BOS_ID  # document-start token
    attn_kernel: str = "auto"  # auto | fa3 | varlen | fa2 | flex | sdpa | dense (pgolf.model.attention; a missing one falls back with a notice)
    fp8: bool = False  # FP8 training of the MLP and attention projections (torchao float8; CUDA sm89+, else a notice)


@dataclass
class TrainConfig:
    """Optimisation, schedule and budget (official knobs and defaults)."""

    iterations: int = 20000  # optimizer steps (upper bound when a wall-clock cap is set)
    warmup_steps: int = 20  # compile/priming steps whose effect is undone afterwards
    warmdown_iters: int = 1200  # linear LR warmdown length in steps (time-based under a cap)
    warmdown_frac: float = 0.0  # if > 0: LR flat, then linear over this final fraction of training (PR #1855: 0.85)
    min_lr_frac: float = 0.0  # LR floor as a fraction of the base LR during warmdown (PR #1855: 0.1)
    reserve_seconds: float = 0.0  # wall-clock kept free after training for calibration/GPTQ
    train_batch_tokens: int = 524_288  # tokens per optimizer step, all ranks and micro-steps
    train_seq_len: int = 1024  # training sequence length
    grad_accum_steps: int = 0  # micro-steps per rank (0 = 8 // world_size, official)
    max_wallclock_seconds: float = 600.0  # training-time cap (0 = none); eval time excluded
    val_loss_every: int = 1000  # validate every N steps (0 = only at the end)
    train_log_every: int = 200  # log train loss every N steps
    embed_lr: float = 0.6  # Adam LR of an untied embedding
    head_lr: float = 0.008  # Adam LR of an untied head
    tied_embed_lr: float = 0.05  # Adam LR of the tied embedding
    matrix_lr: float = 0.04  # Muon LR for block matrices
    scalar_lr: float = 0.04  # Adam LR for vectors/scalars/control tensors
    muon_momentum: float = 0.95  # Muon momentum after warmup
    muon_backend_steps: int = 5  # Newton-Schulz iterations
    muon_ns: str = "ns5"  # ns5 (modded-nanogpt quintic) | polar_express (PR #1344, arXiv:2505.16932)
    muon_row_norm: bool = False  # normalise each update row before orthogonalising (MuonEq-R, PR #1344)
    muon_momentum_warmup_start: float = 0.85  # Muon momentum at step 0
    muon_momentum_warmup_steps: int = 500  # steps to ramp Muon momentum
    muon_weight_decay: float = 0.0  # decoupled weight decay on Muon matrices (records ~0.09)
    adam_weight_decay: float = 0.0  # decoupled weight decay on the scalar/control Adam group (PR #1855: 0.02)
    embed_weight_decay: float = 0.0  # decoupled weight decay on embedding/head Adam groups (PR #1855: 0.085)
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.95  # Adam beta2
    adam_eps: float = 1e-8  # Adam epsilon
    grad_clip_norm: float = 0.0  # global grad-norm clip (0 = off)
    ema_decay: float = 0.0  # EMA of weights used for the final model (0 = off; records 0.9965)
    checkpoint_every: int = 0  # write a resumable checkpoint every N steps (0 = off)
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    compile_fullgraph: bool = False  # torch.compile(fullgraph=True): a graph break is an error
    compile_scope: str = "blocks"  # blocks: one compiled block application reused by every layer + compiled head (regional) | model: the whole forward


@dataclass
class EvalConfig:
    """How the score is computed."""

    val_batch_size: int = 524_288  # tokens per validation batch, all ranks (official knob)
    eval_seq_len: int = 0  # window length for scoring (0 = train_seq_len)
    stride: int = 0  # sliding-window stride (0 = non-overlapping official eval)
    batch_seqs: int = 32  # windows per forward in sliding eval
    val_max_tokens: int = 0  # score only the first N val tokens (0 = all; CPU proxies)
    final_sliding: bool = True  # also report the sliding-window score of the roundtrip model
    # Document-aware scoring and score-first test-time training (pgolf.eval.documents, eval.ttt, eval.tilt).
    doc_aware: bool = False  # score each document from its own BOS, windows never crossing a BOS
    context: int = (
        0  # tokens of context per document window (0 = eval_seq_len or train_seq_len; may exceed training length)
    )
    doc_batch: int = 64  # documents per batch, length-sorted (TTT: steps together; scoring: windows per forward)
    ttt: bool = False  # per-document LoRA test-time training, score first (PR #1855/#2135); implies doc_aware
    ttt_rank: int = 80  # LoRA rank
    ttt_alpha: float = 144.0  # LoRA scale = alpha / rank
    ttt_targets: str = "q,v,o,mlp,head"  # adapted linears among q,k,v,o,mlp,head (PR #2135: K off)
    ttt_lr: float = 8e-5  # Adam LR (beta1 = 0)
    ttt_beta2: float = 0.99  # Adam beta2
    ttt_weight_decay: float = 2.0  # decoupled weight decay on the adapters
    ttt_chunk: int = 48  # targets per chunk: score the chunk, then one step on its loss
    ttt_chunk_by_len: str = (
        ""  # "LEN:CHUNK,..." chunk by document length (PR #2014: 8/24/48); reads the doc's length, fails pgolf check C1
    )
    ttt_phase_docs: str = ""  # global SGD phases after these document counts, e.g. "2500" (PR #2135) or "834,1667,2500"
    ttt_global_lr: float = 0.005  # global phase SGD LR (cosine to 0 over the phase's one epoch)
    ttt_global_momentum: float = 0.9  # global phase SGD momentum
    ttt_global_chunk_tokens: int = 32_768  # tokens per global phase SGD step (all ranks)
    ttt_global_epochs: int = 1  # passes over the scored documents per global phase
    tilt_order: int = 0  # causal token n-gram tilt: longest context order (0 = off; PR #2135: 16)
    tilt_min_order: int = 1  # shortest context order the tilt backs off to
    tilt_threshold: float = 0.8  # tilt only when the hint's share of the context's continuations >= this
    tilt_boost: float = 2.625  # log-boost beta of the hinted token before renormalising
    time_budget_s: float = 0.0  # evaluation wall-clock budget (0 = none; 600 on GPU presets)
    over_budget_ok: bool = False  # run a plan predicted over the budget (research mode, marked in the log)


@dataclass
class QuantConfig:
    """How the trained weights become the artifact (scheme, widths, clips, GPTQ, LQER, coding, the cap)."""

    scheme: str = "int8"  # a registered scheme (pgolf.quant.registry; `pgolf size --help` lists them); official int8
    compressor: str = "zlib"  # a registered codec, or auto (measure all, keep the smallest per stream); official zlib
    keep_float_max_numel: int = 65_536  # float tensors this small stay float (official; fp16 in mixed)
    size_cap_bytes: int = SIZE_CAP_BYTES  # artifact + code must fit (decimal bytes)
    count_code_bytes: bool = True  # count the exported script's bytes against the cap (CPU proxies: model only)
    attn_bits: int = 6  # bits per attention weight, 2..8, or 16 = fp16 (mixed scheme)
    mlp_bits: int = 6  # bits per MLP weight, 2..8, or 16 = fp16 (mixed scheme)
    embed_bits: int = 7  # bits per embedding weight, 2..8, or 16 = fp16 (mixed; records: 7)
    hash_bits: int = 7  # bits per BigramHash / value-embedding table weight (mixed)
    clip: str = "sdclip"  # row clip rule: percentile (official quantile) | sdclip (k * row std) | search (min MSE)
    attn_clip_sigmas: float = 13.0  # SDClip k for attention: clip = k*std, step = clip/(2^(bits-1)-1) (PR #1855, int6)
    mlp_clip_sigmas: float = 11.5  # SDClip k for MLP (PR #1855, int6)
    embed_clip_sigmas: float = 14.0  # SDClip k for embeddings (PR #1855, int7)
    hash_clip_sigmas: float = 14.0  # SDClip k for BigramHash / value-embedding tables
    gptq: bool = False  # full-Hessian GPTQ on quantized matrices (needs Hessians from training data)
    gptq_calib_batches: int = 16  # training batches for Hessians (never validation data)
    gptq_block_size: int = 128  # GPTQ column block (lazy updates)
    gptq_damp: float = 0.01  # Hessian damping, fraction of mean diagonal
    gptq_act_order: bool = True  # quantize columns in descending Hessian-diagonal order
    gptq_time_budget_s: float = 60.0  # calibration + GPTQ wall-clock budget, reserved from training time
    lqer_rank: int = 0  # low-rank correction of the quantization error (0 = off; records 4)
    lqer_top_k: int = 3  # tensors that get the correction (largest error drop per stored code first)
    target_bytes: int = (
        0  # artifact + code target of cap fitting (0 = size_cap_bytes - pgolf.quant.capfit.CAP_MARGIN_BYTES)
    )
    prune_max_frac: float = 0.05  # cap fitting may zero at most this fraction of the quantized weights (+-1 codes)
    transform: str = "auto"  # coding transforms: auto (measure) | none | shuffle | bitpack | transpose | reorder
    codec_probe_bytes: int = (
        1 << 20
    )  # auto codec: streams longer than this choose on a sample of this size, then compress once (0 = always try all)
    codec_time_budget_s: float = (
        0.0  # auto codec on sampled streams: predicted compression seconds allowed in all (0 = no bound)
    )


@dataclass
class DataConfig:
    """Where shards and tokenizer live."""

    data_path: str = "./data/datasets/fineweb10B_sp1024"  # folder with fineweb_{train,val}_*.bin
    tokenizer_path: str = ""  # SentencePiece .model ("" = look next to the data)
    train_pattern: str = "fineweb_train_*.bin"  # train shard glob inside data_path
    val_pattern: str = "fineweb_val_*.bin"  # val shard glob inside data_path


@dataclass
class RunConfig:
    """A whole run: identity, device and every section."""

    run_id: str = ""  # names logs/<run_id>.txt and runs/<run_id>/ ("" = generated)
    seed: int = 1337  # global seed
    preset: str = "naive-baseline"  # the preset this config started from
    out_dir: str = "runs"  # run folders go here
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # torch.compile the training model: auto (on for CUDA, as the official script) | on | off
    train_shards: int = 80  # official train shards to download when the data is missing (GPU runs)
    threads: int = 0  # CPU threads (0 = torch default)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    data: DataConfig = field(default_factory=DataConfig)


SECTIONS = ("model", "train", "eval", "quant", "data")

# Official train_gpt.py env vars -> dotted config field.
ENV_KNOBS: dict[str, str] = {
    "RUN_ID": "run_id",
    "SEED": "seed",
    "DATA_PATH": "data.data_path",
    "TOKENIZER_PATH": "data.tokenizer_path",
    "VOCAB_SIZE": "model.vocab_size",
    "NUM_LAYERS": "model.num_layers",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MLP_MULT": "model.mlp_mult",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "ROPE_BASE": "model.rope_base",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "QK_GAIN_INIT": "model.qk_gain_init",
    "ITERATIONS": "train.iterations",
    "WARMUP_STEPS": "train.warmup_steps",
    "WARMDOWN_ITERS": "train.warmdown_iters",
    "TRAIN_BATCH_TOKENS": "train.train_batch_tokens",
    "TRAIN_SEQ_LEN": "train.train_seq_len",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "VAL_LOSS_EVERY": "train.val_loss_every",
    "TRAIN_LOG_EVERY": "train.train_log_every",
    "EMBED_LR": "train.embed_lr",
    "HEAD_LR": "train.head_lr",
    "TIED_EMBED_LR": "train.tied_embed_lr",
    "MATRIX_LR": "train.matrix_lr",
    "SCALAR_LR": "train.scalar_lr",
    "MUON_MOMENTUM": "train.muon_momentum",
    "MUON_BACKEND_STEPS": "train.muon_backend_steps",
    "MUON_MOMENTUM_WARMUP_START": "train.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "train.muon_momentum_warmup_steps",
    "BETA1": "train.beta1",
    "BETA2": "train.beta2",
    "ADAM_EPS": "train.adam_eps",
    "GRAD_CLIP_NORM": "train.grad_clip_norm",
    "VAL_BATCH_SIZE": "eval.val_batch_size",
    "EVAL_SEQ_LEN": "eval.eval_seq_len",
    "EVAL_STRIDE": "eval.stride",
}


def _field_types(obj: Any) -> dict[str, Any]:
    return get_type_hints(type(obj))


def parse_value(text: str, typ: Any, name: str) -> Any:
    """Parse a string (env var / CLI) into a field's type, with an error naming the option."""
    try:
        if typ is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if typ is float:
            return float(text)
        return str(text)
    except ValueError:
        raise ConfigError(f"{name}: cannot parse {text!r} as {typ.__name__}") from None


def _resolve(cfg: RunConfig, dotted: str) -> tuple[Any, str]:
    parts = dotted.split(".")
    obj: Any = cfg
    for part in parts[:-1]:
        if part not in SECTIONS:
            raise ConfigError(f"unknown config section {part!r} in {dotted!r}")
        obj = getattr(obj, part)
    if parts[-1] not in _field_types(obj) or parts[-1] in SECTIONS:
        raise ConfigError(f"unknown config option {dotted!r}")
    return obj, parts[-1]


def set_option(cfg: RunConfig, dotted: str, value: Any, source: str = "") -> None:
    """Set one dotted option (e.g. 'model.num_layers'), parsing strings and checking types."""
    label = source or dotted
    try:
        obj, name = _resolve(cfg, dotted)
    except ConfigError as exc:
        raise ConfigError(f"{source.split(': ')[0]}: {exc}" if source and source != dotted else str(exc)) from None
    typ = _field_types(obj)[name]
    if isinstance(value, str) and typ is not str:
        value = parse_value(value, typ, label)
    elif typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{label}: expected {typ.__name__}, got {value!r}")
    setattr(obj, name, value)


def apply_env(cfg: RunConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Apply the official env-var knobs; returns the names that were set."""
    environ = dict(os.environ) if environ is None else environ
    used = []
    for env, dotted in ENV_KNOBS.items():
        if env in environ and environ[env] != "":
            set_option(cfg, dotted, environ[env], source=env)
            used.append(env)
    return used


def apply_mapping(cfg: RunConfig, data: dict[str, Any], source: str) -> None:
    """Apply a nested mapping ({'model': {...}, 'seed': 1}) as from a config file."""
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section [{key}] must be a table")
            for sub, subval in value.items():
                set_option(cfg, f"{key}.{sub}", subval, source=f"{source}: {key}.{sub}")
        else:
            set_option(cfg, key, value, source=f"{source}: {key}")


def load_config_file(cfg: RunConfig, path: str | Path) -> None:
    """Apply a TOML or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'toml'} ({exc})") from exc
    apply_mapping(cfg, data, str(path))


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dict (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def model_config_from_dict(data: Any, source: str = "model config") -> ModelConfig:
    """Rebuild a ModelConfig from a dict that may come from an untrusted file (an artifact header,
    a run folder): unknown keys, wrong types, out-of-range values and inconsistent shapes are
    ConfigErrors naming `source`, before anything is built from it."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: model config must be a mapping, got {type(data).__name__}")
    cfg = RunConfig()
    for key, value in data.items():
        if not isinstance(key, str) or key in SECTIONS:
            raise ConfigError(f"{source}: unknown model option {key!r}")
        set_option(cfg, f"model.{key}", value, source=f"{source}: model.{key}")
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg.model


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric option: [lo, hi], either end open when marked."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        fmt = lambda v: f"{v:,}" if float(v).is_integer() else f"{v:g}"  # noqa: E731
        return f"{'(' if self.lo_open else '['}{fmt(self.lo)}, {fmt(self.hi)}{')' if self.hi_open else ']'}"


_BIG = 2**40  # "no practical limit" for counts of tokens, bytes or steps
_UNIT, _UNIT_OPEN_TOP = Range(0, 1), Range(0, 1, hi_open=True)
_LR, _WD = Range(0, 10), Range(0, 10)
# Every numeric option's allowed range, checked in one place (check_ranges) before anything is
# built or allocated: e.g. model.num_layers=1e9 is refused before a dry run builds the model.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),
    "train_shards": Range(0, 100_000),
    "threads": Range(0, 1024),
    "model.vocab_size": Range(2, 65_536),
    "model.num_layers": Range(1, 64),
    "model.model_dim": Range(2, 16_384),
    "model.num_heads": Range(1, 256),
    "model.num_kv_heads": Range(1, 256),
    "model.mlp_mult": Range(0, 64, lo_open=True),
    "model.leaky_slope": _UNIT,
    "model.tied_embed_init_std": Range(0, 1, lo_open=True),
    "model.logit_softcap": Range(0, 1000, lo_open=True),
    "model.logit_softcap_neg": Range(0, 1000),
    "model.rope_base": Range(1, 1e9),
    "model.rope_dims": Range(0, 4096),
    "model.qk_gain_init": Range(0, 100),
    "model.bigram_buckets": Range(0, 2**24),
    "model.bigram_dim": Range(1, 16_384),
    "model.ve_dim": Range(1, 16_384),
    "model.recur_loops": Range(1, 16),
    "model.recur_start_frac": _UNIT,
    "model.parallel_from": Range(-1, 63),
    "model.attn_gate_dims": Range(1, 16_384),
    "model.attn_gate_scale": Range(0, 100),
    "model.bos_id": Range(0, 65_535),
    "train.iterations": Range(0, _BIG),
    "train.warmup_steps": Range(0, 1_000_000),
    "train.warmdown_iters": Range(0, _BIG),
    "train.warmdown_frac": _UNIT,
    "train.min_lr_frac": _UNIT,
    "train.reserve_seconds": Range(0, 86_400),
    "train.train_batch_tokens": Range(1, 2**31),
    "train.train_seq_len": Range(1, 2**20),
    "train.grad_accum_steps": Range(0, 4096),
    "train.max_wallclock_seconds": Range(0, 30 * 86_400),
    "train.val_loss_every": Range(0, _BIG),
    "train.train_log_every": Range(0, _BIG),
    "train.embed_lr": _LR,
    "train.head_lr": _LR,
    "train.tied_embed_lr": _LR,
    "train.matrix_lr": _LR,
    "train.scalar_lr": _LR,
    "train.muon_momentum": _UNIT_OPEN_TOP,
    "train.muon_backend_steps": Range(1, 20),
    "train.muon_momentum_warmup_start": _UNIT_OPEN_TOP,
    "train.muon_momentum_warmup_steps": Range(0, _BIG),
    "train.muon_weight_decay": _WD,
    "train.adam_weight_decay": _WD,
    "train.embed_weight_decay": _WD,
    "train.beta1": _UNIT_OPEN_TOP,
    "train.beta2": _UNIT_OPEN_TOP,
    "train.adam_eps": Range(0, 1, lo_open=True),
    "train.grad_clip_norm": Range(0, 1e6),
    "train.ema_decay": _UNIT_OPEN_TOP,
    "train.checkpoint_every": Range(0, _BIG),
    "eval.val_batch_size": Range(1, 2**31),
    "eval.eval_seq_len": Range(0, 2**20),
    "eval.stride": Range(0, 2**20),
    "eval.batch_seqs": Range(1, 65_536),
    "eval.val_max_tokens": Range(0, _BIG),
    "eval.context": Range(0, 2**20),
    "eval.doc_batch": Range(1, 65_536),
    "eval.ttt_rank": Range(1, 4096),
    "eval.ttt_alpha": Range(0, 1e6, lo_open=True),
    "eval.ttt_lr": _LR,
    "eval.ttt_beta2": _UNIT_OPEN_TOP,
    "eval.ttt_weight_decay": Range(0, 1000),
    "eval.ttt_chunk": Range(1, 2**20),
    "eval.ttt_global_lr": _LR,
    "eval.ttt_global_momentum": _UNIT_OPEN_TOP,
    "eval.ttt_global_chunk_tokens": Range(1, 2**31),
    "eval.ttt_global_epochs": Range(1, 100),
    "eval.tilt_order": Range(0, 64),
    "eval.tilt_min_order": Range(1, 64),
    "eval.tilt_threshold": Range(0, 1, lo_open=True),
    "eval.tilt_boost": Range(0, 50),
    "eval.time_budget_s": Range(0, 86_400),
    "quant.keep_float_max_numel": Range(0, _BIG),
    "quant.size_cap_bytes": Range(1, _BIG),
    "quant.attn_bits": Range(2, 16),
    "quant.mlp_bits": Range(2, 16),
    "quant.embed_bits": Range(2, 16),
    "quant.hash_bits": Range(2, 16),
    "quant.attn_clip_sigmas": Range(0, 100, lo_open=True),
    "quant.mlp_clip_sigmas": Range(0, 100, lo_open=True),
    "quant.embed_clip_sigmas": Range(0, 100, lo_open=True),
    "quant.hash_clip_sigmas": Range(0, 100, lo_open=True),
    "quant.gptq_calib_batches": Range(1, 100_000),
    "quant.gptq_block_size": Range(1, 65_536),
    "quant.gptq_damp": Range(0, 10, lo_open=True),
    "quant.gptq_time_budget_s": Range(0, 86_400),
    "quant.lqer_rank": Range(0, 4096),
    "quant.lqer_top_k": Range(0, 100_000),
    "quant.target_bytes": Range(0, _BIG),
    "quant.prune_max_frac": _UNIT,
    "quant.codec_probe_bytes": Range(0, _BIG),
    "quant.codec_time_budget_s": Range(0, 86_400),
}


def numeric_options(cfg: RunConfig) -> dict[str, float]:
    """Dotted name -> value of every int/float option (bools excluded)."""
    out = {}
    for obj, prefix in [(cfg, "")] + [(getattr(cfg, s), s + ".") for s in SECTIONS]:
        for name, typ in _field_types(obj).items():
            if typ in (int, float) and name not in SECTIONS:
                out[prefix + name] = getattr(obj, name)
    return out


def check_ranges(cfg: RunConfig) -> None:
    """Every numeric option inside its RANGES entry, or a ConfigError naming it and the range."""
    values = numeric_options(
        cfg
    )  # every one has an entry (tests/test_faults.py); an exported script keeps only the ones it can change
    for dotted, allowed in RANGES.items():
        value = values[dotted]
        if value not in allowed:
            raise ConfigError(f"{dotted}={value!r} is outside the allowed range {allowed}")


def validate(cfg: RunConfig) -> None:
    """Reject out-of-range values and inconsistent combinations early, with the option named."""
    check_ranges(cfg)
    m, t = cfg.model, cfg.train
    if m.model_dim % m.num_heads:
        raise ConfigError(f"model.model_dim={m.model_dim} must be divisible by num_heads={m.num_heads}")
    if m.num_heads % m.num_kv_heads:
        raise ConfigError(f"model.num_heads={m.num_heads} must be divisible by num_kv_heads={m.num_kv_heads}")
    head_dim = m.model_dim // m.num_heads
    if head_dim % 2:
        raise ConfigError(f"head_dim={head_dim} must be even for RoPE")
    if m.rope_dims < 0 or m.rope_dims > head_dim or m.rope_dims % 2:
        raise ConfigError(f"model.rope_dims={m.rope_dims} must be even and in [0, head_dim={head_dim}]")
    if m.logit_softcap <= 0 or m.logit_softcap_neg < 0:
        raise ConfigError("model.logit_softcap must be > 0 and logit_softcap_neg >= 0")
    if m.activation not in ("relu2", "leaky_relu2"):
        raise ConfigError(f"model.activation={m.activation!r}: expected relu2 or leaky_relu2")
    if t.compile_scope not in ("blocks", "model"):
        raise ConfigError(f"train.compile_scope={t.compile_scope!r}: expected blocks or model")
    if m.attn_gate not in ("none", "dense", "sparse"):
        raise ConfigError(f"model.attn_gate={m.attn_gate!r}: expected none, dense or sparse")
    if m.attn_kernel not in ("auto", "fa3", "varlen", "fa2", "flex", "sdpa", "dense"):
        raise ConfigError(f"model.attn_kernel={m.attn_kernel!r}: expected auto, fa3, varlen, fa2, flex, sdpa or dense")
    if m.recur_loops < 1:
        raise ConfigError("model.recur_loops must be >= 1")
    recur = parse_layer_spec(m.recur_layers, m.num_layers, "model.recur_layers")
    if recur and recur != list(range(recur[0], recur[-1] + 1)):
        raise ConfigError(f"model.recur_layers={m.recur_layers!r} must be one contiguous range")
    parse_layer_spec(m.xsa_layers, m.num_layers, "model.xsa_layers")
    parse_layer_spec(m.ve_layers, m.num_layers, "model.ve_layers")
    if m.parallel_from >= m.num_layers:
        raise ConfigError(f"model.parallel_from={m.parallel_from} must be < num_layers={m.num_layers}")
    if m.bigram_buckets == 1 or m.bigram_buckets < 0:
        raise ConfigError("model.bigram_buckets must be 0 (off) or >= 2")
    if t.train_seq_len <= 0 or t.train_batch_tokens <= 0:
        raise ConfigError("train.train_seq_len and train.train_batch_tokens must be positive")
    validate_eval(cfg.eval)
    q = cfg.quant
    for name in ("attn_bits", "mlp_bits", "embed_bits", "hash_bits"):
        if not (2 <= getattr(q, name) <= 8 or getattr(q, name) == 16):
            raise ConfigError(f"quant.{name}={getattr(q, name)}: expected 2..8, or 16 (fp16)")
    if (
        q.clip not in ("percentile", "sdclip", "search")
        or min(q.attn_clip_sigmas, q.mlp_clip_sigmas, q.embed_clip_sigmas, q.hash_clip_sigmas) <= 0
    ):
        raise ConfigError(f"quant.clip={q.clip!r} must be percentile|sdclip|search and quant.*_clip_sigmas > 0")
    if q.transform not in ("auto", "none", "shuffle", "bitpack", "transpose", "reorder"):
        raise ConfigError(f"quant.transform={q.transform!r}: expected auto|none|shuffle|bitpack|transpose|reorder")
    if q.gptq_block_size <= 0 or q.gptq_damp <= 0 or q.gptq_calib_batches <= 0 or q.gptq_time_budget_s < 0:
        raise ConfigError("quant.gptq_block_size, gptq_damp, gptq_calib_batches must be > 0, gptq_time_budget_s >= 0")
    if min(q.lqer_rank, q.lqer_top_k, q.keep_float_max_numel) < 0 or q.size_cap_bytes <= 0:
        raise ConfigError("quant.lqer_rank, lqer_top_k, keep_float_max_numel must be >= 0, size_cap_bytes > 0")


TTT_TARGETS = ("q", "k", "v", "o", "mlp", "head")


def validate_eval(e: EvalConfig) -> None:
    """The evaluation options that are strings or must agree with each other."""
    targets = [x.strip() for x in e.ttt_targets.split(",") if x.strip()]
    if e.ttt and (not targets or any(x not in TTT_TARGETS for x in targets)):
        raise ConfigError(f"eval.ttt_targets={e.ttt_targets!r}: expected a comma list of {','.join(TTT_TARGETS)}")
    parse_chunk_by_len(e.ttt_chunk_by_len)
    parse_phase_docs(e.ttt_phase_docs)
    if e.tilt_order and e.tilt_min_order > e.tilt_order:
        raise ConfigError(f"eval.tilt_min_order={e.tilt_min_order} must be <= eval.tilt_order={e.tilt_order}")


def parse_chunk_by_len(spec: str) -> list[tuple[int, int]]:
    """'256:8,1024:24' -> [(256, 8), (1024, 24)]: documents of at most LEN targets use CHUNK."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            a, b = (int(v) for v in part.split(":"))
        except ValueError:
            raise ConfigError(
                f"eval.ttt_chunk_by_len={spec!r}: expected LEN:CHUNK pairs like '256:8,1024:24'"
            ) from None
        if a <= 0 or b <= 0:
            raise ConfigError(f"eval.ttt_chunk_by_len={spec!r}: lengths and chunks must be positive")
        out.append((a, b))
    return sorted(out)


def parse_phase_docs(spec: str) -> list[int]:
    """'834,1667,2500' -> [834, 1667, 2500] (strictly increasing document counts)."""
    try:
        out = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"eval.ttt_phase_docs={spec!r}: expected document counts like '2500' or '834,1667'") from None
    if any(b <= a for a, b in zip([0] + out, out)):
        raise ConfigError(f"eval.ttt_phase_docs={spec!r}: counts must be positive and increasing")
    return out


def parse_layer_spec(spec: str, num_layers: int, option: str = "layers") -> list[int]:
    """'all' | '' | '3-5,9' -> sorted layer indices, each checked against num_layers."""
    spec = spec.strip()
    if not spec:
        return []
    if spec == "all":
        return list(range(num_layers))
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"{option}={spec!r}: expected 'all' or ranges like '3-5,9'") from None
        if not 0 <= a <= b < num_layers:
            raise ConfigError(f"{option}={spec!r}: layer range {a}-{b} outside 0..{num_layers - 1}")
        out.update(range(a, b + 1))
    return sorted(out)
