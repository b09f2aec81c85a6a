#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs corral with its test tools (CORRAL_EXTRAS=test,
# the default; CORRAL_EXTRAS= for corral alone). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY' || { echo "corral needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv && "$PYTHON" -m venv .venv
    else
      echo "cannot create a virtualenv: install python3-venv" >&2; exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
extras="${CORRAL_EXTRAS-test}"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
