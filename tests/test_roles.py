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

# The name-substring rules pgolf used before roles existed (model.CONTROL_PATTERNS, the size
# tables' GROUP_RULES, the optimizer's split). Roles must reproduce them on every option set, so
# the switch changed no optimizer group and no stored byte.
LEGACY_CONTROL = (
    "attn_scale",
    "mlp_scale",
    "resid_mix",
    "q_gain",
    "skip_weight",
    "skip_gates",
    "smear_gate",
    "smear_lambda",
    "lane_post",
    "lane_resid",
    "vres_gate",
    "bigram_scale",
    "ve_scale",
    "attn_gate",
    "softcap_pos",
    "softcap_neg",
)
LEGACY_GROUPS = (
    ("hash", ("bigram_table", "bigram_proj", "ve_table", "ve_proj")),
    ("embed", ("tok_emb", "lm_head")),
    ("attn", (".attn.c_q", ".attn.c_k", ".attn.c_v", ".attn.proj")),
    ("mlp", (".mlp.fc", ".mlp.proj")),
)


def legacy_role(name: str, ndim: int) -> Role:
    control = any(p in name for p in LEGACY_CONTROL)
    quant = next((g for g, keys in LEGACY_GROUPS if any(k in name for k in keys)), "control")
    if name == "tok_emb.weight":
        opt = "adam-embed"
    elif name == "lm_head.weight":
        opt = "adam-head"
    elif name.startswith("blocks.") and ndim == 2 and not control:
        opt = "muon"
    elif ndim == 2 and not control:
        opt = "adam-embed"
    else:
        opt = "adam-scalar"
    return Role(opt, quant)


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_every_parameter_has_exactly_one_role(name):
    model = GPT(small(**OPTION_SETS[name]))
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    assert list(roles) == list(params)  # all of them, once each, in model order
    for pname, role in roles.items():
        assert role.opt in OPT_GROUPS and role.quant in QUANT_GROUPS
        assert role == legacy_role(pname, params[pname].ndim), pname
    groups = split_params(model)
    assert sum(len(v) for v in groups.values()) == len(params)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_roles_on_the_meta_device(preset):
    specs = param_specs(PRESETS[preset]().model)
    assert specs and all(s.role == legacy_role(n, len(s.shape)) for n, s in specs.items())


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
