"""The GPT of pgolf: the official baseline plus every leaderboard technique as a config field.

With `ModelConfig()` defaults (the naive-baseline preset) this is the official `train_gpt.py`
model: same modules, same construction order (so the same seed gives the same init), same
state-dict names, 17,059,912 parameters. Options add parameters under new names only.

Shapes: B batch, T time, D model_dim, H heads, Hk kv heads, Dh head_dim, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.core.config import ModelConfig, parse_layer_spec
from pgolf.core.roles import CONTROL, EMBED, HEAD, MATRIX_ATTN, MATRIX_MLP, TABLE, Role, declare, param
from pgolf.model.attention import AttnInputs, attend, attention_inputs, resolve_kernel


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMSNorm over the last dim (eps = dtype default, as the baseline)."""
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """fp32 master weights, cast to the activation dtype at matmul time (bf16 on GPU). The weight's
    role (optimizer and quantization group) is given at construction; there is no bias."""

    def __init__(self, in_features: int, out_features: int, role: Role):
        super().__init__(in_features, out_features, bias=False)
        declare(self, "weight", role)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


def rotary_tables(seq_len: int, rot_dims: int, base: float, device, dtype) -> tuple[Tensor, Tensor]:
    """cos/sin of shape (1, 1, T, rot_dims/2); computed per call (no cache across modes)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dims, 2, dtype=torch.float32, device=device) / rot_dims))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return freqs.cos()[None, None].to(dtype), freqs.sin()[None, None].to(dtype)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matmuls run in: autocast's (bf16 on GPU) when it is on, else x's (fp32 on CPU)."""
    kind = x.device.type
    if kind not in ("cpu", "cuda"):  # e.g. meta: autocast has no state for it
        return x.dtype
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2*cos.size(-1) dims of x (half-split pairing, official); rest unchanged."""
    rot = 2 * cos.size(-1)
    xr, xp = (x, None) if rot == x.size(-1) else (x[..., :rot], x[..., rot:])
    half = rot // 2
    x1, x2 = xr[..., :half], xr[..., half:]
    out = torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=-1)
    return out if xp is None else torch.cat((out, xp), dim=-1)


def previous_tokens(ids: Tensor, bos_id: int) -> tuple[Tensor, Tensor]:
    """(prev_ids, valid): the token before each position and whether it is in the same document.

    Invalid where t == 0 (outside the window) or where ids[t] is BOS (the previous token belongs
    to the previous document: mixing it in leaks across documents, PR #1797).
    """
    prev = torch.roll(ids, 1, dims=1)
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[:, 0] = False
    valid &= ids != bos_id
    return torch.where(valid, prev, torch.zeros_like(prev)), valid


@dataclass
class Context:
    """Per-forward tensors shared by all blocks."""

    cos: Tensor | None  # (1, 1, T, rot/2) in the compute dtype
    sin: Tensor | None
    attn: AttnInputs  # the attention kernel and its mask / cu_seqlens / block mask
    x0: Tensor  # the normalised input embedding (residual-mix target)
    ids: Tensor
    v_first: Tensor | None = None  # first layer's values, for value residual


class MLP(nn.Module):
    """Two-layer MLP with relu^2 (modded-nanogpt) or LeakyReLU(slope)^2 (records) activation."""

    def __init__(self, dim: int, hidden: int, activation: str, slope: float):
        super().__init__()
        self.fc = CastedLinear(dim, hidden, MATRIX_MLP)
        self.proj = CastedLinear(hidden, dim, MATRIX_MLP)
        self.proj._zero_init = True
        self.activation, self.slope = activation, slope

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        h = torch.relu(h) if self.activation == "relu2" else F.leaky_relu(h, self.slope)
        return self.proj(h.square())


class Attention(nn.Module):
    """Causal GQA self-attention with QK-norm, (partial) RoPE, learned per-head q gain, and the
    options XSA, output gate and value residual."""

    def __init__(self, cfg: ModelConfig, xsa: bool, first: bool):
        super().__init__()
        dim, self.h, self.hk = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
        self.dh = dim // self.h
        kv_dim = self.hk * self.dh
        self.c_q = CastedLinear(dim, dim, MATRIX_ATTN)
        self.c_k = CastedLinear(dim, kv_dim, MATRIX_ATTN)
        self.c_v = CastedLinear(dim, kv_dim, MATRIX_ATTN)
        self.proj = CastedLinear(dim, dim, MATRIX_ATTN)
        self.proj._zero_init = True
        param(self, "q_gain", torch.full((self.h,), cfg.qk_gain_init, dtype=torch.float32), CONTROL)
        self.qk_norm, self.xsa = cfg.qk_norm, xsa
        self.gate_kind = cfg.attn_gate
        self.gate_scale = cfg.attn_gate_scale if cfg.attn_gate == "sparse" else 1.0
        if cfg.attn_gate == "sparse":
            # PR #1787/#1855: H x 12 zero init -> sigmoid(0) = 0.5 on every head at start.
            param(self, "attn_gate", torch.zeros(self.h, min(cfg.attn_gate_dims, dim)), CONTROL)
        elif cfg.attn_gate == "dense":
            # GatedAttn (arXiv:2505.06708, PR #1736): H x D, N(0, 0.01^2) init (gate ~0.5).
            param(self, "attn_gate", torch.randn(self.h, dim) * 0.01, CONTROL)
        # Value residual (ResFormer): v += sigmoid(a) * v_first; the first layer makes v_first.
        self.vres_gate = None
        self.value_residual = cfg.value_residual
        if cfg.value_residual and not first:
            param(self, "vres_gate", torch.zeros(1), CONTROL)

    def _values(self, x: Tensor, ctx: Context, ve: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        v = self.c_v(x)
        if ve is not None:
            v = v + ve
        v = v.reshape(B, T, self.hk, self.dh).transpose(1, 2)  # (B, Hk, T, Dh)
        if not self.value_residual:
            return v
        if ctx.v_first is None:
            ctx.v_first = v
        elif self.vres_gate is not None:
            v = v + torch.sigmoid(self.vres_gate.to(v.dtype)) * ctx.v_first
        return v

    def forward(self, x: Tensor, ctx: Context, ve: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        q = self.c_q(x).reshape(B, T, self.h, self.dh).transpose(1, 2)  # (B, H, T, Dh)
        k = self.c_k(x).reshape(B, T, self.hk, self.dh).transpose(1, 2)  # (B, Hk, T, Dh)
        v = self._values(x, ctx, ve)
        if self.qk_norm:
            # CUDA autocast runs rms_norm in fp32: back to the compute dtype, or q/k (and RoPE, and
            # the saved activations) stay fp32 up to the kernel (issue 11). A no-op on CPU.
            q, k = rms_norm(q).to(q.dtype), rms_norm(k).to(k.dtype)
        if ctx.cos is not None:
            q, k = apply_rotary(q, ctx.cos, ctx.sin), apply_rotary(k, ctx.cos, ctx.sin)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = attend(q, k, v, ctx.attn)  # (B, H, T, Dh)
        if self.xsa:
            y = exclusive_self_attention(y, v)
        if self.gate_kind != "none":
            y = y * self._gate(x).transpose(1, 2)[..., None]
        return self.proj(y.transpose(1, 2).reshape(B, T, D))

    def _gate(self, x: Tensor) -> Tensor:
        """(B, T, H) sigmoid gate per head from the block input (all dims, or the first few)."""
        src = x if self.gate_kind == "dense" else x[..., : self.attn_gate.size(1)]
        return torch.sigmoid(self.gate_scale * F.linear(src, self.attn_gate.to(x.dtype)))


def exclusive_self_attention(y: Tensor, v: Tensor) -> Tensor:
    """XSA: remove from each head's output its component along the head's own value vector
    at the same position (so attention carries only information *other* than the token itself).
    y: (B, H, T, Dh); v: (B, Hk, T, Dh) shared by H/Hk query heads (GQA)."""
    B, H, T, Dh = y.shape
    groups = H // v.size(1)
    yg = y.reshape(B, v.size(1), groups, T, Dh)
    vn = F.normalize(v, dim=-1).to(y.dtype)[:, :, None]  # (B, Hk, 1, T, Dh); autocast's fp32 norm back to y's dtype
    yg = yg - (yg * vn).sum(-1, keepdim=True) * vn
    return yg.reshape(B, H, T, Dh)


class Block(nn.Module):
    """Pre-norm transformer block with the baseline's learned residual mix (x, x0) and per-channel
    output scales; optional layer-index norm scaling (1/sqrt(layer+1))."""

    def __init__(self, cfg: ModelConfig, layer: int, xsa: bool):
        super().__init__()
        dim = cfg.model_dim
        self.attn = Attention(cfg, xsa, first=layer == 0)
        self.mlp = MLP(dim, int(round(cfg.mlp_mult * dim)), cfg.activation, cfg.leaky_slope)
        param(self, "attn_scale", torch.ones(dim, dtype=torch.float32), CONTROL)
        param(self, "mlp_scale", torch.ones(dim, dtype=torch.float32), CONTROL)
        param(self, "resid_mix", torch.stack((torch.ones(dim), torch.zeros(dim))).float(), CONTROL)
        self.ln_scale = cfg.ln_scale
        # A tensor, not a float attribute: torch.compile specialises on Python floats, so a float
        # per layer would compile every block separately (regional compilation, pgolf.train.compile).
        scale = torch.tensor(1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0)
        self.register_buffer("norm_scale", scale, persistent=False)

    def _norm(self, x: Tensor) -> Tensor:
        y = rms_norm(x)
        return y * self.norm_scale if self.ln_scale else y

    def mix_input(self, x: Tensor, ctx: Context) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        return mix[0][None, None] * x + mix[1][None, None] * ctx.x0

    def attn_branch(self, x: Tensor, ctx: Context, ve: Tensor | None) -> Tensor:
        return self.attn_scale.to(x.dtype)[None, None] * self.attn(self._norm(x), ctx, ve)

    def mlp_branch(self, x: Tensor) -> Tensor:
        return self.mlp_scale.to(x.dtype)[None, None] * self.mlp(self._norm(x))

    def forward(self, x: Tensor, ctx: Context, ve: Tensor | None = None) -> Tensor:
        x = self.mix_input(x, ctx)
        x = x + self.attn_branch(x, ctx, ve)
        return x + self.mlp_branch(x)


BIGRAM_MUL_CUR, BIGRAM_MUL_PREV = 36313, 27191  # hash multipliers (PR #162 lineage)


class BigramHash(nn.Module):
    """BigramHash (PR #162/#1019): hashed (previous, current) token pairs index a table whose rows
    are projected to model_dim and added to the token embedding. Bucket K-1 is reserved for
    positions with no in-document previous token (window start, BOS)."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        param(self, "bigram_table", torch.zeros(buckets, dim), TABLE)  # zero: starts as a no-op
        self.bigram_proj = CastedLinear(dim, model_dim, TABLE)
        nn.init.orthogonal_(self.bigram_proj.weight)  # non-zero, or the zero table never learns
        param(self, "bigram_scale", torch.tensor(0.05), CONTROL)

    def forward(self, ids: Tensor, bos_id: int) -> Tensor:
        prev, valid = previous_tokens(ids, bos_id)
        h = torch.bitwise_xor(BIGRAM_MUL_CUR * ids, BIGRAM_MUL_PREV * prev) % (self.buckets - 1)
        idx = torch.where(valid, h, torch.full_like(h, self.buckets - 1))
        # F.embedding, not bigram_table[idx]: the indexing backward accumulates repeated rows in a
        # thread-scheduled order on CPU, so two identical runs drifted apart (measured: the raw
        # weights of two 5-step frontier-cpu-proxy runs differed); the embedding backward does not.
        return self.bigram_scale.to(self.bigram_table.dtype) * self.bigram_proj(F.embedding(idx, self.bigram_table))


class SmearGate(nn.Module):
    """SmearGate (PR #1855 form): e_t += lambda * sigmoid(w . e_t[:12]) * e_{t-1}, one gate per
    token from the current embedding; zero at BOS (no mixing across documents, PR #1797 fix) and
    at the window's first position. Zero init: the identity at start."""

    def __init__(self, gate_dims: int):
        super().__init__()
        param(self, "smear_gate", torch.zeros(gate_dims), CONTROL)
        param(self, "smear_lambda", torch.zeros(1), CONTROL)

    def forward(self, e: Tensor, ids: Tensor, bos_id: int) -> Tensor:
        _, valid = previous_tokens(ids, bos_id)
        g = self.smear_lambda.to(e.dtype) * torch.sigmoid(
            e[..., : self.smear_gate.numel()] @ self.smear_gate.to(e.dtype)
        )
        prev = torch.roll(e, 1, dims=1)
        return e + (g * valid.to(e.dtype))[..., None] * prev


class ValueEmbedding(nn.Module):
    """Shared value embedding (VE, PR #374): a V x ve_dim table projected to the kv width and
    added to the values of chosen layers, each with its own learned scale."""

    def __init__(self, vocab: int, ve_dim: int, kv_dim: int, layers: list[int]):
        super().__init__()
        param(self, "ve_table", torch.randn(vocab, ve_dim) * 0.01, TABLE)
        self.ve_proj = CastedLinear(ve_dim, kv_dim, TABLE)
        nn.init.orthogonal_(self.ve_proj.weight)
        param(self, "ve_scale", torch.full((len(layers),), 0.1), CONTROL)
        self.slot = {layer: i for i, layer in enumerate(layers)}

    def forward(self, ids: Tensor) -> Tensor:
        return self.ve_proj(F.embedding(ids, self.ve_table))  # (B, T, kv_dim); deterministic backward (BigramHash)


def layer_schedule(cfg: ModelConfig, recur_active: bool) -> list[int]:
    """Physical block index of every block application, in order. With recurrence on, the
    recur_layers range runs recur_loops times (PR #1344/#1855: 3-5 x3 -> 17 applications)."""
    order = list(range(cfg.num_layers))
    loop = parse_layer_spec(cfg.recur_layers, cfg.num_layers, "model.recur_layers")
    if not recur_active or not loop or cfg.recur_loops <= 1:
        return order
    a, b = loop[0], loop[-1] + 1
    return order[:a] + order[a:b] * cfg.recur_loops + order[b:]


def num_skips(cfg: ModelConfig) -> int:
    """U-Net skip count: min(encoder, decoder) applications of the longest schedule."""
    n = len(layer_schedule(cfg, recur_active=True))
    return min(n // 2, n - n // 2) if cfg.unet_skips else 0


class GPT(nn.Module):
    """Token embedding -> (BigramHash, SmearGate) -> RMSNorm = x0 -> blocks in U-Net order (with
    optional depth recurrence and parallel lanes) -> RMSNorm -> tied head -> logit softcap."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, L = cfg.model_dim, cfg.num_layers
        # Construction order = the official script's (tok_emb, skip_weights, blocks, lm_head), so
        # a seed gives the official init; option modules are created after, under new names.
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        declare(self.tok_emb, "weight", EMBED)
        self.num_skips = num_skips(cfg)
        self.skip_weights = None
        if cfg.unet_skips:
            param(self, "skip_weights", torch.ones(self.num_skips, D), CONTROL)
        xsa = set(parse_layer_spec(cfg.xsa_layers, L, "model.xsa_layers"))
        self.blocks = nn.ModuleList([Block(cfg, i, i in xsa) for i in range(L)])
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(D, cfg.vocab_size, HEAD)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        self._init_weights()
        self._build_options(cfg)
        self.recur_active = False

    def _build_options(self, cfg: ModelConfig) -> None:
        D, L = cfg.model_dim, cfg.num_layers
        self.skip_gates = None
        if cfg.skip_gates and cfg.unet_skips:
            param(self, "skip_gates", torch.zeros(self.num_skips, D), CONTROL)
        self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, D) if cfg.bigram_buckets else None
        self.smear = SmearGate(min(cfg.attn_gate_dims, D)) if cfg.smear_gate else None
        ve_layers = parse_layer_spec(cfg.ve_layers, L, "model.ve_layers")
        kv_dim = cfg.num_kv_heads * (D // cfg.num_heads)
        self.value_embed = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim, ve_layers) if ve_layers else None
        if cfg.parallel_from >= 0:
            # PR #1530/#1855: per layer, 2x2 write weights (attn, mlp) -> (lane0, lane1), init 1,
            # and per-lane carry weights, init 1.1; stored for every layer as the record does.
            param(self, "lane_post", torch.ones(L, 2, 2), CONTROL)
            param(self, "lane_resid", torch.full((L, 2), 1.1), CONTROL)
        else:
            self.lane_post = self.lane_resid = None
        if cfg.softcap_learned:
            neg = cfg.logit_softcap_neg or cfg.logit_softcap
            param(self, "softcap_pos", torch.tensor(float(cfg.logit_softcap)), CONTROL)
            param(self, "softcap_neg", torch.tensor(float(neg)), CONTROL)

    def _init_weights(self) -> None:
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)
        if self.cfg.ortho_init:
            for block in self.blocks:
                for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.fc):
                    nn.init.orthogonal_(lin.weight)

    def set_recurrence(self, active: bool) -> None:
        """Switch depth recurrence on/off (on from recur_start_frac of training)."""
        self.recur_active = bool(active)

    def schedule(self) -> list[int]:
        return layer_schedule(self.cfg, self.recur_active)

    def embed(self, ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, D) x0."""
        e = self.tok_emb(ids)
        if self.bigram is not None:
            e = e + self.bigram(ids, self.cfg.bos_id).to(e.dtype)
        if self.smear is not None:
            e = self.smear(e, ids, self.cfg.bos_id)
        return rms_norm(e)

    def _context(self, ids: Tensor, x0: Tensor) -> Context:
        cfg = self.cfg
        rot = cfg.rope_dims or (cfg.model_dim // cfg.num_heads)
        cos, sin = rotary_tables(ids.size(1), rot, cfg.rope_base, ids.device, compute_dtype(x0))
        kernel = resolve_kernel(cfg.attn_kernel, cfg.doc_mask, ids.device.type)
        return Context(cos, sin, attention_inputs(ids, cfg.bos_id, cfg.doc_mask, kernel), x0, ids)

    def _skip_merge(self, x: Tensor, skip: Tensor, j: int) -> Tensor:
        w = self.skip_weights[j].to(x.dtype)[None, None]
        if self.skip_gates is None:
            return x + w * skip  # baseline
        g = torch.sigmoid(self.skip_gates[j].to(x.dtype))[None, None]
        return g * x + (1 - g) * (w * skip)

    def _ve(self, ids: Tensor, layer: int, cache: dict) -> Tensor | None:
        if self.value_embed is None or layer not in self.value_embed.slot:
            return None
        if "ve" not in cache:
            cache["ve"] = self.value_embed(ids)
        return self.value_embed.ve_scale[self.value_embed.slot[layer]].to(cache["ve"].dtype) * cache["ve"]

    def hidden(self, ids: Tensor, apply: BlockFn | None = None) -> Tensor:
        """(B, T) ids -> (B, T, D) final-normed hidden states. `apply` runs each block application
        (default: apply_block; a compiled apply_block under regional compilation)."""
        apply = apply or apply_block
        x = self.embed(ids)
        ctx = self._context(ids, x)
        sched, cache = self.schedule(), {}
        n_enc = len(sched) // 2
        skips: list[Tensor] = []
        lanes: tuple[Tensor, Tensor] | None = None
        for j, i in enumerate(sched):
            if j >= n_enc and skips and j - n_enc < self.num_skips:
                if lanes is None:
                    x = self._skip_merge(x, skips.pop(), j - n_enc)
                else:
                    lanes = (self._skip_merge(lanes[0], skips.pop(), j - n_enc), lanes[1])
            ve = self._ve(ids, i, cache)
            if lanes is None and 0 <= self.cfg.parallel_from <= i:
                lanes = (x, x)
            if lanes is None:
                x, _ = apply(self.blocks[i], x, ctx, ve, None, None, None)
            else:
                lanes = apply(self.blocks[i], lanes[0], ctx, ve, lanes[1], self.lane_post[i], self.lane_resid[i])
            if j < n_enc and self.skip_weights is not None:
                skips.append(x if lanes is None else lanes[0])
        if lanes is not None:
            x = 0.5 * (lanes[0] + lanes[1])
        return rms_norm(x)

    def logits(self, h: Tensor) -> Tensor:
        """Hidden -> soft-capped logits (tied head uses the embedding matrix)."""
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        z = F.linear(h, w.to(h.dtype))
        return self.softcap(z)

    def softcap(self, z: Tensor) -> Tensor:
        """c*tanh(z/c); separate (optionally learned) caps for positive and negative logits."""
        cfg = self.cfg
        if cfg.softcap_learned:
            pos, neg = self.softcap_pos.to(z.dtype), self.softcap_neg.to(z.dtype)
        elif cfg.logit_softcap_neg > 0:
            pos, neg = cfg.logit_softcap, cfg.logit_softcap_neg
        else:
            return cfg.logit_softcap * torch.tanh(z / cfg.logit_softcap)
        return torch.where(z > 0, pos * torch.tanh(z / pos), neg * torch.tanh(z / neg))

    def forward(self, ids: Tensor, targets: Tensor, regions: Regions | None = None) -> Tensor:
        """Mean cross-entropy (nats) of targets given ids, both (B, T). `regions` swaps in compiled
        block and head functions (regional compilation); the arithmetic is the same."""
        if regions is None:
            return head_loss(self, self.hidden(ids), targets)
        return regions.head(self, self.hidden(ids, regions.block), targets)


BlockFn = Callable[..., tuple[Tensor, Tensor | None]]


def apply_block(
    block: Block,
    x: Tensor,
    ctx: Context,
    ve: Tensor | None,
    lane1: Tensor | None,
    post: Tensor | None,
    resid: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """One block application: plain (lane1 None: returns (x', None)) or on two parallel lanes
    (PR #1530/#1855): attention reads lane0 (mixed with x0), the MLP reads lane1, both write to
    both lanes through the 2x2 `post` weights; `resid` carries each lane. Every layer and every
    recurrence loop calls this one function, so regional compilation compiles it once per
    variant (first layer, plain, lanes), not once per application."""
    if lane1 is None:
        return block(x, ctx, ve), None
    a = block.attn_branch(block.mix_input(x, ctx), ctx, ve)
    m = block.mlp_branch(lane1)
    post, resid = post.to(x.dtype), resid.to(x.dtype)
    return (resid[0] * x + post[0, 0] * a + post[1, 0] * m, resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m)


def head_loss(model: GPT, h: Tensor, targets: Tensor) -> Tensor:
    """Final hidden (B, T, D) -> soft-capped logits -> mean cross-entropy (nats), in fp32. Compiled
    as one region this is the records' fused softcapped cross-entropy (#1787), done by inductor."""
    logits = model.logits(h.reshape(-1, model.cfg.model_dim))
    return F.cross_entropy(logits.float(), targets.reshape(-1), reduction="mean")


@dataclass
class Regions:
    """The functions GPT.forward runs per block application and for the head (compiled or not)."""

    block: BlockFn
    head: Callable[[GPT, Tensor, Tensor], Tensor]
