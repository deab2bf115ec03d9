"""The record techniques against small functional references written here, independent of
pgolf.model.gpt: XSA, SmearGate, attention output gates (sparse and dense), skip gates, LN scale,
partial RoPE and parallel lanes. Each reference spells the technique out the slow, obvious way
(loops over heads and positions), so a vectorisation or indexing bug in the model shows up."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.core.config import ModelConfig
from pgolf.model.gpt import GPT, SmearGate, exclusive_self_attention

BOS = 1


def norm(t: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(t, (t.size(-1),))


def ref_xsa(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per head h and position t: y -= (y . v_hat) v_hat with v_hat the unit value of h's kv head."""
    B, H, T, Dh = y.shape
    out = y.clone()
    group = H // v.size(1)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                vh = v[b, h // group, t]
                vh = vh / vh.norm().clamp_min(1e-12)
                out[b, h, t] = y[b, h, t] - (y[b, h, t] @ vh) * vh
    return out


def ref_smear(e: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """e_t + lam * sigmoid(w . e_t[:k]) * e_{t-1}, except at t = 0 and where ids[t] is BOS."""
    out = e.clone()
    k = w.numel()
    for b in range(e.size(0)):
        for t in range(1, e.size(1)):
            if int(ids[b, t]) != BOS:
                out[b, t] = e[b, t] + lam * torch.sigmoid(e[b, t, :k] @ w) * e[b, t - 1]
    return out


def ref_attention(p, cfg: ModelConfig, x: torch.Tensor, layer: int) -> torch.Tensor:
    """One attention sublayer on its (normed) input x, every option spelled out."""
    B, T, D = x.shape
    H, Hk = cfg.num_heads, cfg.num_kv_heads
    dh = D // H
    rot = cfg.rope_dims or dh
    q = (x @ p("attn.c_q.weight").T).view(B, T, H, dh).transpose(1, 2)
    k = (x @ p("attn.c_k.weight").T).view(B, T, Hk, dh).transpose(1, 2)
    v = (x @ p("attn.c_v.weight").T).view(B, T, Hk, dh).transpose(1, 2)
    q, k = norm(q), norm(k)
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, rot, 2).float() / rot))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = ang.cos(), ang.sin()

    def rope(t):
        a, b, rest = t[..., : rot // 2], t[..., rot // 2 : rot], t[..., rot:]
        return torch.cat((a * cos + b * sin, -a * sin + b * cos, rest), -1)

    q, k = rope(q) * p("attn.q_gain")[None, :, None, None], rope(k)
    kk, vv = k.repeat_interleave(H // Hk, 1), v.repeat_interleave(H // Hk, 1)
    att = (q @ kk.transpose(-1, -2)) / math.sqrt(dh)
    att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    y = att @ vv  # (B, H, T, dh)
    if cfg.xsa_layers:
        y = ref_xsa(y, v)
    if cfg.attn_gate != "none":
        w = p("attn.attn_gate")  # (H, dims)
        src = x[..., : w.size(1)]
        scale = cfg.attn_gate_scale if cfg.attn_gate == "sparse" else 1.0
        gate = torch.sigmoid(scale * (src @ w.T))  # (B, T, H)
        y = y * gate.transpose(1, 2)[..., None]
    return y.transpose(1, 2).reshape(B, T, D) @ p("attn.proj.weight").T


def ref_mlp(p, cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    h = x @ p("mlp.fc.weight").T
    h = F.leaky_relu(h, cfg.leaky_slope) if cfg.activation == "leaky_relu2" else torch.relu(h)
    return h.square() @ p("mlp.proj.weight").T


def ref_hidden(sd: dict, cfg: ModelConfig, ids: torch.Tensor) -> torch.Tensor:
    """Embedding (+ smear) -> blocks in U-Net order with (gated) skips and, from parallel_from on,
    two residual lanes (attention reads lane 0 mixed with x0, the MLP reads lane 1) -> norm."""
    e = sd["tok_emb.weight"][ids]
    if cfg.smear_gate:
        e = ref_smear(e, ids, sd["smear.smear_gate"], sd["smear.smear_lambda"])
    x0 = x = norm(e)
    L = cfg.num_layers
    n_enc, skips, lanes = L // 2, [], None

    def scaled_norm(t, i):
        return norm(t) * (1.0 / math.sqrt(i + 1) if cfg.ln_scale else 1.0)

    def merge(t, skip, j):
        w = sd["skip_weights"][j]
        if not cfg.skip_gates:
            return t + w * skip
        g = torch.sigmoid(sd["skip_gates"][j])
        return g * t + (1 - g) * w * skip

    for i in range(L):
        p = lambda k, i=i: sd[f"blocks.{i}.{k}"]  # noqa: E731
        if i >= n_enc and skips:
            if lanes is None:
                x = merge(x, skips.pop(), i - n_enc)
            else:
                lanes = (merge(lanes[0], skips.pop(), i - n_enc), lanes[1])
        if lanes is None and 0 <= cfg.parallel_from <= i:
            lanes = (x, x)
        if lanes is None:
            x = p("resid_mix")[0] * x + p("resid_mix")[1] * x0
            x = x + p("attn_scale") * ref_attention(p, cfg, scaled_norm(x, i), i)
            x = x + p("mlp_scale") * ref_mlp(p, cfg, scaled_norm(x, i))
        else:
            l0, l1 = lanes
            mixed = p("resid_mix")[0] * l0 + p("resid_mix")[1] * x0
            a = p("attn_scale") * ref_attention(p, cfg, scaled_norm(mixed, i), i)
            m = p("mlp_scale") * ref_mlp(p, cfg, scaled_norm(l1, i))
            post, carry = sd["lane_post"][i], sd["lane_resid"][i]
            lanes = (carry[0] * l0 + post[0, 0] * a + post[1, 0] * m, carry[1] * l1 + post[0, 1] * a + post[1, 1] * m)
        if i < n_enc:
            skips.append(x if lanes is None else lanes[0])
    if lanes is not None:
        x = 0.5 * (lanes[0] + lanes[1])
    return norm(x)


CASES = {
    "xsa": dict(xsa_layers="all"),
    "xsa_gqa4": dict(xsa_layers="all", num_heads=4, num_kv_heads=1),
    "smear": dict(smear_gate=True, attn_gate_dims=6),
    "gate_sparse": dict(attn_gate="sparse", attn_gate_dims=6, attn_gate_scale=0.5),
    "gate_dense": dict(attn_gate="dense"),
    "skip_gates_lnscale_rope": dict(skip_gates=True, ln_scale=True, rope_dims=4, activation="leaky_relu2"),
    "lanes": dict(parallel_from=2),
    "lanes_from_0": dict(parallel_from=0, skip_gates=True),
    "frontier_like": dict(
        xsa_layers="all",
        smear_gate=True,
        attn_gate="sparse",
        attn_gate_dims=6,
        attn_gate_scale=0.5,
        skip_gates=True,
        ln_scale=True,
        rope_dims=4,
        activation="leaky_relu2",
        parallel_from=3,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_equals_functional_reference(name):
    opts = dict(vocab_size=48, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2)
    opts.update(CASES[name])
    cfg = ModelConfig(**opts)
    torch.manual_seed(3)
    model = GPT(cfg)
    with torch.no_grad():  # every option non-trivial: zero-init gates and projections would hide bugs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ids = torch.randint(2, 48, (2, 12))
    ids[:, 0] = BOS
    ids[1, 6] = BOS  # a document boundary: smear must not cross it
    with torch.no_grad():
        got = model.hidden(ids)
        want = ref_hidden({k: v.detach() for k, v in model.state_dict().items()}, cfg, ids)
    assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), float((got - want).abs().max())


def test_xsa_against_loop_reference_and_its_defining_property():
    torch.manual_seed(0)
    y, v = torch.randn(2, 6, 5, 8), torch.randn(2, 3, 5, 8)
    out = exclusive_self_attention(y, v)
    assert torch.allclose(out, ref_xsa(y, v), atol=1e-6)
    own = v.repeat_interleave(2, 1)
    assert torch.allclose((out * own).sum(-1), torch.zeros(2, 6, 5), atol=1e-5)  # nothing left along v


def test_smear_gate_against_loop_reference():
    torch.manual_seed(0)
    gate = SmearGate(4)
    with torch.no_grad():
        gate.smear_gate.normal_()
        gate.smear_lambda.fill_(0.7)
    e = torch.randn(2, 7, 10)
    ids = torch.randint(2, 50, (2, 7))
    ids[0, 3] = BOS
    got = gate(e, ids, BOS)
    assert torch.allclose(got, ref_smear(e, ids, gate.smear_gate.detach(), gate.smear_lambda.detach()), atol=1e-6)
    assert torch.equal(got[0, 3], e[0, 3]) and torch.equal(got[:, 0], e[:, 0])  # BOS and window start untouched
