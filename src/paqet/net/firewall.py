"""The managed host firewall: keep the kernel's own TCP away from paqet's port.

Our frames bypass the kernel's sockets, so the kernel would answer them with RSTs and track
them in conntrack. For our port we add, in an nftables table of our own: notrack for
incoming (dport) and outgoing (sport) TCP, and a drop of the kernel's outgoing RSTs
(sport). The table's name carries the port and our PID, so a later start can delete tables
whose process is gone. iptables (raw/mangle, a chain of our own) is the fallback.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import subprocess

log = logging.getLogger("paqet.firewall")

PREFIX = "paqet_"


class FirewallError(RuntimeError):
    pass


def _run(cmd: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=15)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def nft_table_name(port: int, pid: int) -> str:
    return f"{PREFIX}{port}_{pid}"


def nft_ruleset(port: int, pid: int) -> str:
    t = nft_table_name(port, pid)
    return f"""table inet {t} {{
  chain prerouting {{ type filter hook prerouting priority raw; policy accept;
    tcp dport {port} notrack
  }}
  chain output {{ type filter hook output priority raw; policy accept;
    tcp sport {port} notrack
  }}
  chain rst {{ type filter hook output priority mangle; policy accept;
    tcp sport {port} tcp flags & rst == rst counter drop
  }}
}}
"""


def iptables_rules(port: int, chain: str) -> list[list[str]]:
    """(table, args) for the iptables fallback, in a chain of our own per table."""
    return [
        ["-t", "raw", "-A", f"{chain}", "-p", "tcp", "--dport", str(port), "-j", "NOTRACK"],
        ["-t", "raw", "-A", f"{chain}", "-p", "tcp", "--sport", str(port), "-j", "NOTRACK"],
        ["-t", "mangle", "-A", f"{chain}", "-p", "tcp", "--sport", str(port), "--tcp-flags",
         "RST", "RST", "-j", "DROP"],
    ]


def list_tables() -> list[str]:
    if not shutil.which("nft"):
        return []
    r = _run(["nft", "-j", "list", "tables"])
    if r.returncode != 0:
        return []
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return []
    return [item["table"]["name"] for item in data.get("nftables", [])
            if "table" in item and item["table"].get("family") == "inet"]


def cleanup_stale() -> list[str]:
    """Delete paqet tables whose owning process is gone; returns their names."""
    removed = []
    for name in list_tables():
        m = re.fullmatch(rf"{PREFIX}(\d+)_(\d+)", name)
        if m and not _alive(int(m.group(2))):
            if _run(["nft", "delete", "table", "inet", name]).returncode == 0:
                removed.append(name)
                log.info("removed stale firewall table %s of a process that is gone", name)
    return removed


class Firewall:
    def __init__(self, port: int, *, backend: str = "auto", pid: int | None = None) -> None:
        self.port = port
        self.pid = pid or os.getpid()
        self.backend = backend
        self.installed: str | None = None
        self._chain = f"PAQET_{port}_{self.pid}"[:28]

    def install(self) -> str:
        if self.installed:
            return self.installed
        cleanup_stale()
        use_nft = self.backend in ("auto", "nft") and shutil.which("nft")
        if use_nft:
            r = _run(["nft", "-f", "-"], input=nft_ruleset(self.port, self.pid))
            if r.returncode == 0:
                self.installed = "nft"
            elif self.backend == "nft":
                raise FirewallError(f"nft failed: {r.stderr.strip()}")
        if not self.installed and self.backend in ("auto", "iptables") and shutil.which("iptables"):
            self._iptables_install()
            self.installed = "iptables"
        if not self.installed:
            raise FirewallError("neither nft nor iptables is available to keep the kernel's TCP "
                                "off our port (install nftables, or set network.firewall: manual)")
        atexit.register(self.remove)
        log.info("firewall: %s rules for TCP port %d installed (notrack, drop kernel RSTs)",
                 self.installed, self.port)
        return self.installed

    def _iptables_install(self) -> None:
        c = self._chain
        for table, hooks in (("raw", ("PREROUTING", "OUTPUT")), ("mangle", ("OUTPUT",))):
            _run(["iptables", "-t", table, "-N", c])
            for h in hooks:
                r = _run(["iptables", "-t", table, "-I", h, "-j", c])
                if r.returncode != 0:
                    raise FirewallError(f"iptables failed: {r.stderr.strip()}")
        for args in iptables_rules(self.port, c):
            r = _run(["iptables", *args])
            if r.returncode != 0:
                raise FirewallError(f"iptables failed: {r.stderr.strip()}")

    def remove(self) -> None:
        if not self.installed:
            return
        kind, self.installed = self.installed, None
        if kind == "nft":
            _run(["nft", "delete", "table", "inet", nft_table_name(self.port, self.pid)])
        else:
            c = self._chain
            for table, hooks in (("raw", ("PREROUTING", "OUTPUT")), ("mangle", ("OUTPUT",))):
                for h in hooks:
                    _run(["iptables", "-t", table, "-D", h, "-j", c])
                _run(["iptables", "-t", table, "-F", c])
                _run(["iptables", "-t", table, "-X", c])
        log.info("firewall: rules for TCP port %d removed", self.port)

    def __enter__(self) -> "Firewall":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
