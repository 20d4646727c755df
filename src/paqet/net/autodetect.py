"""Network auto-detection (beyond upstream): the interface, local addresses and next-hop MAC
for reaching the server, from the kernel's routing and neighbour tables (netlink through
pyroute2). Explicit configuration always wins; every choice is explained in `reason`.

Client (`server_ip` given): the route to the server gives the outgoing interface, the
preferred source address and the gateway; the next hop's MAC (the gateway's, or the server's
own when it is on the link) comes from the neighbour table, asking the kernel to resolve it
(one empty UDP datagram to the next hop's discard port, repeated each second) when it is not
known yet, for at most `neighbour_wait` seconds. Server (`server_ip` None): the interface
holding the configured address, else the default route's interface; no MAC is needed (the
server answers each peer at the MAC its frames came from).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import time

from paqet.net.interface import ARPHRD_ETHER, ARPHRD_LOOPBACK

log = logging.getLogger("paqet.autodetect")

RTN_UNICAST, RTN_LOCAL = 1, 2
RTN_NAMES = {3: "broadcast", 5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
# neighbour states whose link-layer address can be used (not INCOMPLETE/FAILED/NONE)
NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT
DISCARD_PORT = 9


class AutodetectError(RuntimeError):
    """Something could not be found; the message says which setting to add."""


@dataclasses.dataclass
class NetworkChoice:
    interface: str
    ifindex: int
    link: str = "ether"                 # "ether", or "ip" (tun, WireGuard, PPP: no MACs)
    mac: bytes = b"\0" * 6              # the interface's own MAC
    ip4: str | None = None
    ip6: str | None = None
    gateway: str | None = None          # next-hop IP towards the server; None: on the link
    gateway_mac4: bytes | None = None   # next-hop MAC for IPv4 / IPv6 destinations
    gateway_mac6: bytes | None = None
    reason: str = ""

    @property
    def next_hop_mac(self) -> bytes | None:
        """The next-hop MAC of whichever family was resolved (the server's family)."""
        return self.gateway_mac6 or self.gateway_mac4

    def summary(self) -> str:
        macs = ", ".join(f"{n} {m.hex(':')}" for n, m in (("IPv4 next hop", self.gateway_mac4),
                                                          ("IPv6 next hop", self.gateway_mac6)) if m)
        return (f"interface {self.interface} ({self.link}), IPv4 {self.ip4}, IPv6 {self.ip6}"
                + (f", {macs}" if macs else "") + (f" ({self.reason})" if self.reason else ""))


def _ipr():
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:  # pragma: no cover - a dependency
        raise AutodetectError(f"pyroute2 is needed for auto-detection ({exc}): set "
                              "network.interface, the local address and router_mac") from None
    return IPRoute()


def _attr(msg, name):
    return msg.get_attr(name) if hasattr(msg, "get_attr") else msg.get(name)


def _family(ip: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        raise AutodetectError(f"'{ip}' is not an IP address") from None


def _link(ipr, index: int):
    links = ipr.get_links(index)
    if not links:
        raise AutodetectError(f"network interface #{index} disappeared")
    return links[0]


def ifindex(ipr, name: str) -> int:
    idx = ipr.link_lookup(ifname=name)
    if not idx:
        raise AutodetectError(f"network interface '{name}' does not exist (see `ip link`)")
    return idx[0]


def ifname(ipr, index: int) -> str:
    return _attr(_link(ipr, index), "IFLA_IFNAME")


def mac_of(name: str) -> bytes:
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            mac = bytes.fromhex(f.read().strip().replace(":", ""))
        return mac if len(mac) == 6 else b"\0" * 6
    except (OSError, ValueError):
        return b"\0" * 6


def addresses(ipr, index: int) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) addresses of an interface, usable ones first (IPv6 link-local, deprecated
    and tentative addresses last / left out)."""
    v4: list[str] = []
    v6: list[tuple[int, str]] = []
    for a in ipr.get_addr(index=index):
        ip = _attr(a, "IFA_ADDRESS")
        if not ip:
            continue
        flags = _attr(a, "IFA_FLAGS") or a.get("flags", 0)
        if a["family"] == socket.AF_INET:
            v4.append(ip)
        elif a["family"] == socket.AF_INET6 and not flags & 0x40:  # IFA_F_TENTATIVE
            rank = 2 if ip.lower().startswith("fe80") else 1 if flags & 0x20 else 0  # DEPRECATED
            v6.append((rank, ip))
    v6.sort(key=lambda t: t[0])
    return v4, [ip for _, ip in v6]


def interface_holding(ipr, ip: str) -> int | None:
    for a in ipr.get_addr(family=_family(ip)):
        if _attr(a, "IFA_ADDRESS") == ip or _attr(a, "IFA_LOCAL") == ip:
            return a["index"]
    return None


def _lladdr_of(ipr, index: int, ip: str, fam: int) -> bytes | None:
    want = ipaddress.ip_address(ip)
    for n in ipr.get_neighbours(family=fam, ifindex=index):
        dst = _attr(n, "NDA_DST")
        if dst and ipaddress.ip_address(dst) == want and n["state"] & NUD_USABLE:
            mac = _attr(n, "NDA_LLADDR")
            if mac and mac != "00:00:00:00:00:00":
                return bytes.fromhex(mac.replace(":", ""))
    return None


def _poke(ip: str, fam: int, index: int) -> None:
    """One empty UDP datagram to the discard port: the kernel resolves the next hop (ARP/ND)
    to send it. Nothing else is sent; the answer, if any, is ignored."""
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        addr = (ip, DISCARD_PORT, 0, index) if fam == socket.AF_INET6 else (ip, DISCARD_PORT)
        try:
            s.sendto(b"", addr)
        except OSError:
            pass


def neighbour_mac(ipr, index: int, ip: str, *, wait: float = 3.0) -> bytes | None:
    """The MAC of an on-link neighbour, triggering ARP/ND if the kernel does not know it yet
    (bounded by `wait` seconds); None when nobody answers."""
    fam = _family(ip)
    deadline = time.monotonic() + wait
    next_poke = 0.0
    while True:
        mac = _lladdr_of(ipr, index, ip, fam)
        if mac:
            return mac
        now = time.monotonic()
        if now >= deadline:
            return None
        if now >= next_poke:
            _poke(ip, fam, index)
            next_poke = now + 1.0
        time.sleep(min(0.02, max(0.0, deadline - now)))


def _route(ipr, dst: str, fam: int, index: int | None):
    kw = {"dst": dst, "family": fam}
    if index is not None:
        kw["oif"] = index
    try:
        routes = ipr.route("get", **kw)
    except Exception as exc:
        via = f" via interface #{index}" if index is not None else ""
        raise AutodetectError(f"no route to the server {dst}{via} ({exc}); check `ip route get "
                              f"{dst}` or set network.interface and router_mac") from None
    if not routes:
        raise AutodetectError(f"no route to the server {dst}")
    r = routes[0]
    rtype = r.get("type", RTN_UNICAST)
    if rtype == RTN_LOCAL:
        raise AutodetectError(f"the server address {dst} belongs to this host")
    if rtype != RTN_UNICAST:
        raise AutodetectError(f"the route to the server {dst} is {RTN_NAMES.get(rtype, rtype)}")
    return r


def detect(server_ip: str | None = None, *, interface: str | None = None,
           ipv4: str | None = None, ipv6: str | None = None, router_mac: bytes | None = None,
           local_ip: str | None = None, neighbour_wait: float = 3.0) -> NetworkChoice:
    """What is needed to send raw frames to `server_ip` (client) or to serve (None).
    Explicit values win: `interface`, `ipv4`/`ipv6` (or `local_ip`, either family) and
    `router_mac` (the next-hop MAC for the server's family). Raises AutodetectError."""
    if local_ip:
        if _family(local_ip) == socket.AF_INET6:
            ipv6 = ipv6 or local_ip
        else:
            ipv4 = ipv4 or local_ip
    ipr = _ipr()
    try:
        return _detect(ipr, server_ip, interface, ipv4, ipv6, router_mac, neighbour_wait)
    finally:
        ipr.close()


def _detect(ipr, server_ip, interface, ipv4, ipv6, router_mac, wait) -> NetworkChoice:
    reasons: list[str] = []
    index = ifindex(ipr, interface) if interface else None
    if interface:
        reasons.append(f"interface {interface} as configured")
    gateway = src = None
    fam = None
    if server_ip:
        fam = _family(server_ip)
        r = _route(ipr, server_ip, fam, index)
        gateway = _attr(r, "RTA_GATEWAY")
        src = _attr(r, "RTA_PREFSRC")
        if index is None:
            index = _attr(r, "RTA_OIF")
            reasons.append(f"route to {server_ip} leaves by {ifname(ipr, index)}")
        reasons.append(f"next hop {gateway}" if gateway else f"{server_ip} is on the link")
    elif index is None:
        for ip in (ipv4, ipv6):
            if ip and (held := interface_holding(ipr, ip)) is not None:
                index = held
                reasons.append(f"{ifname(ipr, index)} holds {ip}")
                break
        else:
            for f in (socket.AF_INET, socket.AF_INET6):
                for d in ipr.get_default_routes(family=f) or []:
                    index = _attr(d, "RTA_OIF")
                    if index is not None:
                        gateway = _attr(d, "RTA_GATEWAY")
                        reasons.append(f"{ifname(ipr, index)} has the default route")
                        break
                if index is not None:
                    break
    if index is None:
        raise AutodetectError("cannot tell which interface to use (no default route): set "
                              "network.interface and network.ipv4.addr")
    link = _link(ipr, index)
    name = _attr(link, "IFLA_IFNAME")
    kind = "ether" if link.get("ifi_type", ARPHRD_ETHER) in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else "ip"
    v4s, v6s = addresses(ipr, index)
    for want, have in ((ipv4, v4s), (ipv6, v6s)):
        if want and want not in have:
            log.warning("the configured address %s is not on %s", want, name)
    if src and fam == socket.AF_INET:
        v4s.insert(0, src)
    elif src and fam == socket.AF_INET6:
        v6s.insert(0, src)
    ip4 = ipv4 or (v4s[0] if v4s else None)
    ip6 = ipv6 or (v6s[0] if v6s else None)
    if server_ip and (ip6 if fam == socket.AF_INET6 else ip4) is None:
        key = "ipv6" if fam == socket.AF_INET6 else "ipv4"
        raise AutodetectError(f"{name} has no {key[:2].upper() + key[2:]} address to reach "
                              f"{server_ip} from: set network.{key}.addr")
    choice = NetworkChoice(interface=name, ifindex=index, link=kind,
                           mac=mac_of(name) if kind == "ether" else b"\0" * 6,
                           ip4=ip4, ip6=ip6, gateway=gateway)
    if server_ip:
        attr = "gateway_mac6" if fam == socket.AF_INET6 else "gateway_mac4"
        if router_mac:
            setattr(choice, attr, router_mac)
            reasons.append("next-hop MAC as configured")
        elif kind == "ip":
            reasons.append(f"{name} has no link-layer header: no MAC needed")
        else:
            hop = gateway or server_ip
            mac = neighbour_mac(ipr, index, hop, wait=wait)
            if mac is None:
                key = "ipv6" if fam == socket.AF_INET6 else "ipv4"
                raise AutodetectError(
                    f"cannot find the MAC address of {hop} on {name}: no ARP/ND answer within "
                    f"{wait:g} s; set network.{key}.router_mac")
            setattr(choice, attr, mac)
            reasons.append(f"{hop} is at {mac.hex(':')}")
    elif router_mac:
        choice.gateway_mac4 = router_mac
    choice.reason = "; ".join(reasons)
    return choice


def is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False
