"""The whole stack with congestion "bbr" (kcp/rate.py pacing, kcp/window.py and smux
windows that follow the path) over loopback: every byte arrives, under back-pressure too,
and the session's hello tells each side that the other paces itself."""

import asyncio
import dataclasses

import pytest

from harness import Tunnel, blob_server, fetch, session_ready
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(60)
BBR = dataclasses.replace(TunnelParams.for_mode("fast3", key="paced"), congestion="bbr",
                          auto_rcvwnd=True, auto_sndwnd=True, auto_smux=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


@pytest.mark.parametrize("budget", [8 << 20, 128 << 10])
def test_parallel_downloads_arrive_intact(budget):
    size = 3 << 20
    params = dataclasses.replace(BBR, send_buffer=budget)

    async def main():
        async with Tunnel(params) as t, blob_server(size) as (port, digest):
            results = await asyncio.gather(*(fetch(t.socks.port, port) for _ in range(4)))
            conn = t.pool.slots[0].conn
            server_conn = next(iter(t.server.listener.sessions.values()))
            return results, digest, conn, server_conn
    results, digest, conn, sconn = run(main())
    assert results == [(size, digest)] * 4
    # both senders paced and measured the path; windows were not the fixed ones
    assert conn.kcp.cc is not None and sconn.kcp.cc.samples > 0
    assert conn.kcp.rw is not None and conn.kcp.rcv_wnd > BBR.rcvwnd


def test_hello_says_both_sides_pace():
    async def main():
        async with Tunnel(BBR) as t:
            await session_ready(t)
            conn = t.pool.slots[0].conn
            for _ in range(100):
                sconn = next(iter(t.server.listener.sessions.values()), None)
                if conn.kcp.rw.peer_paces and sconn is not None and sconn.kcp.rw.peer_paces:
                    return conn.announce_windows      # the server is ours
                await asyncio.sleep(0.05)
            return False
    assert run(main())


def test_a_kcp_peer_is_not_taken_for_a_paced_one():
    kcp = TunnelParams.for_mode("fast3", key="paced")

    async def main():
        async with Tunnel(BBR, server_params=kcp) as t:
            await session_ready(t)
            await asyncio.sleep(0.3)
            sconn = next(iter(t.server.listener.sessions.values()))
            return t.pool.slots[0].conn, sconn
    conn, sconn = run(main())
    assert sconn.kcp.cc is None and sconn.kcp.rw is None
    assert conn.kcp.rw is not None and not conn.kcp.rw.peer_paces
    assert conn.announce_windows        # still one of ours: a stream's window goes with its SYN


def test_sessions_between_the_same_hosts_share_one_path():
    """A client's connections to one server, and the server's sessions from one client
    address, share a SharedPath (kcp/rate.py); a session leaves it when it closes."""
    async def main():
        async with Tunnel(BBR, conns=2) as t:
            for _ in range(100):
                if len(t.server.listener.sessions) == 2:
                    break
                await asyncio.sleep(0.05)
            conns = [s.conn for s in t.pool.slots]
            sconns = list(t.server.listener.sessions.values())
            cpath = {id(c.kcp.cc.path) for c in conns}
            spath = {id(c.kcp.cc.path) for c in sconns}
            path = sconns[0].kcp.cc.path
            n = len(path.members)
            sconns[0].close("test")
            return (cpath, spath, n, len(path.members), sconns[0].kcp.cc.path,
                    len(conns[0].kcp.cc.path.members))
    cpath, spath, n, after, left, cn = run(main())
    assert len(cpath) == 1 and len(spath) == 1 and cpath != spath
    assert n == 2 and after == 1 and left is None
    assert cn == 2
