"""Live statistics: one snapshot of a process's tunnel sessions as a plain dict, and the
text forms of it (the `paqet stats` table, the periodic log line).

Sans-I/O: the caller passes the connections and the time (tunnel clock, `now_ms`); nothing
here reads a clock or touches a socket. The counters themselves are plain integers the lower
layers already keep (KCP: segments and retransmissions; the datagram codec: wire bytes and FEC
recoveries; the connection: smux bytes and streams; the listener / client tunnel: drops).

Rates are taken over a sliding window: the shell calls `tick()` about once a second and the
collector keeps the last few samples per session and for the whole process, so a rate is
(counter now - counter at the oldest sample) / elapsed, about `window_ms` back. Sessions
that close are folded into the process totals (`session_closed()`, or at the next tick
when the owner did not say), so totals never go down.
"""

from __future__ import annotations

import collections
import weakref

M32 = 0xFFFFFFFF
SNAPSHOT_VERSION = 1

# The per-session counters, in this order (one tuple per reading).
COUNTERS = ("tx_bytes", "rx_bytes", "wire_tx_bytes", "wire_rx_bytes", "wire_tx_datagrams",
            "wire_rx_datagrams", "segments_out", "retrans", "fast_retrans", "early_retrans",
            "timeout_retrans", "repeat_segments", "fec_recovered", "fec_unrecoverable",
            "streams_opened")
_N = len(COUNTERS)
(TX, RX, WTX, WRX, _WTXD, _WRXD, SEGS, RETR, _FAST, _EARLY, _TMO, _REPEAT, _FEC, _FECU,
 _STREAMS) = range(_N)
_ZERO = (0,) * _N


def _d(a: int, b: int) -> int:
    """a - b on the 32-bit tunnel clock."""
    return (a - b) & M32


def counters(conn) -> tuple:
    """The counters of one TunnelConnection (plain attribute reads)."""
    k = conn.kcp
    cs = conn.codec.stats
    return (conn.bytes_out, conn.bytes_in, cs.bytes_out, cs.bytes_in, cs.datagrams_out,
            cs.datagrams_in, k.segments_out, k.retransmissions, k.fast_retransmissions,
            k.early_retransmissions, k.lost_segments, k.repeat_segments,
            cs.fec_recovered, cs.fec_unrecoverable, conn.streams_opened)


def _rate(delta: int, dt_ms: int) -> float:
    return delta * 1000.0 / dt_ms if dt_ms > 0 else 0.0


def _loss(d_retrans: int, d_segs: int) -> float | None:
    """Retransmitted share of the data segments sent: how much of what this end sent, or
    of the ACKs for it, the path lost, as the sender sees it. An upper bound: an RTO that
    fires while the ACK is still on its way (a stalled peer or event loop) counts too; the
    peer's `repeat_segments` shows how many retransmissions arrived twice. None when
    nothing was sent."""
    return round(d_retrans / d_segs, 4) if d_segs > 0 else None


class _Session:
    __slots__ = ("samples",)

    def __init__(self, maxlen: int) -> None:
        self.samples: collections.deque = collections.deque(maxlen=maxlen)


class StatsCollector:
    """Keeps what a snapshot needs beyond the live counters: samples for rates, the totals
    of closed sessions, session counts. One per process (runtime)."""

    def __init__(self, role: str = "", *, start_ms: int = 0, window_ms: int = 5000,
                 tick_ms: int = 1000, pid: int = 0) -> None:
        self.role = role
        self.pid = pid
        self.window_ms = window_ms
        self._maxlen = max(2, window_ms // max(1, tick_ms) + 1)
        self._start_ms = start_ms
        self._live: dict = {}                  # conn -> _Session
        self._folded: weakref.WeakSet = weakref.WeakSet()
        self._closed = list(_ZERO)             # counters of closed sessions
        self._closed_drops: dict[str, int] = {}
        self._proc: collections.deque = collections.deque(maxlen=self._maxlen)
        self.sessions_total = 0
        #: drop-reason dicts that outlive sessions (the server's TunnelListener.drops)
        self.drop_sources: list[dict] = []
        #: drop counts of the process itself, read at each snapshot: objects with items()
        #: (the packet sockets' `ring_full`)
        self.process_drops: list = []
        #: a server's per-user figures: () -> {name: {bytes_in, bytes_out, sessions,
        #: sessions_total}} (tunnel.users.UserTable.figures), and the user of a session
        #: (conn -> name or None)
        self.users = None
        self.user_of = None

    # -- bookkeeping ---------------------------------------------------------------------
    def _observe(self, conns) -> list:
        live = self._live
        seen = []
        for c in conns:
            if c.closed:
                self.session_closed(c)
                continue
            if c not in live:
                if c in self._folded:
                    continue
                live[c] = _Session(self._maxlen)
                self.sessions_total += 1
            seen.append(c)
        if len(seen) != len(live):
            keep = set(seen)
            for c in [c for c in live if c not in keep]:
                self.session_closed(c)
        return seen

    def session_closed(self, conn) -> None:
        """Fold a finished session's counters into the totals (once per session)."""
        if conn in self._folded:
            return
        if self._live.pop(conn, None) is None:
            self.sessions_total += 1  # opened and closed between two ticks
        self._folded.add(conn)
        closed = self._closed
        for i, v in enumerate(counters(conn)):
            closed[i] += v
        drops = getattr(conn, "drops", None)
        if drops and not any(drops is s for s in self.drop_sources):
            cd = self._closed_drops
            for reason, n in drops.items():
                cd[reason] = cd.get(reason, 0) + n

    def _sum(self, readings) -> list:
        if not readings:
            return list(self._closed)
        return [a + sum(col) for a, col in zip(self._closed, zip(*readings))]

    def tick(self, conns, now_ms: int) -> None:
        """Take one sample (the shell calls this about every `tick_ms`)."""
        conns = self._observe(conns)
        live = self._live
        readings = [counters(c) for c in conns]
        for c, v in zip(conns, readings):
            live[c].samples.append((now_ms, v))
        self._proc.append((now_ms, tuple(self._sum(readings))))

    def drops(self, conns) -> dict[str, int]:
        """Drop counts per reason over the process: the persistent sources, every live
        session's own dict (client tunnels), and those of closed sessions."""
        out = dict(self._closed_drops)
        seen: set[int] = set()
        for src in (list(self.drop_sources) + list(self.process_drops)
                    + [getattr(c, "drops", None) for c in conns]):
            if not src or id(src) in seen:
                continue
            seen.add(id(src))
            for reason, n in src.items():
                out[reason] = out.get(reason, 0) + n
        return out

    # -- the snapshot ------------------------------------------------------------------------
    def snapshot(self, conns, now_ms: int, uptime_s: float | None = None,
                 max_sessions: int | None = None) -> dict:
        """Everything `paqet stats`, the Prometheus endpoint and the log line show, as a
        plain dict of ints, floats, strings, lists and dicts (JSON as is). `max_sessions`
        limits `session_list` to the busiest sessions (most bytes both ways); the process
        figures always cover every session."""
        conns = self._observe(conns)
        readings = [counters(c) for c in conns]
        tot = self._sum(readings)
        shown = list(zip(conns, readings))
        if max_sessions is not None and len(shown) > max_sessions:
            shown.sort(key=lambda cv: cv[1][TX] + cv[1][RX], reverse=True)
            shown = shown[:max(0, max_sessions)]
        sessions = [self._session(c, v, now_ms) for c, v in shown]
        sessions.sort(key=lambda s: (s["peer"], s["conv"]))
        if self._proc:
            t0, base = self._proc[0]
        else:
            t0, base = self._start_ms, _ZERO
        dt = _d(now_ms, t0)
        if uptime_s is None:
            uptime_s = _d(now_ms, self._start_ms) / 1000.0
        persistent = [s for s in self.drop_sources if s]
        return {
            "version": SNAPSHOT_VERSION,
            "role": self.role,
            "pid": self.pid,
            "uptime_s": round(uptime_s, 3),
            "sessions": len(conns),
            "sessions_total": self.sessions_total,
            "streams": sum(len(c.streams) for c in conns),
            "totals": self._counter_dict(tot),
            "rates": self._rates(tot, base, dt),
            "drops": self.drops(conns),
            "listener_drops": bool(persistent),
            "users": self.users() if self.users is not None else {},
            "session_list": sessions,   # max_sessions busiest when limited
        }

    @staticmethod
    def _counter_dict(vals) -> dict:
        out = dict(zip(COUNTERS, vals))
        out["loss"] = _loss(vals[RETR], vals[SEGS])
        return out

    @staticmethod
    def _rates(cur, base, dt_ms: int) -> dict:
        return {
            "window_s": round(dt_ms / 1000.0, 3),
            "tx_Bps": round(_rate(cur[TX] - base[TX], dt_ms), 1),
            "rx_Bps": round(_rate(cur[RX] - base[RX], dt_ms), 1),
            "wire_tx_Bps": round(_rate(cur[WTX] - base[WTX], dt_ms), 1),
            "wire_rx_Bps": round(_rate(cur[WRX] - base[WRX], dt_ms), 1),
            "retrans_per_s": round(_rate(cur[RETR] - base[RETR], dt_ms), 2),
            "loss": _loss(cur[RETR] - base[RETR], cur[SEGS] - base[SEGS]),
        }

    def _session(self, c, cur: tuple, now_ms: int) -> dict:
        k = c.kcp
        st = self._live.get(c)
        if st is not None and st.samples:
            t0, base = st.samples[0]
        else:
            t0, base = c.created_ms, _ZERO
        dt = _d(now_ms, t0)
        out = {
            "peer": f"{c.peer[0]}:{c.peer[1]}",
            "conv": c.conv,
            "client": bool(c.client),
            "age_s": round(_d(now_ms, c.created_ms) / 1000.0, 3),
            "idle_s": round(_d(now_ms, c.last_rx_ms) / 1000.0, 3),
            "srtt_ms": k.rx_srtt,
            "rttvar_ms": k.rx_rttvar,
            "rto_ms": k.rx_rto,
            "cwnd": k.cwnd,
            "rmt_wnd": k.rmt_wnd,
            "wait_snd": k.wait_snd,
            "streams": len(c.streams),
        }
        out.update(self._counter_dict(cur))
        out["rates"] = self._rates(cur, base, dt)
        drops = getattr(c, "drops", None)
        if drops and not any(drops is s for s in self.drop_sources):
            out["drops"] = dict(drops)
        if self.user_of is not None:
            user = self.user_of(c)
            if user is not None:
                out["user"] = user
        return out


# -- text forms ------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def human_rate(bps: float) -> str:
    """Bytes per second as bits per second, the way links are quoted."""
    b = float(bps) * 8
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if b < 1000 or unit == "Gbit/s":
            return f"{b:.0f} {unit}" if unit == "bit/s" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} Gbit/s"  # pragma: no cover


def human_duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _drops_text(drops: dict) -> str:
    nz = [(r, n) for r, n in sorted(drops.items()) if n]
    return ", ".join(f"{r} {n}" for r, n in nz) if nz else "none"


def user_name(name: str) -> str:
    """A user as the text forms show it: the unnamed user of transport.kcp.key too."""
    return name or "(unnamed)"


def _table(rows: list[tuple]) -> list[str]:
    """Lines of aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                      for i, (v, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def format_table(snap: dict) -> str:
    """The readable form `paqet stats` prints."""
    t, r = snap["totals"], snap["rates"]
    lines = [
        f"paqet {snap['role'] or '?'} (pid {snap['pid']}), up {human_duration(snap['uptime_s'])}: "
        f"{snap['sessions']} session(s) open ({snap['sessions_total']} since start), "
        f"{snap['streams']} stream(s) open ({t['streams_opened']} since start)",
        f"  sent {human_bytes(t['tx_bytes'])} ({human_bytes(t['wire_tx_bytes'])} on the wire), "
        f"received {human_bytes(t['rx_bytes'])} ({human_bytes(t['wire_rx_bytes'])} on the wire)",
        f"  last {r['window_s']:.0f}s: up {human_rate(r['tx_Bps'])}, down {human_rate(r['rx_Bps'])}, "
        f"retransmits {r['retrans_per_s']:.1f}/s, loss {_pct(r['loss'])}",
        f"  retransmits {t['retrans']} (fast {t['fast_retrans']}, early {t['early_retrans']}, "
        f"timeout {t['timeout_retrans']}) of {t['segments_out']} segments sent "
        f"(loss {_pct(t['loss'])}); received twice {t['repeat_segments']}, "
        f"FEC recovered {t['fec_recovered']}",
        f"  drops: {_drops_text(snap['drops'])}",
    ]
    users = snap.get("users") or {}
    if users:
        lines.append("")
        lines.extend(_table([("user", "sessions", "since start", "received", "sent")] + [
            (user_name(name), str(u["sessions"]), str(u["sessions_total"]),
             human_bytes(u["bytes_in"]), human_bytes(u["bytes_out"]))
            for name, u in sorted(users.items())]))
    sess = snap["session_list"]
    if not sess:
        lines.append("no open sessions" if not snap["sessions"] else
                     f"({snap['sessions']} sessions not listed)")
        return "\n".join(lines)
    by_user = any("user" in s for s in sess)
    head = ("peer",) + (("user",) if by_user else ()) + (
        "conv", "age", "srtt", "rttvar", "streams", "sent", "recv", "up", "down",
        "retrans", "fast", "tmo", "loss", "fec", "drops")
    rows = [head]
    for s in sess:
        sr = s["rates"]
        drops = s.get("drops")
        rows.append((
            s["peer"], *((user_name(s.get("user", "")),) if by_user else ()), f"{s['conv']:08x}", human_duration(s["age_s"]), f"{s['srtt_ms']}ms",
            f"{s['rttvar_ms']}ms", str(s["streams"]), human_bytes(s["tx_bytes"]),
            human_bytes(s["rx_bytes"]), human_rate(sr["tx_Bps"]), human_rate(sr["rx_Bps"]),
            str(s["retrans"]), str(s["fast_retrans"] + s["early_retrans"]),
            str(s["timeout_retrans"]), _pct(sr["loss"] if sr["loss"] is not None else s["loss"]),
            str(s["fec_recovered"]),
            "-" if drops is None else str(sum(drops.values())),
        ))
    lines.append("")
    lines.extend(_table(rows))
    if len(sess) < snap["sessions"]:
        lines.append(f"(the {len(sess)} busiest of {snap['sessions']} sessions)")
    return "\n".join(lines)


def format_line(snap: dict, prev: dict | None = None) -> str:
    """One line for the periodic log: the process since `prev` (an earlier snapshot), or
    over the rate window when there is none."""
    t = snap["totals"]
    if prev is not None:
        p = prev["totals"]
        dt = max(1e-3, snap["uptime_s"] - prev["uptime_s"])
        up = (t["tx_bytes"] - p["tx_bytes"]) / dt
        down = (t["rx_bytes"] - p["rx_bytes"]) / dt
        retr = t["retrans"] - p["retrans"]
        loss = _loss(retr, t["segments_out"] - p["segments_out"])
        span = f"last {human_duration(dt)}"
        drops = {r: n - prev["drops"].get(r, 0) for r, n in snap["drops"].items()}
    else:
        r = snap["rates"]
        up, down, loss = r["tx_Bps"], r["rx_Bps"], r["loss"]
        retr = round(r["retrans_per_s"] * r["window_s"])
        span = f"last {r['window_s']:.0f}s"
        drops = snap["drops"]
    return (f"stats: {snap['sessions']} session(s), {snap['streams']} stream(s); {span}: "
            f"up {human_rate(up)}, down {human_rate(down)}, retransmits {retr} "
            f"(loss {_pct(loss)}), drops {_drops_text(drops)}; total sent "
            f"{human_bytes(t['tx_bytes'])}, received {human_bytes(t['rx_bytes'])}")
