"""A userspace network impairment for tests and benchmarks (this kernel has no netem): an L2
relay in a "router" namespace that bridges two veths with AF_PACKET sockets. Each direction
is a path of its own (`Line`):

    random loss at entry -> drop-tail bottleneck buffer (frames) -> line rate (token bucket)
    -> constant delay (one FIFO, due at line exit + delay: order is kept) -> the other veth

    with NetLab() as lab:
        topo = impaired_hosts(lab)                 # client - relay - server, one subnet
        relay = Relay(lab, topo, delay_ms=50, loss=0.01, rate_mbit=100, buffer=500)
        relay.counters()                           # {"up": {...}, "down": {...}} so far
        relay.stop()                               # by PID; returns its counters line

The relay is its own process (`python tests/impair.py IF_A IF_B --delay-ms D --loss P
--rate-mbit R --buffer N`; every impairment takes one value for both directions or two,
"A>B,B>A"). Counters per direction: frames in, random drops, buffer overflows, frames the
relay's own holding cap (`--queue`) refused, relayed, send errors. SIGUSR1 prints them as one
JSON line; at the end (SIGTERM/SIGINT or `--max-seconds`) it prints one line of totals
(key=value) and one JSON line.

The line rate counts Ethernet frames (14-byte header and all, no preamble or FCS). The
bucket may lag the clock by `DEPTH` (2 ms): a loop that wakes up late sends what the line
could have sent meanwhile instead of losing that time for good (docs/performance.md, "Long
paths"). Timing is as good as a Python loop on a loaded machine: about a millisecond.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue as queuelib
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
MAX_FRAME = 65536
#: seconds the token bucket may lag the clock (its depth: DEPTH x rate bytes may pass at once)
DEPTH = 0.002
#: frames read from one socket per wakeup at most (the other direction gets its turn)
BATCH = 64
COUNTERS = ("frames", "bytes", "dropped", "overflow", "queue_full", "relayed", "send_errors")


class Line:
    """One direction of the path, without I/O: `admit(now, frame)` at arrival, then the
    frames in `held` ((due, frame), oldest first) leave when due. The clock is the
    caller's (seconds, monotonic).

    rate_bps 0 = no line rate (then `buffer` does not apply); buffer = frames that may wait
    for the line (the one being sent included); queue = frames held in all (waiting for the
    line or in the delay), a bound on the relay's memory."""

    def __init__(self, delay: float = 0.0, loss: float = 0.0, rate_bps: float = 0.0,
                 buffer: int = 1 << 30, queue: int = 1 << 30, depth: float = DEPTH,
                 rng: random.Random | None = None) -> None:
        if delay < 0 or not 0 <= loss <= 1 or rate_bps < 0 or buffer < 1 or queue < 1:
            raise ValueError("delay >= 0, loss in 0-1, rate >= 0, buffer and queue >= 1")
        self.delay, self.loss, self.buffer, self.queue, self.depth = (delay, loss, buffer,
                                                                      queue, depth)
        self.byte_time = 8.0 / rate_bps if rate_bps else 0.0
        self.rng = rng or random.Random()
        self.line_free = float("-inf")  # when the line has sent everything admitted
        self.exits: collections.deque = collections.deque()  # line exit times, not yet past
        self.held: collections.deque = collections.deque()   # (due, frame)
        self.frames = self.bytes = self.dropped = self.overflow = self.queue_full = 0
        self.relayed = self.send_errors = 0

    def admit(self, now: float, frame) -> bool:
        """A frame arrives: dropped at random, refused by a full buffer (or holding cap), or
        held until its due time. True when held."""
        self.frames += 1
        n = len(frame)
        self.bytes += n
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return False
        held = self.held
        if len(held) >= self.queue:
            self.queue_full += 1
            return False
        if self.byte_time:
            exits = self.exits
            while exits and exits[0] <= now:
                exits.popleft()
            if len(exits) >= self.buffer:
                self.overflow += 1
                return False
            start = self.line_free
            if start < now - self.depth:
                start = now - self.depth
            self.line_free = done = start + n * self.byte_time
            exits.append(done)
            held.append((done + self.delay, frame))
        else:
            held.append((now + self.delay, frame))
        return True

    def waiting(self, now: float) -> int:
        """Frames in the bottleneck buffer (not yet through the line) at `now`."""
        return sum(1 for t in self.exits if t > now)

    def next_due(self) -> float | None:
        return self.held[0][0] if self.held else None

    def pop_due(self, now: float) -> list:
        """The frames due by `now`, oldest first (the relay inlines this loop)."""
        out, held = [], self.held
        while held and held[0][0] <= now:
            out.append(held.popleft()[1])
        return out

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in COUNTERS}


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # not our own sends back
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def _pair(v, cast=float) -> tuple:
    """One value for both directions or "A>B,B>A" (also a 2-tuple)."""
    if isinstance(v, (tuple, list)):
        a, b = v
    elif isinstance(v, str) and "," in v:
        a, b = v.split(",", 1)
    else:
        a = b = v
    return cast(a), cast(b)


def relay(if_a: str, if_b: str, delay, loss, queue, max_seconds: float,
          seed: int | None = None, rate_bps=0.0, buffer=1 << 30) -> dict:
    """Run until SIGTERM/SIGINT or max_seconds; returns {"ab": counters, "ba": counters}.
    delay (s), loss (0-1), queue, rate_bps, buffer: one value or (a>b, b>a)."""
    rng = random.Random(seed)
    d, lo, q, r, bu = (_pair(delay), _pair(loss), _pair(queue, int), _pair(rate_bps),
                       _pair(buffer, int))
    a, b = _open(if_a), _open(if_b)
    ab = Line(d[0], lo[0], r[0], bu[0], q[0], rng=rng)
    ba = Line(d[1], lo[1], r[1], bu[1], q[1], rng=rng)
    # per receiving socket: its direction and where that direction's frames go
    paths = ((a, ab, b), (b, ba, a))
    stop = []

    def counters() -> dict:
        return {"ab": ab.counters(), "ba": ba.counters(), "if_a": if_a, "if_b": if_b}

    def dump(*_):
        sys.stdout.write(json.dumps({"relay": counters(), "t": time.monotonic()}) + "\n")
        sys.stdout.flush()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, dump)
    clock = time.monotonic
    end = clock() + max_seconds
    fds = [a, b]
    print(f"relay {if_a} <-> {if_b} delay {d[0] * 1000:g}/{d[1] * 1000:g} ms loss "
          f"{lo[0]:.1%}/{lo[1]:.1%} rate {r[0] / 1e6:g}/{r[1] / 1e6:g} Mbit/s buffer "
          f"{bu[0]}/{bu[1]} pid {os.getpid()}", flush=True)
    while not stop:
        now = clock()
        if now >= end:
            break
        # send what is due (the loop of Line.pop_due, inlined: the relay's hot path)
        wait = 0.2
        for _, line, out in paths:
            held = line.held
            if held:
                while held and held[0][0] <= now:
                    try:
                        out.send(held.popleft()[1])
                        line.relayed += 1
                    except OSError:
                        line.send_errors += 1
                if held:
                    w = held[0][0] - now
                    if w < wait:
                        wait = w
        try:
            ready, _, _ = select.select(fds, [], [], wait if wait > 0 else 0)
        except InterruptedError:
            continue
        if not ready:
            continue
        now = clock()
        for s, line, _ in paths:
            if s not in ready:
                continue
            admit, recv = line.admit, s.recv
            for _ in range(BATCH):
                try:
                    frame = recv(MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                admit(now, frame)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the final lines are printed by main()
    a.close()
    b.close()
    return counters()


# -- test and bench helpers --------------------------------------------------------------------

def impaired_hosts(lab, mtu: int = 1500):
    """client <-> relay <-> server: the client and server share one subnet (198.18.0.1/.2,
    2001:2:0:1::1/::2) as in `two_hosts`, but every frame crosses the relay namespace's two
    veths, which have no addresses (the relay is the only thing between them). Offloads are
    off on every veth end so frames never exceed the MTU, and tx checksum offload is off on
    the end hosts' veths so the kernel's own UDP and TCP frames carry full checksums (a
    frame copied by the relay loses the veth's "checksum to be done" mark)."""
    from netlab import Topology
    c, r, s = lab.add_ns("c"), lab.add_ns("r"), lab.add_ns("s")
    lab.sysctl(r, "net.ipv6.conf.all.disable_ipv6", "1")
    lab.sysctl(r, "net.ipv6.conf.default.disable_ipv6", "1")
    left = lab.link(c, r, ["198.18.0.1/24", "2001:2:0:1::1/64"], [], mtu=mtu)
    right = lab.link(r, s, [], ["198.18.0.2/24", "2001:2:0:1::2/64"], mtu=mtu)
    for ns, ifname in ((c, left.if_a), (r, left.if_b), (r, right.if_a), (s, right.if_b)):
        lab.run(ns, "ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off",
                check=False)
    for ns, ifname in ((c, left.if_a), (s, right.if_b)):
        lab.run(ns, "ethtool", "-K", ifname, "tx", "off", check=False)
    return Topology(c, s, left.if_a, right.if_b, "198.18.0.1", "198.18.0.2",
                    "2001:2:0:1::1", "2001:2:0:1::2", router=r, router_client_if=left.if_b,
                    router_server_if=right.if_a)


def _arg(v) -> str:
    """A CLI value for one impairment: one number, or "A>B,B>A"."""
    if isinstance(v, (tuple, list)):
        return f"{v[0]},{v[1]}"
    return str(v)


class Relay:
    """The relay process in the topology's router namespace (stopped by PID). Directions:
    "up" is client -> server (the router's client-side veth to its server-side one),
    "down" the other way; every impairment takes one value or (up, down)."""

    def __init__(self, lab, topo, delay_ms=0.0, loss=0.0, queue=4096,
                 max_seconds: float = 600.0, seed: int | None = None, rate_mbit=0.0,
                 buffer=None) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), topo.router_client_if,
               topo.router_server_if, "--delay-ms", _arg(delay_ms), "--loss", _arg(loss),
               "--queue", _arg(queue), "--max-seconds", str(max_seconds),
               "--rate-mbit", _arg(rate_mbit)]
        if buffer is not None:
            cmd += ["--buffer", _arg(buffer)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        self.proc = lab.popen(topo.router, cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        self.banner = self.proc.stdout.readline()  # printed once the sockets are bound
        if not self.banner.startswith("relay "):
            raise RuntimeError(f"relay did not start: {self.banner}{self.proc.stdout.read()}")
        self._json: queuelib.Queue = queuelib.Queue()
        self._text: list[str] = []
        self.final: dict | None = None  # the last counters, once stopped
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    self._json.put(json.loads(line))
                    continue
                except ValueError:
                    pass
            self._text.append(line)

    @staticmethod
    def _directions(msg: dict) -> dict:
        c = msg["relay"]
        return {"up": c["ab"], "down": c["ba"]}

    def counters(self, timeout: float = 5.0) -> dict:
        """The counters so far: {"up": {...}, "down": {...}} (asks the relay with SIGUSR1)."""
        while not self._json.empty():
            self._json.get_nowait()
        self.proc.send_signal(signal.SIGUSR1)
        return self._directions(self._json.get(timeout=timeout))

    def stop(self) -> str:
        """SIGTERM by PID; returns the relay's totals line (key=value); the counters per
        direction are in `.final` afterwards."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._reader.join(5)
        last = None
        while not self._json.empty():
            last = self._json.get_nowait()
        if last is not None:
            self.final = self._directions(last)
        return "".join(self._text).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="L2 relay between two interfaces with loss, a bottleneck buffer, a line "
                    "rate and delay per direction. Values: one for both directions, or "
                    "'A>B,B>A'. SIGUSR1 prints the counters as JSON.")
    p.add_argument("if_a")
    p.add_argument("if_b")
    p.add_argument("--delay-ms", default="0", help="added delay each way")
    p.add_argument("--loss", default="0", help="share of frames dropped at random (0-1)")
    p.add_argument("--rate-mbit", default="0",
                   help="line rate, Mbit/s of Ethernet frames (0 = no limit)")
    p.add_argument("--buffer", default=str(1 << 30),
                   help="frames that may wait for the line; more are dropped (overflow)")
    p.add_argument("--queue", default="4096",
                   help="frames held per direction at most (buffer and delay): memory bound")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    try:
        delay, loss = _pair(a.delay_ms), _pair(a.loss)
        rate, buffer, queue = _pair(a.rate_mbit), _pair(a.buffer, int), _pair(a.queue, int)
    except ValueError:
        p.error("every impairment is a number or two separated by a comma")
    if (not all(0 <= x <= 1 for x in loss) or min(delay) < 0 or min(queue) < 1
            or min(rate) < 0 or min(buffer) < 1):
        p.error("--loss in 0-1, --delay-ms and --rate-mbit >= 0, --queue and --buffer >= 1")
    c = relay(a.if_a, a.if_b, (delay[0] / 1000, delay[1] / 1000), loss, queue, a.max_seconds,
              a.seed, (rate[0] * 1e6, rate[1] * 1e6), buffer)
    tot = {k: c["ab"][k] + c["ba"][k] for k in ("frames", "relayed", "dropped", "overflow",
                                                 "queue_full", "send_errors")}
    print(" ".join(f"{k}={v}" for k, v in tot.items()), flush=True)
    print(json.dumps({"relay": c, "t": time.monotonic(), "final": True}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
