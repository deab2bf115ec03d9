"""Parameter roles: how every parameter is optimized and how it is quantized, declared by the
module that creates it (see pgolf.model.gpt) and read by the optimizer builder, the quantizers
and the size tables. There is no name-matching fallback: a parameter without a declared role is
an error (RoleError), so a new matrix can never silently be trained by one rule and stored by
another.

Optimizer groups (official split, PR #1855 weight decays):
  muon         block matrices (Newton-Schulz orthogonalised updates)
  adam-embed   the token embedding and other lookup tables (BigramHash, value embeddings)
  adam-head    an untied output head (its own LR)
  adam-scalar  vectors, scalars and small control matrices (gains, mixes, gates)
Quantization groups (one code stream and one bit width each in the mixed scheme):
  embed  token embedding / head     hash     BigramHash and value-embedding tables
  attn   attention projections      mlp      MLP matrices
  control  kept in float (fp32 in the official int8 scheme, fp16 in mixed)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pgolf.core.errors import PgolfError

OPT_GROUPS = ("muon", "adam-embed", "adam-head", "adam-scalar")
QUANT_GROUPS = ("embed", "hash", "attn", "mlp", "control")  # also the order of size tables
ROLES_ATTR = "_pgolf_roles"  # per-module dict: local parameter name -> Role


class RoleError(PgolfError, ValueError):
    """A parameter without a role, with two, or with an unknown group."""


@dataclass(frozen=True)
class Role:
    """Where a parameter goes: its optimizer group and its quantization group."""

    opt: str
    quant: str

    def __post_init__(self):
        if self.opt not in OPT_GROUPS:
            raise RoleError(f"optimizer group {self.opt!r}: expected one of {', '.join(OPT_GROUPS)}")
        if self.quant not in QUANT_GROUPS:
            raise RoleError(f"quantization group {self.quant!r}: expected one of {', '.join(QUANT_GROUPS)}")


# The roles the model uses (named once, so modules read as what they declare).
MATRIX_ATTN = Role("muon", "attn")
MATRIX_MLP = Role("muon", "mlp")
EMBED = Role("adam-embed", "embed")
HEAD = Role("adam-head", "embed")
TABLE = Role("adam-embed", "hash")  # extra lookup tables and their projections
CONTROL = Role("adam-scalar", "control")


def declare(module: nn.Module, name: str, role: Role) -> None:
    """Record the role of `module`'s own parameter `name` (call right where it is created)."""
    roles = module.__dict__.setdefault(ROLES_ATTR, {})
    if name in roles and roles[name] != role:
        raise RoleError(f"{type(module).__name__}.{name}: declared twice ({roles[name]} and {role})")
    roles[name] = role


def param(module: nn.Module, name: str, value, role: Role) -> nn.Parameter:
    """Create module.<name> = nn.Parameter(value) with its role; returns the parameter."""
    p = value if isinstance(value, nn.Parameter) else nn.Parameter(value)
    setattr(module, name, p)
    declare(module, name, role)
    return p


def parameter_roles(model: nn.Module) -> dict[str, Role]:
    """Full parameter name -> Role for every parameter of `model` (shared ones once, under their
    first name, as named_parameters gives them); a parameter without a role is a RoleError."""
    owner: dict[int, Role] = {}
    for mod_name, mod in model.named_modules():
        roles = mod.__dict__.get(ROLES_ATTR, {})
        for local, p in mod.named_parameters(recurse=False):
            if local not in roles:
                full = f"{mod_name}.{local}" if mod_name else local
                raise RoleError(f"parameter {full!r} ({type(mod).__name__}.{local}) has no declared role")
            if owner.setdefault(id(p), roles[local]) != roles[local]:
                raise RoleError(f"parameter {mod_name}.{local} is shared with two different roles")
    return {name: owner[id(p)] for name, p in model.named_parameters()}


def quant_groups(model: nn.Module) -> dict[str, str]:
    """Parameter name -> quantization group (what pgolf.quant takes)."""
    return {name: role.quant for name, role in parameter_roles(model).items()}
