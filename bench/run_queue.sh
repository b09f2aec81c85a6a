#!/usr/bin/env bash
# The queue benchmark in one command: corral (PostgreSQL and SQLite), PgQueuer, Procrastinate
# and a naive SKIP LOCKED loop. Uses a bench-only venv (.venv-bench) so the peers never
# become corral dependencies. Extra arguments go to `python -m bench.queue.run`
# (e.g. --systems corral-pg naive --jobs 5000). PostgreSQL: $BENCH_PG_DSN, default
# postgresql://postgres@127.0.0.1:5432/test (the benchmark creates and drops its own databases).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-bench
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# keep the venv out of git status without touching the repo's .gitignore
[ -f "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"
stamp="$VENV/.bench-installed"
if [ ! -f "$stamp" ] || [ bench/requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . -r bench/requirements.txt
    touch "$stamp"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" -m bench.queue.run "$@"
