"""What the packet backends and the dump read about a local interface from sysfs: its link
type (with or without an Ethernet header) and its MAC address."""

from __future__ import annotations

ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772


def link_type(interface: str) -> str:
    """"ether" for ARPHRD_ETHER/loopback, "ip" for tun, WireGuard, PPP and other links
    without an Ethernet header (/sys/class/net/IF/type)."""
    try:
        with open(f"/sys/class/net/{interface}/type") as f:
            t = int(f.read().strip())
    except (OSError, ValueError):
        return "ether"
    return "ether" if t in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else "ip"


def interface_mac(interface: str) -> bytes:
    """The interface's MAC (/sys/class/net/IF/address); six zero bytes when it has none."""
    try:
        with open(f"/sys/class/net/{interface}/address") as f:
            s = f.read().strip()
        mac = bytes.fromhex(s.replace(":", "")) if s else b""
        return mac if len(mac) == 6 else b"\0" * 6
    except (OSError, ValueError):
        return b"\0" * 6
