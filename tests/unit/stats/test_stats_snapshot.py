"""The stats snapshot (sans-I/O collector over fake connections), its text forms, the
control-socket path rules, the `stats:` config keys and `paqet stats` without an instance."""

import json
import os
import socket
import subprocess
import sys
import types

import pytest

from paqet.config import ConfigError, load_config_text
from paqet.control import ControlError, _bind_unix, query, socket_path
from paqet.tunnel.stats import (StatsCollector, format_line, format_table, human_bytes,
                                human_rate)
from paqet.wire.datagram import CodecStats


class FakeKcp:
    def __init__(self):
        self.segments_out = self.retransmissions = self.fast_retransmissions = 0
        self.early_retransmissions = self.lost_segments = self.repeat_segments = 0
        self.rx_srtt, self.rx_rttvar, self.rx_rto = 40, 10, 200
        self.cwnd, self.rmt_wnd, self.wait_snd = 0, 128, 0


class FakeConn:
    def __init__(self, conv=1, peer=("198.18.0.2", 9999), client=True, drops=None, created=0):
        self.kcp = FakeKcp()
        self.codec = types.SimpleNamespace(stats=CodecStats())
        self.conv, self.peer, self.client = conv, peer, client
        self.bytes_in = self.bytes_out = self.streams_opened = 0
        self.streams = {}
        self.closed = False
        self.created_ms = self.last_rx_ms = created
        self.drops = drops if drops is not None else {"replay": 0}

    def send(self, n, segs, retrans=0, fast=0, tmo=0):
        self.bytes_out += n
        self.codec.stats.bytes_out += n + 40 * segs
        self.kcp.segments_out += segs
        self.kcp.retransmissions += retrans
        self.kcp.fast_retransmissions += fast
        self.kcp.lost_segments += tmo


def test_snapshot_counters_rates_and_loss():
    col = StatsCollector("client", start_ms=0, window_ms=5000, tick_ms=1000, pid=7)
    c = FakeConn()
    col.tick([c], 0)
    for t in range(1, 11):  # 100 kB/s, 100 segments/s, 5 retransmissions/s
        c.send(100_000, 100, retrans=5, fast=3, tmo=2)
        c.kcp.repeat_segments += 1
        c.bytes_in += 10_000
        col.tick([c], t * 1000)
    snap = col.snapshot([c], 10_000)
    json.dumps(snap)  # plain data
    assert snap["pid"] == 7 and snap["role"] == "client" and snap["uptime_s"] == 10.0
    assert snap["sessions"] == 1 and snap["sessions_total"] == 1
    t = snap["totals"]
    assert t["tx_bytes"] == 1_000_000 and t["rx_bytes"] == 100_000
    assert t["retrans"] == 50 and t["fast_retrans"] == 30 and t["timeout_retrans"] == 20
    assert t["repeat_segments"] == 10 and t["loss"] == 0.05
    r = snap["rates"]
    assert r["window_s"] == 5.0  # the oldest of the kept samples
    assert r["tx_Bps"] == 100_000 and r["rx_Bps"] == 10_000 and r["loss"] == 0.05
    s = snap["session_list"][0]
    assert s["srtt_ms"] == 40 and s["rttvar_ms"] == 10 and s["peer"] == "198.18.0.2:9999"
    assert s["rates"]["tx_Bps"] == 100_000 and s["drops"] == {"replay": 0}


def test_rate_of_a_new_session_counts_from_its_start():
    col = StatsCollector(start_ms=0)
    c = FakeConn(created=1000)
    c.send(50_000, 10)
    snap = col.snapshot([c], 3000)
    assert snap["session_list"][0]["rates"]["tx_Bps"] == 25_000
    assert snap["session_list"][0]["rates"]["loss"] == 0.0
    idle = FakeConn(conv=2)
    assert col.snapshot([idle], 3000)["session_list"][0]["rates"]["loss"] is None


def test_closed_sessions_fold_into_totals_once():
    col = StatsCollector(start_ms=0)
    a, b = FakeConn(conv=1), FakeConn(conv=2)
    a.send(1000, 1)
    a.drops["replay"] = 3
    col.tick([a, b], 1000)
    col.session_closed(a)
    col.session_closed(a)  # the owner may say it twice
    snap = col.snapshot([b], 2000)  # and the tick notices it gone, too
    assert snap["totals"]["tx_bytes"] == 1000
    assert snap["sessions"] == 1 and snap["sessions_total"] == 2
    assert snap["drops"]["replay"] == 3
    # a session that opened and closed between two ticks is still counted
    c = FakeConn(conv=3)
    c.send(500, 1)
    col.session_closed(c)
    snap = col.snapshot([b], 3000)
    assert snap["totals"]["tx_bytes"] == 1500 and snap["sessions_total"] == 3
    # a closed connection still listed by its owner is not live
    b.closed = True
    assert col.snapshot([b], 4000)["sessions"] == 0


def test_shared_drop_dict_counted_once_and_not_per_session():
    listener = {"bad_crc": 4, "table_full": 1}
    col = StatsCollector("server", start_ms=0)
    col.drop_sources.append(listener)
    conns = [FakeConn(conv=i, client=False, drops=listener) for i in range(3)]
    snap = col.snapshot(conns, 1000)
    assert snap["drops"] == {"bad_crc": 4, "table_full": 1}
    assert all("drops" not in s for s in snap["session_list"])
    col.session_closed(conns[0])  # its dict is the listener's: not folded again
    assert col.snapshot(conns[1:], 2000)["drops"] == {"bad_crc": 4, "table_full": 1}
    listener["new_reason"] = 2  # reasons added later show up as they are
    assert col.snapshot(conns[1:], 3000)["drops"]["new_reason"] == 2


def test_process_drops_are_read_at_each_snapshot_and_are_not_a_listener():
    """The packet sockets' full-ring drops (runtime.RingDrops) count in `drops` as they
    are when the snapshot is taken; a client with them is still not a listener."""
    class Ring:
        n = 0

        def items(self):
            return [("ring_full", self.n)]
    ring = Ring()
    col = StatsCollector("client", start_ms=0)
    col.process_drops.append(ring)
    c = FakeConn(drops={"foreign_source": 1})
    assert col.snapshot([c], 1000)["drops"] == {"foreign_source": 1, "ring_full": 0}
    ring.n = 7
    snap = col.snapshot([c], 2000)
    assert snap["drops"]["ring_full"] == 7 and not snap["listener_drops"]
    assert "ring_full 7" in format_line(snap)


def test_clock_wrap():
    col = StatsCollector(start_ms=0xFFFFFF00)
    c = FakeConn(created=0xFFFFFF00)
    c.send(1000, 1)
    snap = col.snapshot([c], 0x100 - 1)  # 511 ms later, past the 32-bit wrap
    assert snap["uptime_s"] == 0.511 and snap["session_list"][0]["age_s"] == 0.511


def test_format_table_and_line():
    col = StatsCollector("server", start_ms=0, pid=42)
    c = FakeConn(client=False)
    c.streams = {3: None, 5: None}
    c.send(3 << 20, 2000, retrans=40, fast=30, tmo=10)
    col.drop_sources.append({"bad_crc": 2, "replay": 0})
    c.drops = col.drop_sources[0]
    snap = col.snapshot([c], 60_000)
    text = format_table(snap)
    assert "paqet server (pid 42), up 1m00s: 1 session(s) open" in text
    assert "2 stream(s) open" in text and "3.0 MiB" in text
    assert ("retransmits 40 (fast 30, early 0, timeout 10) of 2000 segments sent (loss 2.0%); "
            "received twice 0") in text
    assert "drops: bad_crc 2" in text and "replay" not in text.split("drops:")[1].split("\n")[0]
    assert "198.18.0.2:9999" in text and "00000001" in text
    empty = format_table(StatsCollector("server").snapshot([], 61_000))
    assert "no open sessions" in empty
    line = format_line(snap)
    assert line.startswith("stats: 1 session(s), 2 stream(s);") and "\n" not in line
    prev = snap
    c.send(600_000, 100, retrans=1)
    later = col.snapshot([c], 120_000)
    later["uptime_s"] = prev["uptime_s"] + 60
    line = format_line(later, prev)
    assert "last 1m00s: up 80.0 kbit/s" in line and "retransmits 1 (loss 1.0%)" in line
    assert human_bytes(512) == "512 B" and human_rate(125) == "1.0 kbit/s"


def test_users_in_the_snapshot_and_the_table():
    col = StatsCollector("server", start_ms=0, pid=42)
    assert col.snapshot([], 1000)["users"] == {}
    figs = {"alice": {"bytes_in": 2048, "bytes_out": 5 << 20, "sessions": 2, "sessions_total": 3},
            "": {"bytes_in": 0, "bytes_out": 0, "sessions": 0, "sessions_total": 0}}
    col.users = lambda: figs
    snap = col.snapshot([], 1000)
    assert snap["users"] == figs
    json.dumps(snap)
    lines = format_table(snap).splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("user "))
    assert lines[head].split() == ["user", "sessions", "since", "start", "received", "sent"]
    assert lines[head + 1].split() == ["(unnamed)", "0", "0", "0", "B", "0", "B"]
    assert lines[head + 2].split() == ["alice", "2", "3", "2.0", "KiB", "5.0", "MiB"]
    c = FakeConn(client=False)
    col.user_of = {c: "alice"}.get
    snap = col.snapshot([c], 2000)
    assert snap["session_list"][0]["user"] == "alice"
    text = format_table(snap)
    rows = [x.split() for x in text.splitlines()]
    assert ["peer", "user", "conv"] in [r[:3] for r in rows]
    assert ["198.18.0.2:9999", "alice", "00000001"] in [r[:3] for r in rows]


def test_socket_path_rules():
    base = ("transport:\n  protocol: kcp\n  kcp:\n    key: k\n")
    srv = load_config_text("role: server\nlisten:\n  addr: ':9999'\n" + base)
    assert socket_path(srv) == "/run/paqet/paqet-server-9999.sock"
    cli = load_config_text("role: client\nserver:\n  addr: '198.18.0.2:9999'\nsocks5:\n"
                           "  - listen: '127.0.0.1:1081'\n" + base)
    assert socket_path(cli) == "/run/paqet/paqet-client-1081.sock"
    fixed = load_config_text("role: client\nserver:\n  addr: '198.18.0.2:9999'\nnetwork:\n"
                             "  ipv4:\n    addr: '198.18.0.1:4000'\n" + base)
    assert socket_path(fixed) == "/run/paqet/paqet-client-4000.sock"
    own = load_config_text("role: server\nlisten:\n  addr: ':9999'\nstats:\n  socket: /tmp/x.sock\n"
                           + base)
    assert socket_path(own) == "/tmp/x.sock"
    off = load_config_text("role: server\nlisten:\n  addr: ':9999'\nstats:\n  socket: 'off'\n" + base)
    assert socket_path(off) is None
    for v in ("off", "false"):  # YAML booleans
        off = load_config_text(f"role: server\nlisten:\n  addr: ':9999'\nstats:\n  socket: {v}\n"
                               + base)
        assert socket_path(off) is None
    on = load_config_text("role: server\nlisten:\n  addr: ':9999'\nstats:\n  socket: true\n" + base)
    assert socket_path(on) == "/run/paqet/paqet-server-9999.sock"


def test_stats_config_keys():
    base = "role: server\nlisten:\n  addr: ':9999'\ntransport:\n  protocol: kcp\n  kcp:\n    key: k\n"
    cfg = load_config_text(base)
    assert (cfg.stats.socket, cfg.stats.prometheus, cfg.stats.log_interval) == ("", "", 60.0)
    cfg = load_config_text(base + "stats:\n  prometheus: '127.0.0.1:9108'\n  log_interval: 5\n")
    assert cfg.stats.prometheus == "127.0.0.1:9108" and cfg.stats.log_interval == 5
    assert not cfg.warnings
    with pytest.raises(ConfigError) as e:
        load_config_text(base + "stats:\n  prometheus: 'nohost'\n")
    assert e.value.path == "stats.prometheus"
    with pytest.raises(ConfigError) as e:
        load_config_text(base + "stats:\n  prometheus: 'example.com:9108'\n")
    assert e.value.path == "stats.prometheus"
    with pytest.raises(ConfigError) as e:
        load_config_text(base + "stats:\n  log_interval: -1\n")
    assert e.value.path == "stats.log_interval"
    cfg = load_config_text(base + "stats:\n  prometheus: '0.0.0.0:9108'\n")
    assert any("stats.prometheus" in w for w in cfg.warnings)


def test_bind_unix_mode_stale_and_live(tmp_path):
    path = str(tmp_path / "sub" / "c.sock")
    s = _bind_unix(path)
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        with pytest.raises(ControlError, match="another paqet instance"):
            _bind_unix(path)
    finally:
        s.close()
    s = _bind_unix(path)  # stale (nobody listening): replaced
    s.close()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ControlError, match="not a socket"):
        _bind_unix(str(tmp_path / "plain"))


def test_query_errors_are_one_line(tmp_path):
    with pytest.raises(ControlError, match="no paqet instance is running"):
        query(str(tmp_path / "none.sock"))
    # something that is not paqet answers garbage
    path = str(tmp_path / "junk.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    import threading

    def answer():
        c, _ = srv.accept()
        c.recv(100)
        c.sendall(b"hello\n")
        c.close()
    th = threading.Thread(target=answer)
    th.start()
    try:
        with pytest.raises(ControlError, match="not a paqet control socket"):
            query(path, timeout=5)
    finally:
        th.join(5)
        srv.close()


def test_cli_stats_without_instance(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("role: server\nlisten:\n  addr: ':9999'\ntransport:\n  protocol: kcp\n"
                   f"  kcp:\n    key: k\nstats:\n  socket: {tmp_path}/gone.sock\n")
    for args in (["-c", str(cfg)], ["--socket", str(tmp_path / "other.sock")],
                 ["-c", str(cfg), "--json"]):
        r = subprocess.run([sys.executable, "-m", "paqet", "stats", *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("paqet: no paqet instance is running"), r
        assert r.stdout == ""


def test_max_sessions_lists_the_busiest_but_totals_cover_all():
    col = StatsCollector(start_ms=0)
    conns = [FakeConn(conv=i, peer=("198.18.0.2", 10000 + i)) for i in range(5)]
    for i, c in enumerate(conns):
        c.send(1000 * i, 1)
        c.streams = {1: None}
    snap = col.snapshot(conns, 1000, max_sessions=2)
    assert [s["conv"] for s in snap["session_list"]] == [3, 4]
    assert snap["sessions"] == 5 and snap["streams"] == 5
    assert snap["totals"]["tx_bytes"] == 10_000
    assert "(the 2 busiest of 5 sessions)" in format_table(snap)
    assert "(5 sessions not listed)" in format_table(col.snapshot(conns, 1000, max_sessions=0))


def test_http_answer_and_peer_credentials():
    from paqet import metrics
    from paqet.control import _peer_uid
    col = StatsCollector("client", start_ms=0)
    reg = metrics.registry(lambda: col.snapshot([FakeConn()], 1000))
    status, ctype, body = metrics.http_answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", reg)
    assert status == "200 OK" and ctype.startswith("text/plain; version=0.0.4")
    assert b"paqet_sessions 1.0" in body and b'paqet_session_srtt_seconds{conv="00000001"' in body
    assert metrics.http_answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", reg)[2] == b""
    assert metrics.http_answer(b"POST /metrics HTTP/1.1\r\n\r\n", reg)[0].startswith("405")
    assert metrics.http_answer(b"GET /x HTTP/1.1\r\n\r\n", reg)[0].startswith("404")
    assert metrics.http_answer(b"garbage", reg)[0].startswith("400")
    a, b = socket.socketpair()
    try:
        assert _peer_uid(a) == os.getuid()
    finally:
        a.close()
        b.close()


def test_cli_stats_help():
    r = subprocess.run([sys.executable, "-m", "paqet", "stats", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--socket", "--json", "--top", "--config"):
        assert flag in r.stdout
