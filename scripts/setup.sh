#!/usr/bin/env bash
# Create .venv (once) and install sned with its dependencies. Idempotent and quiet on re-runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sned-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing dependencies into .venv (first run only)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  # CPU build of torch from local disk on these machines; users elsewhere get any torch>=2.4.
  .venv/bin/python -m pip install -q "torch==2.13.0" >&2 || .venv/bin/python -m pip install -q "torch>=2.4" >&2
  .venv/bin/python -m pip install -q -e ".[dev]" >&2
  touch "$stamp"
fi
