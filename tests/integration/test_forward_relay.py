"""Static TCP forwards (client.forward) over the whole in-process stack: the stream is
opened in the accept callback when a session is ready (the relay takes the socket at once),
and by a task when none is (reading the socket waits for it); either way every byte
arrives, including what the local client sent before its stream existed."""

import asyncio
import hashlib

import pytest

from harness import Tunnel, blob_server, forward_get, session_ready
from paqet.client.forward import TcpForward
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(60)
P = TunnelParams.for_mode("fast3", key="forward")


@pytest.mark.parametrize("ready", [True, False], ids=["session-ready", "open-later"])
def test_forward_carries_every_byte(ready, monkeypatch):
    size = 1 << 20
    used = []

    async def main():
        async with Tunnel(P) as t, blob_server(size) as (port, digest):
            await session_ready(t)
            real = t.pool.open_now
            if not ready:
                monkeypatch.setattr(t.pool, "open_now", lambda msg: used.append(msg) or None)
            else:
                monkeypatch.setattr(t.pool, "open_now",
                                    lambda msg: used.append(msg) or real(msg))
            fwd = TcpForward(t.pool, ("127.0.0.1", 0), f"127.0.0.1:{port}")
            await fwd.start()
            try:
                lport = fwd.sockets[0].getsockname()[1]
                got = await asyncio.gather(*(forward_get(lport) for _ in range(3)))
            finally:
                await fwd.stop()
            return got, digest
    got, digest = asyncio.run(asyncio.wait_for(main(), 50))
    assert got == [(1 << 20, digest)] * 3
    assert len(used) == 3  # every connection went through the path under test


def test_forward_closes_the_local_connection_when_no_session_comes(monkeypatch):
    async def main():
        async with Tunnel(P) as t:
            await session_ready(t)
            from paqet.client.pool import NoTunnel

            async def no_tunnel(host, port):
                raise NoTunnel("none for this test")
            monkeypatch.setattr(t.pool, "open_now", lambda msg: None)
            monkeypatch.setattr(t.pool, "open_tcp", no_tunnel)
            fwd = TcpForward(t.pool, ("127.0.0.1", 0), "127.0.0.1:9")
            await fwd.start()
            try:
                lport = fwd.sockets[0].getsockname()[1]
                r, w = await asyncio.open_connection("127.0.0.1", lport)
                w.write(b"hello")
                try:  # closed: FIN, or RST for the unread "hello"
                    data = await asyncio.wait_for(r.read(100), 10)
                except ConnectionResetError:
                    data = b""
                w.close()
            finally:
                await fwd.stop()
            return data
    assert asyncio.run(asyncio.wait_for(main(), 30)) == b""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_dialled_sockets_have_nodelay(loop):
    """The server's relays set no socket options: they rely on the event loop setting
    TCP_NODELAY on the transports create_connection dials."""
    import socket

    run = pytest.importorskip("uvloop").run if loop == "uvloop" else asyncio.run

    async def main():
        lp = asyncio.get_running_loop()
        srv = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        dialed, _ = await lp.create_connection(asyncio.Protocol, "127.0.0.1", port)
        got = dialed.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        dialed.close()
        srv.close()
        return got
    assert run(main())


def test_forward_sets_nodelay_on_what_it_accepts():
    """asyncio's connect_accepted_socket leaves TCP_NODELAY off (uvloop's sets it): the
    forward sets it on its listening sockets, and what they accept inherits it."""
    import socket
    seen = []

    async def main():
        async with Tunnel(P) as t:
            await session_ready(t)
            fwd = TcpForward(t.pool, ("127.0.0.1", 0), "127.0.0.1:9")
            serve = fwd._serve

            async def spy(sock, *a):
                seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                sock.close()
                a[1] and a[1].close()
            fwd._serve = spy
            await fwd.start()
            try:
                r, w = await asyncio.open_connection("127.0.0.1", fwd.sockets[0].getsockname()[1])
                for _ in range(100):
                    if seen:
                        break
                    await asyncio.sleep(0.02)
                w.close()
            finally:
                fwd._serve = serve
                await fwd.stop()
    asyncio.run(asyncio.wait_for(main(), 30))
    assert seen and seen[0]


def test_accept_error_pauses_listening_then_serves(monkeypatch):
    """EMFILE (and the like) leaves the connection in the backlog: the forward stops
    watching the listening socket until its retry (ACCEPT_RETRY later) instead of spinning
    on it, then serves the connection."""
    import errno
    import socket

    from paqet.client import forward

    monkeypatch.setattr(forward, "ACCEPT_RETRY", 0.3)
    events = []
    real_accept = socket.socket._accept  # what the forward calls (the fd, no socket object)

    async def main():
        async with Tunnel(P) as t, blob_server(4096) as (port, digest):
            await session_ready(t)
            fwd = TcpForward(t.pool, ("127.0.0.1", 0), f"127.0.0.1:{port}")
            await fwd.start()
            lsock = fwd.sockets[0]

            def accept(self):
                if self is lsock:
                    if not events:
                        events.append("failed")
                        raise OSError(errno.EMFILE, "Too many open files")
                    events.append("accept")
                return real_accept(self)
            monkeypatch.setattr(socket.socket, "_accept", accept)
            resume = fwd._resume_listening

            def resumed(ls, family):
                events.append("resumed")
                resume(ls, family)
            fwd._resume_listening = resumed
            try:
                got = await forward_get(lsock.getsockname()[1])
            finally:
                await fwd.stop()
            return got, digest
    got, digest = asyncio.run(asyncio.wait_for(main(), 30))
    assert got == (4096, digest)
    # nothing tried the socket between the failure and the retry (without the pause the
    # second accept would come at once, before any "resumed")
    assert events[:3] == ["failed", "resumed", "accept"]


def test_forward_listens_on_ipv6_loopback():
    """The forward binds its own sockets: an IPv6 listen address works as with asyncio's
    servers (IPV6_V6ONLY set, so the port can be taken on IPv4 separately)."""
    import socket
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        probe = socket.create_server(("::1", 0), family=socket.AF_INET6)
        probe.close()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")

    async def main():
        async with Tunnel(P) as t, blob_server(50_000) as (port, digest):
            await session_ready(t)
            fwd = TcpForward(t.pool, ("::1", 0), f"127.0.0.1:{port}")
            await fwd.start()
            try:
                lsock = fwd.sockets[0]
                assert lsock.family == socket.AF_INET6
                assert lsock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
                r, w = await asyncio.open_connection("::1", lsock.getsockname()[1])
                w.write(b"GET\n")
                got = b""
                while data := await asyncio.wait_for(r.read(1 << 16), 20):
                    got += data
                w.close()
            finally:
                await fwd.stop()
            return len(got), hashlib.sha256(got).hexdigest(), digest
    n, h, digest = asyncio.run(asyncio.wait_for(main(), 30))
    assert (n, h) == (50_000, digest)
