#!/usr/bin/env bash
# The test command: set up (once), then run the default (fast) test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
