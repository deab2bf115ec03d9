"""Quantization-aware training hooks: make every quantized CastedLinear compute with its
fake-quantized weight (SDClip row scales, straight-through gradients), so training sees the same
grid the mixed scheme will store. The weights themselves stay fp32 masters; state-dict names do
not change. A trainer switches it on for the part of training it chooses (e.g. the warmdown) and
off again with the returned handle.

Embedding tables (nn.Embedding, also the tied head) are not fake-quantized here: their lookups do
not go through CastedLinear.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import QuantConfig
from pgolf.gptq import linear_weight_names
from pgolf.lowbit import fake_quant_rows
from pgolf.mixedquant import FP16_BITS, group_bits_and_k
from pgolf.sizing import tensor_group


def _fake_quant_forward(self, x: Tensor) -> Tensor:
    """CastedLinear.forward with the weight replaced by its STE fake-quantized version."""
    bits, k = self._pgolf_fake_quant
    w = fake_quant_rows(self.weight, bits, k)
    bias = self.bias.to(x.dtype) if self.bias is not None else None
    return F.linear(x, w.to(x.dtype), bias)


@dataclass
class FakeQuantHandle:
    """The modules that were switched to fake quantization; remove() switches them back."""

    modules: dict[str, nn.Module] = field(default_factory=dict)

    def remove(self) -> None:
        for mod in self.modules.values():
            mod.__dict__.pop("forward", None)
            mod.__dict__.pop("_pgolf_fake_quant", None)
        self.modules.clear()


def apply_fake_quant(model: nn.Module, qcfg: QuantConfig) -> FakeQuantHandle:
    """Fake-quantize the forward of every CastedLinear that the mixed scheme would quantize
    (group width < 16 bits and more than keep_float_max_numel weights)."""
    handle = FakeQuantHandle()
    for name, mod in linear_weight_names(model).items():
        bits, k = group_bits_and_k(qcfg, tensor_group(name))
        if bits >= FP16_BITS or mod.weight.numel() <= qcfg.keep_float_max_numel:
            continue
        mod._pgolf_fake_quant = (bits, k)
        mod.forward = types.MethodType(_fake_quant_forward, mod)
        handle.modules[name] = mod
    return handle
