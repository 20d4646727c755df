"""A stream whose SYN brings PTCP to an IP address is dialled inside the pump that decoded
it, and (for a target on this host) the bytes after the header reach the target there
too, before any task runs (server.app.Server._opened)."""

import asyncio
import socket

import pytest

from harness import ServerPair
from paqet.proto import appmsg
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(30)
P = TunnelParams.for_mode("fast3", key="early-dial", interval=5000)


@pytest.mark.parametrize("status", [False, True], ids=["PTCP", "PTCPS"])
def test_request_reaches_the_target_inside_the_pump(status):
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    port = lsock.getsockname()[1]

    async def main():
        pair = ServerPair(P, conv=9)
        msg = (appmsg.TcpConnectStatus if status else appmsg.TcpConnect)("127.0.0.1", port)
        st = pair.a.open_stream()
        st.write(appmsg.encode(msg, "alpha21") + b"GET / HTTP/1.0\r\n\r\n")
        await pair.to_server()
        # no await since the pump: no task has run
        conn, _ = lsock.accept()
        conn.settimeout(0)
        got = conn.recv(100)
        first = None
        if status:  # the PTCPS reply was written in the same pump: the client reads 0x00
            await pair.to_client()
            first = await asyncio.wait_for(st.read(1), 5)
        await pair.close()
        conn.close()
        return got, first
    try:
        got, first = asyncio.run(main())
    finally:
        lsock.close()
    assert got == b"GET / HTTP/1.0\r\n\r\n"
    assert first == (b"\x00" if status else None)


def test_a_stream_closed_with_its_header_does_not_break_the_session():
    """SYN, PTCPS and FIN in one batch: the stream is gone by the time the connect
    completes, so the status byte cannot be written; that ends the stream, not the
    session the pump serves."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    async def main():
        pair = ServerPair(P, conv=11)
        st = pair.a.open_stream()
        st.write(appmsg.encode(appmsg.TcpConnectStatus("127.0.0.1", port), "alpha21"))
        st.close()
        await pair.to_server()
        for _ in range(8):
            await asyncio.sleep(0)
        broken = pair.b.closed, pair.b.close_reason
        await pair.close()
        return broken
    try:
        closed, reason = asyncio.run(main())
    finally:
        lsock.close()
    assert not closed, reason
