"""Long paths: ours against kcptun through an emulated WAN (delay, loss, line rate, buffer).

tests/impair.py's relay gives the path a delay, random loss, a line rate and a drop-tail
bottleneck buffer; downloads and uploads, one stream, parallel streams and two sessions at
once. Per case: MB/s and % of the line, bottleneck
drops as % of the frames the sender sent, our KCP retransmissions, and the time of a 1 KiB
fetch on a new connection during the bulk (queueing delay, ms and RTTs). Medians of --runs
runs, alternating the tunnels; JSON and a PNG chart to bench/results/. Needs root.

    sudo .venv/bin/python bench/wan.py                      # the full run (3 runs: ~1.5 h)
    sudo .venv/bin/python bench/wan.py --quick              # RTT 100 ms, 0/1 % loss, 1 stream
    sudo .venv/bin/python bench/wan.py --rtt 100 --loss 0,1 --dir down --streams 1 \\
        --only ours --runs 1 --size 20 --set transport.kcp.rcvwnd=2048
    sudo .venv/bin/python bench/wan.py --quick --ab-src /work/main/src   # A/B two builds
    sudo .venv/bin/python bench/wan.py --quick --ab-set transport.kcp.rcvwnd=1024  # A/B settings
    .venv/bin/python bench/wan.py --report bench/results/wan-<stamp>.json

Tunnels (--only): ours (paqet, raw frames, a TCP forward), kcptun (Debian's kcptun-client and
-server, UDP), ours-kcptun (our client stack over UDP against kcptun-server: the interop
cases), tcp (the kernel's TCP straight through the relay, no tunnel: a reference), and with
--ab-src (another source tree) or --ab-set (other settings) the same as ours-b /
ours-kcptun-b, side by side with ours on the same relay.
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
sys.path.insert(0, HERE)

import tunnels  # noqa: E402  (puts tests/, tests/e2e, tests/interop on sys.path)
from tunnels import PY, Side, cannot_run, parse_set, say  # noqa: E402

import netlab  # noqa: E402
from impair import Relay, impaired_hosts  # noqa: E402
from paqetlab import tempdir, wait_port  # noqa: E402

TRAFFIC = os.path.join(HERE, "..", "tests", "e2e", "wan_traffic.py")
TARGET_PORT = 8000
#: the fastest line tests/impair.py's relay carries on these machines (docs/performance.md,
#: "Long paths": the kernel's TCP reaches ~this through it; above, the relay is the limit)
FAST_RATE = 500
#: the relay's holding cap per direction (frames in the buffer and the delay line)
RELAY_QUEUE = 400000
#: ports of each tunnel's forwards (one per client process)
PORTS = {"ours": 8101, "ours-b": 8111, "kcptun": 8121, "ours-kcptun": 8131,
         "ours-kcptun-b": 8141}
BASE_KINDS = {"ours": "paqet", "ours-b": "paqet", "kcptun": "kcptun",
              "ours-kcptun": "paqet-kcptun", "ours-kcptun-b": "paqet-kcptun", "tcp": "tcp"}


class Direct:
    """The kernel's TCP straight to the target through the relay (no tunnel)."""

    kind = label = "tcp"

    def __init__(self, topo, clients=1):
        self.host, self.clients = topo.server_ip4, clients
        self.ports = [TARGET_PORT] * clients

    def start(self):
        return 0.0

    def stop(self):
        pass

    def sender_stats(self, role, i=0):
        return None


def case_name(c: dict) -> str:
    return f"{c['rate']:g}M/{c['buffer']}f RTT {c['rtt']:g} ms loss {c['loss']:g}%"


def build_cases(a) -> list[dict]:
    """The cases of this invocation: [{rtt, loss, rate, buffer, group, interop}]. The
    interop pair (our client and kcptun's own against kcptun-server) joins the main case
    of the same path, where there is one, so kcptun is measured once."""
    cases = []

    def add(rtt, loss, rate, group, interop=False):
        c = dict(rtt=float(rtt), loss=float(loss), rate=float(rate), buffer=a.buffer,
                 group=group, interop=interop)
        for x in cases:
            if case_name(x) == case_name(c):
                x["interop"] = x["interop"] or interop
                return
        cases.append(c)

    for rate in a.rate:
        for rtt in a.rtt:
            for loss in a.loss:
                add(rtt, loss, rate, "main")
    if a.extra:
        # one 20 Mbit/s case and the fastest line the relay carries (RTT 100 ms, no loss)
        for rate in (20, a.fast_rate):
            add(100, 0, rate, "extra")
    if a.interop:
        for loss in (0, 1):
            add(100, loss, 100, "interop", interop=True)
    return cases


def variants_for(case: dict, a) -> list[str]:
    vs = []
    if case["group"] != "interop":
        vs += ["ours"] + (["ours-b"] if a.ab else [])
    if case["interop"]:
        vs += ["ours-kcptun"] + (["ours-kcptun-b"] if a.ab else [])
    vs.append("kcptun")
    if a.only:
        # an A/B build goes with its A: --only ours --ab-src X runs ours and ours-b
        vs = [v for v in vs if v in a.only or (v.endswith("-b") and v[:-2] in a.only)]
        if case["group"] != "interop" and "tcp" in a.only:
            vs.append("tcp")
    return vs


def parse_mix(text: str) -> tuple[int, int]:
    """"4" -> (1 session, 4 streams); "2x1" -> (2 sessions, 1 stream each)."""
    if "x" in text:
        s, n = text.split("x", 1)
        return int(s), int(n)
    return 1, int(text)


def mix_name(sessions: int, streams: int) -> str:
    return f"{sessions}x{streams}" if sessions > 1 else f"{streams}"


class Bench:
    def __init__(self, lab, topo, d, a):
        self.lab, self.topo, self.d, self.a = lab, topo, d, a
        self.overrides = parse_set(a.set)
        self.ab_overrides = parse_set(a.ab_set)
        self.records: list[dict] = []
        self.labels = {"ours": a.label, "ours-b": a.ab_label,
                       "ours-kcptun": f"{a.label} client vs kcptun-server",
                       "ours-kcptun-b": f"{a.ab_label} client vs kcptun-server",
                       "kcptun": "kcptun", "tcp": "kernel TCP"}

    def side(self, variant: str, clients: int):
        kind = BASE_KINDS[variant]
        if kind == "tcp":
            return Direct(self.topo, clients)
        env = None
        if variant.endswith("-b") and self.a.ab_src:
            env = {"PYTHONPATH": self.a.ab_src}
        elif self.a.src:
            env = {"PYTHONPATH": self.a.src}
        overrides = self.overrides + (self.ab_overrides if variant.endswith("-b") else [])
        return Side(self.lab, self.topo, kind, self.d, self.a.mode, self.a.block, (0, 0),
                    port=PORTS[variant], clients=clients,
                    target=f"{self.topo.server_ip4}:{TARGET_PORT}", overrides=overrides,
                    env=env, label=variant, first_byte=None)

    def warm(self, side) -> None:
        spec = {"targets": [[side.host, p] for p in side.ports], "timeout": 30}
        r = self.lab.run(self.topo.client, PY, TRAFFIC, "warm", json.dumps(spec), check=False,
                         timeout=90)
        try:
            res = json.loads(r.stdout)
        except ValueError:
            res = {}
        if not res or any(v is None for v in res.values()):
            raise RuntimeError(f"{side.label}: no answer through the tunnel ({res}); logs in "
                               f"{self.d}")

    def _stats(self, side, role: str, sessions: int):
        rows = [side.sender_stats(role, i) for i in (range(sessions) if role == "client"
                                                     else [0])]
        if any(r is None for r in rows):
            return None
        return {k: sum(r.get(k, 0) for r in rows) for k in ("retrans", "segments_out",
                                                             "wire_tx_datagrams")}

    def _base(self, case, variant, run_i) -> dict:
        return dict(case=case_name(case), group=case["group"], rtt=case["rtt"],
                    loss=case["loss"], rate=case["rate"], buffer=case["buffer"],
                    variant=variant, label=self.labels[variant], run=run_i)

    def measure(self, side, relay, case, variant, direction, sessions, streams, run_i):
        a = self.a
        n = sessions * streams
        size = max(1, int(a.size * 1e6) // n)
        role = "server" if direction == "down" else "client"
        st0 = self._stats(side, role, sessions)
        rc0 = relay.counters()
        spec = {"flows": [{"host": side.host, "port": side.ports[s], "dir": direction,
                           "size": size} for s in range(sessions) for _ in range(streams)],
                "cap": a.cap,
                # the queues fill within a few RTTs: the first probe at 4 RTT (0.5 s at
                # least), then one every 2 RTT (0.5 s at least), 3 at most
                "probe": {"host": side.host, "port": side.ports[0],
                          "after": max(0.5, 4 * case["rtt"] / 1000),
                          "every": max(0.5, 2 * case["rtt"] / 1000), "count": 3,
                          "bytes": 1024}}
        r = self.lab.run(self.topo.client, PY, TRAFFIC, "run", json.dumps(spec), check=False,
                         timeout=a.cap + 120)
        rc1 = relay.counters()
        st1 = self._stats(side, role, sessions)
        try:
            res = json.loads(r.stdout)
        except ValueError:
            res = None
        rec = dict(self._base(case, variant, run_i), dir=direction, sessions=sessions,
                   streams=streams, size=size * n)
        if res is None:
            rec.update(ok=False, error=(r.stderr or r.stdout)[-300:])
            say(f"  {variant} {direction} {mix_name(sessions, streams)}: FAILED "
                f"{rec['error']!r}")
            self.records.append(rec)
            return rec
        got = sum(f["bytes"] for f in res["flows"])
        mbs = got / res["elapsed"] / 1e6 if res["elapsed"] > 0 else 0.0
        rd = "down" if direction == "down" else "up"
        frames = rc1[rd]["frames"] - rc0[rd]["frames"]
        overflow = rc1[rd]["overflow"] - rc0[rd]["overflow"]
        rec.update(ok=all(not f["error"] for f in res["flows"]), mb_s=mbs,
                   line_pct=mbs * 8 / case["rate"] * 100, bytes=got, seconds=res["elapsed"],
                   capped=any(f["capped"] for f in res["flows"]),
                   errors=[f["error"] for f in res["flows"] if f["error"]],
                   frames=frames, overflow=overflow,
                   drop_pct=overflow / frames * 100 if frames else 0.0,
                   random_drops=rc1[rd]["dropped"] - rc0[rd]["dropped"],
                   probes_ms=[p * 1000 if p is not None else None for p in res["probes"]])
        if st0 and st1:
            retr = st1["retrans"] - st0["retrans"]
            segs = st1["segments_out"] - st0["segments_out"]
            rec.update(retrans=retr, segments=segs,
                       retrans_pct=retr / segs * 100 if segs else 0.0)
        if sessions > 1:
            per = [0] * sessions
            for i, b in enumerate(res["first_done"]["bytes"]):
                per[i // streams] += b
            tot = sum(per)
            rec["shares"] = [p / tot * 100 if tot else 0.0 for p in per]
        good = [p for p in rec["probes_ms"] if p is not None]
        rec["probe_ms"] = statistics.median(good) if good else None
        self.records.append(rec)
        say("  " + progress_line(rec))
        return rec

    def run_case(self, case: dict) -> None:
        a = self.a
        variants = variants_for(case, a)
        if not variants:
            return
        say(f"case {case_name(case)} ({case['group']}): {', '.join(variants)}")
        loss = case["loss"] / 100
        relay = Relay(self.lab, self.topo, delay_ms=case["rtt"] / 2, loss=loss,
                      rate_mbit=case["rate"], buffer=case["buffer"], queue=RELAY_QUEUE,
                      max_seconds=24 * 3600)
        mixes = [parse_mix(m) for m in a.streams]
        try:
            for i in range(a.runs):
                for v in (variants if i % 2 == 0 else variants[::-1]):
                    clients = max(s for s, _ in mixes)
                    side = self.side(v, clients)
                    try:
                        side.start()
                        self.warm(side)
                        for direction in a.dir:
                            for sessions, streams in mixes:
                                self.measure(side, relay, case, v, direction, sessions,
                                             streams, i)
                    except RuntimeError as exc:
                        say(f"  {v}: {exc}")
                        self.records.append(dict(self._base(case, v, i), ok=False,
                                                 error=str(exc)))
                    finally:
                        side.stop()
        finally:
            relay.stop()
            say(f"  relay: {json.dumps(relay.final)}")


def progress_line(r: dict) -> str:
    parts = [f"{r['label']} {r['dir']} {mix_name(r['sessions'], r['streams'])} run "
             f"{r['run'] + 1}: {r['mb_s']:.2f} MB/s ({r['line_pct']:.0f} % of the line"
             f"{', capped' if r['capped'] else ''})",
             f"drops {r['drop_pct']:.2f} %"]
    if "retrans" in r:
        parts.append(f"retrans {r['retrans']} ({r['retrans_pct']:.1f} %)")
    if r.get("probe_ms") is not None:
        parts.append(f"fetch {r['probe_ms']:.0f} ms ({r['probe_ms'] / r['rtt']:.1f} RTT)")
    if "shares" in r:
        parts.append("shares " + "/".join(f"{s:.0f}" for s in r["shares"]) + " %")
    if r.get("errors"):
        parts.append(f"errors {r['errors']}")
    return ", ".join(parts)


# -- the report ----------------------------------------------------------------------------------

def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(records: list[dict]) -> list[dict]:
    """Medians over runs per (case, variant, direction, mix), in first-seen order."""
    groups: dict = {}
    for r in records:
        if "mb_s" not in r:
            if "dir" not in r:   # the tunnel did not start: one row per tunnel and case
                r = dict(r, dir="-", sessions=1, streams=0)
            r = dict(r, mb_s=None, line_pct=None, drop_pct=None, capped=False)
        key = (r["case"], r["variant"], r["dir"], r["sessions"], r["streams"])
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in groups.items():
        first = rs[0]
        row = {k: first[k] for k in ("case", "group", "rtt", "loss", "rate", "buffer", "variant",
                                     "label", "dir", "sessions", "streams")}
        row.update(runs=len(rs), mb_s=_med([r["mb_s"] for r in rs]),
                   mb_s_all=[round(r["mb_s"], 3) for r in rs],
                   line_pct=_med([r["line_pct"] for r in rs]),
                   drop_pct=_med([r["drop_pct"] for r in rs]),
                   capped=sum(1 for r in rs if r["capped"]),
                   failed=sum(1 for r in rs if not r["ok"]),
                   retrans=_med([r.get("retrans") for r in rs]),
                   retrans_pct=_med([r.get("retrans_pct") for r in rs]),
                   probe_ms=_med([r.get("probe_ms") for r in rs]))
        if "shares" in first:
            row["shares"] = [_med([r["shares"][i] for r in rs]) for i in range(len(first["shares"]))]
        out.append(row)
    return out


def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def table(rows: list[dict]) -> str:
    head = ("| case | tunnel | dir | streams | MB/s | % of line | drops % | retrans (% of segs) "
            "| 1 KiB fetch ms (RTT) | shares % | runs |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        mb = _f(r["mb_s"], ".2f") + (f" ({r['capped']} capped)" if r["capped"] else "")
        retr = "-" if r["retrans"] is None else f"{r['retrans']:.0f} ({r['retrans_pct']:.1f})"
        probe = "-" if r["probe_ms"] is None else f"{r['probe_ms']:.0f} ({r['probe_ms'] / r['rtt']:.1f})"
        shares = "/".join(f"{s:.0f}" for s in r["shares"]) if r.get("shares") else "-"
        runs = f"{r['runs']}" + (f", {r['failed']} failed" if r["failed"] else "")
        lines.append(f"| {r['case']} | {r['label']} | {r['dir']} | "
                     f"{mix_name(r['sessions'], r['streams'])} | {mb} | {_f(r['line_pct'], '.0f')} | "
                     f"{_f(r['drop_pct'], '.2f')} | {retr} | {probe} | {shares} | {runs} |")
    return "\n".join(lines)


def compact(rows: list[dict]) -> str:
    """One line per case, direction and build of ours: ours against kcptun (or our client
    against kcptun-server beside kcptun's own), one stream; then 4 streams and two sessions."""
    idx = {(r["case"], r["variant"], r["dir"], r["sessions"], r["streams"]): r for r in rows}
    pairs = [("ours", "kcptun"), ("ours-b", "kcptun"), ("ours-kcptun", "kcptun"),
             ("ours-kcptun-b", "kcptun"), ("tcp", None)]
    head = ("| case | dir | tunnel | MB/s (% of line) | kcptun | ratio | drops % | retrans % "
            "| fetch RTT (kcptun) | 4 streams % | 2 sessions %: shares |")
    lines = [head, "|" + "---|" * 11]

    def pct(r):
        if not r or r["mb_s"] is None:
            return "-"
        spread = ""
        if len(r["mb_s_all"]) > 1:
            spread = f" [{min(r['mb_s_all']):.2f}-{max(r['mb_s_all']):.2f}]"
        return (f"{r['mb_s']:.2f} ({r['line_pct']:.0f}){spread}"
                f"{' capped' if r['capped'] else ''}")

    for (case, v, d, s, n), r in idx.items():
        if s != 1 or n != 1:
            continue
        for ours, theirs in pairs:
            if v != ours:
                continue
            k = idx.get((case, theirs, d, 1, 1)) if theirs else None
            ratio = (f"{r['mb_s'] / k['mb_s']:.2f}" if k and k["mb_s"] and r["mb_s"] is not None
                     else "-")
            fetch = "-" if r["probe_ms"] is None else f"{r['probe_ms'] / r['rtt']:.1f}"
            if k and k["probe_ms"] is not None:
                fetch += f" ({k['probe_ms'] / k['rtt']:.1f})"
            four = idx.get((case, v, d, 1, 4))
            two = idx.get((case, v, d, 2, 1))
            two_s = "-"
            if two and two["line_pct"] is not None:
                two_s = f"{two['line_pct']:.0f}" + (
                    ": " + "/".join(f"{x:.0f}" for x in two["shares"]) if two.get("shares") else "")
            retr = "-" if r["retrans_pct"] is None else f"{r['retrans_pct']:.1f}"
            lines.append(f"| {case} | {d} | {r['label']} | {pct(r)} | {pct(k)} | {ratio} | "
                         f"{_f(r['drop_pct'], '.2f')} | {retr} | {fetch} | "
                         f"{_f(four['line_pct'] if four else None, '.0f')} | {two_s} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    """Same-run ratios: ours / kcptun, ours-kcptun / kcptun, and B / A."""
    idx = {(r["case"], r["variant"], r["dir"], r["sessions"], r["streams"]): r for r in rows}
    out = []
    pairs = (("ours", "kcptun"), ("ours-kcptun", "kcptun"), ("ours-b", "ours"),
             ("ours-kcptun-b", "ours-kcptun"), ("ours-b", "kcptun"), ("ours-kcptun-b", "kcptun"))
    for (case, v, d, s, n), r in idx.items():
        for num, den in pairs:
            if v != num:
                continue
            o = idx.get((case, den, d, s, n))
            if o and o["mb_s"] and r["mb_s"] is not None:
                out.append(f"{case} {d} {mix_name(s, n)}: {r['label']} / {o['label']} = "
                           f"{r['mb_s'] / o['mb_s']:.2f}")
    return out


def _rounded(x):
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def save(doc: dict, path: str) -> None:
    """One record per line, figures to 3 decimals (a full run is ~400 records)."""
    with open(path, "w") as f:
        f.write('{"meta": ' + json.dumps(doc["meta"]) + ',\n "records": [\n')
        f.write(",\n".join(json.dumps(_rounded(r)) for r in doc["records"]))
        f.write("\n]}\n")


def report(doc: dict, path_json: str | None, path_png: str) -> None:
    if path_json:
        save(doc, path_json)
        print(f"results: {path_json}")
    rows = summarise(doc["records"])
    print()
    print(table(rows))
    print("\nsummary (one stream; the last two columns: % of the line with 4 streams, and "
          "with two sessions at once and their shares of it):")
    print(compact(rows))
    rs = ratios(rows)
    if rs:
        print("\nratios (same run):")
        for line in rs:
            print("  " + line)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; pip install -e '.[bench]', then --report JSON)")
        return
    dirs = [d for d in ("down", "up") if any(r["dir"] == d for r in rows)]
    if not rows or not dirs:
        return
    fig, axes = plt.subplots(len(dirs), 1, figsize=(max(7, 0.9 * len({r['case'] for r in rows}) + 3),
                                                    3.6 * len(dirs)), squeeze=False)
    for ax, d in zip(axes[:, 0], dirs):
        sel = [r for r in rows if r["dir"] == d and r["sessions"] == 1 and r["streams"] == 1]
        cases = list(dict.fromkeys(r["case"] for r in sel))
        variants = list(dict.fromkeys(r["label"] for r in sel))
        w = 0.8 / max(1, len(variants))
        for j, v in enumerate(variants):
            ys = []
            for c in cases:
                m = [r["line_pct"] for r in sel if r["case"] == c and r["label"] == v]
                ys.append(m[0] if m and m[0] is not None else 0)
            ax.bar([i + (j - (len(variants) - 1) / 2) * w for i in range(len(cases))], ys, w,
                   label=v)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([c.replace(" RTT", "\nRTT") for c in cases], fontsize=7)
        ax.set_ylabel(f"{d}load, one stream: % of the line")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_png, dpi=100)
    print(f"chart: {path_png}")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--rtt", type=_floats, default=None, help="RTTs, ms (50,100,200)")
    ap.add_argument("--loss", type=_floats, default=None, help="random loss each way, %% (0,1,5)")
    ap.add_argument("--rate", type=_floats, default=None, help="line rates, Mbit/s (100)")
    ap.add_argument("--buffer", type=int, default=500, help="bottleneck buffer, frames (500)")
    ap.add_argument("--dir", type=_words, default=None, help="down,up")
    ap.add_argument("--streams", type=_words, default=None,
                    help="streams per test: N (one session) or SxN (S sessions): 1,4,2x1")
    ap.add_argument("--only", type=_words, default=None,
                    help="tunnels: ours, kcptun, ours-kcptun, tcp, ours-b, ours-kcptun-b")
    ap.add_argument("--runs", type=int, default=None, help="runs per case (3; --quick 1)")
    ap.add_argument("--size", type=float, default=None, help="MB per test (30; --quick 20)")
    ap.add_argument("--cap", type=float, default=25.0, help="seconds per transfer at most (25)")
    ap.add_argument("--mode", default="fast3", help="KCP mode of every tunnel (fast3)")
    ap.add_argument("--block", default="aes", help="cipher of every tunnel (aes)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a YAML key in both of our configs (repeatable), e.g. "
                         "transport.kcp.rcvwnd=2048")
    ap.add_argument("--src", default=None, help="run ours from this source tree (PYTHONPATH)")
    ap.add_argument("--label", default="ours", help="name of our build in the report")
    ap.add_argument("--ab-src", default=None,
                    help="also run the build in this source tree (PYTHONPATH) as ours-b")
    ap.add_argument("--ab-set", action="append", default=[], metavar="KEY=VALUE",
                    help="like --set, for ours-b only (after --set); without --ab-src, "
                         "ours-b is this build with these settings")
    ap.add_argument("--ab-label", default=None, help="name of the B build in the report")
    ap.add_argument("--fast-rate", type=float, default=FAST_RATE,
                    help=f"the 'fastest line' case, Mbit/s ({FAST_RATE})")
    ap.add_argument("--no-extra", dest="extra", action="store_false", default=None,
                    help="without the 20 Mbit/s and fastest-line cases")
    ap.add_argument("--no-interop", dest="interop", action="store_false", default=None,
                    help="without the our-client-vs-kcptun-server cases")
    ap.add_argument("--quick", action="store_true",
                    help="RTT 100, loss 0,1, downloads, one stream, 1 run of 20 MB")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="where the JSON and PNG go (bench/results)")
    ap.add_argument("--report", metavar="JSON", nargs="+",
                    help="print the table and chart of saved runs (several: medians over "
                         "all their runs, written to <first>-merged.json/.png)")
    a = ap.parse_args()
    if a.report:
        docs = []
        for path in a.report:
            with open(path) as f:
                docs.append(json.load(f))
        doc = docs[0]
        base = os.path.splitext(a.report[0])[0]
        if len(docs) > 1:   # the runs of several invocations together: medians over all
            doc = {"meta": {"merged": [d["meta"] for d in docs]},
                   "records": [r for d in docs for r in d["records"]]}
            base += "-merged"
        report(doc, base + ".json" if len(docs) > 1 else None, base + ".png")
        return 0
    filtered = any(x is not None for x in (a.rtt, a.loss, a.rate, a.only))
    q = a.quick
    a.rtt = a.rtt or ([100.0] if q else [50.0, 100.0, 200.0])
    a.loss = a.loss if a.loss is not None else ([0.0, 1.0] if q else [0.0, 1.0, 5.0])
    a.rate = a.rate or [100.0]
    a.dir = a.dir or (["down"] if q else ["down", "up"])
    a.streams = a.streams or (["1"] if q else ["1", "4", "2x1"])
    a.runs = a.runs or (1 if q else 3)
    a.size = a.size or (20.0 if q else 30.0)
    if a.extra is None:
        a.extra = not (q or filtered)
    if a.interop is None:
        a.interop = not q and (not filtered or bool(a.only and "ours-kcptun" in a.only))
    try:
        parse_set(a.set)
        parse_set(a.ab_set)
        mixes = [parse_mix(m) for m in a.streams]
    except ValueError as exc:
        ap.error(str(exc))
    if any(s < 1 or n < 1 for s, n in mixes) or any(d not in ("down", "up") for d in a.dir):
        ap.error("--streams N or SxN with N, S >= 1; --dir down and/or up")
    bad = [v for v in (a.only or []) if v not in BASE_KINDS]
    if bad:
        ap.error(f"unknown tunnel(s) {bad}: {', '.join(BASE_KINDS)}")
    for path in (a.src, a.ab_src):
        if path and not os.path.isdir(os.path.join(path, "paqet")):
            ap.error(f"{path} is not a source tree with a paqet package (want .../src)")
    if a.ab_src:
        a.ab_src = os.path.abspath(a.ab_src)
        a.ab_label = a.ab_label or f"ours-b ({os.path.basename(os.path.dirname(a.ab_src))})"
        import glob
        if not glob.glob(os.path.join(a.ab_src, "paqet", "wire", "_cfb*.so")):
            say(f"note: {a.ab_src} has no compiled extensions (wire/_cfb, net/_ring): the B "
                f"build runs their Python paths (pip install -e there to build them)")
    if a.src:
        a.src = os.path.abspath(a.src)
    a.ab = bool(a.ab_src or a.ab_set)
    if a.ab and not a.ab_label:
        a.ab_label = "ours-b (" + " ".join(a.ab_set) + ")"
    reason = cannot_run()
    if reason:
        print(f"bench: cannot run: {reason}", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    cases = build_cases(a)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    commit = os.environ.get("WAN_COMMIT") or subprocess.run(
        ["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
        text=True).stdout.strip()
    doc = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit,
                    "args": {k: v for k, v in vars(a).items()}, "fast_rate": a.fast_rate},
           "records": []}
    say(f"{len(cases)} case(s), {a.runs} run(s), {a.size:g} MB per test, cap {a.cap:g} s, "
        f"streams {','.join(a.streams)}, dir {','.join(a.dir)}")
    path_json = os.path.join(a.out, f"wan-{stamp}.json")
    try:
        with netlab.NetLab() as lab, tempdir() as d:
            topo = impaired_hosts(lab)
            lab.popen(topo.server, [PY, TRAFFIC, "serve", "--port", str(TARGET_PORT)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not wait_port(lab, topo.server, TARGET_PORT, host=topo.server_ip4):
                raise RuntimeError("the traffic target did not start")
            bench = Bench(lab, topo, d, a)
            for case in cases:
                bench.run_case(case)
                doc["records"] = bench.records
                save(doc, path_json)   # partial results survive an interrupt
    except KeyboardInterrupt:
        say("interrupted: reporting what was measured")
    report(doc, path_json, os.path.splitext(path_json)[0] + ".png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
