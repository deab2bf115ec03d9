"""The model: the naive baseline equals the official architecture; every option keeps causality,
never leaks across documents when masked, and has the parameter count the config predicts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.core.config import ModelConfig
from pgolf.core.presets import frontier, naive_baseline
from pgolf.model.gpt import GPT, layer_schedule, num_skips
from pgolf.model.inventory import param_shapes

OFFICIAL_BLOCK_TENSORS = {
    "attn_scale": (512,),
    "mlp_scale": (512,),
    "resid_mix": (2, 512),
    "attn.q_gain": (8,),
    "attn.c_q.weight": (512, 512),
    "attn.c_k.weight": (256, 512),
    "attn.c_v.weight": (256, 512),
    "attn.proj.weight": (512, 512),
    "mlp.fc.weight": (1024, 512),
    "mlp.proj.weight": (512, 1024),
}


def small(**kw) -> ModelConfig:
    base = dict(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2)
    base.update(kw)
    return ModelConfig(**base)


def test_naive_baseline_matches_official_names_shapes_and_count():
    cfg = naive_baseline().model
    shapes = param_shapes(cfg)
    expected = {"tok_emb.weight": (1024, 512), "skip_weights": (4, 512)}
    for i in range(9):
        expected.update({f"blocks.{i}.{k}": v for k, v in OFFICIAL_BLOCK_TENSORS.items()})
    assert shapes == expected
    assert sum(math.prod(s) for s in shapes.values()) == 17_059_912


def test_frontier_parameter_count_matches_pr1855():
    # PR #1855's log: 35,945,671 parameters (11x512, MLP 4x, sp8192, gates, lanes, smear).
    assert sum(math.prod(s) for s in param_shapes(frontier().model).values()) == 35_945_671


def reference_baseline_loss(sd: dict, cfg: ModelConfig, ids: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The official baseline forward written out functionally, independent of pgolf.model."""
    D, H, Hk = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads
    dh = D // H
    B, T = ids.shape
    norm = lambda t: F.rms_norm(t, (t.size(-1),))  # noqa: E731
    inv = 1.0 / (cfg.rope_base ** (torch.arange(0, dh, 2).float() / dh))
    fr = torch.outer(torch.arange(T).float(), inv)
    cos, sin = fr.cos()[None, None], fr.sin()[None, None]

    def rope(t):
        a, b = t[..., : dh // 2], t[..., dh // 2 :]
        return torch.cat((a * cos + b * sin, -a * sin + b * cos), -1)

    def block(i, x, x0):
        p = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: E731
        x = p("resid_mix")[0] * x + p("resid_mix")[1] * x0
        h = norm(x)
        q = (h @ p("attn.c_q.weight").T).view(B, T, H, dh).transpose(1, 2)
        k = (h @ p("attn.c_k.weight").T).view(B, T, Hk, dh).transpose(1, 2)
        v = (h @ p("attn.c_v.weight").T).view(B, T, Hk, dh).transpose(1, 2)
        q, k = rope(norm(q)) * p("attn.q_gain")[None, :, None, None], rope(norm(k))
        k, v = k.repeat_interleave(H // Hk, 1), v.repeat_interleave(H // Hk, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D) @ p("attn.proj.weight").T
        x = x + p("attn_scale") * y
        m = torch.relu(norm(x) @ p("mlp.fc.weight").T).square() @ p("mlp.proj.weight").T
        return x + p("mlp_scale") * m

    x = norm(sd["tok_emb.weight"][ids])
    x0, skips = x, []
    n_enc = cfg.num_layers // 2
    for i in range(n_enc):
        x = block(i, x, x0)
        skips.append(x)
    for i in range(cfg.num_layers - n_enc):
        if skips:
            x = x + sd["skip_weights"][i] * skips.pop()
        x = block(n_enc + i, x, x0)
    logits = norm(x) @ sd["tok_emb.weight"].T
    logits = cfg.logit_softcap * torch.tanh(logits / cfg.logit_softcap)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1))


def test_baseline_forward_equals_independent_reference():
    cfg = small(num_layers=5)
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():  # make every tensor non-trivial (zero-init projections hide bugs)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ids, tgt = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    ref = reference_baseline_loss(model.state_dict(), cfg, ids, tgt)
    assert torch.allclose(model(ids, tgt), ref, atol=1e-5, rtol=1e-5)


def test_same_seed_same_init_and_official_init_rules():
    a, b = (torch.manual_seed(7), GPT(small()))[1], (torch.manual_seed(7), GPT(small()))[1]
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    assert float(a.tok_emb.weight.detach().std()) == pytest.approx(0.005, rel=0.2)  # tied init std
    assert all(float(blk.attn.proj.weight.detach().abs().max()) == 0.0 for blk in a.blocks)  # zero-init projections
    assert all(float(blk.mlp.proj.weight.detach().abs().max()) == 0.0 for blk in a.blocks)


OPTION_SETS = {
    "baseline": {},
    "leaky_mlp3": dict(activation="leaky_relu2", mlp_mult=3.0),
    "partial_rope_lnscale_qkgain": dict(rope_dims=4, ln_scale=True, qk_gain_init=5.0),
    "no_qknorm": dict(qk_norm=False),
    "xsa_all": dict(xsa_layers="all"),
    "xsa_some_gqa": dict(xsa_layers="1-2", num_kv_heads=1),
    "smear": dict(smear_gate=True),
    "bigram": dict(bigram_buckets=37, bigram_dim=8),
    "value_embed": dict(ve_layers="2,3", ve_dim=8),
    "value_residual": dict(value_residual=True),
    "recurrence": dict(recur_layers="1-2", recur_loops=3),
    "lanes": dict(parallel_from=2),
    "skip_gates": dict(skip_gates=True),
    "gate_dense": dict(attn_gate="dense"),
    "gate_sparse": dict(attn_gate="sparse", attn_gate_dims=6, attn_gate_scale=0.5),
    "softcap_asym": dict(logit_softcap=20.0, logit_softcap_neg=10.0),
    "softcap_learned": dict(softcap_learned=True),
    "doc_mask": dict(doc_mask=True),
    "untied": dict(tie_embeddings=False),
    "no_unet": dict(unet_skips=False),
    "ortho": dict(ortho_init=True),
    "everything": dict(
        activation="leaky_relu2",
        rope_dims=4,
        ln_scale=True,
        xsa_layers="all",
        smear_gate=True,
        bigram_buckets=37,
        bigram_dim=8,
        ve_layers="3",
        ve_dim=8,
        value_residual=True,
        recur_layers="1-2",
        recur_loops=2,
        parallel_from=3,
        skip_gates=True,
        attn_gate="sparse",
        softcap_learned=True,
        doc_mask=True,
    ),
}


def perturbed(cfg: ModelConfig, recur: bool = True) -> GPT:
    """A model with every parameter non-zero (so no option hides behind a zero init)."""
    torch.manual_seed(1)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.set_recurrence(recur)
    return model.eval()


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_option_shapes_and_causality(name):
    cfg = small(**OPTION_SETS[name])
    model = perturbed(cfg)
    ids = torch.randint(2, 64, (2, 20))
    ids[:, 0] = 1
    ids[0, 9] = 1  # a document boundary inside the window
    with torch.no_grad():
        h = model.hidden(ids)
        assert h.shape == (2, 20, 32) and model.logits(h).shape == (2, 20, 64)
        for t in (0, 7, 12, 18):
            changed = ids.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 5) % 62 + 2  # never BOS
            h2 = model.hidden(changed)
            assert torch.allclose(h[:, : t + 1], h2[:, : t + 1], atol=1e-5), f"{name}: future token leaked into t<={t}"
    loss = model.train()(ids, ids)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"{name}: parameters without gradient: {unused}"


@pytest.mark.parametrize("name", ["smear", "bigram", "doc_mask_all"])
def test_no_information_crosses_bos_when_masked(name):
    opts = {
        "smear": dict(smear_gate=True, doc_mask=True),
        "bigram": dict(bigram_buckets=37, bigram_dim=8, doc_mask=True),
        "doc_mask_all": OPTION_SETS["everything"],
    }[name]
    model = perturbed(small(**opts))
    ids = torch.randint(2, 64, (1, 24))
    ids[0, 0] = ids[0, 10] = 1  # document 2 starts at position 10
    other = ids.clone()
    other[0, 1:10] = torch.randint(2, 64, (9,))  # a different previous document
    with torch.no_grad():
        assert torch.allclose(model.hidden(ids)[0, 10:], model.hidden(other)[0, 10:], atol=1e-5)


def test_smear_without_mask_would_leak():
    """Guard the guard: the BOS mask is what stops the leak (PR #1797)."""
    from pgolf.model.gpt import previous_tokens

    ids = torch.tensor([[1, 5, 6, 1, 7]])
    prev, valid = previous_tokens(ids, 1)
    assert valid.tolist() == [[False, True, True, False, True]]
    assert prev[0, 4] == 1  # BOS is a legitimate previous token inside its own document


def count(model: GPT) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "opts",
    [
        dict(recur_layers="1-2", recur_loops=3),
        dict(parallel_from=1),
        dict(recur_layers="0-3", recur_loops=2, parallel_from=2, skip_gates=True),
    ],
)
def test_recurrence_and_lanes_parameter_counts(opts):
    cfg = small(**opts)
    L, D = cfg.num_layers, cfg.model_dim
    base = count(GPT(small()))
    n = len(layer_schedule(cfg, True))
    skips = min(n // 2, n - n // 2)
    predicted = base + (skips - num_skips(small())) * D  # recurrence only adds skip rows
    predicted += skips * D if cfg.skip_gates else 0
    predicted += L * 6 if cfg.parallel_from >= 0 else 0  # 2x2 post + 2 carry weights per layer
    assert count(GPT(cfg)) == predicted
    assert sum(math.prod(s) for s in param_shapes(cfg).values()) == predicted


def test_recurrence_schedule_matches_pr1855():
    cfg = frontier().model
    assert layer_schedule(cfg, False) == list(range(11))
    sched = layer_schedule(cfg, True)
    assert sched[:8] == [0, 1, 2, 3, 4, 5, 3, 4] and sched[8:] == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert num_skips(cfg) == 8


def test_recurrence_switch_changes_compute_not_parameters():
    model = perturbed(small(recur_layers="1-2", recur_loops=3), recur=False)
    ids = torch.randint(2, 64, (1, 12))
    with torch.no_grad():
        off = model.hidden(ids)
        model.set_recurrence(True)
        on = model.hidden(ids)
    assert not torch.allclose(off, on)


def test_learned_asymmetric_softcap_bounds_logits():
    model = GPT(small(logit_softcap=5.0, logit_softcap_neg=2.0, softcap_learned=True))
    z = torch.linspace(-100, 100, 11)
    out = model.softcap(z)
    assert float(out.detach().max()) <= 5.0 and float(out.detach().min()) >= -2.0
    assert model.softcap_pos.requires_grad and model.softcap_neg.requires_grad


@pytest.mark.slow
def test_lookup_table_gradients_are_bit_reproducible_with_threads():
    """BigramHash / value-embedding rows repeated in a batch accumulate their gradients in a fixed
    order: two identical backward passes on 2 threads give identical bits (indexing with
    table[idx] did not, so two identical runs gave different artifacts)."""
    cfg = small(vocab_size=256, bigram_buckets=64, bigram_dim=16, ve_layers="1,2", ve_dim=16)
    ids = torch.randint(2, 256, (16, 129), generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(2):
            model = perturbed(cfg).train()
            model(ids[:, :-1], ids[:, 1:]).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
