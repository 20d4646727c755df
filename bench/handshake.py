"""network.tcp.mode handshake against stateless, in one run: a 50 MB download (SOCKS5 +
curl) through client - router - server namespaces, taking turns:

  stateless / plain router      today's frames, a router without TCP tracking rules
  handshake / plain router      the flow mode over the same kind of router (its own cost)
  handshake / strict router     the flow mode through a strict stateful firewall
                                (nf_conntrack_tcp_loose=0, be_liberal=0, invalid and
                                new-without-SYN dropped), the case it exists for
  (stateless / strict router gets nothing through: tests/e2e/test_tcp_handshake.py)

Prints MB/s per run, the median and spread of each, the ratios against stateless / plain
router (issue 20 asks >= 80 % for handshake / strict), CPU seconds per MB of both paqet
processes, and the strict router's drop counters. Every download is checked (sha256).
Needs root.

    sudo .venv/bin/python bench/handshake.py [--size-mb 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import netlab  # noqa: E402
from tunnels import cpu_seconds, say  # noqa: E402
from paqetlab import (Paqet, client_config, curl, http_server, make_blob, server_config,  # noqa: E402
                      tempdir, wait_port)

CASES = (("stateless / plain router", "stateless", False),
         ("handshake / plain router", "handshake", False),
         ("handshake / strict router", "handshake", True))


class Case:
    def __init__(self, name: str, mode: str, strict: bool, d: str, size: int) -> None:
        self.name, self.strict = name, strict
        self.lab = netlab.NetLab().__enter__()
        self.topo = t = self.lab.routed()
        if strict:
            self.lab.strict_tracking(t.router)
        self.dir = os.path.join(d, mode + ("-strict" if strict else "-plain"))
        os.makedirs(self.dir)
        self.digest = make_blob(self.dir, "blob", size)
        http_server(self.lab, t.server, self.dir)
        scfg, ccfg = server_config(t, level="warn"), client_config(t, level="warn")
        for cfg in (scfg, ccfg):
            cfg["network"]["tcp"] = {"mode": mode}
        self.server = Paqet(self.lab, t.server, scfg, "server", self.dir)
        self.client = Paqet(self.lab, t.client, ccfg, "client", self.dir)
        if not (wait_port(self.lab, t.client, 1080) and
                wait_port(self.lab, t.server, 8000, host=t.server_ip4)):
            raise SystemExit(f"bench: {name}: did not start:\n{self.client.log()[-1500:]}")
        self.mbps: list[float] = []
        self.cpu: list[float] = []

    def fetch(self, size: int) -> None:
        out = os.path.join(self.dir, "got")
        pids = (self.server.proc.pid, self.client.proc.pid)
        c0 = sum(cpu_seconds(p) for p in pids)
        t0 = time.monotonic()
        r = curl(self.lab, self.topo.client, f"http://{self.topo.server_ip4}:8000/blob",
                 timeout=300, out=out)
        took = time.monotonic() - t0
        cpu = sum(cpu_seconds(p) for p in pids) - c0
        with open(out, "rb") as f:
            ok = hashlib.sha256(f.read()).hexdigest() == self.digest
        os.unlink(out)
        if not ok or not r.stdout.startswith("200 "):
            raise SystemExit(f"bench: {self.name}: download failed ({r.stdout} {r.stderr})\n"
                             f"{self.client.log()[-1500:]}")
        self.mbps.append(size / took / 1e6)
        self.cpu.append(cpu / (size / 1e6))

    def close(self) -> None:
        self.lab.__exit__(None, None, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    reason = netlab.available()
    if reason:
        print(f"bench: cannot run: {reason}", file=sys.stderr)
        return 1
    size = a.size_mb << 20
    cases: list[Case] = []
    with tempdir() as d:
        try:
            for name, mode, strict in CASES:
                say(f"starting {name}")
                cases.append(Case(name, mode, strict, d, size))
            for case in cases:  # a first small fetch each: sessions up, flows open
                case.fetch(size)
                case.mbps.clear()
                case.cpu.clear()
            for i in range(a.repeat):  # taking turns: a busy machine disturbs each alike
                for case in cases:
                    case.fetch(size)
                    say(f"run {i + 1}/{a.repeat} {case.name}: {case.mbps[-1]:.1f} MB/s, "
                        f"{case.cpu[-1] * 1000:.1f} ms CPU per MB")
            strict_drops = next(c for c in cases if c.strict).lab.tracker_drops(
                next(c for c in cases if c.strict).topo.router)
        finally:
            for case in cases:
                case.close()
    ref = statistics.median(cases[0].mbps)
    print(f"\n{a.size_mb} MB downloads through client - router - server, {a.repeat} runs each, "
          f"taking turns (MB/s: median, min-max; CPU ms per MB of both paqet processes)")
    print(f"{'':<28}{'median':>8}{'min':>8}{'max':>8}{'vs stateless':>14}{'CPU ms/MB':>11}")
    for c in cases:
        med = statistics.median(c.mbps)
        print(f"{c.name:<28}{med:>8.1f}{min(c.mbps):>8.1f}{max(c.mbps):>8.1f}"
              f"{med / ref * 100:>13.0f}%{statistics.median(c.cpu) * 1000:>11.1f}")
    print(f"strict router drops over all runs: {strict_drops}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
