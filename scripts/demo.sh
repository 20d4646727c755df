#!/usr/bin/env bash
# Installs everything, then runs the demo: a paqet client and server in two network
# namespaces on this machine, a page and a 50 MB download fetched through SOCKS5.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
for f in examples/*.yaml; do .venv/bin/paqet run --check -c "$f" | head -1; done
exec .venv/bin/python scripts/demo.py
