"""One server process against many clients: 64 client sessions x 16 concurrent streams,
ours and kcptun's (Go kcp-go + smux) in the same run.

Four client processes (`transport.conn: 16` each, kcptun's `--conn 16`: the server sees 64
sessions from 64 source ports) in one namespace, one server in another, joined by a veth;
each client exposes a TCP forward to a source in the server namespace. A load generator in
the client namespace opens 256 connections per client process at once (16 streams per
session, 1024 in all), each downloading --kb KiB and checking every byte; then a second wave
in which each sends --kb KiB up and reads it back (echo). It prints per kind the total MB/s,
per-transfer completion times (p50/p99), the server's CPU share and RSS and how many
transfers arrived intact, and writes JSON to bench/results/. A figure, not a test: needs root.
Everything shares this machine's cores: the figures are for comparing, not absolute.

    sudo .venv/bin/python bench/scale.py [--clients 4] [--conn 16] [--streams 256] [--kb 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import netlab  # noqa: E402
from tunnels import cpu_seconds, rss_mb, say  # noqa: E402
from paqetlab import PY, Paqet, client_config, server_config, tempdir, wait_port  # noqa: E402

SOURCE_PORT = 8100

# A blob source: after a line "N\n" it sends N pseudo-random bytes (the same for everyone)
# and closes; after "E\n" it echoes until EOF.
SOURCE = textwrap.dedent("""
    import asyncio, hashlib, sys
    BLOCK = hashlib.sha256(b"scale").digest() * 2048
    async def handle(r, w):
        try:
            line = (await r.readline()).strip()
            if line == b"E":
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            else:
                left = int(line)
                while left > 0:
                    chunk = BLOCK[:min(left, len(BLOCK))]
                    w.write(chunk)
                    left -= len(chunk)
                    await w.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            w.close()
    async def main():
        await asyncio.start_server(handle, None, int(sys.argv[1]), backlog=4096)
        await asyncio.Event().wait()
    asyncio.run(main())
""")

# The load generator: N connections per forward port at once; prints one JSON line.
LOAD = textwrap.dedent("""
    import asyncio, hashlib, json, socket, struct, sys, time
    host, port, nbytes, per_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    fwd_ports = [int(p) for p in sys.argv[5].split(",")]
    mode = sys.argv[6]
    BLOCK = hashlib.sha256(b"scale").digest() * 2048
    EXPECT = (BLOCK * (nbytes // len(BLOCK) + 1))[:nbytes]
    want = hashlib.sha256(EXPECT).hexdigest()
    async def one(sp):
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", sp)
        if mode == "down":
            w.write(b"%d\\n" % nbytes); await w.drain()
            h = hashlib.sha256(); n = 0
            while data := await r.read(65536):
                h.update(data); n += len(data)
            ok = n == nbytes and h.hexdigest() == want
        else:
            payload = EXPECT
            w.write(b"E\\n")
            async def send():
                for i in range(0, nbytes, 16384):
                    w.write(payload[i:i + 16384]); await w.drain()
            st = asyncio.ensure_future(send())
            got = bytearray()
            while len(got) < nbytes:
                data = await r.read(65536)
                if not data:
                    break
                got += data
            await st
            ok = bytes(got) == payload
        w.close()
        return (time.monotonic() - t0, ok)
    async def main():
        t0 = time.monotonic()
        tasks = [one(sp) for sp in fwd_ports for _ in range(per_port)]
        res = await asyncio.gather(*[asyncio.wait_for(t, 300) for t in tasks], return_exceptions=True)
        wall = time.monotonic() - t0
        times = sorted(r[0] for r in res if isinstance(r, tuple))
        good = sum(1 for r in res if isinstance(r, tuple) and r[1])
        errors = [repr(r) for r in res if not isinstance(r, tuple)][:5]
        print(json.dumps(dict(wall=wall, n=len(res), ok=good, times=times, errors=errors)))
    asyncio.run(main())
""")


KCP_PORT = 29900


def start(kind, lab, topo, d, a):
    """Server and client processes of one kind; returns (server proc, client procs, ports)."""
    target = f"{topo.server_ip4}:{SOURCE_PORT}"
    ports = [7100 + i for i in range(a.clients)]
    if kind == "paqet":
        lvl = os.environ.get("LVL", "warn")
        srv = Paqet(lab, topo.server, server_config(topo, mode=a.mode, level=lvl), "srv", d)
        clients = [Paqet(lab, topo.client, client_config(
            topo, socks_port=1080 + i, mode=a.mode, level=lvl, conn=a.conn,
            forward=[{"listen": f"127.0.0.1:{p}", "target": target, "protocol": "tcp"}]),
            f"cli{i}", d) for i, p in enumerate(ports)]
        return srv.proc, [c.proc for c in clients], ports, [srv] + clients
    common = ["--key", "bench", "--crypt", "aes", "--mode", a.mode, "--mtu", "1350", "--nocomp",
              "--smuxver", "2", "--quiet"]
    srv = lab.popen(topo.server, ["kcptun-server", "-l", f"{topo.server_ip4}:{KCP_PORT}", "-t",
                                  target, "--sndwnd", "1024", "--rcvwnd", "1024", *common],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = [lab.popen(topo.client, ["kcptun-client", "-l", f"127.0.0.1:{p}", "-r",
                                       f"{topo.server_ip4}:{KCP_PORT}", "--conn", str(a.conn),
                                       "--sndwnd", "128", "--rcvwnd", "512", *common],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    return srv, clients, ports, []


def measure(kind, lab, topo, d, a, load, nbytes):
    srv, clients, ports, paqets = start(kind, lab, topo, d, a)
    for p in ports:
        if not wait_port(lab, topo.client, p, timeout=30):
            raise SystemExit(f"{kind}: the client forward on port {p} did not come up")
    time.sleep(1.0)
    pid = srv.pid
    out = dict(idle_rss_mb=rss_mb(pid))
    for mode in ("down", "up"):
        c0, t0 = cpu_seconds(pid), time.monotonic()
        cc0 = sum(cpu_seconds(c.pid) for c in clients)
        r = lab.run(topo.client, PY, load, topo.server_ip4, str(SOURCE_PORT), str(nbytes),
                    str(a.streams), ",".join(map(str, ports)), mode, timeout=400, check=False)
        dt = time.monotonic() - t0
        cpu, ccpu = cpu_seconds(pid) - c0, sum(cpu_seconds(c.pid) for c in clients) - cc0
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            print(r.stdout[-2000:], r.stderr[-2000:])
            raise SystemExit("the load generator failed")
        times = res["times"] or [float("nan")]
        x = out[mode] = dict(streams=res["n"], ok=res["ok"], wall_s=res["wall"],
                             mb_s=res["ok"] * nbytes / 1e6 / res["wall"],
                             p50_s=statistics.median(times),
                             p99_s=times[min(len(times) - 1, int(len(times) * 0.99))],
                             server_cpu_share=cpu / dt, clients_cpu_share=ccpu / dt,
                             server_rss_mb=rss_mb(pid), errors=res["errors"])
        say(f"  {kind} {mode}: {x['ok']}/{x['streams']} intact, {x['mb_s']:.1f} MB/s in all, "
            f"per transfer p50 {x['p50_s']:.2f} s p99 {x['p99_s']:.2f} s; CPU server "
            f"{x['server_cpu_share']:.0%} of a core, clients {x['clients_cpu_share']:.0%}; "
            f"server RSS {x['server_rss_mb']:.0f} MB (idle {out['idle_rss_mb']:.0f})")
        if x["errors"]:
            say(f"    errors: {x['errors']}")
    for p in paqets:
        errs = [ln for ln in p.log().splitlines() if "ERROR" in ln or "WARN" in ln]
        if errs:
            say(f"  {os.path.basename(p.path)}: {len(errs)} warnings/errors, e.g. {errs[:2]}")
    for p in [*clients, srv]:
        if p.poll() is None:
            p.terminate()
    for p in [*clients, srv]:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    lab.procs = [p for p in lab.procs if p not in (srv, *clients)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--conn", type=int, default=16, help="sessions per client process")
    ap.add_argument("--streams", type=int, default=256, help="concurrent streams per client process")
    ap.add_argument("--kb", type=int, default=256, help="bytes per transfer, KiB")
    ap.add_argument("--mode", default="fast3")
    ap.add_argument("--only", choices=("paqet", "kcptun"), help="run one kind only")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    nbytes = a.kb << 10
    reason = netlab.available()
    if reason:
        print(f"bench/scale.py: {reason}", file=sys.stderr)
        return 2
    kinds = [a.only] if a.only else ["paqet", "kcptun"]
    results = {}
    with netlab.NetLab() as lab, tempdir() as d:
        topo = lab.two_hosts()
        src = os.path.join(d, "source.py")
        with open(src, "w") as f:
            f.write(SOURCE)
        lab.popen(topo.server, [PY, src, str(SOURCE_PORT)])
        wait_port(lab, topo.server, SOURCE_PORT, host=topo.server_ip4)
        load = os.path.join(d, "load.py")
        with open(load, "w") as f:
            f.write(LOAD)
        say(f"{a.clients} client processes x {a.conn} sessions = {a.clients * a.conn} sessions, "
            f"{a.streams // a.conn} streams each ({a.clients * a.streams} at once), "
            f"{a.kb} KiB per transfer, mode {a.mode}")
        for kind in kinds:
            results[kind] = measure(kind, lab, topo, d, a, load, nbytes)
    if len(results) == 2:
        for mode in ("down", "up"):
            o, k = results["paqet"][mode], results["kcptun"][mode]
            say(f"{mode}: ours/kcptun MB/s {o['mb_s'] / k['mb_s']:.2f}, p50 time "
                f"{o['p50_s'] / k['p50_s']:.2f}x, server CPU share {o['server_cpu_share']:.0%} vs "
                f"{k['server_cpu_share']:.0%}, server RSS {o['server_rss_mb']:.0f} vs "
                f"{k['server_rss_mb']:.0f} MB")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(dict(args=vars(a), results=results), f, indent=1)
    say(f"wrote {path}")
    ok = all(x[m]["ok"] == x[m]["streams"] for x in results.values() for m in ("down", "up"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
