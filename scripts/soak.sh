#!/usr/bin/env bash
# The soak test (docs/reliability.md, "Soak"): MINUTES (default 30) of mixed, checksummed
# TCP and UDP traffic through a client and server in two network namespaces; needs root.
# Prints RSS and fd samples every ~10 s and a summary. Run scripts/setup.sh once before.
#   sudo scripts/soak.sh [MINUTES] [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-30}"
shift || true
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
SOAK_MINUTES="$MINUTES" exec "$PY" -m pytest -m soak -s -q tests/e2e/test_soak.py "$@"
