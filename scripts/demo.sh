#!/usr/bin/env bash
# Installs corral and runs the demo on the embedded default (SQLite, nothing else needed).
set -euo pipefail
cd "$(dirname "$0")/.."
# corral alone: the demo needs none of the test tools (a browser driver, fuzzers)
CORRAL_EXTRAS= bash scripts/bootstrap.sh
exec .venv/bin/corral demo "$@"
