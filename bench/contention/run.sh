#!/usr/bin/env bash
# Contention benchmark: creates (once) the bench-only venv bench/contention/.venv with
# loco-agent 0.4.0 (bench/contention/requirements.txt), then runs bench/contention/run.py.
# corral itself is imported from the working tree (src/), so it is never installed here.
# Arguments are passed on, e.g.:  bash bench/contention/run.sh --agents 8 100 --window 1
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi
exec "$venv/bin/python" "$here/run.py" "$@"
