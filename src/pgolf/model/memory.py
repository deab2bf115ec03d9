"""Training memory per GPU, estimated before any GPU is touched: one forward + backward of the real
GPT traced on fake tensors (torch's FakeTensorMode: shapes and dtypes, no data, no compute), with
every storage an op creates counted while it is alive (the allocator's view: views share their
storage, freed storages leave), plus the persistent state counted by hand.

  params      fp32 master weights
  optimizer   Muon momentum (1 fp32 per matrix weight), Adam moments (2 fp32 per other weight)
  ema         fp32 copy of the weights (when train.ema_decay > 0)
  ddp         DDP's gradient buckets (one more fp32 gradient copy when world_size > 1)
  fwd_bwd     peak live bytes of everything the step creates: saved activations, temporaries and
              the gradients as they appear

Two modes: eager (what autograd saves op by op) and compiled (what AOTAutograd with inductor's
min-cut partitioner saves, the rest recomputed in the backward; the GPU default). Measured for the
frontier at 48 x 2048 per GPU (dry run): eager 77.35 GiB, compiled 52.37 GiB; eager is dominated
by CUDA autocast's fp32 copies (relu^2's input, q/k rms_norm) and the fp32 logits.

The trace runs on CPU under bf16 autocast (a CPU build cannot fake CUDA tensors). Linear layers
and attention cast as on GPU; CUDA autocast additionally runs rms_norm in fp32 (a few fp32 copies
of q/k per layer in eager mode, fewer compiled). Attention is traced as a flash kernel (output +
log-sum-exp saved), which is what every GPU kernel pgolf picks saves; the dense-mask path would
add its (B, 1, T, T) mask and, without a flash backend, full score matrices.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, replace

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from pgolf.core.config import ModelConfig
from pgolf.core.roles import parameter_roles
from pgolf.model.gpt import GPT

ALLOC_ROUND = 512  # the CUDA caching allocator's smallest block (bytes)
GIB = 2**30
HALF = (torch.bfloat16, torch.float16)
OPT_STATE_FLOATS = {"muon": 1, "adam-embed": 2, "adam-head": 2, "adam-scalar": 2}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU of one training micro-step, by part."""

    params: int
    optimizer: int
    ema: int
    ddp: int
    fwd_bwd: int  # peak of activations + temporaries + gradients during forward and backward

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.ema + self.ddp + self.fwd_bwd

    @property
    def total_gib(self) -> float:
        return self.total / GIB


def _cuda_fp32_ops() -> set:
    """The functions the GPT calls that CUDA autocast runs in fp32 (CPU autocast does not)."""
    T, F = torch.Tensor, torch.nn.functional
    return {F.rms_norm, F.normalize, T.norm, T.square, torch.square, T.pow, torch.pow, T.rsqrt, torch.rsqrt}


class CudaAutocastPolicy(TorchFunctionMode):
    """Under CPU autocast, also run CUDA autocast's fp32 ops in fp32 (their half inputs upcast),
    so a CPU trace keeps the dtypes an eager CUDA step has (e.g. relu^2 and qk rms_norm in fp32)."""

    def __init__(self):
        super().__init__()
        self.ops = _cuda_fp32_ops()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.ops:
            up = lambda x: x.float() if isinstance(x, torch.Tensor) and x.dtype in HALF else x  # noqa: E731
            args, kwargs = tuple(up(a) for a in args), {k: up(v) for k, v in (kwargs or {}).items()}
        return func(*args, **(kwargs or {}))


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of storages created under it while they are alive, and the peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if storage in self._seen:
                continue
            size = -(-storage.nbytes() // ALLOC_ROUND) * ALLOC_ROUND
            self._seen[storage] = size
            weakref.finalize(storage, self._free, size)
            self.live += size
            self.peak = max(self.peak, self.live)
        return out


def _fake_model(cfg: ModelConfig, recur_active: bool) -> GPT:
    # Doc masking changes which tokens attend, not what a flash kernel stores: trace causal SDPA.
    model = GPT(replace(cfg, doc_mask=False, attn_kernel="sdpa"))
    model.set_recurrence(recur_active)
    return model


def eager_step_peak(model: GPT, ids: torch.Tensor, dtype: torch.dtype) -> int:
    """Peak live bytes of one eager forward + backward (autograd keeps what eager ops save)."""
    tracker = LiveBytes()
    with tracker:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32), CudaAutocastPolicy():
            loss = model(ids, ids)
        loss.backward()
    return tracker.peak


def compiled_step_peak(model: GPT, ids: torch.Tensor, dtype: torch.dtype) -> int:
    """Peak live bytes of one forward + backward as torch.compile partitions it: AOTAutograd with
    inductor's min-cut partitioner decides what the forward saves (recomputing cheap elementwise
    ops in the backward); the two graphs are then replayed op by op (unfused, so temporaries are
    counted in full: an upper bound of what inductor's fused kernels allocate)."""
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    graphs: dict[str, tuple] = {}

    def keep(kind):
        def compiler(gm, inputs):
            graphs[kind] = (gm, inputs)
            return gm

        return compiler

    def backend(gm, inputs):
        return aot_module_simplified(
            gm, inputs, fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=min_cut_rematerialization_partition
        )

    torch._dynamo.reset()
    try:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compiler returns a function that doesn't take boxed arguments"
            torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(ids, ids).backward()
    finally:
        torch._dynamo.reset()
    (fw, fw_in), (bw, bw_in) = graphs["fw"], graphs["bw"]
    tracker = LiveBytes()
    with tracker:
        saved = list(fw(*fw_in)[1:])  # [loss, *saved for backward]
        bw(*saved[: len(bw_in) - 1], torch.ones(()))  # tangent of the scalar loss last
    return tracker.peak


def traced_step_peak(
    cfg: ModelConfig,
    batch_seqs: int,
    seq_len: int,
    dtype: torch.dtype = torch.bfloat16,
    recur_active: bool = True,
    compiled: bool = False,
) -> tuple[int, dict[str, int], dict[str, str]]:
    """(peak live bytes of one forward + backward, parameter -> numel, parameter -> optimizer
    group), traced on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = _fake_model(cfg, recur_active)
        ids = torch.zeros(batch_seqs, seq_len, dtype=torch.int64)
        peak = (compiled_step_peak if compiled else eager_step_peak)(model, ids, dtype)
        numels = {n: p.numel() for n, p in model.named_parameters()}
        roles = {n: r.opt for n, r in parameter_roles(model).items()}
    return peak, {n: numels[n] for n in roles}, roles


def estimate_train_memory(
    cfg: ModelConfig,
    batch_seqs: int,
    seq_len: int,
    world_size: int = 8,
    ema: bool = True,
    dtype: torch.dtype = torch.bfloat16,
    recur_active: bool = True,
    compiled: bool = False,
) -> MemoryEstimate:
    """Bytes per GPU of training `cfg` at `batch_seqs` x `seq_len` per micro-step (fp32 state)."""
    peak, numels, roles = traced_step_peak(cfg, batch_seqs, seq_len, dtype, recur_active, compiled)
    params = 4 * sum(numels.values())
    optimizer = sum(4 * OPT_STATE_FLOATS[roles[n]] * k for n, k in numels.items())
    return MemoryEstimate(
        params=params, optimizer=optimizer, ema=params if ema else 0, ddp=params if world_size > 1 else 0, fwd_bwd=peak
    )
