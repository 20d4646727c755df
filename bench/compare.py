"""paqet (ours) against Debian's kcptun (Go kcp-go + smux over UDP), side by side in one run.

Builds network namespaces (a direct veth, and client-router-server with nftables loss),
runs both tunnels with the same mode, cipher, mtu and windows, and prints our/kcptun ratios
of: bulk download MB/s (median of alternating runs), CPU seconds per MB of both ends,
1 KiB fetch latency p50/p90 (a new connection each; both tunnels up, fetches taking
turns), 10 parallel downloads, RSS idle and
with 1000 open streams, and start-up to first byte. Writes JSON and a PNG chart to
bench/results/. Needs root (namespaces, raw sockets).

    sudo .venv/bin/python bench/compare.py              # the full run (200 MB x 5)
    sudo .venv/bin/python bench/compare.py --quick      # a smaller one (50 MB x 3)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import netlab  # noqa: E402
from paqetlab import PY, http_server, make_blob, tempdir, wait_port  # noqa: E402
from tunnels import Side, cannot_run, say  # noqa: E402


def _p50_p90(times):
    times = sorted(times)
    if not times:
        return None, None
    return times[len(times) // 2], times[int(len(times) * 0.9) - 1 if len(times) >= 10 else -1]


def latency_interleaved(sides, n):
    """n 1 KiB fetches through each tunnel, both running, taking turns (ours, theirs,
    theirs, ours, ...): the machine's slow drifts (other tenants, frequency) fall on both
    alike, where two blocks of n fetches one after the other could each catch a different
    phase (on this machine two such runs gave 1.21x and 1.51x). {kind: (p50, p90)}."""
    times = {k: [] for k in sides}
    kinds = list(sides)
    for i in range(n):
        for k in (kinds if i % 2 == 0 else kinds[::-1]):
            r = sides[k].fetch("/small", timeout=10)
            if r:
                times[k].append(r[1] * 1000)
    return {k: _p50_p90(v) for k, v in times.items()}


def parallel(side, n, path, size):
    t0 = time.monotonic()
    procs = [subprocess.Popen(["ip", "netns", "exec", side.topo.client, "curl", "-sS", "-o",
                               "/dev/null", f"http://127.0.0.1:{side.port}{path}"])
             for _ in range(n)]
    ok = all(p.wait(600) == 0 for p in procs)
    dt = time.monotonic() - t0
    return n * size / dt / 1e6 if ok else 0.0


def open_streams(side, n):
    """RSS (MB, [server, client]) with n idle connections open through the tunnel."""
    code = (f"import socket,time,sys\nss=[]\n"
            f"for i in range({n}):\n"
            f"  s=socket.create_connection(('127.0.0.1',{side.port}),timeout=10); ss.append(s)\n"
            f"print('open',flush=True)\ntime.sleep(6)\n")
    p = subprocess.Popen(["ip", "netns", "exec", side.topo.client, PY, "-c", code],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    time.sleep(3)
    rss = side.rss()
    p.wait(30)
    return rss if line.strip() == "open" else None


def run_case(lab, topo, d, args, mode, block, fec, loss, results, size):
    name = f"{mode}/{block}{'/fec%d-%d' % fec if fec[0] else ''}/loss{loss}%"
    say(f"case {name}")
    if topo.router:
        lab.set_loss(topo.router, loss)
    rows = {}
    sides = {k: Side(lab, topo, k, d, mode, block, fec) for k in ("paqet", "kcptun")}
    bulk = {k: [] for k in sides}
    cpu_mb = {k: [] for k in sides}
    extra = {}
    for k, side in sides.items():
        startup = side.start()
        rss_idle = side.rss()
        par = parallel(side, 10, "/mid", 20 << 20) if loss == 0 and not args.skip_parallel else None
        streams = open_streams(side, 1000) if loss == 0 and not args.skip_streams else None
        extra[k] = dict(startup_s=startup, rss_idle_mb=rss_idle, p50_ms=None, p90_ms=None,
                        parallel_mb_s=par, rss_1000_streams_mb=streams)
        side.stop()
    if loss == 0:
        for side in sides.values():
            side.start()
        try:
            for k, (p50, p90) in latency_interleaved(sides, args.fetches).items():
                extra[k].update(p50_ms=p50, p90_ms=p90)
        finally:
            for side in sides.values():
                side.stop()
    for i in range(args.runs):
        for k in (("paqet", "kcptun") if i % 2 == 0 else ("kcptun", "paqet")):
            side = sides[k]
            side.start()
            c0 = side.cpu()
            r = side.fetch("/bulk", timeout=600)
            c1 = side.cpu()
            side.stop()
            if r is None:
                say(f"  {k} run {i + 1}: FAILED")
                continue
            mbs = r[0] / r[1] / 1e6
            bulk[k].append(mbs)
            cpu_mb[k].append((c1 - c0) / (r[0] / 1e6))
            say(f"  {k} run {i + 1}/{args.runs}: {mbs:.1f} MB/s, {cpu_mb[k][-1] * 1000:.1f} ms CPU/MB")
    for k in sides:
        rows[k] = dict(bulk_mb_s=statistics.median(bulk[k]) if bulk[k] else 0.0,
                       cpu_s_per_mb=statistics.median(cpu_mb[k]) if cpu_mb[k] else 0.0,
                       runs=bulk[k], **extra[k])
    results.append({"case": name, "mode": mode, "block": block, "fec": list(fec), "loss": loss,
                    "size_mb": size / 1e6, **{k: v for k, v in rows.items()}})


def ratio(a, b):
    return a / b if a and b else float("nan")


def report(results, path_json, path_png):
    if path_json:
        with open(path_json, "w") as f:
            json.dump(results, f, indent=1)
    print()
    print(f"{'case':<34}{'ours MB/s':>10}{'kcptun':>9}{'ratio':>7}{'CPU/MB ratio':>14}"
          f"{'p50 ratio':>11}{'par ratio':>11}")
    for r in results:
        o, k = r["paqet"], r["kcptun"]
        print(f"{r['case']:<34}{o['bulk_mb_s']:>10.1f}{k['bulk_mb_s']:>9.1f}"
              f"{ratio(o['bulk_mb_s'], k['bulk_mb_s']):>7.2f}"
              f"{ratio(o['cpu_s_per_mb'], k['cpu_s_per_mb']):>14.2f}"
              f"{ratio(o['p50_ms'], k['p50_ms']):>11.2f}"
              f"{ratio(o['parallel_mb_s'], k['parallel_mb_s']):>11.2f}")
    for r in results:
        if r["loss"] == 0:
            o, k = r["paqet"], r["kcptun"]
            print(f"\n{r['case']}: 1 KiB fetch p50/p90 ours {o['p50_ms']:.2f}/{o['p90_ms']:.2f} ms, "
                  f"kcptun {k['p50_ms']:.2f}/{k['p90_ms']:.2f} ms; start-up to first byte ours "
                  f"{o['startup_s']:.2f} s, kcptun {k['startup_s']:.2f} s")
            print(f"  RSS idle (server, client) ours {o['rss_idle_mb']} MB, kcptun {k['rss_idle_mb']} MB; "
                  f"with 1000 streams ours {o['rss_1000_streams_mb']}, kcptun {k['rss_1000_streams_mb']}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; pip install -e '.[bench]', then --report JSON)")
        return
    names = [r["case"] for r in results]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    ax.bar([i - 0.2 for i in x], [r["paqet"]["bulk_mb_s"] for r in results], 0.4, label="paqet (Python)")
    ax.bar([i + 0.2 for i in x], [r["kcptun"]["bulk_mb_s"] for r in results], 0.4, label="kcptun (Go)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("bulk download MB/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_png, dpi=100)
    print(f"chart: {path_png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50 MB x 3 runs, fewer cases")
    ap.add_argument("--size-mb", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--fetches", type=int, default=50)
    ap.add_argument("--skip-parallel", action="store_true")
    ap.add_argument("--skip-streams", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--report", metavar="JSON",
                    help="print the table and draw the chart of a saved run, run nothing")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        report(results, None, os.path.splitext(args.report)[0] + ".png")
        return 0
    args.runs = args.runs or (3 if args.quick else 5)
    size = (args.size_mb or (50 if args.quick else 200)) << 20
    reason = cannot_run()
    if reason:
        print(f"bench: cannot run: {reason}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    results = []
    cases = [("fast3", "aes", (0, 0), 0), ("fast", "aes", (0, 0), 0)]
    loss_cases = [("fast3", "aes", (0, 0), 1), ("fast3", "aes", (0, 0), 5), ("fast3", "aes", (10, 3), 5)]
    if args.quick:
        loss_cases = [("fast3", "aes", (0, 0), 5), ("fast3", "aes", (10, 3), 5)]
    with netlab.NetLab() as lab, tempdir() as d:
        say(f"making test files ({size >> 20} MB bulk)")
        with open(os.path.join(d, "small"), "wb") as f:
            f.write(os.urandom(1024))
        make_blob(d, "bulk", size)
        make_blob(d, "mid", 20 << 20)
        topo = lab.two_hosts()
        http_server(lab, topo.server, d, bind="0.0.0.0")
        wait_port(lab, topo.server, 8000, host=topo.server_ip4)
        for mode, block, fec, loss in cases:
            run_case(lab, topo, d, args, mode, block, fec, loss, results, size)
        lab.close()
    with netlab.NetLab() as lab, tempdir() as d:
        make_blob(d, "bulk", size)
        with open(os.path.join(d, "small"), "wb") as f:
            f.write(os.urandom(1024))
        topo = lab.routed()
        http_server(lab, topo.server, d, bind="0.0.0.0")
        wait_port(lab, topo.server, 8000, host=topo.server_ip4)
        for mode, block, fec, loss in loss_cases:
            run_case(lab, topo, d, args, mode, block, fec, loss, results, size)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report(results, os.path.join(args.out, f"compare-{stamp}.json"),
           os.path.join(args.out, f"compare-{stamp}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
