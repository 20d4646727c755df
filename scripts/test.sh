#!/usr/bin/env bash
# Installs everything, then runs the whole default test suite: unit, integration, and the
# network-namespace tests, which need root (run as root, or as a user with sudo; without
# either they are skipped). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scripts/setup.sh
if [ "$(id -u)" = 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
if ! can_be_root; then
    echo "test: not root and sudo is not installed: the network-namespace tests are skipped"
    exec .venv/bin/python -m pytest "$@"
fi
# as a user: the suite as root through sudo, leaving no root-owned byte code or caches
as_root env PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -p no:cacheprovider "$@"
