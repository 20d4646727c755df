"""Where the stack hands the CPU on (tunnel.handoff): after a batch of datagrams has gone
out, after the server's early dial has given a local target its request, and in a
forward's accept before the first read (so a client we pre-empted can send its request,
which then rides with the stream's SYN)."""

import asyncio
import socket

import pytest

import paqet.client.forward as forward
import paqet.server.app as app
import paqet.tunnel.connection as connection
from harness import ServerPair, Tunnel, blob_server, forward_get, session_ready
from paqet.proto import appmsg
from paqet.server.app import Server
from paqet.tunnel.connection import TunnelConnection
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(30)
P = TunnelParams.for_mode("fast3", key="handoff", interval=5000)
REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def test_a_send_hands_off_once_after_its_datagrams(monkeypatch):
    out, seen = [], []
    monkeypatch.setattr(connection, "handoff", lambda: seen.append(len(out)))

    async def main():
        a = TunnelConnection(conv=5, peer=("b", 1), send=lambda w, p: out.append(w),
                             params=P, client=True)
        st = a.open_stream()
        st.write(b"x" * 5000)  # several datagrams in one flush
        for _ in range(8):
            await asyncio.sleep(0)
        a.close()
    asyncio.run(main())
    assert len(out) >= 4
    assert seen and seen[0] >= 4  # the first batch was all out before its one handoff
    assert len(seen) < len(out)  # one per batch, not one per datagram


def test_early_dial_hands_off_with_the_request_at_the_target(monkeypatch):
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    at_handoff = []

    def record():
        conn, _ = lsock.accept()  # the connect completed ...
        at_handoff.append(conn.recv(100, socket.MSG_PEEK))  # ... and the request is there
        at_handoff.append(conn)

    monkeypatch.setattr(app, "handoff", record)

    async def main():
        pair = ServerPair(P, conv=9)
        st = pair.a.open_stream()
        st.write(appmsg.encode(appmsg.TcpConnect("127.0.0.1", port), "alpha21") + REQUEST)
        await pair.to_server()
        await pair.close()
    try:
        asyncio.run(main())
    finally:
        lsock.close()
        for x in at_handoff[1:]:
            x.close()
    assert at_handoff and at_handoff[0] == REQUEST


def test_early_dial_to_a_name_does_not_hand_off(monkeypatch):
    """Nothing local was woken (the task resolves names): no yield."""
    calls = []
    monkeypatch.setattr(app, "handoff", lambda: calls.append(1))

    class St:
        buffered = True
        peer_fin = False

        def read_nowait(self):
            return appmsg.encode(appmsg.TcpConnect("name.invalid", 80), "alpha21")

    early = Server(P, backend=None)._early(St())
    assert early is not None and early[2] is None and calls == []


class _Stream:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.conn = self

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pump_now(self) -> None:
        self.written.append(b"<pump>")


class _Pool:
    def __init__(self) -> None:
        self.st = _Stream()

    def open_now(self, msg):
        return self.st


def test_forward_hands_off_before_reading_what_the_client_sent(monkeypatch):
    """The client sends its request during the yield (as a pre-empted one does when it gets
    the CPU back): the request is read at once and goes out with the SYN's pump."""
    lsock = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lsock.getsockname())
    sock, peer = lsock.accept()
    monkeypatch.setattr(forward, "handoff", lambda: cli.sendall(REQUEST))
    pool = _Pool()
    fwd = forward.TcpForward(pool, ("127.0.0.1", 0), "198.18.0.2:80")
    spawned = []
    fwd._tasks.spawn = lambda coro: spawned.append(coro) or coro.close()
    try:
        fwd._accepted(sock, peer)
        assert pool.st.written == [REQUEST, b"<pump>"]
        assert len(spawned) == 1
    finally:
        for s in (cli, sock, lsock):
            s.close()


def test_relay_hands_off_after_writes_only_while_the_stream_is_young(monkeypatch):
    """A reply's first bytes reach the application with a handoff after each gathered write;
    a bulk transfer stops yielding after HANDOFF_BYTES (a yield per write cost 10 % of a
    download's rate)."""
    from paqet.tunnel import relay

    calls, writes = [], []
    monkeypatch.setattr(relay, "handoff", lambda: calls.append(1))
    real_wrote = relay.SocketRelay._wrote

    def wrote(self, n):
        writes.append(n)
        real_wrote(self, n)
    monkeypatch.setattr(relay.SocketRelay, "_wrote", wrote)
    size = 1 << 20

    async def main():
        async with Tunnel(TunnelParams.for_mode("fast3", key="handoff-relay")) as t, \
                blob_server(size) as (port, digest):
            await session_ready(t)
            fwd = forward.TcpForward(t.pool, ("127.0.0.1", 0), f"127.0.0.1:{port}")
            await fwd.start()
            try:
                got = await forward_get(fwd.sockets[0].getsockname()[1])
            finally:
                await fwd.stop()
            return got, digest
    got, digest = asyncio.run(asyncio.wait_for(main(), 50))
    assert got == (size, digest)
    assert calls  # the first writes handed off
    # writes of both relays (the download's are the many); handoffs only for the first
    assert len(calls) <= relay.HANDOFF_BYTES // 1024 + 4
    assert len(calls) < len(writes) // 2, (len(calls), len(writes))
