"""Entry point of the exported single-file `train_gpt.py`: the embedded run config, overridden by
the official env vars (RUN_ID, SEED, DATA_PATH, ...), then train -> pack -> roundtrip eval.

In the package this module is only a template: `pgolf export` writes the chosen config into
EMBEDDED_CONFIG and bundles this module with everything it imports.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from pgolf.core.config import RunConfig, apply_env, apply_mapping
from pgolf.core.runtime import shutdown
from pgolf.finish.finalize import finalize
from pgolf.train.trainer import run_training

EMBEDDED_CONFIG: dict = {}  # filled in by `pgolf export`
REQUIRED_MODULES: dict = {}  # filled in by `pgolf export`: import name -> PyPI name of every third-party module the script imports


def check_requirements(required: dict[str, str]) -> None:
    """Fail before training, not after it, when a library the run will import is missing (a
    lazily imported `safetensors` or `zstandard` used to fail only when the model was saved)."""
    missing = [pip for mod, pip in required.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise SystemExit(
            f"{Path(sys.argv[0]).name}: missing Python packages: {' '.join(missing)} "
            f"(pip install {' '.join(missing)}); nothing was run"
        )


def embedded_config() -> RunConfig:
    """The exported run's config (then the official env vars on top)."""
    cfg = RunConfig()
    apply_mapping(cfg, EMBEDDED_CONFIG, "embedded config")
    apply_env(cfg)
    return cfg


def own_file_bytes() -> int:
    """Literal size of the running script: the code bytes that count against the cap."""
    return Path(sys.argv[0]).stat().st_size


def submission_main() -> None:
    check_requirements(REQUIRED_MODULES)
    session, state = run_training(embedded_config())
    finalize(session, state, code_bytes=own_file_bytes())
    rt = session.rt
    del session, state
    shutdown(rt)
