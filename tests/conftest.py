"""Shared fixtures: the real FineWeb sample (skipped when absent) and a tiny self-made dataset."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from pgolf.core.config import RunConfig
from pgolf.core.presets import naive_baseline

TINY_VOCAB = 320
TINY_WORDS = (
    "the cat sat on a mat while golf scores fell 42 times; café naïve über ½ "
    "tokens compress bytes and models learn words from documents"
).split()


def shared_data_dir() -> Path:
    """../shared/data next to the repository, or $PGOLF_SHARED_DATA."""
    env = os.environ.get("PGOLF_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "fineweb_sample" / "sp1024" / "fineweb_val_000000.bin").is_file():
        pytest.skip(f"real FineWeb sample not found at {root} (set PGOLF_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def sp1024_paths(shared_data) -> tuple[Path, Path]:
    """(shard folder, tokenizer) of the real sp1024 sample."""
    return shared_data / "fineweb_sample" / "sp1024", shared_data / "tokenizers" / "fineweb_1024_bpe.model"


def tiny_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(20, 120))) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """A tokenizer (vocab 320) and official-format shards built from generated text:
    (shard folder, tokenizer path). 40 val docs, ~600 train docs, small shards."""
    from pgolf.data.build import build_shards, train_tokenizer

    root = tmp_path_factory.mktemp("tinydata")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_texts(640, 0)), encoding="utf-8")
    model = train_tokenizer(docs, root / "fineweb_320_bpe", TINY_VOCAB, num_threads=1)
    build_shards(docs, model, root / "shards", num_val_docs=40, shard_size=20_000)
    return root / "shards", model


def tiny_config(data_dir: Path, tokenizer: Path, **train) -> RunConfig:
    """A 2x32 naive-baseline-shaped model on the tiny dataset, a handful of CPU steps."""
    cfg = naive_baseline()
    m, t, e = cfg.model, cfg.train, cfg.eval
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = TINY_VOCAB, 2, 32, 2, 1
    t.train_seq_len, t.train_batch_tokens, t.iterations, t.warmup_steps = 32, 512, 6, 1
    t.warmdown_iters, t.max_wallclock_seconds, t.val_loss_every, t.train_log_every = 2, 0.0, 0, 1
    e.val_batch_size, e.batch_seqs = 4096, 8
    cfg.data.data_path, cfg.data.tokenizer_path = str(data_dir), str(tokenizer)
    cfg.quant.keep_float_max_numel = 256
    cfg.device, cfg.threads = "cpu", 1  # fixed threads: runs compared within a test stay bit-identical
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def scoring_model(vocab: int):
    """A 2x16 GPT with every weight perturbed (no zero-init projection hides an indexing bug), in
    eval mode: the model the scoring tests score with."""
    from pgolf.core.config import ModelConfig
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=vocab, num_layers=2, model_dim=16, num_heads=2, num_kv_heads=1))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Fixed thread count so float results are reproducible within a test."""
    torch.set_num_threads(1)
    yield
