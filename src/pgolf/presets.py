"""Named presets: plain functions returning a RunConfig (variants modify a base preset).

- naive-baseline: the official train_gpt.py, exactly (9x512, int8+zlib, 1.2244 bpb on 8xH100).
- frontier: the best-known 10-minute stack (PR #1855 architecture and optimiser settings;
  ~35.9M params, sp8192) with pgolf's compression and sliding evaluation.
- *-cpu-proxy: the same recipes scaled to train in minutes on a 2-core CPU (see BENCHMARKS.md
  for the measurements behind the scaling).
"""

from __future__ import annotations

from typing import Callable

from pgolf.config import ConfigError, RunConfig


def naive_baseline() -> RunConfig:
    """The official baseline: every default of RunConfig is the official value."""
    cfg = RunConfig(preset="naive-baseline")
    cfg.data.data_path = "./data/datasets/fineweb10B_sp1024"
    return cfg


def frontier() -> RunConfig:
    """PR #1855's stack: 11x512, MLP 4x LeakyReLU(0.5)^2, XSA everywhere, partial RoPE 16/64,
    LN scale, QK gain 5, layers 3-5 looped x3 from 35% of training, parallel lanes from layer 8,
    BOS-masked SmearGate, sparse attention gate (scale 0.5), skip gates, sp8192 tied embeddings,
    document-masked attention; Muon 0.026 (Polar Express, row-normalised, momentum 0.92->0.97,
    wd 0.095), AdamW (0.9, 0.99; wd 0.085 embeddings / 0.02 scalars), clip 0.3, EMA 0.9965,
    LR flat then linear to 0.1x over the last 85% of the clock; 10 s kept for GPTQ calibration."""
    cfg = RunConfig(preset="frontier")
    m = cfg.model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = 8192, 11, 512, 8, 4
    m.mlp_mult, m.activation, m.leaky_slope = 4.0, "leaky_relu2", 0.5
    m.xsa_layers, m.rope_dims, m.ln_scale, m.qk_gain_init, m.ortho_init = "all", 16, True, 5.0, True
    m.recur_layers, m.recur_loops, m.recur_start_frac = "3-5", 3, 0.35
    m.parallel_from, m.smear_gate, m.skip_gates = 8, True, True
    m.attn_gate, m.attn_gate_dims, m.attn_gate_scale = "sparse", 12, 0.5
    m.doc_mask = True
    t = cfg.train
    t.train_seq_len, t.train_batch_tokens = 2048, 786_432
    t.matrix_lr, t.muon_momentum, t.muon_momentum_warmup_start, t.muon_momentum_warmup_steps = 0.026, 0.97, 0.92, 1500
    t.muon_weight_decay, t.tied_embed_lr, t.scalar_lr, t.beta2 = 0.095, 0.03, 0.02, 0.99
    t.muon_ns, t.muon_row_norm = "polar_express", True
    t.adam_weight_decay, t.embed_weight_decay, t.grad_clip_norm, t.ema_decay = 0.02, 0.085, 0.3, 0.9965
    t.warmdown_frac, t.min_lr_frac, t.reserve_seconds = 0.85, 0.1, 10.0
    cfg.eval.stride, cfg.eval.eval_seq_len = 64, 2048
    cfg.data.data_path = "./data/datasets/fineweb10B_sp8192"
    return cfg


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "naive-baseline": naive_baseline,
    "frontier": frontier,
}


def get_preset(name: str) -> RunConfig:
    """A fresh RunConfig for a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}") from None
