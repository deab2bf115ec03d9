"""Specialising the exported bundle to its config: frozen options folded, dead code gone, nothing else."""

from __future__ import annotations

import ast

from pgolf.core.config import RunConfig
from pgolf.core.presets import frontier, naive_baseline
from pgolf.submit.export import readable_bundle, submission_config
from pgolf.submit.specialize import call_constants, specialize

CODE = """
class ModelConfig:
    xsa: bool = False
    num_layers: int = 9


class Net:
    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg

    def depth(self):
        return self.cfg.num_layers if not self.cfg.xsa else helper_xsa()

    def unused_method(self):
        return 1


def helper_xsa():
    print("xsa")
    return "xsa"


def is_on(x):
    return x


def helper_plain(flag=False):
    if flag:
        return helper_xsa()
    checkpoint = False
    if checkpoint:
        return helper_xsa()
    return "plain"


def main(cfg: ModelConfig):
    if cfg.xsa and cfg.num_layers > 2:
        return helper_xsa()
    return Net(cfg).depth(), helper_plain()
"""


def _names(code: str) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_frozen_options_fold_and_unreachable_code_goes():
    import dataclasses

    from pgolf.core import config

    fields = [("xsa", bool, dataclasses.field(default=False))]
    toy = dataclasses.make_dataclass("ModelConfig", fields, bases=(config.ModelConfig,))
    cfg = RunConfig()
    cfg.model = toy()
    out = specialize(CODE, cfg, {"main"})
    names = _names(out)
    assert "helper_xsa" not in names  # every call to it sat behind xsa=False (or an unused default / constant local)
    assert "unused_method" not in names and {"main", "Net", "depth", "helper_plain"} <= names
    assert "cfg.num_layers" in out and "self.cfg.num_layers" in out  # NUM_LAYERS is an env knob: stays dynamic
    cfg.model.xsa = True
    assert "helper_xsa" in _names(specialize(CODE, cfg, {"main"}))


def test_assigned_fields_and_replaced_fields_stay_dynamic():
    code = CODE.replace("def main(cfg: ModelConfig):", "def main(cfg: ModelConfig):\n    cfg.xsa = True")
    import dataclasses

    from pgolf.core import config

    toy = dataclasses.make_dataclass(
        "ModelConfig", [("xsa", bool, dataclasses.field(default=False))], bases=(config.ModelConfig,)
    )
    cfg = RunConfig()
    cfg.model = toy()
    assert "helper_xsa" in _names(specialize(code, cfg, {"main"}))  # written at run time: not frozen
    code = CODE + "\n\ndef other(cfg: ModelConfig):\n    return replace(cfg, xsa=True)\n"
    assert "helper_xsa" in _names(specialize(code, cfg, {"main", "other"}))


def test_constant_functions_are_inlined():
    import dataclasses

    from pgolf.core import config

    toy = dataclasses.make_dataclass(
        "ModelConfig", [("xsa", bool, dataclasses.field(default=False))], bases=(config.ModelConfig,)
    )
    cfg = RunConfig()
    cfg.model = toy()
    code = (
        CODE
        + "\n\ndef uses_xsa(cfg: ModelConfig):\n    return cfg.xsa\n\n\ndef run(cfg: ModelConfig):\n    if uses_xsa(cfg):\n        helper_xsa()\n"
    )
    assert "helper_xsa" not in _names(specialize(code, cfg, {"run"}))
    code = code.replace("if uses_xsa(cfg):", "if uses_xsa(print(cfg)):")  # an argument with effects keeps the call
    assert "helper_xsa" in _names(specialize(code, cfg, {"run"}))


def test_call_constants_need_every_call_site_to_agree():
    tree = ast.parse("def f(a, b=2, *, c=None):\n    return a + b\n\nf(1)\nf(1, c=3)\nx = f(1, b=2)\n")
    assert call_constants(tree) == {"f": {"a": 1, "b": 2}}
    tree = ast.parse("def f(a, b=2):\n    return a\n\nf(1)\ng = f\n")  # escapes: any caller possible
    assert call_constants(tree) == {}


def test_presets_ship_only_their_own_techniques():
    naive = readable_bundle(submission_config(naive_baseline()), specialized=True)
    front = readable_bundle(submission_config(frontier()), specialized=True)
    for name in ("class LoraBank", "def ngram_hints", "def gptq_codes", "def add_lqer"):
        assert name in front and name not in naive, name
    for name in ("def resume(", "def load_optimizers_keeping_config"):  # a submission never resumes
        assert name not in front
    assert len(front) < len(readable_bundle(submission_config(frontier())))
    ast.parse(front)


def test_reachability_reads_scopes():
    from pgolf.submit.specialize import used_names

    fn = ast.parse(
        "def f(resume, n: Big):\n    x = resume\n    def g():\n        helper = 1\n        return helper\n"
        "    return [helper for _ in range(n)], x, other\n"
    ).body[0]
    assert used_names(fn) == {
        "range",
        "other",
        "helper",
    }  # f's own names and its annotations do not count; g's local does not hide a global


def test_a_config_class_built_twice_is_not_folded():
    import dataclasses

    from pgolf.core import config

    toy = dataclasses.make_dataclass(
        "ModelConfig", [("xsa", bool, dataclasses.field(default=False))], bases=(config.ModelConfig,)
    )
    cfg = RunConfig()
    cfg.model = toy()
    code = CODE + "\n\ndef other():\n    return main(ModelConfig())\n"
    assert "helper_xsa" in _names(specialize(code, cfg, {"main", "other"}))  # that second instance may differ
