"""Traffic for bench/wan.py and the relay's tests: a target server (run in the server
namespace) and the transfers (run in the client namespace), both plain TCP with a one-line
request, so the same target serves every tunnel and every direction.

    python tests/e2e/wan_traffic.py serve --port 8000
    python tests/e2e/wan_traffic.py run '{"flows": [...], "cap": 25, "probe": {...}}'
    python tests/e2e/wan_traffic.py warm '{"targets": [["127.0.0.1", 8081]], "timeout": 20}'

Requests (one line, then the transfer on the same connection):
    DOWN n    the server sends n bytes (a download)
    UP n      the client sends n bytes; the server (a sink that counts) answers with an
              8-byte count of the bytes received so far every REPORT bytes and at the end,
              so the client knows what arrived even when it stops early
    PING n    the server answers n bytes at once (the probe fetch)

`run` starts every flow at once (threads), each to its own host:port (a tunnel's forward),
stops each at its size or at the time cap, and prints one JSON line: per flow the bytes
delivered, the seconds taken, whether it was capped, and bytes delivered by the time the
first flow finished (for the share of two sessions); and the probe fetches' times. A probe
is a new connection that asks for PING 1024 while the bulk flows run: the first one `after`
seconds into the transfer, then every `every` seconds, `count` at most.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

CHUNK = 256 << 10
REPORT = 256 << 10
COUNT = struct.Struct("!Q")


# -- the server ----------------------------------------------------------------------------------

def _serve_one(c: socket.socket) -> None:
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = c.makefile("rb", buffering=0)
        line = b""
        while not line.endswith(b"\n") and len(line) < 100:
            b = f.read(1)
            if not b:
                return
            line += b
        verb, _, arg = line.decode("ascii", "replace").strip().partition(" ")
        n = int(arg or 0)
        if verb == "DOWN":
            block = memoryview(bytes(CHUNK))
            left = n
            while left > 0:
                k = min(left, CHUNK)
                c.sendall(block[:k])
                left -= k
        elif verb == "PING":
            c.sendall(b"p" * n)
        elif verb == "UP":
            buf = bytearray(CHUNK)
            got, next_report = 0, REPORT
            while got < n:
                k = c.recv_into(buf)
                if not k:
                    break
                got += k
                if got >= next_report:
                    c.sendall(COUNT.pack(got))
                    next_report = got + REPORT
            c.sendall(COUNT.pack(got))
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):   # until the client closes: nothing is cut short
            pass
    except OSError:
        pass
    finally:
        c.close()


def serve(port: int, host: str = "0.0.0.0") -> None:
    srv = socket.create_server((host, port), backlog=128, reuse_port=False)
    print(f"serving on {host}:{port}", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=_serve_one, args=(c,), daemon=True).start()


# -- the transfers -------------------------------------------------------------------------------

class Flow(threading.Thread):
    def __init__(self, host: str, port: int, direction: str, size: int, deadline: float,
                 t0: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.direction, self.size = host, port, direction, size
        self.deadline, self.t0 = deadline, t0
        self.done_bytes = 0          # delivered so far (down: received; up: the sink's count)
        self.end: float | None = None
        self.capped = False
        self.error = ""

    def run(self) -> None:
        try:
            with socket.create_connection((self.host, self.port), timeout=10) as c:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.direction == "down":
                    self._down(c)
                else:
                    self._up(c)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        if self.end is None:
            self.end = time.monotonic()

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def _down(self, c: socket.socket) -> None:
        c.sendall(f"DOWN {self.size}\n".encode())
        buf = bytearray(CHUNK)
        while self.done_bytes < self.size:
            left = self._left()
            if left <= 0:
                self.capped = True
                break
            c.settimeout(min(left, 30))
            try:
                k = c.recv_into(buf)
            except TimeoutError:
                continue
            if not k:
                self.error = f"closed after {self.done_bytes} bytes"
                break
            self.done_bytes += k
        self.end = time.monotonic()

    def _up(self, c: socket.socket) -> None:
        c.sendall(f"UP {self.size}\n".encode())
        stop = threading.Event()

        def reports():
            got = b""
            try:
                while True:
                    b = c.recv(4096)
                    if not b:
                        return
                    got += b
                    while len(got) >= COUNT.size:
                        (n,), got = COUNT.unpack(got[:COUNT.size]), got[COUNT.size:]
                        self.done_bytes = n
                        if n >= self.size:
                            self.end = time.monotonic()
                            stop.set()
            except OSError:
                return
            finally:
                stop.set()

        r = threading.Thread(target=reports, daemon=True)
        c.settimeout(None)
        r.start()
        block = memoryview(bytes(CHUNK))
        sent = 0
        c.settimeout(1.0)
        while sent < self.size and not stop.is_set():
            if self._left() <= 0:
                break
            try:
                sent += c.send(block[:min(CHUNK, self.size - sent)])
            except TimeoutError:
                continue
        stop.wait(max(0.0, self._left()))
        if self.done_bytes < self.size:
            self.capped = True
            self.end = time.monotonic()


def probe(host: str, port: int, n: int = 1024, timeout: float = 10.0) -> float | None:
    """Seconds from connect() to the n-th byte of a PING answer; None on failure."""
    t = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.sendall(f"PING {n}\n".encode())
            got = 0
            while got < n:
                b = c.recv(65536)
                if not b:
                    return None
                got += len(b)
            return time.monotonic() - t
    except OSError:
        return None


def run(spec: dict) -> dict:
    cap = float(spec.get("cap", 25))
    t0 = time.monotonic()
    flows = [Flow(f["host"], f["port"], f["dir"], int(f["size"]), t0 + cap, t0)
             for f in spec["flows"]]
    for f in flows:
        f.start()
    first_done: dict = {}
    probes: list = []
    p = spec.get("probe")
    next_probe = t0 + p["after"] if p else None
    # sample every flow's bytes until all end (bounded by the cap plus a margin)
    end_by = t0 + cap + 15
    while any(f.is_alive() for f in flows) and time.monotonic() < end_by:
        now = time.monotonic()
        if not first_done and any(not f.is_alive() for f in flows):
            first_done = {"t": now - t0, "bytes": [f.done_bytes for f in flows]}
        if next_probe is not None and now >= next_probe and len(probes) < p["count"]:
            dt = probe(p["host"], p["port"], p.get("bytes", 1024))
            if any(f.is_alive() for f in flows):   # only probes that overlapped the bulk
                probes.append(dt)
            next_probe = time.monotonic() + p["every"]
            continue
        time.sleep(0.02)
    for f in flows:
        f.join(1)
    if not first_done:
        first_done = {"t": time.monotonic() - t0, "bytes": [f.done_bytes for f in flows]}
    return {
        "flows": [{"bytes": f.done_bytes, "seconds": (f.end or time.monotonic()) - t0,
                   "capped": f.capped, "error": f.error, "dir": f.direction, "port": f.port}
                  for f in flows],
        "elapsed": max((f.end or time.monotonic()) for f in flows) - t0,
        "first_done": first_done,
        "probes": probes,
    }


def warm(spec: dict) -> dict:
    """Probe each host:port until one answers (the tunnel is up end to end), bounded."""
    out = {}
    for host, port in spec["targets"]:
        end = time.monotonic() + float(spec.get("timeout", 20))
        dt = None
        while dt is None and time.monotonic() < end:
            dt = probe(host, port, 1024, timeout=5)
            if dt is None:
                time.sleep(0.1)
        out[f"{host}:{port}"] = dt
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8000
        serve(port)
        return 0
    if len(argv) == 2 and argv[0] in ("run", "warm"):
        fn = run if argv[0] == "run" else warm
        print(json.dumps(fn(json.loads(argv[1]))), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
