#!/usr/bin/env bash
# The one command that checks everything: installs what is needed, then lint, types, layer
# contracts and the whole test suite (SQLite and a real PostgreSQL: $CORRAL_TEST_PG_DSN if set,
# else a throwaway server the tests start themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
[ -f scripts/system-deps.sh ] && bash scripts/system-deps.sh

.venv/bin/ruff check src tests bench scripts
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest "$@"
