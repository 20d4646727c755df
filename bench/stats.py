"""Cost of the stats collector, snapshot, table and Prometheus text per number of sessions
(fake sessions with real counter objects). Not a test: .venv/bin/python bench/stats.py"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "unit", "stats"))
from test_stats_snapshot import FakeConn
from paqet.tunnel.stats import StatsCollector, format_table
from paqet import metrics
for n in (1, 100, 1000, 4096):
    conns = [FakeConn(conv=i, peer=("198.18.0.2", 10000 + i), client=False, drops={}) for i in range(n)]
    col = StatsCollector("server", start_ms=0)
    t = time.perf_counter()
    for k in range(20):
        col.tick(conns, k * 1000)
    tick = (time.perf_counter() - t) / 20
    t = time.perf_counter()
    snap = col.snapshot(conns, 21000)
    sn = time.perf_counter() - t
    t = time.perf_counter(); js = json.dumps(snap); j = time.perf_counter() - t
    reg = metrics.registry(lambda: col.snapshot(conns, 21000, None, metrics.SESSION_SERIES_LIMIT))
    t = time.perf_counter(); body = metrics.generate_latest(reg); pm = time.perf_counter() - t
    t = time.perf_counter(); tb = format_table(col.snapshot(conns, 21000, None, 50)); ft = time.perf_counter() - t
    print(f"{n:5d} sessions: tick {tick*1e3:.2f} ms, snapshot {sn*1e3:.2f} ms, json {j*1e3:.2f} ms ({len(js)} B), prometheus {pm*1e3:.2f} ms ({len(body)} B), table {ft*1e3:.2f} ms")
