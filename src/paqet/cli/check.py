"""`paqet check -c FILE` (beyond upstream): is this host ready to run this configuration?

Checks, in order: the configuration (the loader's one-line errors), the network (interface,
local addresses, next hop and its MAC, as `paqet run` would detect them), privileges (root,
or CAP_NET_RAW + CAP_NET_ADMIN), a raw packet socket on the interface, the firewall (tools,
paqet's managed tables, or for `firewall: manual` whether the needed rules are in place),
the ports (a client's listen addresses free; no program on a server's paqet port) and, for
a client, PPING/PPONG round trips to the server through a real tunnel session
(cli/ping's code path, bounded in time), then the same in the other network.tcp.mode, which
tells whether the path needs `handshake` (a stateful firewall that drops frames without a
TCP handshake) or lets stateless frames through. One line per check; each problem gets one `fix:`
line saying what to do. Exit 0 when every check passes, 1 otherwise.

The judging is separate from the probing: `Probes` gathers facts (it is what the unit tests
replace), `Checker` turns facts into results and fixes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import re
import shutil
import socket
import subprocess
import sys

from paqet.cli.exits import EXIT_OK, EXIT_RUNTIME

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
PING_BUDGET = 20.0  # seconds for the whole tunnel check, whatever -n and -W say


@dataclasses.dataclass
class Result:
    name: str
    status: str          # "ok", "fail", "warn", "skip"
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        tag = {"ok": "[ OK ]", "fail": "[FAIL]", "warn": "[WARN]", "skip": "[SKIP]"}[self.status]
        out = [f"{tag} {self.name}: {self.detail}"]
        if self.fix:
            out.append(f"       fix: {self.fix}")
        return out


@dataclasses.dataclass
class PingOutcome:
    sent: int = 0
    rtts: list = dataclasses.field(default_factory=list)   # ms
    heard: bool = False      # the session received valid (decrypted) datagrams
    error: str = ""          # the session could not start (a StartupError's text)
    dialect: str = ""


# -- probing (the I/O; replaced in the unit tests) ----------------------------------------

def _interpreter() -> str:
    return os.path.realpath(sys.executable)


class Probes:
    def euid(self) -> int:
        return os.geteuid()

    def effective_caps(self) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("CapEff:"):
                        return int(line.split()[1], 16)
        except (OSError, ValueError):
            pass
        return 0

    def interface_exists(self, name: str) -> bool:
        return os.path.exists(f"/sys/class/net/{name}")

    def interface_addresses(self, name: str) -> list[str] | None:
        try:
            from paqet.net.autodetect import _ipr, addresses, ifindex
            ipr = _ipr()
            try:
                v4, v6 = addresses(ipr, ifindex(ipr, name))
            finally:
                ipr.close()
            return v4 + v6
        except Exception:
            return None

    def resolve(self, host: str, port: int) -> tuple[str, int]:
        from paqet.runtime import resolve
        return resolve(host, port)

    def network(self, cfg, server_ip: str | None):
        from paqet.runtime import Network
        return Network(cfg, server_ip)

    def raw_socket(self, interface: str) -> OSError | None:
        """None when an AF_PACKET socket opens and binds to `interface`, else the error."""
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        except OSError as exc:
            return exc
        try:
            s.bind((interface, 0))
        except OSError as exc:
            return exc
        finally:
            s.close()
        return None

    def libpcap(self) -> bool:
        import ctypes.util
        return ctypes.util.find_library("pcap") is not None

    def which(self, tool: str) -> str | None:
        return shutil.which(tool)

    def command(self, *cmd: str) -> tuple[int, str]:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 127, str(exc)
        return r.returncode, r.stdout if r.returncode == 0 else r.stderr

    def bind(self, proto: str, host: str, port: int) -> OSError | None:
        """None when a `proto` ("tcp"/"udp") socket can be bound (and listen) on host:port,
        as the client's listeners will, else the error."""
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        try:
            with socket.socket(fam, kind) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
                s.bind((host, port))
                if proto == "tcp":
                    s.listen(1)
        except OSError as exc:
            return exc
        return None

    def port_holders(self, proto: str, port: int) -> list[tuple[int, str]]:
        """(pid, command line) of the processes with a kernel socket listening on `port`."""
        flag = "-ltnpH" if proto == "tcp" else "-lunpH"
        rc, out = self.command("ss", flag, f"sport = :{port}")
        holders = []
        for pid in sorted({int(p) for p in re.findall(r"pid=(\d+)", out if rc == 0 else "")}):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            holders.append((pid, cmd[:120]))
        return holders

    def paqet_tables(self) -> list[tuple[str, bool]]:
        """Our managed nftables tables and whether their owner is gone."""
        from paqet.net import firewall
        out = []
        for name in firewall.list_tables():
            pid = int(firewall.TABLE_RE.fullmatch(name).group(2))
            out.append((name, firewall.owner_gone(pid, firewall.table_comment(name))))
        return out

    def ping(self, cfg, server: tuple[str, int], net, count: int, interval: float,
             timeout: float, tcp_mode: str | None = None) -> PingOutcome:
        return _run_async(_ping(cfg, server, net, count, interval, timeout, tcp_mode))


def _run_async(coro):
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _ping(cfg, server, net, count, interval, timeout, tcp_mode=None) -> PingOutcome:
    from paqet.cli.ping import Tally, open_session, round_trips
    from paqet.runtime import StartupError
    out = PingOutcome()
    try:
        pool, out.dialect = await open_session(cfg, server, net, tcp_mode)
    except StartupError as exc:
        out.error = str(exc)
        return out
    tally = Tally()
    try:
        async with asyncio.timeout(PING_BUDGET):
            await round_trips(pool, out.dialect, count, interval, timeout, tally=tally)
    except TimeoutError:
        pass
    finally:
        conn = pool.slots[0].conn
        out.heard = conn is not None and conn.last_rx_ms != conn.created_ms
        await pool.close()
    out.sent, out.rtts = tally.sent, tally.rtts
    return out


# -- manual firewall rules ------------------------------------------------------------------

_TABLE = re.compile(r"^table (\S+) (\S+) \{", re.M)
_SET = re.compile(r"\bset (\S+) \{[^}]*?elements = \{([^}]*)\}", re.S)


def _ports_in(spec: str, sets: dict[str, set[int]]) -> set[int]:
    spec = spec.strip()
    if spec.startswith("@"):
        return sets.get(spec[1:], set())
    ports = set()
    for part in spec.strip("{} ").split(","):
        part = part.strip()
        if "-" in part:
            lo, _, hi = part.partition("-")
            if lo.strip().isdigit() and hi.strip().isdigit():
                ports.update(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            ports.add(int(part))
    return ports


def _port_hit(line: str, key: str, port: int, sets: dict[str, set[int]]) -> bool:
    for m in re.finditer(rf"\b{key} (\{{[^}}]*\}}|@\S+|\d+(?:-\d+)?)", line):
        if port in _ports_in(m.group(1), sets):
            return True
    return False


def rules_in_place(port: int, nft_text: str = "", ipt4: str = "", ipt6: str = "") -> dict:
    """Which of the three rules paqet needs for `port` are present, per IP family:
    {("v4"|"v6", "notrack-in"|"notrack-out"|"rst-drop"): bool}. `nft_text` is `nft list
    ruleset`; `ipt4`/`ipt6` are `iptables -S` of the raw and mangle tables (legacy
    iptables keeps its rules outside nftables)."""
    found = {(fam, kind): False for fam in ("v4", "v6")
             for kind in ("notrack-in", "notrack-out", "rst-drop")}

    def mark(fams, line, sets):
        kinds = []
        if "notrack" in line and _port_hit(line, "dport", port, sets):
            kinds.append("notrack-in")
        if "notrack" in line and _port_hit(line, "sport", port, sets):
            kinds.append("notrack-out")
        if re.search(r"\bdrop\b", line) and "rst" in line and _port_hit(line, "sport", port, sets):
            kinds.append("rst-drop")
        for fam in fams:
            for k in kinds:
                found[(fam, k)] = True

    starts = [(m.start(), m.group(1)) for m in _TABLE.finditer(nft_text)]
    for i, (pos, family) in enumerate(starts):
        body = nft_text[pos:starts[i + 1][0] if i + 1 < len(starts) else len(nft_text)]
        sets = {m.group(1): _ports_in(m.group(2), {}) for m in _SET.finditer(body)}
        fams = {"ip": ("v4",), "ip6": ("v6",), "inet": ("v4", "v6")}.get(family, ())
        for line in body.splitlines():
            mark(fams, line, sets)
    for fam, text in (("v4", ipt4), ("v6", ipt6)):
        for line in text.splitlines():
            if not line.startswith("-A "):
                continue
            low = line.replace("--", "").lower()  # "--dport 9999" -> "dport 9999"
            if "-j notrack" in line.lower() or "ct --notrack" in line.lower():
                low += " notrack"
            low = low.replace("tcp-flags rst rst", "rst").replace("-j drop", "drop")
            mark((fam,), low, {})
    return found


def missing_rule_commands(port: int, found: dict, families: tuple[str, ...]) -> list[str]:
    from paqet.net.firewall import manual_rules
    cmds = manual_rules(port)  # iptables x3, then ip6tables x3, in our kinds' order
    kinds = ("notrack-in", "notrack-out", "rst-drop")
    out = []
    for fi, fam in enumerate(("v4", "v6")):
        if fam in families:
            out += [cmds[fi * 3 + ki] for ki, k in enumerate(kinds) if not found[(fam, k)]]
    return out


# -- judging ---------------------------------------------------------------------------------

def _is_paqet(cmd: str) -> bool:
    """Whether a process's command line (arguments joined by spaces) runs paqet: the
    `paqet` program (any path, or a script run by python) or `python -m paqet`. Not any
    command that merely has "paqet" somewhere in it (a program run from a checkout called
    paqet)."""
    args = cmd.split()[:3]
    for i, a in enumerate(args):
        if os.path.basename(a) == "paqet":
            return True
        if a == "-m" and i + 1 < len(args) and args[i + 1] == "paqet":
            return True
    return False


class Checker:
    def __init__(self, path: str, probes: Probes | None = None, *, count: int = 3,
                 interval: float = 0.2, timeout: float = 2.0) -> None:
        self.path = path
        self.p = probes or Probes()
        self.count, self.interval, self.timeout = count, interval, timeout
        self.results: list[Result] = []
        self.cfg = None
        self.net = None        # set when the network check passed
        self.iface = None      # the interface, even when the network check failed later
        self.server = None
        self.privileged = False
        self.raw_ok = False

    def add(self, *args, **kw) -> Result:
        r = Result(*args, **kw)
        self.results.append(r)
        return r

    def run(self) -> list[Result]:
        for _ in self.each():
            pass
        return self.results

    def each(self):
        """Run the checks, yielding each result as soon as it is known (the tunnel check
        takes seconds)."""
        shown = 0
        steps = [self.check_config]
        while steps:
            ok = steps.pop(0)()
            yield from self.results[shown:]
            shown = len(self.results)
            if ok is False:  # the configuration: nothing else can be checked without it
                return
            if ok is True:
                steps = [self.check_network, self.check_privileges, self.check_raw_socket,
                         self.check_firewall, self.check_ports] + (
                    [self.check_tunnel, self.check_backups] if self.cfg.role == "client" else [])

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)

    # each check ---------------------------------------------------------------------------
    def check_config(self) -> bool:
        import logging

        from paqet.config import ConfigError, load_config
        quiet = logging.getLogger("paqet.config")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its warnings become [WARN] lines below, not log lines
        try:
            self.cfg = cfg = load_config(self.path)
        except ConfigError as exc:
            if exc.path:
                fix = f"correct {exc.path} in {self.path} (docs/config.md lists every key)"
            elif "cannot read" in exc.message:
                fix = "give the configuration file's path with -c FILE"
            else:
                fix = f"correct the YAML syntax of {self.path} at the place named"
            self.add("config", "fail", str(exc), fix)
            return False
        finally:
            quiet.setLevel(level)
        what = f"{self.path}: valid {cfg.role} configuration"
        if cfg.role == "client":
            what += f" (server {cfg.server.addr}, block {cfg.transport.kcp.block})"
        self.add("config", "ok", what)
        for w in cfg.warnings:
            self.add("config", "warn", w)
        return True

    def _driver(self) -> str:
        from paqet.runtime import _driver
        return _driver(self.cfg)

    def check_network(self) -> None:
        from paqet.config.values import split_host_port
        from paqet.runtime import StartupError
        cfg = self.cfg
        server_ip = None
        if cfg.role == "client":
            host, port = split_host_port(cfg.server.addr)
            try:
                self.server = self.p.resolve(host, port)
            except StartupError as exc:
                self.add("network", "fail", str(exc),
                         "put the server's IP address (or a name this host resolves) in server.addr")
                return
            server_ip = self.server[0]
        iface = cfg.network.interface
        if iface and self._driver() != "udp" and not self.p.interface_exists(iface):
            self.add("network", "fail", f"network.interface '{iface}' does not exist here",
                     "set network.interface to one `ip link` lists, or remove it to have it "
                     "detected")
            return
        try:
            net = self.p.network(cfg, server_ip)
        except StartupError as exc:
            m = re.search(r"MAC address of (\S+) on", str(exc))
            if m and server_ip:
                fix = (f"check server.addr: nothing at {m.group(1)} answers ARP/ND; if the "
                       "address is right, set network.ipv4.router_mac (ipv6.router_mac) to the "
                       "next hop's MAC (`ip neigh`)")
                self.add("network", "fail", str(exc), fix)
                return
            self.add("network", "fail", str(exc),
                     "set network.interface, network.ipv4.addr and network.ipv4.router_mac "
                     "(docs/network.md), or fix the route: "
                     + (f"`ip route get {server_ip}`" if server_ip else "`ip route`"))
            return
        if net.driver == "udp":
            self.net = net
            self.add("network", "ok", "driver udp: plain UDP socket, no interface needed")
            return
        self.iface = net.interface
        ch = net.choice
        parts = [f"interface {net.interface}", f"IPv4 {net.ip4 or '-'}", f"IPv6 {net.ip6 or '-'}"]
        if cfg.role == "client":
            mac = net.router_mac6 if ":" in server_ip else net.router_mac4
            mac_s = mac.hex(":") if mac else "(none: no link-layer header)"
            if ch is None:
                parts.append(f"router MAC {mac_s}")
            else:
                parts.append(f"next hop {ch.gateway or server_ip + ' (on the link)'} at {mac_s}")
        detail = ", ".join(parts) + (f" [{ch.reason}]" if ch and ch.reason else
                                     " [all as configured]" if ch is None else "")
        have = self.p.interface_addresses(net.interface) if net.interface else None
        stray = [ip for ip in (net.ip4, net.ip6) if ip and have is not None and ip not in have]
        if stray:
            self.add("network", "fail", detail + f"; {', '.join(stray)} is not on {net.interface}",
                     f"set network.ipv4.addr / ipv6.addr to an address of {net.interface} "
                     "(`ip addr`), or leave it out to have it detected")
            return
        self.net = net
        self.add("network", "ok", detail)

    def check_privileges(self) -> None:
        driver = self._driver()
        if driver == "udp":
            self.privileged = True
            self.add("privileges", "ok", "not needed (network.driver: udp)")
            return
        if self.p.euid() == 0:
            self.privileged = True
            self.add("privileges", "ok", "running as root")
            return
        caps = self.p.effective_caps()
        have = {n for n, bit in (("CAP_NET_RAW", CAP_NET_RAW), ("CAP_NET_ADMIN", CAP_NET_ADMIN))
                if caps >> bit & 1}
        need = {"CAP_NET_RAW"} | ({"CAP_NET_ADMIN"} if self.cfg.network.firewall == "managed" else set())
        missing = sorted(need - have)
        if not missing:
            self.privileged = True
            self.add("privileges", "ok", f"not root, with {' and '.join(sorted(have))}")
            return
        self.add("privileges", "fail", f"not root and without {' and '.join(missing)} (raw "
                 "packet sockets and firewall rules need them)",
                 f"run as root (sudo paqet check -c {self.path}) or grant the capabilities: "
                 f"sudo setcap cap_net_raw,cap_net_admin+ep {_interpreter()} (or "
                 "AmbientCapabilities= in the systemd unit, packaging/paqet.service)")

    def check_raw_socket(self) -> None:
        driver = self._driver()
        if driver == "udp":
            self.raw_ok = True
            self.add("raw socket", "ok", "not needed (network.driver: udp)")
            return
        iface = self.iface
        if not iface:
            self.add("raw socket", "skip", "no interface (see the network check)")
            return
        if driver == "pcap":
            if self.p.libpcap():
                self.raw_ok = self.privileged
                self.add("raw socket", "ok" if self.privileged else "skip",
                         "libpcap found" + ("" if self.privileged else "; needs the privileges above"))
            else:
                self.add("raw socket", "fail", "network.driver: pcap but libpcap is not installed",
                         "install libpcap (apt-get install libpcap0.8) or set network.driver: auto")
            return
        err = self.p.raw_socket(iface)
        if err is None:
            self.raw_ok = True
            self.add("raw socket", "ok", f"AF_PACKET socket on {iface} opens")
        elif err.errno in (errno.EPERM, errno.EACCES):
            self.add("raw socket", "fail", f"AF_PACKET on {iface}: {err.strerror}",
                     "the privileges above: run as root or grant CAP_NET_RAW")
        else:
            self.add("raw socket", "fail",
                     f"AF_PACKET on {iface}: {err.strerror or err}",
                     "check that the interface is up (`ip link set dev "
                     f"{iface} up`), or set network.driver: pcap")

    def _port(self) -> int:
        return self.cfg.local_port

    def check_firewall(self) -> None:
        cfg = self.cfg
        if self._driver() == "udp":
            self.add("firewall", "ok", "not needed (network.driver: udp)")
            return
        tools = [t for t in ("nft", "iptables") if self.p.which(t)]
        if cfg.network.firewall == "managed":
            if not tools:
                self.add("firewall", "fail", "managed, but neither nft nor iptables is installed",
                         "install nftables (apt-get install nftables), or set network.firewall: "
                         "manual and add the rules yourself (docs/network.md)")
                return
            if not self.privileged:
                self.add("firewall", "skip", f"managed with {tools[0]}; cannot inspect the "
                         "rules without the privileges above")
                return
            if "nft" in tools:
                rc, err = self.p.command("nft", "list", "tables")
                if rc != 0:
                    self.add("firewall", "fail", f"nft does not work here: {err.strip()[:200]}",
                             "load the nf_tables kernel module (modprobe nf_tables), or set "
                             "network.firewall: manual")
                    return
            tables = self.p.paqet_tables()
            port = self._port()
            mine = [n for n, _ in tables if port and n.startswith(f"paqet_{port}_")]
            stale = [n for n, gone in tables if gone]
            detail = (f"managed with {tools[0]}: paqet adds its rules for "
                      f"{'TCP port %d' % port if port else 'each connection port'} at start and "
                      f"removes them at exit; {len(tables)} paqet table(s) present")
            if mine:
                detail += f" ({', '.join(mine)}: a paqet on this port is running)"
            if stale:
                self.add("firewall", "warn", detail + f"; left by processes that are gone: "
                         f"{', '.join(stale)}",
                         "nothing to do: the next `paqet run` removes them (or: nft delete "
                         f"table inet {stale[0]})")
                return
            self.add("firewall", "ok", detail)
            return
        # manual
        port = self._port()
        if not port:
            self.add("firewall", "fail", "manual, but the client port is random (port 0), so "
                     "no rule can name it",
                     "set a fixed port in network.ipv4.addr (\"IP:PORT\") with transport.conn: 1, "
                     "and add the rules for it (docs/network.md)")
            return
        if not tools:
            self.add("firewall", "fail", "manual, and neither nft nor iptables is installed to "
                     "hold the rules", "install nftables or iptables and add the rules "
                     "(docs/network.md)")
            return
        if not self.privileged:
            self.add("firewall", "skip", "manual; cannot read the rules without the "
                     "privileges above")
            return
        nft = self.p.command("nft", "list", "ruleset")[1] if "nft" in tools else ""
        ipt = {}
        for cmd in ("iptables", "ip6tables"):
            text = ""
            if self.p.which(cmd):
                for table in ("raw", "mangle"):
                    rc, out = self.p.command(cmd, "-w", "5", "-t", table, "-S")
                    text += out if rc == 0 else ""
            ipt[cmd] = text
        found = rules_in_place(port, nft, ipt["iptables"], ipt["ip6tables"])
        fams = tuple(f for f, ip in (("v4", self.net and self.net.ip4), ("v6", self.net and self.net.ip6))
                     if ip) or ("v4",)
        if self.cfg.role == "client" and self.server:
            fams = ("v6",) if ":" in self.server[0] else ("v4",)
        missing = missing_rule_commands(port, found, fams)
        if missing:
            self.add("firewall", "fail", f"manual: {len(missing)} of the rules for TCP port "
                     f"{port} are missing (the kernel would answer paqet's packets with RSTs)",
                     "add them: " + "; ".join(missing))
        else:
            self.add("firewall", "ok", f"manual: notrack and RST-drop rules for TCP port {port} "
                     "are in place")

    def _holders(self, proto: str, port: int) -> str:
        return ", ".join(f"{os.path.basename(cmd.split()[0]).rstrip(':') if cmd.split() else '?'} "
                         f"(pid {pid})" for pid, cmd in self.p.port_holders(proto, port))

    def check_ports(self) -> None:
        """Client: the SOCKS5 and forward listen addresses can be taken. Server: no kernel
        socket listens on the paqet port (the firewall rules would break its connections)."""
        from paqet.config.values import split_host_port
        cfg = self.cfg
        if cfg.role == "server":
            port = self._port()
            if not port or self._driver() == "udp":
                return
            holders = self.p.port_holders("tcp", port)
            if holders:
                who = self._holders("tcp", port)
                self.add("ports", "fail", f"TCP port {port} is also a listening port of {who} "
                         "here: paqet's rules (notrack, kernel RSTs dropped) would break its "
                         "connections", "choose another port for listen.addr (and "
                         "network.ipv4.addr), or move that program")
            else:
                self.add("ports", "ok", f"no program of this host listens on TCP port {port}")
            return
        wanted = [(f"socks5[{i}]", "tcp", s.listen) for i, s in enumerate(cfg.socks5)]
        wanted += [(f"forward[{i}]", f.protocol or "tcp", f.listen) for i, f in enumerate(cfg.forward)]
        wanted += [(f"http[{i}]", "tcp", h.listen) for i, h in enumerate(cfg.http)]
        if not wanted:
            return
        problems, busy_paqet = [], []
        for key, proto, listen in wanted:
            host, port = split_host_port(listen)
            host = host or "0.0.0.0"
            err = self.p.bind(proto, host, port)
            if err is None:
                continue
            where = f"{key}.listen {listen} ({proto})"
            if err.errno == errno.EADDRINUSE:
                holders = self.p.port_holders(proto, port)
                if holders and all(_is_paqet(cmd) for _, cmd in holders):
                    busy_paqet.append(f"{where}: held by a running paqet "
                                      f"({', '.join('pid %d' % p for p, _ in holders)})")
                    continue
                who = self._holders(proto, port) or "another program"
                problems.append((f"{where} is in use by {who}",
                                 f"stop that program or change {key}.listen to a free port"))
            elif err.errno == errno.EADDRNOTAVAIL:
                problems.append((f"{where}: {host} is not an address of this host",
                                 f"set {key}.listen to 127.0.0.1:{port} or an address of "
                                 "this host (`ip addr`)"))
            elif err.errno == errno.EACCES:
                problems.append((f"{where}: ports below 1024 need root or CAP_NET_BIND_SERVICE",
                                 f"run as root or use a port above 1023 in {key}.listen"))
            else:
                problems.append((f"{where}: {err.strerror or err}",
                                 f"change {key}.listen"))
        for detail, fix in problems:
            self.add("ports", "fail", detail, fix)
        for detail in busy_paqet:
            self.add("ports", "warn", detail, "nothing to do if it runs this configuration; "
                     "otherwise stop it first (one client per listen address)")
        if not problems and not busy_paqet:
            self.add("ports", "ok", "listen addresses free: " +
                     ", ".join(f"{listen} ({proto})" for _, proto, listen in wanted))

    def check_tunnel(self) -> None:
        if self.net is None or self.server is None:
            self.add("tunnel", "skip", "needs the network check to pass")
            return
        if not (self.privileged and self.raw_ok):
            self.add("tunnel", "skip", "needs the privileges and the raw socket")
            return
        srv = f"{self.server[0]}:{self.server[1]}"
        mode = self.cfg.network.tcp.mode
        out = self.p.ping(self.cfg, self.server, self.net, self.count, self.interval, self.timeout)
        if out.error:
            self.add("tunnel", "fail", f"cannot start a session: {out.error}",
                     "see the checks above; run as root with nftables or iptables, or set "
                     "network.firewall: manual")
            return
        other_mode = "stateless" if mode == "handshake" else "handshake"
        other = None
        if self._driver() != "udp":
            other = self.p.ping(self.cfg, self.server, self.net, min(self.count, 2),
                                self.interval, self.timeout, other_mode)
        other_ok = other is not None and bool(other.rtts)
        from paqet.cli.ping import rtt_summary
        if out.rtts:
            loss = 100.0 * (out.sent - len(out.rtts)) / out.sent
            detail = (f"{len(out.rtts)}/{out.sent} PPONG from {srv} ({loss:.0f}% loss), rtt "
                      f"min/avg/max/mdev = {rtt_summary(out.rtts)}")
            self.add("tunnel", "ok", detail)
        elif out.heard:
            self.add("tunnel", "fail", f"the server at {srv} answers KCP but not PPING "
                     f"({out.sent} sent, {out.dialect} dialect)",
                     "set transport.dialect: auto (or the server's alpha21/alpha20/gob), "
                     "and check the server's log")
        elif other_ok:  # the other mode answers: that says what is wrong
            if mode == "stateless":
                why = ("handshake flows get PPONGs: this path needs network.tcp.mode handshake "
                       "(a stateful firewall drops TCP without a handshake)")
                fix = "set network.tcp.mode: handshake in this client's configuration"
            else:
                why = ("stateless frames get PPONGs: the server does not answer handshakes "
                       "(its network.tcp.mode is stateless)")
                fix = "set network.tcp.mode: handshake on the server too, or stateless here"
            self.add("tunnel", "fail", f"no answer from {srv} in network.tcp.mode {mode} "
                     f"({out.sent} PPING sent); {why}", fix)
            return
        else:
            self.add("tunnel", "fail", f"no answer from {srv} ({out.sent} PPING sent, none "
                     f"answered within {self.timeout:g} s)",
                     f"check that `paqet run` is running on {self.server[0]} with listen port "
                     f"{self.server[1]}, the same transport.kcp.key and block (and "
                     f"dshard/pshard), and that no firewall between drops TCP port "
                     f"{self.server[1]}; a stateful one (it drops TCP without a handshake) "
                     f"needs network.tcp.mode: handshake on both ends")
        if other is not None and not other.error:
            self._tcp_mode(mode, bool(out.rtts), other_ok)

    def _tcp_mode(self, mode: str, ok: bool, other_ok: bool) -> None:
        """Whether the path needs network.tcp.mode handshake, both modes tried (the case of
        the configured mode failing and the other answering is the tunnel check's)."""
        if not ok:
            self.add("tcp mode", "skip", "neither stateless frames nor handshake flows got an "
                     "answer")
        elif other_ok:
            self.add("tcp mode", "ok", "stateless frames and handshake flows both get through: "
                     "handshake is not needed on this path (stateless costs less)"
                     if mode == "handshake" else "stateless frames get through: this path "
                     "needs no handshake (the server answers handshakes too)")
        elif mode == "stateless":
            self.add("tcp mode", "ok", "stateless frames get through: this path needs no "
                     "handshake (the server does not answer handshakes: its network.tcp.mode "
                     "is stateless)")
        else:
            self.add("tcp mode", "ok", "this path needs network.tcp.mode handshake: stateless "
                     "frames get no answer (a stateful firewall drops TCP without a handshake)")

    def check_backups(self) -> None:
        """Failover targets (server.backup, beyond upstream): one short PPING run each. A
        backup that does not answer is a warning: the first server still works."""
        backups = self.cfg.server.backup if self.cfg.role == "client" else []
        if not backups or self.net is None or not (self.privileged and self.raw_ok):
            return
        from paqet.config.values import split_host_port
        from paqet.runtime import StartupError
        from paqet.cli.ping import rtt_summary
        for i, b in enumerate(backups):
            key = f"server.backup[{i}]"
            try:
                server = self.p.resolve(*split_host_port(b))
            except StartupError as exc:
                self.add("backup", "warn", f"{key}: {exc}",
                         f"put an IP address (or a name this host resolves) in {key}")
                continue
            add_destination = getattr(self.net, "add_destination", None)
            if add_destination is not None:
                add_destination(server[0])  # its own next hop, as `paqet run` does
            srv = f"{server[0]}:{server[1]}"
            out = self.p.ping(self.cfg, server, self.net, self.count, self.interval,
                              self.timeout)
            if out.rtts:
                self.add("backup", "ok", f"{key} {srv}: {len(out.rtts)}/{out.sent} PPONG, rtt "
                         f"min/avg/max/mdev = {rtt_summary(out.rtts)}")
            else:
                why = out.error or (f"no PPONG ({out.sent} sent"
                                    + (", KCP answered)" if out.heard else ")"))
                self.add("backup", "warn", f"{key} {srv}: {why}",
                         f"failover to it cannot work now: check that `paqet run` is running "
                         f"on {server[0]} with listen port {server[1]} and the same "
                         f"transport.kcp.key and block")


def run(args) -> int:
    from paqet import logs
    logs.setup("warn")
    if args.count < 1 or args.timeout <= 0:
        print("paqet: --count must be at least 1 and --timeout positive", file=sys.stderr)
        return 2
    checker = Checker(args.config, count=args.count, timeout=args.timeout)
    for r in checker.each():
        for line in r.lines():
            print(line, flush=True)
    bad = sum(r.status == "fail" for r in checker.results)
    print("all checks passed" if not bad else f"{bad} problem(s) found", flush=True)
    return EXIT_RUNTIME if bad else EXIT_OK
