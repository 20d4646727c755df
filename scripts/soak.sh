#!/usr/bin/env bash
# The soak test (docs/reliability.md, "Soak"): MINUTES (default 30) of mixed, checksummed
# TCP and UDP traffic through a client and server in two network namespaces; needs root
# (run as root, or as a user with sudo: it asks sudo itself). Prints RSS and fd samples every
# ~10 s and a summary. Run scripts/setup.sh once before.
#   scripts/soak.sh [MINUTES] [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MINUTES="${1:-30}"
shift || true
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
as_root env SOAK_MINUTES="$MINUTES" PYTHONPATH="$PYTHONPATH" PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -m pytest -p no:cacheprovider -m soak -s -q tests/e2e/test_soak.py "$@"
