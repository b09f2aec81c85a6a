#!/usr/bin/env bash
# Installs corral and runs the demo on the embedded default (SQLite, nothing else needed).
set -euo pipefail
cd "$(dirname "$0")/.."
CORRAL_EXTRAS=test bash scripts/bootstrap.sh
exec .venv/bin/corral demo "$@"
