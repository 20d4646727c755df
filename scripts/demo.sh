#!/usr/bin/env bash
# Installs everything, then runs the demo: a paqet client and server in two network
# namespaces on this machine, a page and a 50 MB download fetched through SOCKS5.
# Run it as root or as a user with sudo: the demo itself needs root (namespaces, raw sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scripts/setup.sh
for f in examples/*.yaml; do .venv/bin/paqet run --check -c "$f" | sed -n 1p; done
if [ "$(id -u)" = 0 ]; then
    exec .venv/bin/python scripts/demo.py
fi
# as a user: no root-owned byte code or caches left in the checkout
as_root env PYTHONDONTWRITEBYTECODE=1 .venv/bin/python scripts/demo.py
