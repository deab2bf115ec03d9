"""Post-training quantization by scheme name: state dict in, QuantizedState (pgolf.quant.state)
out. The schemes are the registered `scheme_*` modules (pgolf.quant.registry): `int8` (the official
scheme) and `mixed` (per-group intN + GPTQ + LQER). Every scheme takes `groups`, the quantization
group of each tensor (pgolf.core.roles, from the model's declared parameter roles)."""

from __future__ import annotations

from torch import Tensor

from pgolf.core.config import QuantConfig
from pgolf.quant.registry import scheme_for
from pgolf.quant.state import QuantizedState


def quantize(
    state: dict[str, Tensor],
    groups: dict[str, str],
    qcfg: QuantConfig,
    hessians: dict[str, Tensor] | None = None,
    deadline: float | None = None,
) -> QuantizedState:
    """Apply the configured scheme. `hessians` (name -> H, from pgolf.quant.gptq.collect_hessians)
    turn on GPTQ when the scheme uses them and quant.gptq is set; without them a scheme rounds to
    nearest. `deadline` (a time.perf_counter() value) bounds GPTQ time: later tensors fall back to
    rounding."""
    return scheme_for(qcfg.scheme).quantize(state, groups, qcfg, hessians, deadline)
