"""A userspace network impairment for tests (this kernel has no netem): an L2 relay in a
"router" namespace that bridges two veths with AF_PACKET sockets, delaying every frame by a
fixed time in each direction and optionally dropping a share of them at random.

    with NetLab() as lab:
        topo = impaired_hosts(lab)                 # client - relay - server, one subnet
        relay = Relay(lab, topo, delay_ms=50, loss=0.3)
        ...
        relay.stop()                               # by PID; prints its counters

The relay is its own process (`python tests/impair.py IF_A IF_B --delay-ms D --loss P`):
frames are queued per direction (bounded: beyond `--queue` frames, new ones are dropped and
counted) and sent when due; it stops on SIGTERM/SIGINT or after `--max-seconds`, then prints
one line of counters. Constant delay keeps the order of frames. Timing is as good as a
Python loop on a loaded machine: about a millisecond.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
MAX_FRAME = 65536


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # not our own sends back
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def relay(if_a: str, if_b: str, delay: float, loss: float, queue: int, max_seconds: float,
          seed: int | None = None) -> dict:
    rng = random.Random(seed)
    a, b = _open(if_a), _open(if_b)
    # per direction: frames waiting (due time, frame), sent to the other socket
    pipes = {a: (b, collections.deque()), b: (a, collections.deque())}
    c = dict(frames=0, relayed=0, dropped=0, overflow=0, send_errors=0)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    end = time.monotonic() + max_seconds
    print(f"relay {if_a} <-> {if_b} delay {delay * 1000:g} ms loss {loss:.0%} pid {os.getpid()}",
          flush=True)
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        due = [q[0][0] for _, q in pipes.values() if q]
        wait = max(0.0, min(due) - now) if due else 0.2
        try:
            ready, _, _ = select.select([a, b], [], [], min(wait, 0.2))
        except InterruptedError:
            continue
        now = time.monotonic()
        for s in ready:
            out, q = pipes[s]
            for _ in range(256):  # drain what is ready, bounded per wakeup
                try:
                    frame = s.recv(MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                c["frames"] += 1
                if loss and rng.random() < loss:
                    c["dropped"] += 1
                elif len(q) >= queue:
                    c["overflow"] += 1
                else:
                    q.append((now + delay, frame))
        now = time.monotonic()
        for s, (out, q) in pipes.items():
            while q and q[0][0] <= now:
                _, frame = q.popleft()
                try:
                    out.send(frame)
                    c["relayed"] += 1
                except OSError:
                    c["send_errors"] += 1
    a.close()
    b.close()
    return c


# -- test helpers ----------------------------------------------------------------------------

def impaired_hosts(lab, mtu: int = 1500):
    """client <-> relay <-> server: the client and server share one subnet (198.18.0.1/.2,
    2001:2:0:1::1/::2) as in `two_hosts`, but every frame crosses the relay namespace's two
    veths, which have no addresses (the relay is the only thing between them). Offloads are
    off on every veth end so frames never exceed the MTU."""
    from netlab import Topology
    c, r, s = lab.add_ns("c"), lab.add_ns("r"), lab.add_ns("s")
    lab.sysctl(r, "net.ipv6.conf.all.disable_ipv6", "1")
    lab.sysctl(r, "net.ipv6.conf.default.disable_ipv6", "1")
    left = lab.link(c, r, ["198.18.0.1/24", "2001:2:0:1::1/64"], [], mtu=mtu)
    right = lab.link(r, s, [], ["198.18.0.2/24", "2001:2:0:1::2/64"], mtu=mtu)
    for ns, ifname in ((c, left.if_a), (r, left.if_b), (r, right.if_a), (s, right.if_b)):
        lab.run(ns, "ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off",
                check=False)
    return Topology(c, s, left.if_a, right.if_b, "198.18.0.1", "198.18.0.2",
                    "2001:2:0:1::1", "2001:2:0:1::2", router=r, router_client_if=left.if_b,
                    router_server_if=right.if_a)


class Relay:
    """The relay process in the topology's router namespace (stopped by PID)."""

    def __init__(self, lab, topo, delay_ms: float = 0.0, loss: float = 0.0, queue: int = 4096,
                 max_seconds: float = 600.0, seed: int | None = None) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), topo.router_client_if,
               topo.router_server_if, "--delay-ms", str(delay_ms), "--loss", str(loss),
               "--queue", str(queue), "--max-seconds", str(max_seconds)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        self.proc = lab.popen(topo.router, cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        self.banner = self.proc.stdout.readline()  # printed once the sockets are bound
        if not self.banner.startswith("relay "):
            raise RuntimeError(f"relay did not start: {self.banner}{self.proc.stdout.read()}")

    def stop(self) -> str:
        """SIGTERM by PID; returns the relay's counters line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        return out.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="L2 relay with delay and loss between two interfaces")
    p.add_argument("if_a")
    p.add_argument("if_b")
    p.add_argument("--delay-ms", type=float, default=0.0, help="added delay each way")
    p.add_argument("--loss", type=float, default=0.0, help="share of frames dropped (0-1)")
    p.add_argument("--queue", type=int, default=4096, help="frames queued per direction at most")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    if not 0 <= a.loss <= 1 or a.delay_ms < 0 or a.queue < 1:
        p.error("--loss in 0-1, --delay-ms >= 0, --queue >= 1")
    c = relay(a.if_a, a.if_b, a.delay_ms / 1000, a.loss, a.queue, a.max_seconds, a.seed)
    print(" ".join(f"{k}={v}" for k, v in c.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
