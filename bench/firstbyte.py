"""Time to the first byte of a 1 KiB fetch on a long path (issue 18): client and server
joined through tests/impair.py's relay (a fixed delay each way: RTT 100 ms by default), a new
connection per fetch, through our SOCKS5 proxy, our HTTP proxy (CONNECT and a plain
absolute-URI request), our TCP forward and kcptun's TCP forward (Debian's kcptun over UDP
through the same relay), in fast3, fast and normal. Prints medians and p90 in RTT units and
the path's own RTT (a TCP handshake through the relay), measured in the same run.

Fetches take turns (one of each path per round, the order reversed every other round), one
at a time with a pause between them (--gap: the previous fetch's last segments and ACKs
have landed, so each request is a lone one, as a page's first request is). The clock starts
at the application's connect() to the local proxy or forward and stops at the first byte
of the response; the whole response is read and checked.

    sudo .venv/bin/python bench/firstbyte.py                   # 25 rounds, fast3 fast normal
    sudo .venv/bin/python bench/firstbyte.py --rounds 5 --modes fast
    sudo /tmp/base/.venv/bin/python bench/firstbyte.py         # another tree's paqet: the
        # paqet processes run with the interpreter that runs this file (its installed paqet)

Needs root (namespaces, raw sockets) and kcptun (apt-get install kcptun).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

KCP_PORT = 29900
TARGET_PORT = 8000
SOCKS, SOCKS_WAIT, HTTP, FWD, KCPTUN = 1080, 1082, 8080, 8081, 8082
BODY = 1024
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % BODY
            + bytes(range(256)) * (BODY // 256))
PATHS = ("socks5", "http-connect", "http-plain", "forward", "kcptun-forward")


def say(msg: str) -> None:
    print(f"[firstbyte {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the target (run in the server namespace) -------------------------------------------------

async def serve(port: int) -> None:
    """Answer each connection's request head with RESPONSE, then close."""
    async def handle(reader, writer):
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()
    srv = await asyncio.start_server(handle, "0.0.0.0", port)
    print("serving", flush=True)
    async with srv:
        await srv.serve_forever()


# -- the fetches (run in the client namespace) ------------------------------------------------

def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed early")
        out += chunk
    return out


def _request(host: str, port: int, absolute: bool = False) -> bytes:
    target = f"http://{host}:{port}/" if absolute else "/"
    return f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def fetch(path: str, host: str, port: int) -> float:
    """Seconds from connect() to the first byte of the response (raises on any fault)."""
    local = {"socks5": SOCKS, "socks5-wait_dial": SOCKS_WAIT, "http-connect": HTTP,
             "http-plain": HTTP, "forward": FWD, "kcptun-forward": KCPTUN}[path]
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", local), timeout=10)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if path.startswith("socks5"):
            s.sendall(b"\x05\x01\x00")
            if _recv_exact(s, 2) != b"\x05\x00":
                raise ConnectionError("SOCKS5 method refused")
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
            reply = _recv_exact(s, 10)
            if reply[1] != 0:
                raise ConnectionError(f"SOCKS5 reply {reply[1]:#04x}")
            s.sendall(_request(host, port))
        elif path == "http-connect":
            s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("proxy closed")
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(head[:40].decode(errors="replace"))
            s.sendall(_request(host, port))
        elif path == "http-plain":
            s.sendall(_request(host, port, absolute=True))
        else:
            s.sendall(_request(host, port))
        first = s.recv(65536)
        t1 = time.perf_counter()
        if not first:
            raise ConnectionError("no response")
        data = first
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(RESPONSE[-BODY:]):
        raise ConnectionError(f"bad response ({len(data)} bytes)")
    return t1 - t0


def path_rtt(host: str, port: int, n: int = 10) -> float:
    """The path's RTT: median TCP handshake time to the target, through the relay."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection((host, port), timeout=10)
        times.append(time.perf_counter() - t0)
        s.close()
        time.sleep(0.05)
    return statistics.median(times)


def measure(host: str, port: int, paths: list[str], rounds: int, gap: float) -> dict:
    out = {p: [] for p in paths}
    errors = {p: [] for p in paths}
    rtt = path_rtt(host, port)
    for i in range(rounds):
        for p in (paths if i % 2 == 0 else paths[::-1]):
            time.sleep(gap)
            try:
                out[p].append(fetch(p, host, port))
            except (OSError, ConnectionError) as exc:
                errors[p].append(str(exc))
        print(f"round {i + 1}/{rounds}", file=sys.stderr, flush=True)
    return {"rtt": rtt, "times": out, "errors": errors}


# -- the tunnels ------------------------------------------------------------------------------

def ours(lab, topo, d, mode: str, wait_dial: bool):
    from paqetlab import Paqet, client_config, server_config
    target = f"{topo.server_ip4}:{TARGET_PORT}"
    socks = [{"listen": f"127.0.0.1:{SOCKS}"}]
    if wait_dial:
        socks.append({"listen": f"127.0.0.1:{SOCKS_WAIT}", "wait_dial": True})
    extra = {"socks5": socks, "http": [{"listen": f"127.0.0.1:{HTTP}"}]}
    fwd = [{"listen": f"127.0.0.1:{FWD}", "target": target, "protocol": "tcp"}]
    srv = Paqet(lab, topo.server, server_config(topo, mode=mode, level="info"), f"srv-{mode}", d)
    cli = Paqet(lab, topo.client, client_config(topo, mode=mode, level="info", forward=fwd,
                                                extra=extra), f"cli-{mode}", d)
    return [srv, cli]


def kcptun(lab, topo, mode: str):
    target = f"{topo.server_ip4}:{TARGET_PORT}"
    common = ["--key", "bench", "--crypt", "aes", "--mode", mode, "--mtu", "1350",
              "--nocomp", "--smuxver", "2", "--quiet"]
    return [lab.popen(topo.server, ["kcptun-server", "-l", f"{topo.server_ip4}:{KCP_PORT}", "-t",
                                    target, "--sndwnd", "1024", "--rcvwnd", "1024", *common],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            lab.popen(topo.client, ["kcptun-client", "-l", f"127.0.0.1:{KCPTUN}", "-r",
                                    f"{topo.server_ip4}:{KCP_PORT}", "--sndwnd", "128",
                                    "--rcvwnd", "512", *common],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]


def stop(lab, procs) -> None:
    for p in procs:
        if hasattr(p, "stop"):
            p.stop()
        elif p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    raw = [getattr(p, "proc", p) for p in procs]
    lab.procs = [p for p in lab.procs if p not in raw]


def run_mode(lab, topo, d, mode: str, args, paths: list[str]) -> dict:
    from paqetlab import PY, wait_port
    say(f"mode {mode}: starting our tunnel and kcptun's")
    procs = ours(lab, topo, d, mode, args.wait_dial) + kcptun(lab, topo, mode)
    try:
        for port in (SOCKS, HTTP, FWD, KCPTUN) + ((SOCKS_WAIT,) if args.wait_dial else ()):
            if not wait_port(lab, topo.client, port, timeout=30):
                raise RuntimeError(f"port {port} did not open:\n{procs[1].log()[-2000:]}")
        # warm up: sessions up, dialect and extensions known, every path answers once
        code = (f"import sys; sys.path.insert(0, {HERE!r}); import firstbyte as f, time\n"
                f"for p in {paths!r}:\n"
                f"  for i in range(100):\n"
                f"    try: f.fetch(p, {topo.server_ip4!r}, {TARGET_PORT}); break\n"
                f"    except Exception: time.sleep(0.2)\n"
                f"  else: raise SystemExit(p + ' does not answer')\n")
        r = lab.run(topo.client, PY, "-c", code, check=False, timeout=300)
        if r.returncode:
            raise RuntimeError(f"warm-up failed: {r.stdout}{r.stderr}")
        time.sleep(1.0)
        say(f"mode {mode}: {args.rounds} rounds of {len(paths)} fetches, {args.gap:g} s apart")
        p = lab.popen(topo.client, [PY, os.path.abspath(__file__), "--measure",
                                    topo.server_ip4, "--rounds", str(args.rounds), "--gap",
                                    str(args.gap), "--paths", ",".join(paths)],
                      stdout=subprocess.PIPE, stderr=None, text=True)
        out, _ = p.communicate(timeout=args.rounds * len(paths) * (args.gap + 12) + 120)
        lab.procs = [q for q in lab.procs if q is not p]
        return json.loads(out)
    finally:
        stop(lab, procs)


def q(times: list[float], f: float) -> float:
    s = sorted(times)
    return s[min(len(s) - 1, int(f * len(s)))]


def report(results: dict, rtt_ms: float, args) -> str:
    lines = [f"1 KiB fetch, time to first byte, new connection each; RTT {rtt_ms:g} ms nominal "
             f"(median in RTT units, p90 in brackets; {args.rounds} fetches per cell)", ""]
    modes = list(results)
    paths = list(next(iter(results.values()))["times"])
    lines.append(f"| path | " + " | ".join(modes) + " |")
    lines.append("|---|" + "---|" * len(modes))
    for p in paths:
        cells = []
        for m in modes:
            t = results[m]["times"][p]
            errs = len(results[m]["errors"][p])
            if not t:
                cells.append("failed")
                continue
            cell = f"{statistics.median(t) * 1000 / rtt_ms:.2f} ({q(t, 0.9) * 1000 / rtt_ms:.2f})"
            if errs:
                cell += f" {errs} errors"
            cells.append(cell)
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines.append("| path RTT (TCP handshake) | " + " | ".join(
        f"{results[m]['rtt'] * 1000 / rtt_ms:.2f}" for m in modes) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt-ms", type=float, default=100.0, help="round trip the relay adds")
    ap.add_argument("--rounds", type=int, default=25, help="fetches per path and mode")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between two fetches")
    ap.add_argument("--modes", default="fast3,fast,normal")
    ap.add_argument("--wait-dial", action="store_true",
                    help="also a SOCKS5 listener with wait_dial (not in older trees)")
    ap.add_argument("--json", metavar="PATH", help="write the raw times here")
    # internal: the target and the fetching client, run inside the namespaces
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--measure", metavar="HOST", help=argparse.SUPPRESS)
    ap.add_argument("--paths", default=",".join(PATHS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if args.measure:
        res = measure(args.measure, TARGET_PORT, args.paths.split(","), args.rounds, args.gap)
        print(json.dumps(res))
        return 0

    import netlab
    from impair import Relay, impaired_hosts
    from interop import kcptun as kcptun_peer
    from paqetlab import PY, tempdir, wait_port
    reason = netlab.available() or kcptun_peer.available()
    if reason:
        print(f"firstbyte: cannot run: {reason}", file=sys.stderr)
        return 1
    paths = list(PATHS)
    if args.wait_dial:
        paths.insert(1, "socks5-wait_dial")
    results = {}
    with netlab.NetLab() as lab, tempdir() as d:
        topo = impaired_hosts(lab)
        # kcptun's UDP: the end hosts compute checksums themselves (a veth leaves them to an
        # offload that the relay's frame copy does not finish)
        for ns, ifname in ((topo.client, topo.client_if), (topo.server, topo.server_if)):
            lab.run(ns, "ethtool", "-K", ifname, "tx", "off", check=False)
        relay = Relay(lab, topo, delay_ms=args.rtt_ms / 2)
        lab.popen(topo.server, [PY, os.path.abspath(__file__), "--serve", str(TARGET_PORT)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(lab, topo.server, TARGET_PORT, host=topo.server_ip4):
            print("firstbyte: the target did not start", file=sys.stderr)
            return 1
        say(f"path: relay with {args.rtt_ms / 2:g} ms each way; paqet from {PY}")
        try:
            for mode in args.modes.split(","):
                results[mode] = run_mode(lab, topo, d, mode, args, paths)
                say(f"mode {mode}: path RTT {results[mode]['rtt'] * 1000:.1f} ms; medians " +
                    ", ".join(f"{p} {statistics.median(t) * 1000:.1f} ms"
                              for p, t in results[mode]["times"].items() if t))
        finally:
            say(f"relay: {relay.stop()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print()
    print(report(results, args.rtt_ms, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
