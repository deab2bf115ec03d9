"""Parameter roles: declared where each parameter is created, exactly one per parameter for every
option set, read by the optimizer split, the quantizers and the size tables; a parameter without
a role is an error everywhere, never a silent default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf.core.config import QuantConfig, TrainConfig
from pgolf.core.presets import PRESETS
from pgolf.core.roles import OPT_GROUPS, QUANT_GROUPS, Role, RoleError, declare, parameter_roles, quant_groups
from pgolf.model.gpt import GPT
from pgolf.model.inventory import param_specs
from pgolf.quant.schemes import quantize
from pgolf.train.optim import build_optimizers, split_params
from test_model import OPTION_SETS, small

# The official train_gpt.py's own rules (its CONTROL_TENSOR_NAME_PATTERNS default, its optimizer
# split and its int8 fp32-passthrough list): the oracle for the naive baseline's roles.
OFFICIAL_CONTROL = "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights"


def official_split(model) -> dict[str, str]:
    """Parameter name -> optimizer as the official script assigns it (tok_emb Adam, block matrices
    Muon, block vectors/scalars/control tensors and skip_weights Adam)."""
    patterns = OFFICIAL_CONTROL.split(",")
    out = {"tok_emb.weight": "adam-embed", "skip_weights": "adam-scalar"}
    for name, p in model.blocks.named_parameters():
        control = any(k in name for k in patterns)
        out["blocks." + name] = "muon" if p.ndim == 2 and not control else "adam-scalar"
    return out


def test_naive_baseline_roles_are_the_official_split_and_fp32_list():
    model = GPT(small())
    roles = parameter_roles(model)
    assert {n: r.opt for n, r in roles.items()} == official_split(model)
    patterns = OFFICIAL_CONTROL.split(",")
    for name, role in roles.items():  # official int8 keeps exactly these in fp32: our control group
        assert (role.quant == "control") == any(k in name for k in patterns) or name == "skip_weights", name


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_every_parameter_has_exactly_one_role(name):
    """For every option set: one role per parameter, and the roles follow the modules that own the
    parameters, not their names: Muon takes exactly the weights of linear layers inside blocks;
    every matrix group (attn/mlp/embed/hash) holds 2-D tensors; control tensors are never Muon."""
    from pgolf.model.gpt import CastedLinear

    model = GPT(small(**OPTION_SETS[name]))
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    assert list(roles) == list(params)  # all of them, once each, in model order
    block_linears = {
        f"blocks.{i}.{n}.weight"
        for i, b in enumerate(model.blocks)
        for n, m in b.named_modules()
        if isinstance(m, CastedLinear)
    }
    for pname, role in roles.items():
        assert role.opt in OPT_GROUPS and role.quant in QUANT_GROUPS
        assert (role.opt == "muon") == (pname in block_linears), pname
        if role.quant != "control":
            assert params[pname].ndim == 2, pname
        else:
            assert role.opt != "muon", pname
    groups = split_params(model)
    assert sum(len(v) for v in groups.values()) == len(params)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_roles_on_the_meta_device(preset):
    """The meta-device inventory (no weights allocated) gives exactly the shapes and roles of the
    model built for real on the CPU."""
    cfg = PRESETS[preset]().model
    specs = param_specs(cfg)
    model = GPT(cfg)
    real = parameter_roles(model)
    assert specs and {n: s.role for n, s in specs.items()} == real
    assert {n: s.shape for n, s in specs.items()} == {n: tuple(p.shape) for n, p in model.named_parameters()}


def test_a_parameter_without_a_role_is_an_error_everywhere():
    model = GPT(small())
    model.blocks[0].mlp.extra = nn.Parameter(torch.zeros(4, 4))  # created without declaring a role
    with pytest.raises(RoleError, match=r"blocks\.0\.mlp\.extra.*no declared role"):
        parameter_roles(model)
    with pytest.raises(RoleError):
        split_params(model)
    with pytest.raises(RoleError):
        build_optimizers(model, TrainConfig(), tied=True)
    with pytest.raises(RoleError):
        quant_groups(model)
    with pytest.raises(KeyError, match="no quantization group"):
        quantize(model.state_dict(), {n: "control" for n in GPT(small()).state_dict()}, QuantConfig())


def test_roles_are_validated_and_cannot_be_declared_twice():
    with pytest.raises(RoleError, match="optimizer group"):
        Role("sgd", "attn")
    with pytest.raises(RoleError, match="quantization group"):
        Role("muon", "int4")
    lin = nn.Linear(2, 2)
    declare(lin, "weight", Role("muon", "mlp"))
    declare(lin, "weight", Role("muon", "mlp"))  # the same role again is fine
    with pytest.raises(RoleError, match="declared twice"):
        declare(lin, "weight", Role("muon", "attn"))


def test_declared_roles_survive_device_moves_and_state_dict_loading():
    model = GPT(small(bigram_buckets=16, bigram_dim=8))
    before = parameter_roles(model)
    model.to(torch.float64).to("cpu")
    model.load_state_dict(GPT(small(bigram_buckets=16, bigram_dim=8)).state_dict(), assign=True)
    assert parameter_roles(model) == before
