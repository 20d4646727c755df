"""Issue 18 through the whole in-process stack: the proxies answer CONNECT at once and the
application's first bytes leave with the stream's open; a failed dial, reported by the
server on the stream (PTCPR), resets the application's connection and the log says why;
`wait_dial` keeps the exact reply codes; servers without the extension still work."""

import asyncio
import logging
import socket

import pytest

from harness import Tunnel, echo_server, socks_connect
from paqet.client import socks
from paqet.proto import appmsg
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(60)
PARAMS = TunnelParams.for_mode("fast", key="first-byte")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def caps_known(t: Tunnel) -> None:
    for _ in range(200):
        if t.pool.slots[0].caps:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no PHELLO answer")


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


async def read_end(r) -> tuple[bytes, BaseException | None]:
    """What arrives until the end, and how it ended (None: a clean close)."""
    out = b""
    try:
        async with asyncio.timeout(20):
            while chunk := await r.read(65536):
                out += chunk
    except ConnectionError as exc:
        return out, exc
    return out, None


def spy_opens(t: Tunnel) -> list:
    """(message, bytes after it) that each new stream brought with its SYN to the server."""
    seen = []
    opened = t.server._opened

    def spy(conn, st):
        data = b"".join(st._chunks)
        reader = appmsg.MessageReader("auto")
        seen.append((reader.feed(data), reader.rest))
        opened(conn, st)
    t.server._opened = spy
    return seen


def test_socks5_answers_at_once_and_the_first_bytes_ride_with_the_open(monkeypatch):
    # a long wait for the first bytes: the test does not depend on how fast it writes
    monkeypatch.setattr(socks, "FIRST_BYTES_WAIT", 10.0)

    async def main():
        async with Tunnel(PARAMS) as t, echo_server() as eport:
            await caps_known(t)
            seen = spy_opens(t)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            w.write(b"first bytes")
            assert await asyncio.wait_for(r.readexactly(11), 20) == b"first bytes"
            w.close()
            assert seen == [(appmsg.TcpConnectReport("127.0.0.1", eport), b"first bytes")]
    run(main())


def test_socks5_refused_target_resets_and_the_log_names_the_reason(caplog):
    async def main():
        async with Tunnel(PARAMS) as t:
            await caps_known(t)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", closed_port())
            assert rep == 0  # success went out at once
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            data, end = await read_end(r)
            w.close()
            assert data == b"" and isinstance(end, ConnectionResetError), (data, end)
    with caplog.at_level(logging.INFO, logger="paqet.socks5"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "could not connect" in r.getMessage()]
    assert len(lines) == 1 and "connection refused (reply 0x05)" in lines[0], lines


def test_socks5_wait_dial_keeps_the_exact_reply_code():
    async def main():
        async with Tunnel(PARAMS, wait_dial=True) as t, echo_server() as eport:
            await caps_known(t)
            _r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", closed_port())
            w.close()
            assert rep == 0x05
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            w.write(b"ping")
            assert await asyncio.wait_for(r.readexactly(4), 20) == b"ping"
            w.close()
    run(main())


def test_target_that_speaks_first_and_closes_gets_its_bytes_through():
    """The server's report rides in front of the target's first bytes; a target that
    closes at once still gets its report (0) and its bytes to the client, then a clean
    end."""
    async def main():
        async def greet(reader, writer):
            writer.write(b"220 hello\r\n")
            await writer.drain()
            writer.close()
        srv = await asyncio.start_server(greet, "127.0.0.1", 0)
        gport = srv.sockets[0].getsockname()[1]
        async with Tunnel(PARAMS) as t:
            await caps_known(t)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", gport)
            assert rep == 0
            data, end = await read_end(r)  # the client sends nothing: it waits to be greeted
            w.close()
            assert (data, end) == (b"220 hello\r\n", None)
        srv.close()
    run(main())


def test_server_without_the_report_extension():
    """A Go server (no extensions: PTCP) and one of the previous release (PTCPS only): the
    proxy answers at once either way and the data goes through."""
    async def main():
        async with Tunnel(PARAMS) as t, echo_server() as eport:
            await caps_known(t)
            for caps in (0, appmsg.CAP_STATUS):
                t.pool.slots[0].caps = caps
                seen = spy_opens(t)
                r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
                assert rep == 0
                w.write(b"x" * 1000)
                assert await asyncio.wait_for(r.readexactly(1000), 20) == b"x" * 1000
                w.close()
                want = appmsg.TcpConnectStatus if caps else appmsg.TcpConnect
                assert type(seen[0][0]) is want, seen
                t.server._opened = type(t.server)._opened.__get__(t.server)
            t.pool.slots[0].caps = appmsg.CAP_STATUS  # a refused dial: reset as with PTCPR
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", closed_port())
            assert rep == 0
            _data, end = await read_end(r)
            w.close()
            assert isinstance(end, ConnectionResetError), end
    run(main())


def test_sessions_are_still_taken_in_turn():
    """The proxy asks for a ready session before it answers and opens on it after: the
    round robin over `conn` sessions goes on as before (one step per connection)."""
    async def main():
        async with Tunnel(PARAMS, conns=2) as t, echo_server() as eport:
            for _ in range(200):
                if all(s.conn is not None and s.caps for s in t.pool.slots):
                    break
                await asyncio.sleep(0.05)
            before = [s.conn.streams_opened for s in t.pool.slots]
            for _ in range(4):
                r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
                assert rep == 0
                w.write(b"hi")
                assert await asyncio.wait_for(r.readexactly(2), 20) == b"hi"
                w.close()
            after = [s.conn.streams_opened for s in t.pool.slots]
            assert [a - b for a, b in zip(after, before)] == [2, 2], (before, after)
    run(main())


def test_lone_writes_leave_at_once_in_fast_mode_and_the_report_rides_with_the_reply():
    """Two sessions in `fast` (write delay on) with a 5 s interval, so no tick sends
    anything here: the client's SYN, PTCPR and request leave at once; the server dials,
    and the target's reply leaves at once too, behind the report byte and with the
    request's ACK, in one datagram."""
    from harness import ServerPair
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    params = TunnelParams.for_mode("fast", key="first-byte", interval=5000)

    async def main():
        pair = ServerPair(params, conv=21)
        await asyncio.sleep(0.05)  # the sessions' first tick has passed: both idle
        st = pair.a.open_stream()
        st.write(appmsg.encode(appmsg.TcpConnectReport("127.0.0.1", port), "alpha21")
                 + b"GET / HTTP/1.0\r\n\r\n")
        for _ in range(8):
            await asyncio.sleep(0)
        sent = len(pair.a_out)
        if sent != 1:
            await pair.close()
            return sent, None, None, None
        await pair.to_server()
        conn, _ = await asyncio.get_running_loop().sock_accept(lsock)
        conn.setblocking(False)
        req = await asyncio.get_running_loop().sock_recv(conn, 100)
        conn.send(b"HTTP/1.0 200 OK\r\n\r\nhi")
        for _ in range(400):  # (a tick would come only after 5 s)
            if pair.b_out:
                break
            await asyncio.sleep(0.005)
        back = len(pair.b_out)
        if back != 1:
            conn.close()
            await pair.close()
            return sent, req, back, None
        await pair.to_client()
        got = b""
        while len(got) < 22:
            got += await asyncio.wait_for(st.read(), 5)
        conn.close()
        await pair.close()
        return sent, req, back, got
    try:
        sent, req, back, got = asyncio.run(main())
    finally:
        lsock.close()
    assert sent == 1
    assert req == b"GET / HTTP/1.0\r\n\r\n"
    assert back == 1
    assert got == b"\x00HTTP/1.0 200 OK\r\n\r\nhi"
