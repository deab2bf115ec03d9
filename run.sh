#!/usr/bin/env bash
# pgolf set-up and entry point. Creates .venv on first use, installs torch (CPU build 2.13.0 from
# local disk on a machine without an NVIDIA GPU, the CUDA build from PyPI otherwise) and pgolf.
#   ./run.sh                 set up, then the main job: data -> train -> pack -> roundtrip eval -> record
#   ./run.sh test [args]     set up, then lint + the fast tier: every unit test and one end-to-end
#                            train -> artifact -> score at toy size (minutes)
#   ./run.sh test-full [args]  set up, then lint + every test (slow end-to-end, multi-process, export identity)
#   ./run.sh test-slow [args]  set up, then only the tests the fast tier leaves out (CI runs test, then this)
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
  test|test-full|test-slow) tier="$1"; shift
    # torchao (the optional [gpu] extra: FP8 training) lets the FP8 conversion test run with CPU
    # emulation; --no-deps so it can never pull a second torch build
    "$PY" -c "import torchao" >/dev/null 2>&1 || "$PY" -m pip install --quiet --no-deps "torchao>=0.10"
    "$VENV/bin/ruff" format --check --quiet src tests benchmarks   # formatter (line length 120)
    "$VENV/bin/ruff" check --quiet src tests benchmarks            # linter
    case "$tier" in
      test) exec "$PY" -m pytest -m "not slow" "$@" ;;
      test-full) exec "$PY" -m pytest -m "slow or not slow" "$@" ;;
      test-slow) exec "$PY" -m pytest -m "slow" "$@" ;;
    esac ;;
  run) [ $# -gt 0 ] && shift; exec "$VENV/bin/pgolf" run "$@" ;;
  *) exec "$VENV/bin/pgolf" "$@" ;;
esac
