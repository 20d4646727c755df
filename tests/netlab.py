"""Network namespaces for tests and benchmarks: created here, always deleted.

Every namespace and veth gets a name unique to this process, so parallel runs do not
collide, and namespaces left behind by a killed run (whose PID is gone) are removed the next
time a lab starts. Addresses come only from 198.18.0.0/15 and 2001:2::/48.

    with NetLab() as lab:
        topo = lab.two_hosts()            # client <-> server on one veth
        lab.run(topo.client, "ping", "-c1", topo.server_ip4)
        proc = lab.popen(topo.server, [...])   # stopped (by PID) when the lab closes
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from typing import Sequence

PREFIX = "pqt"


def available() -> str | None:
    """None when network-namespace tests can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> None:
    """Delete namespaces of earlier runs whose process no longer exists."""
    r = subprocess.run(["ip", "-o", "netns", "list"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX + "-"):
            continue
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclasses.dataclass
class Link:
    ns_a: str
    if_a: str
    ns_b: str
    if_b: str


@dataclasses.dataclass
class Topology:
    client: str
    server: str
    client_if: str
    server_if: str
    client_ip4: str
    server_ip4: str
    client_ip6: str
    server_ip6: str
    router: str | None = None
    router_client_if: str | None = None
    router_server_if: str | None = None
    gateway_ip4: str | None = None  # the client's next hop towards the server
    gateway_ip6: str | None = None


class NetLab:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.tag = f"{PREFIX}-{os.getpid()}-{next(self._ids)}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self._veths = itertools.count(1)
        self._short = f"{os.getpid() % 100000}{next(self._ids) % 100}"

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> "NetLab":
        cleanup_stale()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()

    # -- building blocks ---------------------------------------------------------------
    def add_ns(self, role: str) -> str:
        name = f"{self.tag}-{role}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.namespaces.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        self.sysctl(name, "net.ipv6.conf.all.accept_dad", "0")
        self.sysctl(name, "net.ipv6.conf.default.accept_dad", "0")
        return name

    def sysctl(self, ns: str, key: str, value: str) -> None:
        self.run(ns, "sysctl", "-qw", f"{key}={value}", check=False)

    def link(self, ns_a: str, ns_b: str, addrs_a: Sequence[str] = (), addrs_b: Sequence[str] = (),
             mtu: int = 1500) -> Link:
        n = next(self._veths)
        if_a, if_b = f"pq{self._short}{n}a"[-15:], f"pq{self._short}{n}b"[-15:]
        subprocess.run(["ip", "link", "add", if_a, "netns", ns_a, "mtu", str(mtu), "type", "veth",
                        "peer", "name", if_b, "netns", ns_b, "mtu", str(mtu)],
                       check=True, capture_output=True)
        for ns, ifname, addrs in ((ns_a, if_a, addrs_a), (ns_b, if_b, addrs_b)):
            for a in addrs:
                extra = ["nodad"] if ":" in a else []
                self.run(ns, "ip", "addr", "add", a, "dev", ifname, *extra)
            self.run(ns, "ip", "link", "set", ifname, "up")
        return Link(ns_a, if_a, ns_b, if_b)

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {ns} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def popen(self, ns: str, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start a process inside `ns`; it is stopped (by its PID) when the lab closes."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)
        self.procs.append(p)
        return p

    def mac(self, ns: str, ifname: str) -> str:
        out = self.run(ns, "cat", f"/sys/class/net/{ifname}/address").stdout
        return out.strip()

    def nft(self, ns: str, script: str) -> None:
        self.run(ns, "nft", "-f", "-", input=script)

    # -- ready-made topologies ---------------------------------------------------------
    def two_hosts(self, mtu: int = 1500) -> Topology:
        """client <-> server joined by one veth: 198.18.0.1/.2 and 2001:2:0:1::1/::2."""
        c, s = self.add_ns("c"), self.add_ns("s")
        link = self.link(c, s, ["198.18.0.1/24", "2001:2:0:1::1/64"],
                         ["198.18.0.2/24", "2001:2:0:1::2/64"], mtu=mtu)
        return Topology(c, s, link.if_a, link.if_b, "198.18.0.1", "198.18.0.2",
                        "2001:2:0:1::1", "2001:2:0:1::2")

    def routed(self, mtu: int = 1500) -> Topology:
        """client - router - server: 198.18.1.0/24 and 198.18.2.0/24 (2001:2:0:1::/64, :2::/64)."""
        c, r, s = self.add_ns("c"), self.add_ns("r"), self.add_ns("s")
        left = self.link(c, r, ["198.18.1.2/24", "2001:2:0:1::2/64"],
                         ["198.18.1.1/24", "2001:2:0:1::1/64"], mtu=mtu)
        right = self.link(r, s, ["198.18.2.1/24", "2001:2:0:2::1/64"],
                          ["198.18.2.2/24", "2001:2:0:2::2/64"], mtu=mtu)
        self.sysctl(r, "net.ipv4.ip_forward", "1")
        self.sysctl(r, "net.ipv6.conf.all.forwarding", "1")
        self.run(c, "ip", "route", "add", "default", "via", "198.18.1.1")
        self.run(c, "ip", "-6", "route", "add", "default", "via", "2001:2:0:1::1")
        self.run(s, "ip", "route", "add", "default", "via", "198.18.2.1")
        self.run(s, "ip", "-6", "route", "add", "default", "via", "2001:2:0:2::1")
        return Topology(c, s, left.if_a, right.if_b, "198.18.1.2", "198.18.2.2",
                        "2001:2:0:1::2", "2001:2:0:2::2", router=r,
                        router_client_if=left.if_b, router_server_if=right.if_a,
                        gateway_ip4="198.18.1.1", gateway_ip6="2001:2:0:1::1")

    def set_loss(self, ns: str, percent: float) -> None:
        """Drop `percent` % of forwarded packets in `ns` (a router) with nftables numgen."""
        self.run(ns, "nft", "delete", "table", "inet", "pqloss", check=False)
        if percent <= 0:
            return
        per_mille = min(1000, int(round(percent * 10)))
        rule = "counter drop" if per_mille >= 1000 else f"numgen random mod 1000 < {per_mille} counter drop"
        self.nft(ns, f"""table inet pqloss {{
  chain loss {{ type filter hook forward priority 0; policy accept;
    {rule}
  }}
}}
""")

    def set_rate(self, ns: str, ifname: str, mbit: float) -> None:
        """Limit egress of `ifname` in `ns` with tc tbf."""
        self.run(ns, "tc", "qdisc", "replace", "dev", ifname, "root", "tbf", "rate",
                 f"{mbit}mbit", "burst", "64kb", "latency", "50ms")

    # -- stateful firewalls (network.tcp.mode handshake) ---------------------------------
    def strict_tracking(self, ns: str, masquerade_out: str | None = None,
                        established_timeout: int | None = None) -> None:
        """Make router `ns` a strict stateful firewall, as a hosting provider's filter: no
        pickup of TCP connections it did not see open (nf_conntrack_tcp_loose=0), window
        checking (nf_conntrack_tcp_be_liberal=0), and a forward chain that drops what
        conntrack calls invalid and new connections that do not start with a SYN, each rule
        with a counter (tracker_drops). `masquerade_out`: also NAT (MASQUERADE) what leaves
        through that interface; `established_timeout`: seconds an idle established
        connection is remembered."""
        self.sysctl(ns, "net.netfilter.nf_conntrack_tcp_loose", "0")
        self.sysctl(ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "0")
        if established_timeout is not None:
            self.sysctl(ns, "net.netfilter.nf_conntrack_tcp_timeout_established",
                        str(established_timeout))
        nat = (f"table ip pqnat {{\n chain post {{ type nat hook postrouting priority srcnat; "
               f"policy accept;\n  oifname \"{masquerade_out}\" masquerade\n }}\n}}\n"
               if masquerade_out else "")
        self.nft(ns, "table inet pqstrict {\n chain forward { type filter hook forward "
                     "priority 0; policy accept;\n"
                     "  ct state invalid counter drop comment \"invalid\"\n"
                     "  tcp flags & (syn|ack) != syn ct state new counter drop comment \"new\"\n"
                     " }\n}\n" + nat)

    def tracker_drops(self, ns: str) -> dict[str, int]:
        """Packets the strict_tracking rules dropped so far: {"invalid": n, "new": n}."""
        import json
        out = json.loads(self.run(ns, "nft", "-j", "list", "table", "inet", "pqstrict").stdout)
        drops = {}
        for item in out.get("nftables", []):
            rule = item.get("rule")
            if rule and rule.get("comment"):
                for e in rule["expr"]:
                    if "counter" in e:
                        drops[rule["comment"]] = e["counter"]["packets"]
        return drops

    def set_tcp_loss(self, ns: str, where: str, percent: float, interfaces: Sequence[str]) -> None:
        """Drop `percent` % of the TCP packets a router `ns` forwards, "before" its connection
        tracking (at ingress of `interfaces`: the tracker never sees them) or "after" it (in
        postrouting, out of `interfaces`: seen, then lost). 0 removes it."""
        table = f"pqloss{where}"
        fam = "netdev" if where == "before" else "inet"
        self.run(ns, "nft", "delete", "table", fam, table, check=False)
        if percent <= 0:
            return
        rule = f"meta l4proto tcp numgen random mod 1000 < {int(round(percent * 10))} counter drop"
        if where == "before":
            chains = "".join(f" chain in{i} {{ type filter hook ingress device \"{ifname}\" "
                             f"priority 0; policy accept;\n  {rule}\n }}\n"
                             for i, ifname in enumerate(interfaces))
        else:
            names = ", ".join(f'"{i}"' for i in interfaces)
            chains = (f" chain post {{ type filter hook postrouting priority 300; policy accept;\n"
                      f"  oifname {{ {names} }} {rule}\n }}\n")
        self.nft(ns, f"table {fam} {table} {{\n{chains}}}\n")

    def tcp_lost(self, ns: str, where: str) -> int:
        """Packets set_tcp_loss dropped so far at `where`."""
        fam = "netdev" if where == "before" else "inet"
        out = self.run(ns, "nft", "list", "table", fam, f"pqloss{where}", check=False).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))
