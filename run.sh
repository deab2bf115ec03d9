#!/usr/bin/env bash
# pgolf set-up and entry point. Creates .venv on first use, installs torch (CPU build 2.13.0 from
# local disk on a machine without an NVIDIA GPU, the CUDA build from PyPI otherwise) and pgolf.
#   ./run.sh                 set up, then the main job: data -> train -> pack -> roundtrip eval -> record
#   ./run.sh test [args]     set up, then the whole test suite (slow end-to-end tests included)
#   ./run.sh <subcommand>    set up, then any `pgolf` subcommand (train, eval, data, size, export, ...)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${PGOLF_VENV:-.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install --quiet torch            # GPU machine: CUDA build
  else
    "$PY" -m pip install --quiet torch==2.13.0    # CPU machine: never pull a CUDA build
  fi
fi
STAMP="$VENV/.pgolf-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  "$PY" -m pip install --quiet -e ".[dev]"
  touch "$STAMP"
fi

case "${1:-run}" in
  test) shift
    # torchao (the optional [gpu] extra: FP8 training) lets the FP8 conversion test run with CPU
    # emulation; --no-deps so it can never pull a second torch build
    "$PY" -c "import torchao" >/dev/null 2>&1 || "$PY" -m pip install --quiet --no-deps "torchao>=0.10"
    "$VENV/bin/ruff" format --check --quiet src tests benchmarks   # formatter (line length 120)
    "$VENV/bin/ruff" check --quiet src tests benchmarks            # linter
    exec "$PY" -m pytest -m "slow or not slow" "$@" ;;
  run) [ $# -gt 0 ] && shift; exec "$VENV/bin/pgolf" run "$@" ;;
  *) exec "$VENV/bin/pgolf" "$@" ;;
esac
