#!/usr/bin/env bash
# Installs everything, then runs the whole default test suite (unit, integration, and the
# root/network-namespace tests when run as root). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
