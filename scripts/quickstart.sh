#!/usr/bin/env bash
# The main job: set up (once), then run `sned quickstart` on the embedded synthetic default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sned quickstart "$@"
