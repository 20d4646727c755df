"""The HTTP proxy listener through the whole in-process stack: CONNECT, plain requests with
absolute URIs (what is forwarded and what is not), keep-alive, Basic proxy auth, and error
statuses."""

import asyncio
import base64
import socket

import pytest

from harness import Tunnel, echo_server
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(60)

PARAMS = TunnelParams.for_mode("fast3", key="integration-http")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def origin(received: list):
    """An HTTP origin on loopback: records each request (head + body) and answers once."""
    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            body = await reader.readexactly(n) if n else b""
            received.append((head, body))
            payload = b"hello from origin"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(payload) + payload)
            await writer.drain()
        finally:
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def exchange(port: int, data: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    out = b""
    async with asyncio.timeout(20):
        while chunk := await r.read(65536):
            out += chunk
    w.close()
    return out


async def wait_caps(t: Tunnel) -> None:
    """The status extension (dial results) is negotiated just after start."""
    for _ in range(100):
        if t.pool.slots[0].caps:
            return
        await asyncio.sleep(0.05)


def status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def test_connect_tunnel():
    async def main():
        async with Tunnel(PARAMS, http=True) as t, echo_server() as eport:
            r, w = await asyncio.open_connection("127.0.0.1", t.httpproxy.port)
            # bytes sent right after the head (before the 200) must not be lost
            w.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\nearly"
                    % (eport, eport))
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await asyncio.wait_for(r.readexactly(5), 20) == b"early"
            w.write(b"x" * 100000)
            got = await asyncio.wait_for(r.readexactly(100000), 20)
            assert got == b"x" * 100000
            w.close()
    run(main())


def test_plain_get_strips_proxy_headers():
    async def main():
        received = []
        srv = await origin(received)
        oport = srv.sockets[0].getsockname()[1]
        async with Tunnel(PARAMS, http=True) as t:
            req = (b"GET http://127.0.0.1:%d/some/path?q=1 HTTP/1.1\r\n"
                   b"Host: wrong.example\r\nUser-Agent: test\r\nProxy-Connection: keep-alive\r\n"
                   b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nConnection: keep-alive, X-Hop\r\n"
                   b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\n" % oport)
            resp = await exchange(t.httpproxy.port, req)
        srv.close()
        assert status(resp) == 200
        assert resp.endswith(b"hello from origin")
        head = received[0][0]
        lines = head.split(b"\r\n")
        assert lines[0] == b"GET /some/path?q=1 HTTP/1.1"
        assert b"Host: 127.0.0.1:%d" % oport in lines
        assert b"X-Kept: yes" in lines and b"User-Agent: test" in lines
        # the client asked for keep-alive: the origin connection is not told to close
        assert not any(line.lower().startswith(b"connection:") for line in lines)
        low = head.lower()
        for gone in (b"proxy-connection", b"proxy-authorization", b"keep-alive", b"x-hop",
                     b"wrong.example"):
            assert gone not in low, gone
    run(main())


def test_plain_post_with_body():
    async def main():
        received = []
        srv = await origin(received)
        oport = srv.sockets[0].getsockname()[1]
        async with Tunnel(PARAMS, http=True) as t:
            body = b"k=v&" * 5000
            req = (b"POST http://127.0.0.1:%d/form HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: %d\r\n\r\n" % (oport, len(body))) + body
            resp = await exchange(t.httpproxy.port, req)
        srv.close()
        assert status(resp) == 200
        assert received[0][1] == body
    run(main())


def test_auth_required_refused_and_accepted():
    async def main():
        received = []
        srv = await origin(received)
        oport = srv.sockets[0].getsockname()[1]
        async with Tunnel(PARAMS, http=True, username="alice", password="s3cret") as t:
            base = b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n" % oport
            none = await exchange(t.httpproxy.port, base + b"\r\n")
            assert status(none) == 407
            assert b'Proxy-Authenticate: Basic realm="paqet"' in none
            bad = base64.b64encode(b"alice:wrong")
            wrong = await exchange(t.httpproxy.port,
                                   base + b"Proxy-Authorization: Basic " + bad + b"\r\n\r\n")
            assert status(wrong) == 407
            assert not received  # nothing reached the origin
            good = base64.b64encode(b"alice:s3cret")
            ok = await exchange(t.httpproxy.port,
                                base + b"Proxy-Authorization: Basic " + good + b"\r\n\r\n")
            assert status(ok) == 200
            assert b"proxy-authorization" not in received[0][0].lower()
        srv.close()
    run(main())


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def connect_then(port: int, data: bytes) -> tuple[bytes, BaseException | None]:
    """What a CONNECT client reads (until the end) and how the connection ended: None for a
    clean close, else the error (ConnectionResetError for a reset)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    out = b""
    end = None
    try:
        async with asyncio.timeout(20):
            while chunk := await r.read(65536):
                out += chunk
    except ConnectionError as exc:
        end = exc
    w.close()
    return out, end


def test_refused_target_is_502_for_plain_requests_and_a_reset_after_connect(caplog):
    """By default nothing waits for the dial: a plain request still gets its 502 (no
    response was sent yet), CONNECT its 200 at once and then a reset; the log says why."""
    async def main():
        async with Tunnel(PARAMS, http=True) as t:
            await wait_caps(t)
            port = closed_port()
            resp, end = await connect_then(
                t.httpproxy.port,
                b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\nhello" % port)
            assert status(resp) == 200 and isinstance(end, ConnectionResetError), (resp, end)
            resp = await exchange(t.httpproxy.port,
                                  b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % port)
            assert status(resp) == 502
    with caplog.at_level("INFO", logger="paqet.http"):
        run(main())
    failed = [r.getMessage() for r in caplog.records if "could not connect" in r.getMessage()]
    assert len(failed) == 2 and all("connection refused (reply 0x05)" in m for m in failed), failed
    assert "connection reset" in failed[0]


def test_refused_target_is_502_with_wait_dial():
    async def main():
        async with Tunnel(PARAMS, http=True, wait_dial=True) as t:
            await wait_caps(t)
            port = closed_port()
            resp = await exchange(t.httpproxy.port,
                                  b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % port)
            assert status(resp) == 502
            resp = await exchange(t.httpproxy.port,
                                  b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % port)
            assert status(resp) == 502
    run(main())


def test_malformed_requests_are_400():
    async def main():
        async with Tunnel(PARAMS, http=True) as t:
            for req in (b"GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"CONNECT example.org HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET ftp://example.org/ HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"\x00\x01garbage\r\n\r\n"):
                resp = await exchange(t.httpproxy.port, req)
                assert status(resp) == 400, (req, resp)
            big = b"GET http://a/ HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 20000 + b"\r\n\r\n"
            resp = await exchange(t.httpproxy.port, big)
            assert status(resp) == 431
    run(main())


async def keepalive_origin(conns: list, heads: list):
    """An HTTP/1.1 origin that serves many requests per connection: /chunked answers
    chunked, HEAD answers a length and no body, anything else a Content-Length body."""
    async def handle(reader, writer):
        conns.append(writer)
        try:
            for _ in range(100):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                heads.append(head)
                path = head.split(b" ")[1]
                close = b"connection: close" in head.lower()
                extra = b"Connection: close\r\n" if close else b""
                if head.startswith(b"HEAD "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n" + extra +
                                 b"\r\n")
                elif path == b"/chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra +
                                 b"\r\n4\r\nchun\r\n3\r\nked\r\n0\r\n\r\n")
                else:
                    body = b"reply to " + path
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) +
                                 extra + b"\r\n" + body)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def read_response(r) -> tuple[bytes, bytes]:
    """One response with Content-Length or chunked framing (HEAD: pass the head only)."""
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
    low = head.lower()
    if b"transfer-encoding: chunked" in low:
        body = b""
        while True:
            size = int((await r.readuntil(b"\r\n"))[:-2], 16)
            body += (await r.readexactly(size + 2))[:-2]
            if size == 0:
                return head, body
    n = 0
    for line in low.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    return head, await asyncio.wait_for(r.readexactly(n), 20)


def test_keep_alive_reuses_the_origin_connection():
    async def main():
        conns, heads = [], []
        srv = await keepalive_origin(conns, heads)
        srv2 = await keepalive_origin([], [])
        oport = srv.sockets[0].getsockname()[1]
        oport2 = srv2.sockets[0].getsockname()[1]
        async with Tunnel(PARAMS, http=True) as t:
            r, w = await asyncio.open_connection("127.0.0.1", t.httpproxy.port)
            base = b"http://127.0.0.1:%d" % oport
            # three requests on one client connection, one origin connection for all
            w.write(b"GET " + base + b"/one HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            assert (await read_response(r))[1] == b"reply to /one"
            w.write(b"GET " + base + b"/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            assert (await read_response(r))[1] == b"chunked"
            w.write(b"HEAD " + base + b"/h HTTP/1.1\r\nHost: x\r\n\r\n")
            # pipelined right behind the HEAD: its response has no body despite the length
            w.write(b"GET " + base + b"/two HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            head, _ = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20), None
            assert b"Content-Length: 1000" in head
            assert (await read_response(r))[1] == b"reply to /two"
            assert len(conns) == 1 and len(heads) == 4
            # another origin: a new tunnel stream; the client connection carries on
            w.write(b"GET http://127.0.0.1:%d/other HTTP/1.1\r\nHost: x\r\n\r\n" % oport2)
            await w.drain()
            assert (await read_response(r))[1] == b"reply to /other"
            # Connection: close from the client: forwarded, and the proxy closes after it
            w.write(b"GET " + base + b"/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await w.drain()
            assert (await read_response(r))[1] == b"reply to /last"
            assert await asyncio.wait_for(r.read(), 10) == b""
            assert b"Connection: close" in heads[-1]
            w.close()
        srv.close()
        srv2.close()
    run(main())


def test_silent_origin_is_504_after_the_idle_limit():
    """An origin that accepts and never answers: the request ends at limits.idle_timeout
    (here 1 s) with a 504 instead of waiting for ever."""
    import dataclasses

    async def main():
        held = []

        async def handle(reader, writer):
            held.append(writer)  # read nothing, answer nothing
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        oport = srv.sockets[0].getsockname()[1]
        params = dataclasses.replace(PARAMS, idle_timeout=1.0)
        async with Tunnel(params, http=True) as t:
            resp = await exchange(t.httpproxy.port,
                                  b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % oport)
            assert status(resp) == 504
        for w in held:
            w.close()
        srv.close()
    run(main())
