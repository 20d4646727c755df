"""The whole stack (SOCKS5 -> smux -> KCP -> codec -> UDP -> server -> target) in one process."""

import asyncio

import pytest

from harness import Tunnel, blob_server, echo_server, fetch, socks_connect
from paqet.proto import appmsg
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(120)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 100))


@pytest.mark.parametrize("mode,block,fec", [("fast3", "aes", (0, 0)), ("fast", "salsa20", (0, 0)),
                                            ("fast2", "aes-128-gcm", (10, 3)), ("normal", "null", (0, 0))])
def test_download_through_socks(mode, block, fec):
    params = TunnelParams.for_mode(mode, block=block, key="integration", dshard=fec[0],
                                   pshard=fec[1], sndwnd=512, rcvwnd=512)

    async def main():
        async with Tunnel(params) as t, blob_server(3 << 20) as (port, digest):
            n, got = await fetch(t.socks.port, port)
            assert n == 3 << 20
            assert got == digest
    run(main())


def test_parallel_downloads_and_echo():
    params = TunnelParams.for_mode("fast3", key="integration", sndwnd=512, rcvwnd=512)

    async def main():
        async with Tunnel(params, conns=2) as t, blob_server(1 << 20) as (port, digest), \
                echo_server() as eport:
            results = await asyncio.gather(*(fetch(t.socks.port, port) for _ in range(8)))
            assert all(r == (1 << 20, digest) for r in results)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            for i in range(50):
                msg = f"ping {i}\n".encode() * 10
                w.write(msg)
                await w.drain()
                assert await r.readexactly(len(msg)) == msg
            w.close()
    run(main())


@pytest.mark.parametrize("dialect", ["alpha20", "gob", "auto"])
def test_other_dialects(dialect):
    params = TunnelParams.for_mode("fast3", key="integration")

    async def main():
        async with Tunnel(params, dialect=dialect) as t, echo_server() as eport:
            if dialect == "auto":
                for _ in range(100):
                    if t.pool.slots[0].dialect:
                        break
                    await asyncio.sleep(0.05)
                assert t.pool.slots[0].dialect == "alpha21"
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            w.write(b"hello dialect")
            await w.drain()
            assert await r.readexactly(13) == b"hello dialect"
            w.close()
    run(main())


def test_socks_auth():
    params = TunnelParams.for_mode("fast3", key="integration")

    async def main():
        async with Tunnel(params, username="u", password="p") as t, echo_server() as eport:
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport, username="u", password="p")
            assert rep == 0
            w.close()
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport, username="u", password="x")
            assert rep == -1
            w.close()
    run(main())


def test_ping_rtt():
    params = TunnelParams.for_mode("fast3", key="integration")

    async def main():
        async with Tunnel(params) as t:
            conn = t.pool.slots[0].conn
            rtt = await t.pool.ping(conn, "alpha21", 5)
            assert rtt is not None and 0 <= rtt < 2
    run(main())


def test_refused_target_gets_reply_code_quickly():
    """The status extension between Python peers: the server reports its dial result."""
    params = TunnelParams.for_mode("fast3", key="integration")

    async def main():
        import socket as so
        s = so.socket()
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
        s.close()  # nothing listens there now
        async with Tunnel(params, wait_dial=True) as t:
            for _ in range(100):
                if t.pool.slots[0].caps:
                    break
                await asyncio.sleep(0.05)
            assert t.pool.slots[0].caps == appmsg.CAP_STATUS | appmsg.CAP_REPORT
            # the reply must come from the server's dial result, not from a timeout: a
            # hang would end in pytest-timeout, not in a slow pass
            r, w, rep = await asyncio.wait_for(
                socks_connect(t.socks.port, "127.0.0.1", dead_port), 20)
            assert rep == 0x05
            w.close()
    run(main())


def test_go_style_server_without_extensions_still_works():
    """A client that offers PHELLO to a server which does not answer (as Go's) falls back."""
    params = TunnelParams.for_mode("fast3", key="integration")

    async def main():
        from paqet.proto import appmsg
        async with Tunnel(params) as t, echo_server() as eport:
            t.pool.slots[0].caps = 0  # what a Go server leaves us with
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            w.write(b"x" * 1000)
            await w.drain()
            assert await r.readexactly(1000) == b"x" * 1000
            w.close()
    run(main())


@pytest.mark.parametrize("server_dialect,want", [("auto", "alpha21"), ("alpha21", "alpha21"),
                                                 ("alpha20", "alpha20"), ("gob", "gob")])
def test_auto_dialect_detects_each_server_generation(server_dialect, want):
    """A server that reads only one dialect behaves as that Go release: alpha.21 answers the
    probe with 5 bytes, alpha.20 with 3, a gob-era one not at all. `auto` must tell them
    apart and then carry traffic in the detected dialect."""
    params = TunnelParams.for_mode("fast3", key="integration")

    async def main():
        async with Tunnel(params, dialect="auto", server_dialect=server_dialect) as t, \
                echo_server() as eport:
            for _ in range(200):
                if t.pool.slots[0].dialect:
                    break
                await asyncio.sleep(0.05)
            assert t.pool.slots[0].dialect == want
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            w.write(b"through " + want.encode())
            await w.drain()
            assert await r.readexactly(8 + len(want)) == b"through " + want.encode()
            w.close()
    run(main())
