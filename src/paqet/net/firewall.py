"""The managed host firewall (beyond upstream): keep the kernel's own TCP away from paqet's port.

Our frames bypass the kernel's sockets, so the kernel would answer them with RSTs and track
them in conntrack. For our port we add, in an nftables table of our own: a drop of incoming
TCP to a local address (AF_PACKET has its copy before netfilter runs, and the kernel's TCP
never sees the frame: no socket lookup, no RST built only to be dropped, ~2 us less per
received frame in bench/raw.py's A/B), notrack for the rest of incoming (dport, e.g.
forwarded) and outgoing (sport) TCP, and a drop of the kernel's outgoing RSTs (sport) as a
safety net. The same rules on client (its local port) and server (its listen port).

Ownership: the table is `inet paqet_<port>_<pid>` and its comment records the owner
(`paqet pid=<pid> pidns=<pid namespace inode> start=<process start time>`); its port set
holds every port of the process (a client has one per connection). A later start
deletes tables whose owner is gone: PID absent, or the PID now belongs to a different process
(other start time). Tables of another PID namespace (a container sharing the network
namespace) are left alone, and nothing without our name pattern is ever touched.

iptables/ip6tables (chains `PAQET_<port>_<pid>` in raw and mangle) are the fallback when
nftables is missing or refuses (`backend="auto"`).

Exit paths: `Firewall` is a context manager; every installed Firewall is also in a registry
that `remove_all()` empties (for a signal handler) and that runs at interpreter exit
(`atexit`), so rules go on a normal exit, SIGINT/SIGTERM handled by the runtime, and an
exception escaping the main loop. SIGKILL leaves the rules; `cleanup_stale()` (run by every
`install()`) removes them at the next start.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import subprocess
import threading

log = logging.getLogger("paqet.firewall")

PREFIX = "paqet_"
CHAIN_PREFIX = "PAQET_"
TABLE_RE = re.compile(rf"{PREFIX}(\d+)_(\d+)")
CHAIN_RE = re.compile(rf"{CHAIN_PREFIX}(\d+)_(\d+)")
COMMENT_RE = re.compile(r'comment "paqet pid=(\d+) pidns=(\d+) start=(\d+)"')
# (table, hooks jumping to our chain) for the iptables fallback
IPT_HOOKS = (("raw", ("PREROUTING", "OUTPUT")), ("mangle", ("OUTPUT",)))


class FirewallError(RuntimeError):
    pass


def _run(cmd: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


# -- process identity ----------------------------------------------------------------------

def pid_namespace() -> int:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
        return int(link[link.index("[") + 1:-1])
    except (OSError, ValueError):
        return 0


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None
    when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:  # the command name may contain spaces and parentheses: fields follow the last ')'
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_comment(pid: int) -> str:
    return f"paqet pid={pid} pidns={pid_namespace()} start={start_time(pid) or 0}"


def owner_gone(pid: int, comment: str | None) -> bool:
    """Whether the process that created a table/chain is gone. With our comment: only tables
    of our own PID namespace are judged (False otherwise), and a reused PID counts as gone."""
    if comment:
        m = COMMENT_RE.search(f'comment "{comment}"')
        if m:
            cpid, ns, start = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if ns and ns != pid_namespace():
                return False
            now = start_time(cpid)
            if now is None:
                return not _alive(cpid)
            return bool(start) and now != start
    return not _alive(pid)


# -- rule text ---------------------------------------------------------------------------

def nft_table_name(port: int, pid: int) -> str:
    return f"{PREFIX}{port}_{pid}"


def nft_ruleset(port: int, pid: int, comment: str | None = None) -> str:
    """One nft script that (re)creates our table atomically with `port` in its port set: the
    `add`+`delete` pair makes a second install replace the table instead of failing or
    duplicating rules. More ports of the same process join the set (`nft_port_command`)."""
    _check_port(port)
    t = nft_table_name(port, pid)
    c = f'\n  comment "{comment}"' if comment else ""
    return f"""add table inet {t}
delete table inet {t}
table inet {t} {{{c}
  set ports {{ type inet_service; elements = {{ {port} }}; }}
  chain prerouting {{ type filter hook prerouting priority raw; policy accept;
    tcp dport @ports fib daddr type local drop
    tcp dport @ports notrack
  }}
  chain output {{ type filter hook output priority raw; policy accept;
    tcp sport @ports notrack
  }}
  chain rst {{ type filter hook output priority mangle; policy accept;
    tcp sport @ports tcp flags & rst == rst counter drop
  }}
}}
"""


def nft_port_command(table: str, port: int, add: bool) -> list[str]:
    _check_port(port)
    return ["nft", "add" if add else "delete", "element", "inet", table, "ports", f"{{ {port} }}"]


def chain_name(port: int, pid: int) -> str:
    return f"{CHAIN_PREFIX}{port}_{pid}"[:28]  # iptables' chain name limit


def iptables_rules(port: int, chain: str) -> list[list[str]]:
    """Arguments (after the iptables/ip6tables command) that fill our chains."""
    _check_port(port)
    return [
        ["-t", "raw", "-A", chain, "-p", "tcp", "--dport", str(port), "-j", "NOTRACK"],
        ["-t", "raw", "-A", chain, "-p", "tcp", "--sport", str(port), "-j", "NOTRACK"],
        ["-t", "mangle", "-A", chain, "-p", "tcp", "--sport", str(port), "--tcp-flags",
         "RST", "RST", "-j", "DROP"],
    ]


def manual_rules(port: int) -> list[str]:
    """The equivalent commands for `network.firewall: manual` (upstream's README, plus IPv6)."""
    out = []
    for cmd in ("iptables", "ip6tables"):
        for args in iptables_rules(port, "X"):
            table, chain = args[1], args[3]
            hook = {"raw": ("PREROUTING" if "--dport" in args else "OUTPUT"),
                    "mangle": "OUTPUT"}[table]
            out.append(" ".join([cmd, "-t", table, "-A", hook] + args[4:]))
    return out


def _check_port(port: int) -> None:
    if not isinstance(port, int) or not 0 < port <= 0xFFFF:
        raise ValueError(f"TCP port {port!r} out of range 1-65535")


# -- inspection and stale cleanup ----------------------------------------------------------

def list_tables() -> list[str]:
    """Names of our inet tables (paqet_<port>_<pid>) in this network namespace."""
    if not shutil.which("nft"):
        return []
    r = _run(["nft", "list", "tables", "inet"])
    if r.returncode != 0:
        return []
    names = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["table", "inet"] and TABLE_RE.fullmatch(parts[2]):
            names.append(parts[2])
    return names


def table_comment(name: str) -> str | None:
    r = _run(["nft", "list", "table", "inet", name])
    m = re.search(r'^\s*comment "([^"]*)"', r.stdout, re.M) if r.returncode == 0 else None
    return m.group(1) if m else None


def list_chains(cmd: str = "iptables") -> list[str]:
    """Our chains (PAQET_<port>_<pid>) in raw or mangle, for iptables or ip6tables."""
    if not shutil.which(cmd):
        return []
    found = []
    for table, _ in IPT_HOOKS:
        r = _run([cmd, "-w", "5", "-t", table, "-S"])
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "-N" and CHAIN_RE.fullmatch(parts[1]) \
                    and parts[1] not in found:
                found.append(parts[1])
    return found


def cleanup_stale() -> list[str]:
    """Delete our tables/chains whose owning process is gone; returns their names."""
    removed = []
    for name in list_tables():
        pid = int(TABLE_RE.fullmatch(name).group(2))
        if pid != os.getpid() and owner_gone(pid, table_comment(name)):
            if _run(["nft", "delete", "table", "inet", name]).returncode == 0:
                removed.append(name)
                log.info("firewall: removed stale table %s of a process that is gone", name)
    for cmd in ("iptables", "ip6tables"):
        for chain in list_chains(cmd):
            pid = int(CHAIN_RE.fullmatch(chain).group(2))
            if pid != os.getpid() and not _alive(pid):
                _ipt_remove(cmd, chain)
                removed.append(f"{cmd}:{chain}")
                log.info("firewall: removed stale %s chain %s of a process that is gone", cmd, chain)
    return removed


def _ipt_remove(cmd: str, chain: str) -> None:
    for table, hooks in IPT_HOOKS:
        for h in hooks:
            for _ in range(8):  # bounded: a jump inserted more than once
                if _run([cmd, "-w", "5", "-t", table, "-D", h, "-j", chain]).returncode != 0:
                    break
        _run([cmd, "-w", "5", "-t", table, "-F", chain])
        _run([cmd, "-w", "5", "-t", table, "-X", chain])


# -- the managed firewall ------------------------------------------------------------------

_registry: set["Firewall"] = set()
_chain_users: dict[str, int] = {}  # iptables chain -> Firewalls of ours using it
# nftables: one table per process (named after its first port), every port in its set
_nft_tables: dict[int, tuple[str, dict[int, int]]] = {}  # pid -> (table, {port: users})
_lock = threading.RLock()
_atexit_done = False
_stale_checked = False


def remove_all() -> None:
    """Remove the rules of every Firewall this process installed (signal handlers, atexit)."""
    with _lock:
        items = [fw for fw in _registry if fw.installed != "nft"]
        for fw in [fw for fw in _registry if fw.installed == "nft"]:
            fw.installed = None  # whole tables go at once below: one nft call per table
            _registry.discard(fw)
        for pid, (table, _) in list(_nft_tables.items()):
            del _nft_tables[pid]
            r = _run(["nft", "delete", "table", "inet", table])
            if r.returncode != 0 and table in list_tables():
                log.warning("firewall: cannot delete table %s: %s", table, r.stderr.strip())
            else:
                log.info("firewall: table %s removed", table)
    for fw in items:
        try:
            fw.remove()
        except Exception:  # keep going: the others must still go
            log.debug("firewall: removing %s failed", fw, exc_info=True)


class Firewall:
    """`Firewall(port, role).install()` ... `.remove()`, or `with Firewall(port, role):`.
    backend: "auto" (nftables, else iptables), "nft" or "iptables".

    With nftables all ports of one process share one table (`paqet_<first port>_<pid>`): the
    first install creates it (base chains: ~20-40 ms), later ports only join its set (a few
    ms), which keeps a client with many connections quick to start and to stop."""

    def __init__(self, port: int, role: str = "", *, backend: str = "auto",
                 pid: int | None = None) -> None:
        _check_port(port)
        if backend not in ("auto", "nft", "iptables"):
            raise ValueError(f"unknown firewall backend {backend!r}")
        self.port = port
        self.role = role
        self.pid = pid or os.getpid()
        self.backend = backend
        self.installed: str | None = None
        self.table = nft_table_name(port, self.pid)
        self.chain = chain_name(port, self.pid)

    def __repr__(self) -> str:
        return f"Firewall(port={self.port}, {self.installed or 'not installed'})"

    def install(self) -> str:
        """Add the rules; returns the backend used ("nft" or "iptables")."""
        global _atexit_done, _stale_checked
        with _lock:  # serialised: the shared table's set is read-modify-write
            if self.installed:
                return self.installed
            if self.backend != "iptables" and self._nft_join():
                self.installed = "nft"
            elif self.backend != "nft" and _chain_users.get(self.chain):
                _chain_users[self.chain] += 1
                self.installed = "iptables"
            if self.installed:
                _registry.add(self)
                return self.installed
            if not _stale_checked:  # once per process, not once per client connection
                _stale_checked = True
                cleanup_stale()
            errors = []
            if self.backend in ("auto", "nft"):
                if shutil.which("nft"):
                    err = self._nft_install()
                    if err is None:
                        self.installed = "nft"
                    else:
                        errors.append(f"nft: {err}")
                else:
                    errors.append("nft is not installed")
            if not self.installed and self.backend in ("auto", "iptables"):
                err = self._iptables_install()
                if err is None:
                    self.installed = "iptables"
                    _chain_users[self.chain] = 1
                else:
                    errors.append(err)
            if not self.installed:
                raise FirewallError(
                    f"cannot add the firewall rules for TCP port {self.port} ({'; '.join(errors)}): "
                    "run as root with nftables or iptables installed, or set network.firewall: "
                    "manual and add the rules yourself (docs/network.md)")
            _registry.add(self)
            if not _atexit_done:
                atexit.register(remove_all)
                _atexit_done = True
        log.info("firewall: %s rules for TCP port %d installed%s (notrack both ways, drop the "
                 "kernel's RSTs)", self.installed, self.port, f" ({self.role})" if self.role else "")
        return self.installed

    def _nft_join(self) -> bool:
        """Join this process's existing table (True), or False when there is none yet."""
        entry = _nft_tables.get(self.pid)
        if entry is None:
            return False
        table, ports = entry
        if self.port not in ports:
            r = _run(nft_port_command(table, self.port, True))
            if r.returncode != 0:
                log.warning("firewall: cannot add port %d to %s: %s", self.port, table,
                            r.stderr.strip())
                return False
            log.info("firewall: TCP port %d added to %s", self.port, table)
        ports[self.port] = ports.get(self.port, 0) + 1
        self.table = table
        return True

    def _nft_install(self) -> str | None:
        r = _run(["nft", "-f", "-"], input=nft_ruleset(self.port, self.pid, owner_comment(self.pid)))
        if r.returncode != 0 and "comment" in r.stderr:
            # nftables < 0.9.7: no table comments; staleness is then judged by the PID alone
            r = _run(["nft", "-f", "-"], input=nft_ruleset(self.port, self.pid))
        if r.returncode != 0:
            return r.stderr.strip() or f"exit status {r.returncode}"
        self.table = nft_table_name(self.port, self.pid)
        _nft_tables[self.pid] = (self.table, {self.port: 1})
        return None

    def _iptables_install(self) -> str | None:
        cmds = [c for c in ("iptables", "ip6tables") if shutil.which(c)]
        if "iptables" not in cmds:
            return "iptables is not installed"
        c = self.chain
        for cmd in cmds:
            for table, hooks in IPT_HOOKS:
                _run([cmd, "-w", "5", "-t", table, "-N", c])
                _run([cmd, "-w", "5", "-t", table, "-F", c])
            for args in iptables_rules(self.port, c):
                r = _run([cmd, "-w", "5", *args])
                if r.returncode != 0:
                    if cmd == "ip6tables":  # IPv6 netfilter missing: IPv4 still protected
                        log.warning("firewall: ip6tables failed (%s); IPv6 not covered",
                                    r.stderr.strip())
                        _ipt_remove(cmd, c)
                        break
                    self._ipt_remove_all()
                    return f"iptables: {r.stderr.strip()}"
            else:
                for table, hooks in IPT_HOOKS:
                    for h in hooks:
                        r = _run([cmd, "-w", "5", "-t", table, "-I", h, "-j", c])
                        if r.returncode != 0:
                            self._ipt_remove_all()
                            return f"{cmd}: {r.stderr.strip()}"
        return None

    def _ipt_remove_all(self) -> None:
        for cmd in ("iptables", "ip6tables"):  # absent chains are harmless to delete
            if shutil.which(cmd):
                _ipt_remove(cmd, self.chain)

    def remove(self) -> None:
        """Remove our rules (idempotent; only what this object installed; rules another
        Firewall of this process still needs stay)."""
        with _lock:
            _registry.discard(self)
            kind, self.installed = self.installed, None
            if not kind:
                return
            if kind == "nft":
                self._nft_leave()
            else:
                left = _chain_users[self.chain] = _chain_users.get(self.chain, 1) - 1
                if left > 0:
                    return
                del _chain_users[self.chain]
                self._ipt_remove_all()
        log.info("firewall: rules for TCP port %d removed", self.port)

    def _nft_leave(self) -> None:
        table, ports = _nft_tables.get(self.pid, (self.table, {}))
        left = ports[self.port] = ports.get(self.port, 1) - 1
        if left > 0:
            return
        del ports[self.port]
        if ports:  # other ports of ours still use the table
            r = _run(nft_port_command(table, self.port, False))
            if r.returncode != 0:
                log.warning("firewall: cannot remove port %d from %s: %s", self.port, table,
                            r.stderr.strip())
            return
        _nft_tables.pop(self.pid, None)
        r = _run(["nft", "delete", "table", "inet", table])
        if r.returncode != 0 and table in list_tables():
            log.warning("firewall: cannot delete table %s: %s", table, r.stderr.strip())

    def __enter__(self) -> "Firewall":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
