"""Live stats from real Runtimes (client and server, UDP driver, one event loop, no root):
the control socket after a transfer, the Prometheus endpoint, the socket's lifetime."""

import asyncio
import os
import socket
import stat

import pytest

from harness import echo_server, socks_connect
from paqet.config import load_config_text
from paqet.control import query
from paqet.runtime import Runtime

pytestmark = pytest.mark.timeout(60)


def _free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configs(tmp, *, prometheus=""):
    port, socks = _free_port(), _free_port(socket.SOCK_STREAM)
    common = ("network:\n  driver: udp\n  firewall: manual\n  ipv4:\n    addr: '127.0.0.1:{p}'\n"
              "transport:\n  protocol: kcp\n  kcp:\n    mode: fast3\n    key: stats-test\n")
    server = ("role: server\nlisten:\n  addr: ':%d'\n" % port + common.format(p=port)
              + f"stats:\n  socket: {tmp}/server.sock\n  prometheus: '{prometheus}'\n")
    client = ("role: client\nserver:\n  addr: '127.0.0.1:%d'\n" % port
              + f"socks5:\n  - listen: '127.0.0.1:{socks}'\n" + common.format(p=0)
              + f"stats:\n  socket: {tmp}/client.sock\n  log_interval: 0\n")
    return load_config_text(server, "server.yaml"), load_config_text(client, "client.yaml"), socks


def test_transfer_moves_counters_read_over_control_socket(tmp_path):
    scfg, ccfg, socks = configs(tmp_path)
    n = 300_000

    async def main():
        srv, cli = Runtime(scfg), Runtime(ccfg)
        await srv.start()
        await cli.start()
        try:
            mode = os.stat(tmp_path / "client.sock").st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            async with echo_server() as eport:
                r, w, rep = await socks_connect(socks, "127.0.0.1", eport)
                assert rep == 0
                data = os.urandom(n)
                w.write(data)
                await w.drain()
                assert await r.readexactly(n) == data
                c = await asyncio.to_thread(query, str(tmp_path / "client.sock"))
                s = await asyncio.to_thread(query, str(tmp_path / "server.sock"))
                w.close()
        finally:
            await cli.stop()
            await srv.stop()
        return c, s

    c, s = asyncio.run(asyncio.wait_for(main(), 50))
    for snap, role in ((c, "client"), (s, "server")):
        assert snap["role"] == role and snap["pid"] == os.getpid()
        assert snap["sessions"] == 1 and snap["sessions_total"] >= 1
        t = snap["totals"]
        assert t["tx_bytes"] > n and t["rx_bytes"] > n, t
        assert t["wire_tx_bytes"] > t["tx_bytes"] and t["wire_rx_bytes"] > t["rx_bytes"]
        assert t["streams_opened"] >= 1
        assert snap["streams"] >= 1  # the echo stream is still open
        sess = snap["session_list"][0]
        assert sess["streams"] >= 1 and sess["tx_bytes"] > n and sess["srtt_ms"] >= 0
        assert "replay" in snap["drops"]
    assert c["session_list"][0]["client"] and "drops" in c["session_list"][0]
    assert not s["session_list"][0]["client"] and s["listener_drops"]
    # the server's one key is the unnamed user; its figures are its session's
    assert c["users"] == {} and list(s["users"]) == [""]
    u = s["users"][""]
    assert u["sessions"] == 1 and u["sessions_total"] >= 1
    assert u["bytes_in"] == s["totals"]["rx_bytes"] and u["bytes_out"] == s["totals"]["tx_bytes"]
    assert s["session_list"][0]["user"] == "" and "user" not in c["session_list"][0]
    # removed on exit
    assert not (tmp_path / "client.sock").exists() and not (tmp_path / "server.sock").exists()


def test_prometheus_endpoint_serves_parseable_text(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    scfg, ccfg, socks = configs(tmp_path, prometheus="127.0.0.1:0")

    async def get(port, path):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await w.drain()
        raw = await r.read()
        w.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], body.decode()

    async def main():
        srv, cli = Runtime(scfg), Runtime(ccfg)
        await srv.start()
        await cli.start()
        try:
            async with echo_server() as eport:
                r, w, rep = await socks_connect(socks, "127.0.0.1", eport)
                assert rep == 0
                w.write(b"x" * 5000)
                await w.drain()
                await r.readexactly(5000)
                port = srv.stats.metrics_port
                status, body = await get(port, "/metrics")
                missing = await get(port, "/nope")
                w.close()
        finally:
            await cli.stop()
            await srv.stop()
        return status, body, missing

    status, body, missing = asyncio.run(asyncio.wait_for(main(), 50))
    assert status == b"HTTP/1.1 200 OK"
    assert missing[0].startswith(b"HTTP/1.1 404")
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    for name in ("paqet_uptime_seconds", "paqet_sessions", "paqet_sessions_opened",
                 "paqet_streams", "paqet_sent_bytes", "paqet_received_bytes",
                 "paqet_wire_sent_bytes", "paqet_retransmits", "paqet_drops",
                 "paqet_fec_recovered", "paqet_session_srtt_seconds",
                 "paqet_session_sent_bytes", "paqet_session_loss_ratio"):
        assert name in fams, name
    assert fams["paqet_sessions"].samples[0].value == 1
    assert fams["paqet_received_bytes"].samples[0].value > 5000
    kinds = {s.labels["kind"] for s in fams["paqet_retransmits"].samples}
    assert kinds == {"fast", "early", "timeout"}
    assert {s.labels["reason"] for s in fams["paqet_drops"].samples} >= {"replay", "bad_crc"}
    users = {s.name: s for s in fams["paqet_user_received_bytes"].samples}
    assert [s.labels["user"] for s in fams["paqet_user_received_bytes"].samples] == [""]
    assert users["paqet_user_received_bytes_total"].value > 5000
    assert fams["paqet_user_sessions"].samples[0].value == 1


class _LossyUdp:
    """A UdpBackend dropping outgoing datagrams in a fixed pattern: one in 20 (FEC 10/3
    recovers those) and a burst of 5 in every 250 (beyond 3 parity shards: KCP must
    retransmit)."""

    def __new__(cls):
        from paqet.net.udp import UdpBackend
        b = UdpBackend("127.0.0.1", 0)
        send = b.send
        n = [0]

        def lossy(payload, addr):
            i = n[0] = n[0] + 1
            if i % 20 != 7 and not 100 <= i % 250 < 105:
                send(payload, addr)
        b.send = lossy
        return b


def test_loss_shows_as_retransmits_loss_estimate_and_fec_recoveries():
    """Both directions drop 7 % of datagrams (single drops and bursts); FEC 10/3 on: the
    sender's retransmissions and loss estimate and the receiver's FEC recoveries all move."""
    from harness import blob_server
    from paqet.client.pool import ClientPool
    from paqet.server.app import Server
    from paqet.tunnel.clock import now_ms
    from paqet.tunnel.params import TunnelParams
    from paqet.tunnel.stats import StatsCollector
    params = TunnelParams.for_mode("fast3", key="loss", dshard=10, pshard=3, sndwnd=256,
                                   rcvwnd=256)
    size = 1 << 20

    async def main():
        server = Server(params, _LossyUdp())
        await server.start()
        addr = ("127.0.0.1", server.backend.local_port)
        pool = ClientPool(params, addr, lambda: _LossyUdp(), conns=1,
                          dialect="alpha21", health_interval=0)
        await pool.start()
        try:
            async with blob_server(size) as (port, _digest):
                st = await pool.open_tcp("127.0.0.1", port)
                st.write(b"GET\n")
                got = 0
                while data := await st.read(1 << 16):
                    got += len(data)
                assert got == size
            sc = StatsCollector("server", start_ms=0)
            cc = StatsCollector("client", start_ms=0)
            return (sc.snapshot(list(server.listener.sessions.values()), now_ms()),
                    cc.snapshot([s.conn for s in pool.slots if s.conn], now_ms()))
        finally:
            await pool.close()
            await server.stop()

    s, c = asyncio.run(asyncio.wait_for(main(), 50))
    st, ct = s["totals"], c["totals"]
    assert st["tx_bytes"] > size and ct["rx_bytes"] > size
    assert st["retrans"] > 0 and st["retrans"] == (st["fast_retrans"] + st["early_retrans"]
                                                  + st["timeout_retrans"])
    assert 0 < st["loss"] < 0.5, st
    assert ct["repeat_segments"] <= st["retrans"]  # what arrived twice was sent twice
    assert ct["fec_recovered"] > 0, ct


def test_periodic_log_line(tmp_path, monkeypatch, caplog):
    import logging
    from paqet import control
    monkeypatch.setattr(control, "TICK_S", 0.05)
    scfg, ccfg, socks = configs(tmp_path)
    ccfg.stats.log_interval = 0.2
    ccfg.stats.socket = "off"

    async def main():
        srv, cli = Runtime(scfg), Runtime(ccfg)
        await srv.start()
        await cli.start()
        try:
            assert cli.stats.socket_path is None and not (tmp_path / "client.sock").exists()
            async with echo_server() as eport:
                r, w, rep = await socks_connect(socks, "127.0.0.1", eport)
                assert rep == 0
                for _ in range(40):  # bounded: at most ~2 s
                    w.write(b"y" * 1000)
                    await w.drain()
                    await r.readexactly(1000)
                    if any("stats: 1 session(s), 1 stream(s)" in m for m in caplog.messages):
                        break
                    await asyncio.sleep(0.05)
                w.close()
        finally:
            await cli.stop()
            await srv.stop()

    with caplog.at_level(logging.INFO, logger="paqet.stats"):
        asyncio.run(asyncio.wait_for(main(), 30))
    lines = [m for m in caplog.messages if m.startswith("stats: 1 session(s), 1 stream(s)")]
    assert lines and "up " in lines[0] and "retransmits" in lines[0] and "drops" in lines[0]
