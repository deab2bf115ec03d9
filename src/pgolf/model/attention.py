"""The attention core: one causal (optionally document-masked) GQA attention, six kernels.

Given q (B, H, T, Dh), k and v (B, Hk, T, Dh) it returns y (B, H, T, Dh). The kernels compute the
same function (tests/test_attention.py holds each to the dense reference):

  fa3    FlashAttention-3 `flash_attn_interface.flash_attn_varlen_func` (Hopper): every row's
         documents flattened into varlen sequences cut at BOS (`cu_seqlens`), as the records do
         (PR #1530: ~5% faster and -0.002 nats against attending across documents)
  varlen torch's own variable-length FlashAttention, `torch.nn.attention.varlen.varlen_attn`
         (causal via window_size=(-1, 0), GQA native): the same sequences, no extra wheel
  fa2    FlashAttention-2 `flash_attn.flash_attn_varlen_func`, the same sequences
  flex   torch's flex_attention with a document-causal block mask (compiled; CUDA)
  sdpa   SDPA with is_causal=True: only without document masking (the official baseline's path)
  dense  SDPA with a dense (B, 1, T, T) boolean mask: the CPU reference; FlashAttention refuses
         masks, so on GPU this is full T x T work plus a mask read per layer application

`auto` picks the best kernel the device has: without document masking always `sdpa` (the naive
baseline stays bit-identical); with it fa3 -> varlen -> fa2 -> flex on CUDA, dense on CPU. On one
H200 (issue 20) flex with a document block mask took 2.6x causal SDPA for 37% of its pairs; the
varlen kernels do only the document pairs. A requested
kernel that is missing falls back along the same chain with a one-line notice, never a crash.
The choice is made once per (request, masking, device) and is a compile-time constant.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ATTN_KERNELS = ("auto", "fa3", "varlen", "fa2", "flex", "sdpa", "dense")
KERNEL_LABELS = {
    "fa3": "fa3-varlen",
    "varlen": "torch-varlen",
    "fa2": "fa2-varlen",
    "flex": "flex-doc",
    "sdpa": "sdpa-causal",
    "dense": "dense-mask",
}
FA_MODULES = {"fa3": "flash_attn_interface", "fa2": "flash_attn"}
VARLEN_KERNELS = ("fa3", "varlen", "fa2")  # the kernels fed flattened tokens + cu_seqlens
TORCH_VARLEN_MODULE = "torch.nn.attention.varlen"
# Varlen sequences are a fixed-size cu_seqlens (static shapes: no recompile, no host sync): room for
# every row start plus one document per VARLEN_MIN_AVG_DOC tokens of the micro-batch (FineWeb's
# documents average ~1k tokens). A batch averaging shorter documents fails a device assert
# rather than attending across documents. Unused slots are empty sequences.
VARLEN_MIN_AVG_DOC = 128
VARLEN_EXACT_TOKENS = 8192  # micro-batches up to this size get a slot per token (any documents fit)
_RESOLVED: dict[tuple[str, bool, str], tuple[str, str]] = {}
_VARLEN_CALLS: dict[str, object] = {}  # "varlen" -> torch_varlen_call(), built once outside compiled code


@dataclass
class AttnInputs:
    """What a forward's attention calls share (built once per forward, not per layer)."""

    kernel: str  # fa3 | varlen | fa2 | flex | sdpa | dense (resolved)
    mask: Tensor | None = None  # dense: (B, 1, T, T) bool
    cu_seqlens: Tensor | None = None  # varlen kernels: (capacity + 1,) int32 over the flattened B*T tokens
    max_seqlen: int = 0  # varlen kernels: an upper bound of every sequence's length (T)
    block_mask: object = None  # flex: BlockMask


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def kernel_problem(kernel: str, doc_mask: bool, device_type: str) -> str | None:
    """Why `kernel` cannot run here (None when it can)."""
    if kernel in FA_MODULES:
        if device_type != "cuda":
            return "needs CUDA"
        if not _module_present(FA_MODULES[kernel]):
            return f"{FA_MODULES[kernel]} is not installed"
        major = torch.cuda.get_device_capability()[0]
        if (kernel == "fa3" and major != 9) or major < 8:
            return f"not built for compute capability {major}.x"
        return None
    if kernel == "varlen":
        if device_type != "cuda":
            return "needs CUDA"
        if not _module_present(TORCH_VARLEN_MODULE):
            return f"torch {torch.__version__} has no {TORCH_VARLEN_MODULE} (torch >= 2.10)"
        if torch.cuda.get_device_capability()[0] < 8:
            return "FlashAttention needs compute capability 8.0+"
        return None
    if kernel == "flex":
        return None if device_type == "cuda" else "flex_attention has no backward on CPU"
    if kernel == "sdpa" and doc_mask:
        return "is_causal SDPA cannot mask documents"
    return None


def auto_order(doc_mask: bool, device_type: str) -> list[str]:
    """Kernels to try, best first."""
    if not doc_mask:
        return ["sdpa"]
    return ["fa3", "varlen", "fa2", "flex", "dense"] if device_type == "cuda" else ["dense"]


@torch.compiler.assume_constant_result
def resolve_kernel(requested: str, doc_mask: bool, device_type: str) -> str:
    """The kernel a forward uses (a constant to torch.compile); warns once when falling back."""
    return resolve_with_notice(requested, doc_mask, device_type)[0]


def resolve_with_notice(requested: str, doc_mask: bool, device_type: str) -> tuple[str, str]:
    """(kernel, notice): notice is "" unless the requested kernel was unavailable."""
    key = (requested, doc_mask, device_type)
    if key not in _RESOLVED:
        wanted = auto_order(doc_mask, device_type) if requested == "auto" else [requested]
        notice, chosen = "", None
        for kernel in wanted + auto_order(doc_mask, device_type) + ["dense"]:
            problem = kernel_problem(kernel, doc_mask, device_type)
            if problem is None:
                chosen = kernel
                break
            if kernel == requested and not notice:
                notice = f"attention kernel {requested} unavailable ({problem})"
        if notice:
            notice += f": using {KERNEL_LABELS[chosen]}"
            warnings.warn(notice, stacklevel=3)
        _RESOLVED[key] = (chosen, notice)
        if chosen == "varlen":
            _VARLEN_CALLS["varlen"] = torch_varlen_call()  # signature inspected here, never while tracing
    return _RESOLVED[key]


def attention_log_line(requested: str, doc_mask: bool, device_type: str) -> str:
    """`attention:<kernel>` for the run log, with the fallback notice when there was one."""
    kernel, notice = resolve_with_notice(requested, doc_mask, device_type)
    label = "flex-causal" if kernel == "flex" and not doc_mask else KERNEL_LABELS[kernel]
    return f"attention:{label}" + (f" ({notice})" if notice else "")


def segment_ids(ids: Tensor, bos_id: int, doc_mask: bool) -> Tensor:
    """(B, T) running document index (increments at every BOS); all zeros without masking."""
    if not doc_mask:
        return torch.zeros_like(ids, dtype=torch.int32)
    return torch.cumsum((ids == bos_id).to(torch.int32), dim=1)


def document_mask(ids: Tensor, bos_id: int) -> Tensor:
    """(B, 1, T, T) boolean mask: causal and within the same document."""
    doc = segment_ids(ids, bos_id, True)
    T = ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
    same = doc[:, :, None] == doc[:, None, :]
    return (same & causal)[:, None]


def varlen_capacity(batch: int, seq_len: int) -> int:
    """Sequences a micro-batch's cu_seqlens has room for (see VARLEN_MIN_AVG_DOC)."""
    n = batch * seq_len
    return n if n <= VARLEN_EXACT_TOKENS else batch + n // VARLEN_MIN_AVG_DOC


def varlen_cu_seqlens(ids: Tensor, bos_id: int, doc_mask: bool, capacity: int) -> Tensor:
    """(capacity + 1,) int32 start offsets of the varlen sequences over the flattened (B*T)
    tokens: a sequence starts at every row start and, with masking, at every BOS; the slots
    after the last start hold B*T (empty sequences). Static shape, no host sync; more starts
    than `capacity` fail a device-side assert."""
    B, T = ids.shape
    n = B * T
    starts = torch.zeros_like(ids, dtype=torch.bool)
    starts[:, 0] = True
    if doc_mask:
        starts = starts | (ids == bos_id)
    flat = starts.reshape(-1)
    torch._assert_async(flat.sum() <= capacity, "more documents than varlen_capacity in one micro-batch")
    slot = torch.cumsum(flat.to(torch.int32), 0) - 1  # each start's sequence index
    slot = torch.where(flat & (slot < capacity), slot, torch.full_like(slot, capacity))  # others -> dump slot
    pos = torch.arange(n, device=ids.device, dtype=torch.int32)
    cu = torch.full((capacity + 1,), n, device=ids.device, dtype=torch.int32)
    cu = cu.scatter(0, slot.long(), torch.where(flat, pos, torch.full_like(pos, n)))
    cu[capacity] = n  # the dump slot received garbage from non-starts; the final offset is B*T
    return cu


def doc_block_mask(ids: Tensor, bos_id: int, doc_mask: bool):
    """flex_attention BlockMask: causal and (when masking) within the same document."""
    from torch.nn.attention.flex_attention import create_block_mask

    doc = segment_ids(ids, bos_id, doc_mask)

    def document_causal(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (doc[b, q_idx] == doc[b, kv_idx])

    B, T = ids.shape
    return create_block_mask(document_causal, B, None, T, T, device=ids.device)


def attention_inputs(ids: Tensor, bos_id: int, doc_mask: bool, kernel: str) -> AttnInputs:
    """The per-forward tensors `kernel` needs (mask, cu_seqlens or block mask)."""
    if kernel == "dense":
        # Without masking the reference is plain causal SDPA, bit for bit (no mask tensor).
        return AttnInputs(kernel, mask=document_mask(ids, bos_id) if doc_mask else None)
    if kernel in VARLEN_KERNELS:
        B, T = ids.shape
        cu = varlen_cu_seqlens(ids, bos_id, doc_mask, varlen_capacity(B, T))
        return AttnInputs(kernel, cu_seqlens=cu, max_seqlen=T)
    if kernel == "flex":
        return AttnInputs(kernel, block_mask=doc_block_mask(ids, bos_id, doc_mask))
    return AttnInputs(kernel)


def varlen_function(kernel: str):
    """The kernel's varlen call, FlashAttention's signature: f(q, k, v, cu_q, cu_k, max_q, max_k,
    causal=True) on flattened (N, h, Dh) tensors, k/v with fewer heads for GQA."""
    if kernel == "varlen":
        if kernel not in _VARLEN_CALLS:  # filled outside torch.compile by resolve_with_notice
            _VARLEN_CALLS[kernel] = torch_varlen_call()
        return _VARLEN_CALLS[kernel]
    return importlib.import_module(FA_MODULES[kernel]).flash_attn_varlen_func


def torch_varlen_call():
    """torch.nn.attention.varlen.varlen_attn adapted to FlashAttention's signature. torch 2.10
    takes is_causal=; later versions take window_size=(-1, 0) and enable_gqa=. Without
    enable_gqa the kv heads are repeated (query head h reads kv head h // (H / Hk), as SDPA)."""
    import inspect

    fn = importlib.import_module(TORCH_VARLEN_MODULE).varlen_attn
    params = inspect.signature(fn).parameters
    causal_kw = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    gqa = "enable_gqa" in params

    def call(q, k, v, cu_q, cu_k, max_q, max_k, causal=True):  # noqa: ARG001 (always causal)
        if gqa:
            return fn(q, k, v, cu_q, cu_k, max_q, max_k, enable_gqa=k.size(1) != q.size(1), **causal_kw)
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return fn(q, k, v, cu_q, cu_k, max_q, max_k, **causal_kw)

    return call


def _varlen(q: Tensor, k: Tensor, v: Tensor, a: AttnInputs) -> Tensor:
    B, H, T, Dh = q.shape
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16  # FA: half types only

    def flat(x: Tensor) -> Tensor:  # (B, h, T, Dh) -> (B*T, h, Dh)
        return x.transpose(1, 2).reshape(B * T, x.size(1), Dh).to(dtype)

    out = varlen_function(a.kernel)(
        flat(q), flat(k), flat(v), a.cu_seqlens, a.cu_seqlens, a.max_seqlen, a.max_seqlen, causal=True
    )
    out = out[0] if isinstance(out, tuple) else out  # some FA3 versions also return the LSE
    return out.reshape(B, T, H, Dh).transpose(1, 2).to(q.dtype)


_COMPILED_FLEX: dict[str, object] = {}


def _flex(q: Tensor, k: Tensor, v: Tensor, a: AttnInputs) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    fn = flex_attention
    if q.device.type == "cuda":  # eager flex materialises the scores; compiled it is one fused kernel
        fn = _COMPILED_FLEX.setdefault("cuda", torch.compile(flex_attention, dynamic=False))
    return fn(q, k, v, block_mask=a.block_mask, enable_gqa=k.size(1) != q.size(1))


def attend(q: Tensor, k: Tensor, v: Tensor, a: AttnInputs) -> Tensor:
    """Causal GQA attention of q (B, H, T, Dh) over k, v (B, Hk, T, Dh) -> (B, H, T, Dh)."""
    if a.kernel in VARLEN_KERNELS:
        return _varlen(q, k, v, a)
    if a.kernel == "flex":
        return _flex(q, k, v, a)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=a.mask, is_causal=a.mask is None, enable_gqa=k.size(1) != q.size(1)
    )
