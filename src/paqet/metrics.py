"""Prometheus exposition of the stats snapshot (prometheus-client, imported only when
`stats.prometheus` is set). The collector turns one snapshot into metric families at each
scrape; the asyncio shell (control.py) serves them, so nothing runs in another thread.

Process metrics are counters and gauges without labels (drops: one series per reason);
a server's per-user metrics carry a `user` label (every configured user); per-session metrics carry `peer` and `conv` labels, for the SESSION_SERIES_LIMIT busiest
sessions only: a server with thousands of sessions would otherwise spend most of a second per
scrape in the event loop and hand Prometheus thousands of short-lived series.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

SESSION_SERIES_LIMIT = 32

# (snapshot totals key, metric name without _total, help)
_PROCESS_COUNTERS = (
    ("tx_bytes", "paqet_sent_bytes", "Tunnel payload bytes sent (smux frames handed to KCP)"),
    ("rx_bytes", "paqet_received_bytes", "Tunnel payload bytes received (smux frames out of KCP)"),
    ("wire_tx_bytes", "paqet_wire_sent_bytes", "Encrypted datagram bytes sent (with FEC parity)"),
    ("wire_rx_bytes", "paqet_wire_received_bytes", "Encrypted datagram bytes received"),
    ("wire_tx_datagrams", "paqet_wire_sent_datagrams", "Datagrams sent"),
    ("wire_rx_datagrams", "paqet_wire_received_datagrams", "Datagrams received"),
    ("segments_out", "paqet_segments_sent", "KCP data segments sent, retransmissions included"),
    ("repeat_segments", "paqet_segments_received_twice",
     "KCP data segments received again (the peer's retransmissions that were not needed)"),
    ("fec_recovered", "paqet_fec_recovered", "Datagrams recovered by FEC"),
    ("streams_opened", "paqet_streams_opened", "smux streams opened (either side)"),
)
_RETRANS_KINDS = (("fast_retrans", "fast"), ("early_retrans", "early"),
                  ("timeout_retrans", "timeout"))


class SnapshotCollector:
    """A prometheus-client collector over `snapshot()` (one snapshot per scrape)."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self._snapshot = snapshot

    def describe(self):
        return []

    def collect(self):
        snap = self._snapshot()
        t = snap["totals"]
        yield GaugeMetricFamily("paqet_uptime_seconds", "Seconds since the instance started",
                                value=snap["uptime_s"])
        yield GaugeMetricFamily("paqet_sessions", "Tunnel sessions open", value=snap["sessions"])
        yield CounterMetricFamily("paqet_sessions_opened", "Tunnel sessions seen since start",
                                  value=snap["sessions_total"])
        yield GaugeMetricFamily("paqet_streams", "smux streams open", value=snap["streams"])
        for key, name, doc in _PROCESS_COUNTERS:
            yield CounterMetricFamily(name, doc, value=t[key])
        rt = CounterMetricFamily("paqet_retransmits", "KCP retransmissions by trigger",
                                 labels=["kind"])
        for key, kind in _RETRANS_KINDS:
            rt.add_metric([kind], t[key])
        yield rt
        dr = CounterMetricFamily("paqet_drops", "Datagrams dropped, by reason", labels=["reason"])
        for reason, n in sorted(snap["drops"].items()):
            dr.add_metric([reason], n)
        yield dr
        users = snap.get("users") or {}
        ufams = (
            ("bytes_in", CounterMetricFamily("paqet_user_received_bytes", "Tunnel payload "
                                             "bytes received from the user's clients",
                                             labels=["user"])),
            ("bytes_out", CounterMetricFamily("paqet_user_sent_bytes", "Tunnel payload bytes "
                                              "sent to the user's clients", labels=["user"])),
            ("sessions", GaugeMetricFamily("paqet_user_sessions", "The user's sessions open",
                                           labels=["user"])),
            ("sessions_total", CounterMetricFamily("paqet_user_sessions_opened",
                                                   "The user's sessions since start",
                                                   labels=["user"])),
        )
        for key, fam in ufams:
            for name, u in sorted(users.items()):
                fam.add_metric([name], u[key])
            yield fam
        labels = ["peer", "conv"]
        fams = {
            "srtt": GaugeMetricFamily("paqet_session_srtt_seconds", "Smoothed RTT", labels=labels),
            "rttvar": GaugeMetricFamily("paqet_session_rttvar_seconds", "RTT variation",
                                        labels=labels),
            "streams": GaugeMetricFamily("paqet_session_streams", "smux streams open",
                                         labels=labels),
            "tx": CounterMetricFamily("paqet_session_sent_bytes", "Tunnel payload bytes sent",
                                      labels=labels),
            "rx": CounterMetricFamily("paqet_session_received_bytes",
                                      "Tunnel payload bytes received", labels=labels),
            "retrans": CounterMetricFamily("paqet_session_retransmits",
                                           "KCP retransmissions (all triggers)", labels=labels),
            "fec": CounterMetricFamily("paqet_session_fec_recovered",
                                       "Datagrams recovered by FEC", labels=labels),
            "loss": GaugeMetricFamily("paqet_session_loss_ratio",
                                      "Retransmitted share of the segments sent over the "
                                      "rate window", labels=labels),
        }
        for s in snap["session_list"]:
            lv = [s["peer"], f"{s['conv']:08x}"]
            fams["srtt"].add_metric(lv, s["srtt_ms"] / 1000.0)
            fams["rttvar"].add_metric(lv, s["rttvar_ms"] / 1000.0)
            fams["streams"].add_metric(lv, s["streams"])
            fams["tx"].add_metric(lv, s["tx_bytes"])
            fams["rx"].add_metric(lv, s["rx_bytes"])
            fams["retrans"].add_metric(lv, s["retrans"])
            fams["fec"].add_metric(lv, s["fec_recovered"])
            loss = s["rates"]["loss"]
            fams["loss"].add_metric(lv, loss if loss is not None else 0.0)
        yield from fams.values()


def registry(snapshot: Callable[[], dict]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(snapshot))
    return reg


def http_answer(head: bytes, reg: CollectorRegistry) -> tuple[str, str, bytes]:
    """(status line, content type, body) for one HTTP request head."""
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return "400 Bad Request", "text/plain; charset=utf-8", b"bad request\n"
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return "405 Method Not Allowed", "text/plain; charset=utf-8", b"GET only\n"
    if target not in (b"/metrics", b"/"):
        return "404 Not Found", "text/plain; charset=utf-8", b"try /metrics\n"
    body = generate_latest(reg)
    return "200 OK", CONTENT_TYPE_PLAIN_0_0_4, b"" if method == b"HEAD" else body
