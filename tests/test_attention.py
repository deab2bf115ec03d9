"""The attention kernels (pgolf.model.attention) against the dense-mask reference: every path
computes the same causal, document-masked GQA attention, alone and inside the whole GPT.

FlashAttention is not installed on CPU machines: its varlen path is exercised with a plain-torch
stand-in for `flash_attn_varlen_func` (per-sequence causal attention over the flattened tokens,
query head h reading kv head h // (H / Hk)), which checks everything pgolf does around the kernel:
the cu_seqlens from BOS positions, the flattening, GQA, the dtype casts and the gradients.
flex_attention runs forward-only on CPU (torch has no CPU backward for it).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from pgolf.core.config import ModelConfig
from pgolf.model import attention as A
from pgolf.model.gpt import GPT

BOS = 1


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=True):
    """What flash_attn_varlen_func computes, in fp32, returned in the input dtype."""
    assert causal and torch.equal(cu_q, cu_k) and q.dtype in (torch.float16, torch.bfloat16)
    n, h, _ = q.shape
    pos = torch.arange(n)
    seq = torch.searchsorted(cu_q[1:].long(), pos, right=True)  # token -> its sequence
    assert int((cu_q[1:] - cu_q[:-1]).max()) <= max_q
    allowed = (seq[:, None] == seq[None, :]) & (pos[:, None] >= pos[None, :])
    rep = h // k.size(1)
    qf, kf, vf = (x.float().transpose(0, 1) for x in (q, k, v))  # (heads, N, Dh)
    out = F.scaled_dot_product_attention(
        qf, kf.repeat_interleave(rep, 0), vf.repeat_interleave(rep, 0), attn_mask=allowed
    )
    return out.transpose(0, 1).to(q.dtype)


def docs_ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Token ids with several documents per row (BOS at the start of some rows, not others)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 60, (B, T), generator=g)
    ids[0, [0, 5, 6, 17, 30]] = BOS  # a one-token document at 5
    ids[1, [9, 22]] = BOS  # the row starts mid-document
    return ids


def qkv(B=2, H=4, Hk=2, T=40, Dh=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    make = lambda h: torch.randn(B, h, T, Dh, generator=g).to(dtype).requires_grad_()  # noqa: E731
    return make(H), make(Hk), make(Hk)


@pytest.fixture
def fake_flash(monkeypatch):
    """Every kernel 'available' on CPU, FlashAttention replaced by the stand-in, a fresh cache."""
    monkeypatch.setattr(A, "_RESOLVED", {})
    monkeypatch.setattr(A, "kernel_problem", lambda kernel, doc_mask, device_type: None)
    monkeypatch.setattr(A, "varlen_function", lambda kernel: reference_varlen)


def run(kernel, q, k, v, ids, doc_mask=True):
    return A.attend(q, k, v, A.attention_inputs(ids, BOS, doc_mask, kernel))


def grads(y, inputs, seed=1):
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(y.float(), inputs, g)


def test_document_mask_blocks_other_documents_and_the_future():
    ids = docs_ids(2, 40)
    m = A.document_mask(ids, BOS)[:, 0]
    assert m.shape == (2, 40, 40) and not m.triu(1).any()
    assert m[0, 10, 7] and not m[0, 10, 4] and m[0, 5, 5] and not m[0, 6, 5]
    assert m[1, 8, 0] and not m[1, 9, 8] and not m[1, 30, 21] and m[1, 30, 22]


@pytest.mark.parametrize("doc_mask", [True, False])
def test_cu_seqlens_cut_rows_and_documents(doc_mask):
    ids = docs_ids(2, 40)
    cu = A.varlen_cu_seqlens(ids, BOS, doc_mask, capacity=12)
    starts = [0, 5, 6, 17, 30, 40, 49, 62] if doc_mask else [0, 40]
    assert cu.dtype == torch.int32 and cu.shape == (13,)
    assert cu.tolist() == starts + [80] * (13 - len(starts))


def test_cu_seqlens_refuse_more_documents_than_capacity():
    ids = docs_ids(2, 40)
    A.varlen_cu_seqlens(ids, BOS, True, capacity=8)  # exactly 8 sequences fit
    with pytest.raises(RuntimeError, match="varlen_capacity"):
        A.varlen_cu_seqlens(ids, BOS, True, capacity=7)


def test_varlen_capacity_has_room_for_row_starts_and_average_documents():
    assert A.varlen_capacity(48, 2048) == 48 + 48 * 2048 // A.VARLEN_MIN_AVG_DOC
    assert A.varlen_capacity(2, 40) == 80  # small micro-batches: a slot per token


@pytest.mark.parametrize("kernel", ["fa3", "varlen", "fa2"])
@pytest.mark.parametrize("doc_mask", [True, False])
def test_varlen_path_equals_dense_forward_and_backward(fake_flash, kernel, doc_mask):
    ids = docs_ids(2, 40)
    q, k, v = qkv()
    ref = run("dense", q, k, v, ids, doc_mask)
    # The reference sees the bf16-rounded inputs FlashAttention gets; fp32 from there on.
    qb, kb, vb = (x.detach().bfloat16().float().requires_grad_() for x in (q, k, v))
    ref_b = run("dense", qb, kb, vb, ids, doc_mask)
    got = run(kernel, q, k, v, ids, doc_mask)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got, ref_b, atol=1e-2, rtol=0)
    torch.testing.assert_close(got, ref, atol=3e-2, rtol=0)
    for a, b in zip(grads(got, (q, k, v)), grads(ref_b, (qb, kb, vb))):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=0)


@pytest.mark.parametrize("doc_mask", [True, False])
def test_flex_forward_equals_dense(doc_mask):
    ids = docs_ids(2, 40)
    q, k, v = (x.detach() for x in qkv())  # CPU flex_attention has no backward (torch refuses grads)
    ref = run("dense", q, k, v, ids, doc_mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns (once) that it is unfused
        got = run("flex", q, k, v, ids, doc_mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_flex_backward_is_refused_on_cpu_so_auto_never_picks_it():
    assert A.kernel_problem("flex", True, "cpu") == "flex_attention has no backward on CPU"
    assert A.auto_order(True, "cpu") == ["dense"]
    assert A.auto_order(True, "cuda") == ["fa3", "varlen", "fa2", "flex", "dense"]


def test_sdpa_causal_equals_dense_without_document_masking():
    ids = docs_ids(2, 40)
    q, k, v = qkv()
    causal = torch.ones(40, 40, dtype=torch.bool).tril()
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=causal)
    got = run("sdpa", q, k, v, ids, doc_mask=False)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads(got, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_document_masking_changes_the_output():
    """The references differ (so equality above is not trivially true)."""
    ids = docs_ids(2, 40)
    q, k, v = qkv()
    assert (run("dense", q, k, v, ids, True) - run("dense", q, k, v, ids, False)).abs().max() > 0.1


def test_auto_on_cpu_is_the_dense_reference_or_causal_sdpa(monkeypatch):
    monkeypatch.setattr(A, "_RESOLVED", {})
    assert A.resolve_with_notice("auto", True, "cpu") == ("dense", "")
    assert A.resolve_with_notice("auto", False, "cpu") == ("sdpa", "")
    assert A.attention_log_line("auto", True, "cpu") == "attention:dense-mask"
    assert A.attention_log_line("auto", False, "cpu") == "attention:sdpa-causal"
    inputs = A.attention_inputs(docs_ids(2, 40), BOS, False, "sdpa")
    assert inputs.mask is None and inputs.cu_seqlens is None  # the naive baseline's exact call


def test_missing_flash_attention_falls_back_with_one_notice(monkeypatch):
    monkeypatch.setattr(A, "_RESOLVED", {})
    monkeypatch.setattr(A, "_module_present", lambda name: False)
    with pytest.warns(UserWarning) as record:
        kernel, notice = A.resolve_with_notice("fa3", True, "cuda")
        A.resolve_with_notice("fa3", True, "cuda")  # cached: no second notice
    assert kernel == "flex" and len(record) == 1
    assert notice == "attention kernel fa3 unavailable (flash_attn_interface is not installed): using flex-doc"
    line = A.attention_log_line("fa3", True, "cuda")
    assert line.startswith("attention:flex-doc (attention kernel fa3 unavailable") and "\n" not in line
    with pytest.warns(UserWarning, match="fa2 unavailable \\(needs CUDA\\): using dense-mask"):
        assert A.resolve_with_notice("fa2", True, "cpu")[0] == "dense"
    with pytest.warns(UserWarning, match="cannot mask documents"):
        assert A.resolve_with_notice("sdpa", True, "cpu")[0] == "dense"


def torch_varlen_reference(
    q,
    k,
    v,
    cu_seq_q,
    cu_seq_k,
    max_q,
    max_k,
    *,
    return_aux=None,
    scale=None,
    window_size=(-1, -1),
    enable_gqa=False,
    seqused_k=None,
    block_table=None,
    num_splits=None,
):
    """torch.nn.attention.varlen.varlen_attn's signature (torch 2.11+) and semantics, in plain torch:
    window_size=(-1, 0) is causal; with enable_gqa k/v may have fewer heads."""
    assert window_size == (-1, 0), "pgolf must ask for causal attention"
    assert enable_gqa or k.size(1) == q.size(1)
    return reference_varlen(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, causal=True)


def torch_varlen_2_10(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, is_causal=False):
    """torch 2.10's varlen_attn: is_causal=, no GQA (heads must match)."""
    assert is_causal and key.size(1) == query.size(1)
    return reference_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal=True)


@pytest.mark.parametrize("fake", [torch_varlen_reference, torch_varlen_2_10])
def test_torch_varlen_call_adapts_to_the_installed_signature(monkeypatch, fake):
    """The torch kernel is reached through torch_varlen_call with the arguments its version takes
    (causal window or is_causal; native GQA or repeated kv heads), and equals the dense reference."""
    import torch.nn.attention.varlen as V

    monkeypatch.setattr(V, "varlen_attn", fake)
    monkeypatch.setattr(A, "_RESOLVED", {})
    monkeypatch.setattr(A, "_VARLEN_CALLS", {})
    monkeypatch.setattr(A, "kernel_problem", lambda kernel, doc_mask, device_type: None)
    ids = docs_ids(2, 40)
    q, k, v = qkv()
    qb, kb, vb = (x.detach().bfloat16().float().requires_grad_() for x in (q, k, v))
    ref = run("dense", qb, kb, vb, ids, True)
    got = run("varlen", q, k, v, ids, True)
    torch.testing.assert_close(got, ref, atol=1e-2, rtol=0)
    for a, b in zip(grads(got, (q, k, v)), grads(ref, (qb, kb, vb))):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=0)


def test_torch_varlen_needs_cuda_and_falls_back_with_a_notice(monkeypatch):
    assert A.kernel_problem("varlen", True, "cpu") == "needs CUDA"
    monkeypatch.setattr(A, "_RESOLVED", {})
    monkeypatch.setattr(A, "_module_present", lambda name: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    with pytest.warns(UserWarning, match="varlen unavailable \\(torch .* has no torch.nn.attention.varlen"):
        assert A.resolve_with_notice("varlen", True, "cuda")[0] == "flex"


def test_auto_prefers_torch_varlen_over_fa2_and_flex(monkeypatch):
    """auto: fa3 -> varlen -> fa2 -> flex -> dense; with torch's varlen present and no FA3 wheel,
    auto picks it without a notice."""
    monkeypatch.setattr(A, "_RESOLVED", {})
    monkeypatch.setattr(A, "_module_present", lambda name: name == A.TORCH_VARLEN_MODULE or name == "flash_attn")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert A.resolve_with_notice("auto", True, "cuda") == ("varlen", "")
    assert A.attention_log_line("auto", True, "cuda") == "attention:torch-varlen"


def tiny_cfg(**kw) -> ModelConfig:
    """Frontier-shaped at toy size: GQA, XSA on every layer, partial RoPE, gates, doc masking."""
    base = ModelConfig(
        vocab_size=64,
        num_layers=3,
        model_dim=32,
        num_heads=4,
        num_kv_heads=2,
        mlp_mult=2.0,
        xsa_layers="all",
        rope_dims=4,
        attn_gate="sparse",
        attn_gate_dims=4,
        smear_gate=True,
        value_residual=True,
        doc_mask=True,
        bos_id=BOS,
    )
    return replace(base, **kw)


def gpt_loss(cfg: ModelConfig, ids, grad: bool = True):
    torch.manual_seed(0)
    model = GPT(cfg)
    for p in model.parameters():  # away from the zero init, so attention outputs reach the loss
        p.data.add_(0.02 * torch.randn(p.shape))
    loss = model(ids, torch.roll(ids, -1, 1))
    if not grad:
        return loss.detach(), None
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kernel", ["fa3", "varlen", "fa2", "flex", "sdpa"])
def test_gpt_loss_with_each_kernel_equals_dense(fake_flash, kernel):
    ids = docs_ids(2, 40)
    doc_mask = kernel != "sdpa"
    ref_loss, ref_grads = gpt_loss(tiny_cfg(attn_kernel="dense", doc_mask=doc_mask), ids, grad=kernel != "flex")
    if kernel == "flex":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss, _ = gpt_loss(tiny_cfg(attn_kernel="flex"), ids, grad=False)
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
        return
    loss, got_grads = gpt_loss(tiny_cfg(attn_kernel=kernel, doc_mask=doc_mask), ids)
    tol = 1e-6 if kernel == "sdpa" else 2e-3  # FlashAttention sees bf16 q/k/v
    torch.testing.assert_close(loss, ref_loss, atol=tol, rtol=0)
    for name, g in ref_grads.items():
        torch.testing.assert_close(got_grads[name], g, atol=max(tol, 2e-3), rtol=0.05, msg=name)


def test_gpt_default_paths_on_cpu_are_unchanged():
    """Without doc masking the naive baseline's exact causal SDPA call; with it the dense mask."""
    ids = docs_ids(2, 40)
    for doc_mask in (False, True):
        auto, _ = gpt_loss(tiny_cfg(doc_mask=doc_mask), ids, grad=False)
        explicit, _ = gpt_loss(
            tiny_cfg(doc_mask=doc_mask, attn_kernel="sdpa" if not doc_mask else "dense"), ids, grad=False
        )
        assert torch.equal(auto, explicit)


def test_rope_tables_follow_the_compute_dtype(monkeypatch):
    """Under autocast cos/sin are built in the autocast dtype, so q/k reach the kernel in it
    (fp32 tables promoted q/k to fp32 before: +6.4 GiB of saved activations at frontier size)."""
    import pgolf.model.gpt as G

    x = torch.zeros(2, 3)
    assert G.compute_dtype(x) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert G.compute_dtype(x) == torch.bfloat16
    seen = {}

    def spy(q, k, v, a):
        seen.update(q=q.dtype, k=k.dtype, v=v.dtype)
        return A.attend(q, k, v, a)

    monkeypatch.setattr(G, "attend", spy)
    model, ids = GPT(tiny_cfg(num_layers=1)), docs_ids(2, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, ids)
    assert seen == {"q": torch.bfloat16, "k": torch.bfloat16, "v": torch.bfloat16}
    model(ids, ids)
    assert seen == {"q": torch.float32, "k": torch.float32, "v": torch.float32}


@pytest.mark.slow
def test_compiled_gpt_with_document_mask_has_no_graph_break():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    ids = docs_ids(2, 40)
    cfg = tiny_cfg()
    eager, _ = gpt_loss(cfg, ids, grad=False)
    torch.manual_seed(0)
    model = GPT(cfg)
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn(p.shape))
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    loss = compiled(ids, torch.roll(ids, -1, 1))
    torch.testing.assert_close(loss.detach(), eager, atol=1e-5, rtol=0)
    assert not counters["graph_break"]
