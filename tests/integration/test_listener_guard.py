"""The server listener's flood resistance and the sessions' anti-replay, in one process
over a fake backend: what garbage, replays, stale datagrams and session floods cost (no
sessions, no KCP input) and that an established session is never throttled."""

import asyncio
import os
import socket

import pytest

from paqet.kcp.engine import encode_segment
from paqet.smux.frame import NOP, encode_frame
from paqet.tunnel.endpoint import ClientTunnel, TunnelListener
from paqet.tunnel.guard import ListenerLimits
from paqet.tunnel.params import TunnelParams
from paqet.wire.datagram import DatagramCodec

pytestmark = pytest.mark.timeout(60)
KEY = "guard-test"
IP = "198.18.0.1"


class FakeBackend:
    local_port = 9999

    def __init__(self):
        self.a, self.b = socket.socketpair()
        self.sent = []

    def fileno(self):
        return self.a.fileno()

    def recv_batch(self, max_n=256):
        return []

    def send(self, payload, addr):
        self.sent.append((payload, addr))

    def set_peer_flags(self, addr, flags):
        pass

    def close(self):
        self.a.close()
        self.b.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 50))


def params(**kw):
    return TunnelParams.for_mode("fast3", block=kw.pop("block", "aes"), key=KEY, **kw)


def push(conv, sn, ts=0, data=None, una=0):
    data = encode_frame(2, NOP, 0) if data is None else data
    return encode_segment(conv, 81, 0, 128, ts, sn, una, data)


class Peer:
    """A client's side of the wire: its codec and KCP segments."""

    def __init__(self, block="aes", conv=0x1234):
        self.codec = DatagramCodec(block, KEY)
        self.conv = conv

    def dgram(self, sn, ts=0, data=None):
        return self.codec.encode(push(self.conv, sn, ts, data))[0]


def test_garbage_creates_nothing_and_is_counted():
    async def main():
        lst = TunnelListener(FakeBackend(), params(),
                             limits=ListenerLimits(unknown_datagrams_per_ip=0))
        for i in range(2000):
            lst._on_datagram(os.urandom(20 + i % 1400), (IP, 1024 + i))
        lst._on_datagram(os.urandom(1600), (IP, 1))
        await asyncio.sleep(0)
        assert not lst.sessions and lst._accept_q.qsize() == 0
        d = lst.drops
        # (a random prefix reads as FEC parity/OOB - no conv - about once in 33000)
        assert d["bad_frame"] + d["bad_crc"] + d["no_conv"] == 2001
        assert d["bad_frame"] >= 25          # shorter than nonce + CRC + a KCP header, or > 1500
        assert d["bad_crc"] > 1900
        # the prefix check turned most away before the whole datagram was decrypted
        assert lst.users.users[0].probe.stats.crc_errors < 200
        lst.close()
    run(main())


def test_garbage_from_one_source_is_rate_limited():
    async def main():
        lim = ListenerLimits(unknown_datagrams_per_ip=100, unknown_datagrams_burst=50)
        lst = TunnelListener(FakeBackend(), params(), limits=lim)
        for i in range(1000):
            lst._on_datagram(os.urandom(200), (IP, 1024 + i))
        assert lst.drops["rate_limited"] >= 940
        assert lst.drops["bad_crc"] + lst.drops["bad_frame"] <= 60
        # another source is not affected
        lst._on_datagram(Peer().dgram(0), ("198.18.0.9", 5000))
        assert len(lst.sessions) == 1
        lst.close()
    run(main())


def test_new_sessions_per_ip_and_table_bounds():
    async def main():
        lim = ListenerLimits(new_sessions_per_ip=1, new_sessions_burst=5, max_sessions=8,
                             backlog=100)
        lst = TunnelListener(FakeBackend(), params(), limits=lim)
        for port in range(2000, 2020):
            lst._on_datagram(Peer(conv=port).dgram(0), (IP, port))
        assert len(lst.sessions) == 5
        assert lst.drops["session_rate"] == 15
        for i in range(10):
            lst._on_datagram(Peer(conv=i).dgram(0), (f"198.18.1.{i + 1}", 3000))
        assert len(lst.sessions) == 8
        assert lst.drops["table_full"] == 7
        lst.close()
    run(main())


def test_backlog_bound():
    async def main():
        lst = TunnelListener(FakeBackend(), params(), limits=ListenerLimits(backlog=3))
        for i in range(6):
            lst._on_datagram(Peer(conv=i).dgram(0), (f"198.18.2.{i + 1}", 3000))
        assert len(lst.sessions) == 3 and lst.drops["backlog_full"] == 3
        lst.close()
    run(main())


def test_sessions_without_smux_data_expire():
    async def main():
        lim = ListenerLimits(handshake_timeout_ms=300)
        lst = TunnelListener(FakeBackend(), params(), limits=lim)
        good, stuck, ghost = Peer(conv=1), Peer(conv=2), Peer(conv=3)
        lst._on_datagram(good.dgram(0), (IP, 1000))         # smux NOP at sn 0: delivered
        lst._on_datagram(stuck.dgram(0, data=b""), (IP, 1001))  # sn 0 without a byte for smux
        assert len(lst.sessions) == 2
        await asyncio.sleep(1.5)
        assert list(lst.sessions) == [(IP, 1000)]
        assert lst.drops["expired"] == 1
        # mid-stream from an unknown peer (a client of a previous server instance): no
        # session at all; one would never deliver, and its keepalives, counted from sn 0,
        # could land in the client's old receive sequence and keep its dead session alive
        lst._on_datagram(ghost.dgram(50), (IP, 1002))
        lst._on_datagram(ghost.codec.encode(encode_segment(3, 82, 0, 128, 0, 0, 0, b""))[0],
                         (IP, 1002))                     # an ACK first: no session either
        assert list(lst.sessions) == [(IP, 1000)]
        assert lst.drops["no_session"] == 2
        lst.close()
    run(main())


def test_replay_into_a_session_is_dropped_before_kcp():
    async def main():
        lst = TunnelListener(FakeBackend(), params())
        peer = Peer()
        dgrams = [peer.dgram(sn, ts=sn) for sn in range(20)]
        for d in dgrams:
            lst._on_datagram(d, (IP, 4000))
        await asyncio.sleep(0.05)
        conn = lst.sessions[(IP, 4000)]
        assert conn.bytes_in > 0 and conn.kcp.rcv_nxt == 20
        before = conn.kcp.stats()["segments_in"] if "segments_in" in conn.kcp.stats() else None
        decrypted = conn.codec.stats.datagrams_in
        for _ in range(3):
            for d in dgrams:
                lst._on_datagram(d, (IP, 4000))
        assert lst.drops["replay"] == 60
        assert conn.codec.stats.datagrams_in == decrypted   # not even decrypted
        if before is not None:
            assert conn.kcp.stats()["segments_in"] == before
        # a retransmission of the same segment with a fresh nonce is accepted
        lst._on_datagram(peer.dgram(19, ts=19), (IP, 4000))
        assert conn.codec.stats.datagrams_in == decrypted + 1
        lst.close()
    run(main())


def test_stale_datagram_beyond_the_window_is_dropped():
    async def main():
        # a tiny window: the old datagram is forgotten, its timestamp still gives it away
        lst = TunnelListener(FakeBackend(), params(replay_window=4, replay_horizon_ms=1000))
        peer = Peer()
        old = peer.dgram(0, ts=1_000)
        lst._on_datagram(old, (IP, 4000))
        for sn in range(1, 30):
            lst._on_datagram(peer.dgram(sn, ts=1_000 + 300 * sn), (IP, 4000))
            await asyncio.sleep(0)
        conn = lst.sessions[(IP, 4000)]
        assert not conn.replay.seen(old[:12])
        lst._on_datagram(old, (IP, 4000))
        assert lst.drops["stale"] == 1 and lst.drops["replay"] == 0
        lst.close()
    run(main())


def test_established_session_is_never_rate_limited():
    async def main():
        lim = ListenerLimits(unknown_datagrams_per_ip=1, unknown_datagrams_burst=2)
        lst = TunnelListener(FakeBackend(), params(rcvwnd=4096), limits=lim)
        peer = Peer()
        lst._on_datagram(peer.dgram(0), (IP, 4000))
        await asyncio.sleep(0.01)
        conn = lst.sessions[(IP, 4000)]
        assert conn.bytes_in
        for sn in range(1, 3001):
            lst._on_datagram(peer.dgram(sn, ts=sn), (IP, 4000))
        await asyncio.sleep(0.01)
        assert lst.drops["rate_limited"] == 0
        assert conn.kcp.rcv_nxt == 3001
        lst.close()
    run(main())


def test_null_block_has_no_window_but_the_timestamp_check():
    async def main():
        lst = TunnelListener(FakeBackend(), params(block="null"))
        peer = Peer(block="null")
        lst._on_datagram(peer.dgram(0, ts=0), (IP, 4000))
        await asyncio.sleep(0.01)
        conn = lst.sessions[(IP, 4000)]
        assert conn.replay is None
        lst._on_datagram(peer.dgram(1, ts=60_000), (IP, 4000))
        lst._on_datagram(peer.dgram(0, ts=0), (IP, 4000))    # a minute older than the newest
        assert lst.drops["stale"] == 1
        lst.close()
    run(main())


def test_client_tunnel_counts_drops():
    async def main():
        be = FakeBackend()
        server = ("198.18.0.2", 9999)
        tun = ClientTunnel(be, server, params(), conv=0x55)
        srv = Peer(conv=0x55)
        d = srv.dgram(0)
        tun._on_datagram(d, server)
        tun._on_datagram(d, server)                        # replayed
        tun._on_datagram(os.urandom(300), server)          # garbage from the server's address
        tun._on_datagram(srv.dgram(1), ("198.18.0.3", 9999))  # someone else
        assert tun.drops["replay"] == 1
        assert tun.drops["bad_crc"] == 1
        assert tun.drops["foreign_source"] == 1
        tun.close()
    run(main())


class GuardBackend(FakeBackend):
    """A backend with the AF_PACKET backend's kernel guard, recording what it is given."""

    def __init__(self):
        super().__init__()
        self.guards = []

    def set_guard(self, block=(), throttle=None):
        self.guards.append((sorted(block), throttle or {}))


def test_replays_and_floods_go_into_the_kernel_guard():
    async def main():
        be = GuardBackend()
        lst = TunnelListener(be, params(), limits=ListenerLimits(unknown_datagrams_burst=10))
        peer = Peer()
        dgrams = [peer.dgram(sn, ts=sn) for sn in range(300)]
        lst._on_datagram(dgrams[0], (IP, 4000))
        await asyncio.sleep(0.01)                # established: no bucket from here on
        for d in dgrams[1:]:
            lst._on_datagram(d, (IP, 4000))
        await asyncio.sleep(0.01)
        assert lst.sessions[(IP, 4000)].bytes_in and not be.guards
        for d in dgrams:                       # replayed: 256 waiting -> guard now
            lst._on_datagram(d, (IP, 4000))
        await asyncio.sleep(0.01)
        assert be.guards, "the block list was not installed before the next sweep"
        assert len(be.guards) == 1
        block, throttle = be.guards[-1]
        assert block == sorted(int.from_bytes(d[:4], "big") for d in dgrams)
        assert throttle == {} and lst.drops["replay"] == 300
        # garbage from the same IP, random ports: throttled to the session's port
        for i in range(1200):
            lst._on_datagram(os.urandom(100), (IP, 10000 + i))
        await asyncio.sleep(0.01)
        block, throttle = be.guards[-1]
        assert throttle == {IP: [4000]} and lst.throttled == {IP: 0}
        assert len(block) == 300
        lst.close()
    run(main())
