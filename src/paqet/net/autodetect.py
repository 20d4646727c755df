"""Network auto-detection (beyond upstream): the interface, local address and next-hop MAC
for reaching the server, from the kernel's routing and neighbour tables (netlink through
pyroute2). Explicit configuration always wins; every choice is explained in `reason`."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import time

log = logging.getLogger("paqet.autodetect")


class AutodetectError(RuntimeError):
    pass


@dataclasses.dataclass
class NetworkChoice:
    interface: str
    ifindex: int
    mac: bytes
    ip4: str | None = None
    ip6: str | None = None
    gateway: str | None = None
    next_hop_mac: bytes | None = None
    reason: str = ""


def _ipr():
    from pyroute2 import IPRoute
    return IPRoute()


def _attr(msg, name):
    return msg.get_attr(name) if hasattr(msg, "get_attr") else msg.get(name)


def ifname(ipr, index: int) -> str:
    links = ipr.get_links(index)
    return _attr(links[0], "IFLA_IFNAME")


def ifindex(ipr, name: str) -> int:
    idx = ipr.link_lookup(ifname=name)
    if not idx:
        raise AutodetectError(f"network interface '{name}' does not exist (see `ip link`)")
    return idx[0]


def mac_of(name: str) -> bytes:
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            return bytes.fromhex(f.read().strip().replace(":", ""))
    except (OSError, ValueError):
        return b"\0" * 6


def _addresses(ipr, index: int) -> tuple[str | None, str | None]:
    v4 = v6 = None
    for a in ipr.get_addr(index=index):
        ip = _attr(a, "IFA_ADDRESS")
        if a["family"] == socket.AF_INET and v4 is None:
            v4 = ip
        elif a["family"] == socket.AF_INET6 and v6 is None and not ip.startswith("fe80"):
            v6 = ip
    return v4, v6


def neighbour_mac(ipr, index: int, ip: str, *, wait: float = 3.0) -> bytes | None:
    """The MAC of an on-link neighbour, triggering ARP/ND with one UDP datagram to its
    discard port if the kernel does not know it yet (bounded by `wait` seconds)."""
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    deadline = time.monotonic() + wait
    poked = False
    while True:
        for n in ipr.get_neighbours(family=fam, ifindex=index):
            if _attr(n, "NDA_DST") == ip and n["state"] not in (0x20,):  # not FAILED
                mac = _attr(n, "NDA_LLADDR")
                if mac:
                    return bytes.fromhex(mac.replace(":", ""))
        if time.monotonic() >= deadline:
            return None
        if not poked:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                try:
                    s.sendto(b"", (ip, 9))
                except OSError:
                    pass
            poked = True
        time.sleep(0.05)


def detect(server_ip: str | None = None, *, interface: str | None = None,
           local_ip: str | None = None, router_mac: bytes | None = None) -> NetworkChoice:
    ipr = _ipr()
    try:
        reasons = []
        gateway = None
        index = None
        src = None
        if server_ip:
            fam = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
            try:
                routes = ipr.route("get", dst=server_ip, family=fam)
            except Exception as exc:
                raise AutodetectError(f"no route to the server {server_ip}: {exc}") from None
            r = routes[0]
            index = _attr(r, "RTA_OIF")
            src = _attr(r, "RTA_PREFSRC")
            gateway = _attr(r, "RTA_GATEWAY")
            reasons.append(f"route to {server_ip} via {gateway or 'the local link'}")
        if interface:
            index = ifindex(ipr, interface)
            reasons.append(f"interface {interface} as configured")
        elif index is None:
            for r in ipr.get_default_routes(family=socket.AF_INET) or []:
                index = _attr(r, "RTA_OIF")
                gateway = _attr(r, "RTA_GATEWAY")
                reasons.append("the default route's interface")
                break
        if index is None:
            raise AutodetectError("cannot tell which interface to use: set network.interface")
        name = ifname(ipr, index)
        v4, v6 = _addresses(ipr, index)
        if src:
            if ":" in src:
                v6 = src
            else:
                v4 = src
        if local_ip:
            if ":" in local_ip:
                v6 = local_ip
            else:
                v4 = local_ip
        mac = None
        if router_mac:
            mac = router_mac
            reasons.append("next-hop MAC as configured")
        elif server_ip:
            hop = gateway or server_ip
            mac = neighbour_mac(ipr, index, hop)
            if mac is None:
                raise AutodetectError(
                    f"cannot find the MAC address of {hop} on {name} (no ARP/ND answer): "
                    "set network.ipv4.router_mac")
            reasons.append(f"next hop {hop} is {mac.hex(':')}")
        return NetworkChoice(interface=name, ifindex=index, mac=mac_of(name), ip4=v4, ip6=v6,
                             gateway=gateway, next_hop_mac=mac, reason="; ".join(reasons))
    finally:
        ipr.close()


def is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False
