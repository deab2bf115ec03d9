"""Config: one typed source of truth; presets -> file -> official env vars -> CLI flags."""

from __future__ import annotations

import argparse

import pytest

from pgolf.cli.options import add_config_args, build_config
from pgolf.core.config import (
    ConfigError,
    RunConfig,
    apply_env,
    load_config_file,
    parse_layer_spec,
    set_option,
    validate,
)
from pgolf.core.presets import PRESETS, get_preset


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_config_args(p)
    return p.parse_args(argv)


def test_naive_baseline_is_the_official_default():
    cfg = get_preset("naive-baseline")
    m, t, e = cfg.model, cfg.train, cfg.eval
    assert (m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult) == (
        1024,
        9,
        512,
        8,
        4,
        2.0,
    )
    assert (m.logit_softcap, m.qk_gain_init, m.rope_base, m.tied_embed_init_std) == (30.0, 1.5, 10000.0, 0.005)
    assert (t.train_batch_tokens, t.train_seq_len, t.iterations, t.warmdown_iters, t.warmup_steps) == (
        524288,
        1024,
        20000,
        1200,
        20,
    )
    assert (t.matrix_lr, t.scalar_lr, t.tied_embed_lr, t.muon_momentum, t.beta2) == (0.04, 0.04, 0.05, 0.95, 0.95)
    assert (t.max_wallclock_seconds, t.val_loss_every, e.val_batch_size, cfg.seed) == (600.0, 1000, 524288, 1337)
    assert (cfg.quant.scheme, cfg.quant.compressor) == ("int8", "zlib")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name):
    validate(get_preset(name))


def test_official_env_knobs_apply():
    cfg = RunConfig()
    used = apply_env(
        cfg,
        {
            "NUM_LAYERS": "4",
            "MLP_MULT": "3",
            "MAX_WALLCLOCK_SECONDS": "12.5",
            "RUN_ID": "x",
            "TIE_EMBEDDINGS": "0",
            "MATRIX_LR": "0.02",
            "UNRELATED": "1",
        },
    )
    assert cfg.model.num_layers == 4 and cfg.model.mlp_mult == 3.0 and cfg.train.max_wallclock_seconds == 12.5
    assert cfg.run_id == "x" and cfg.model.tie_embeddings is False and cfg.train.matrix_lr == 0.02
    assert "UNRELATED" not in used


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="NUM_LAYERS"):
        apply_env(RunConfig(), {"NUM_LAYERS": "nine"})


def test_precedence_preset_file_env_cli(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text("seed = 5\n[model]\nnum_layers = 3\nmodel_dim = 64\n[train]\niterations = 7\n")
    monkeypatch.setenv("NUM_LAYERS", "5")
    args = parse(["--preset", "naive-baseline", "--config", str(f), "--set", "train.iterations=9", "--seed", "11"])
    cfg = build_config(args, "naive-baseline")
    assert cfg.model.model_dim == 64  # file
    assert cfg.model.num_layers == 5  # env beats file
    assert cfg.train.iterations == 9 and cfg.seed == 11  # CLI beats everything


def test_unknown_options_and_types_are_refused(tmp_path):
    cfg = RunConfig()
    with pytest.raises(ConfigError, match="unknown config option"):
        set_option(cfg, "model.num_layerz", "3")
    with pytest.raises(ConfigError, match="expected int"):
        set_option(cfg, "model.num_layers", 3.5)
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config_file(cfg, bad)


def test_validate_catches_inconsistent_shapes():
    cfg = RunConfig()
    cfg.model.num_heads = 7
    with pytest.raises(ConfigError, match="divisible"):
        validate(cfg)
    cfg = RunConfig()
    cfg.model.recur_layers = "2,5"
    with pytest.raises(ConfigError, match="contiguous"):
        validate(cfg)


def test_layer_specs():
    assert parse_layer_spec("all", 3) == [0, 1, 2]
    assert parse_layer_spec("", 3) == []
    assert parse_layer_spec("0-1, 4", 5) == [0, 1, 4]
    with pytest.raises(ConfigError, match="outside"):
        parse_layer_spec("3-9", 5)


def test_every_clip_sigma_must_be_positive():
    for name in ("attn_clip_sigmas", "mlp_clip_sigmas", "embed_clip_sigmas", "hash_clip_sigmas"):
        cfg = RunConfig()
        setattr(cfg.quant, name, 0.0)
        with pytest.raises(ConfigError, match="clip_sigmas"):
            validate(cfg)
