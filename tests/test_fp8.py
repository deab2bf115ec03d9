"""FP8 training option (pgolf.model.fp8): which linears convert, roles and weights kept, the forward
close to fp32 under torchao's emulation, and the notice (never a crash) where FP8 cannot run."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from pgolf.core.config import ModelConfig
from pgolf.core.roles import parameter_roles
from pgolf.model.fp8 import convert_to_fp8, enable_fp8, fp8_eligible, fp8_problem
from pgolf.model.gpt import GPT

needs_torchao = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None, reason="torchao is not installed (optional: pip install pgolf[gpu])"
)


def cfg() -> ModelConfig:
    return ModelConfig(
        vocab_size=64,
        num_layers=2,
        model_dim=32,
        num_heads=4,
        num_kv_heads=2,
        mlp_mult=2.0,
        xsa_layers="all",
        bigram_buckets=16,
        bigram_dim=16,
        ve_layers="1",
        ve_dim=16,
    )


def test_only_block_projections_with_fp8_dims_are_eligible():
    model = GPT(cfg())
    names = [n for n, m in model.named_modules() if fp8_eligible(n, m)]
    assert names == [
        f"blocks.{i}.{p}"
        for i in range(2)
        for p in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")
    ]
    odd = torch.nn.Linear(24, 40, bias=False)  # 24 is not a multiple of 16
    assert not fp8_eligible("blocks.0.mlp.fc", odd)


def test_cpu_gets_a_notice_not_a_crash():
    model = GPT(cfg())
    with pytest.warns(UserWarning, match="model.fp8: needs a CUDA GPU"):
        line = enable_fp8(model, torch.device("cpu"))
    assert line.startswith("fp8:off (") and fp8_problem(torch.device("cpu"))
    assert not any(type(m).__name__ == "Float8Linear" for m in model.modules())


@needs_torchao
def test_emulated_fp8_conversion_keeps_weights_roles_and_the_loss():
    torch.manual_seed(0)
    model = GPT(cfg())
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn(p.shape))
    ids = torch.randint(0, 64, (2, 32))
    ref = model(ids, ids).item()
    before = dict(model.named_parameters())
    roles = parameter_roles(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = convert_to_fp8(model, emulate=True)
    assert len(names) == 12
    assert all(type(model.get_submodule(n)).__name__ == "Float8Linear" for n in names)
    assert type(model.bigram.bigram_proj).__name__ == "CastedLinear"  # tables stay as they were
    after = dict(model.named_parameters())
    assert list(after) == list(before) and all(after[n] is before[n] for n in before)  # same Parameters
    assert parameter_roles(model) == roles
    loss = model(ids, ids)
    assert abs(loss.item() - ref) < 0.02 * abs(ref) and loss.item() != ref  # FP8-rounded, close
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.endswith(("c_q.weight", "fc.weight")))
