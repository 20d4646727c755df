#!/usr/bin/env bash
# Installs what paqet and its tests need: Debian packages (through apt-get, as root: directly
# when run as root, else through sudo), then a virtual environment in .venv, as the user who
# runs it, with paqet installed from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_apt=()
command -v nft >/dev/null || need_apt+=(nftables)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v curl >/dev/null || need_apt+=(curl)
command -v kcptun-server >/dev/null || need_apt+=(kcptun)
[ -e /usr/include/pcap/pcap.h ] || need_apt+=(libpcap-dev)
# ISA-L: FEC parity/recovery ~6x faster (optional: paqet falls back to pure Python)
ldconfig -p 2>/dev/null | grep "libisal.so.2 " >/dev/null || need_apt+=(libisal2)
# Nettle: one-call CFB for aes/twofish/blowfish/cast5/3des (optional as well)
ldconfig -p 2>/dev/null | grep "libnettle.so.8 " >/dev/null || need_apt+=(libnettle8)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v ethtool >/dev/null || need_apt+=(ethtool)
if [ ${#need_apt[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && can_be_root; then
        echo "setup: installing Debian packages: ${need_apt[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing ${need_apt[*]} (run as root, or install sudo, to install them); tests that need them will be skipped"
    fi
fi

if [ -e .venv ] && [ ! -w .venv ]; then
    echo "setup: .venv belongs to another user (made by an earlier run as root?): remove it, or run this as that user" >&2
    exit 1
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# An editable install leaves our modules uncompiled; with PYTHONDONTWRITEBYTECODE set (as on
# some CI machines) every `paqet` start would compile them again (~0.3 s of a 0.6 s start).
# A regular `pip install .` byte-compiles at install time; do the same here.
.venv/bin/python -m compileall -q src >/dev/null || true
echo "setup: $(.venv/bin/python --version), paqet installed in .venv"
