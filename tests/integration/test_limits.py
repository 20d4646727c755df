"""Issue 9's resource bounds (limits: in the config), each against the whole stack in one
process: max streams per session, the session send budget with a target that never reads,
the request timeout on both sides, idle TCP streams and idle UDP flows."""

import asyncio
import contextlib
import dataclasses
import socket
import struct

import pytest

from harness import Tunnel, echo_server, socks_connect
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(90)
BASE = TunnelParams.for_mode("fast3", key="limits")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def until(cond, tries=200, step=0.05):
    """Poll cond() at most tries times; the caller asserts the result."""
    for _ in range(tries):
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


async def ready(t):
    """The session is up and the server's extensions are known (SOCKS5 reply codes)."""
    assert await until(lambda: t.pool.slots[0].caps != 0)
    assert await until(lambda: len(t.server.listener.sessions) == 1)
    sconn = next(iter(t.server.listener.sessions.values()))
    assert await until(lambda: not sconn.streams)
    return t.pool.slots[0].conn, sconn


async def reset_seen(r) -> bool:
    """The connection ends with a reset (within 10 s), not with data or a clean end."""
    try:
        await asyncio.wait_for(r.read(1), 10)
    except ConnectionResetError:
        return True
    return False


async def echo_once(r, w, msg=b"hello limits"):
    w.write(msg)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(msg)), 10) == msg


@contextlib.asynccontextmanager
async def udp_echo():
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, data, addr):
            self.tr.sendto(data, addr)
    tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Echo, local_addr=("127.0.0.1", 0))
    try:
        yield tr.get_extra_info("sockname")[1]
    finally:
        tr.close()


def test_server_refuses_streams_beyond_max_streams_and_recovers():
    async def main():
        async with Tunnel(BASE, server_params=dataclasses.replace(BASE, max_streams=3)) as t, \
                echo_server() as eport:
            _cconn, sconn = await ready(t)
            held = []
            for _ in range(3):
                r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
                assert rep == 0 and await echo_once(r, w)
                held.append(w)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            # success at once (nothing waits for the dial); refused: the server's FIN
            # answers the stream at once, without a dial report, so the client resets
            assert rep == 0 and await reset_seen(r)
            w.close()
            assert sconn.smux.refused_streams >= 1 and len(sconn.streams) == 3
            held.pop().close()
            assert await until(lambda: len(sconn.streams) < 3)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0 and await echo_once(r, w)
            for w2 in held + [w]:
                w2.close()
    run(main())


def test_client_refuses_streams_beyond_max_streams():
    async def main():
        async with Tunnel(dataclasses.replace(BASE, max_streams=2), server_params=BASE) as t, \
                echo_server() as eport:
            cconn, _ = await ready(t)
            held = []
            for _ in range(2):
                r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
                assert rep == 0 and await echo_once(r, w)
                held.append(w)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0x01 and len(cconn.streams) == 2
            for w2 in held + [w]:
                w2.close()
    run(main())


def test_target_that_never_reads_bounds_memory_and_other_streams_work():
    # small buffers so the test is short: a 1 MiB send budget, 256 KiB stream windows in a
    # 1 MiB session bucket (one stuck stream cannot exhaust the bucket: smux.md)
    p = dataclasses.replace(BASE, send_buffer=1 << 20, streambuf=256 << 10, smuxbuf=1 << 20)
    total = 64 << 20
    held = []

    async def sink(reader, writer):  # accepts and never reads
        held.append(writer)

    async def main():
        srv = await asyncio.start_server(sink, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        async with Tunnel(p) as t, echo_server() as eport:
            cconn, sconn = await ready(t)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", sport)
            assert rep == 0
            w.transport.set_write_buffer_limits(high=1 << 16)
            block = b"\x5a" * (1 << 16)
            sent = 0
            peak_client = peak_server = 0

            async def pusher():
                nonlocal sent
                while sent < total:
                    w.write(block)
                    await w.drain()
                    sent += len(block)
            task = asyncio.ensure_future(pusher())
            last, still = -1, 0
            for _ in range(300):  # until the sender has been stuck for a while
                await asyncio.sleep(0.05)
                peak_client = max(peak_client, cconn.queued_out)
                peak_server = max(peak_server, max((s.buffered for s in sconn.streams.values()),
                                                   default=0), sconn.smux.max_receive_buffer
                                  - sconn.smux.bucket)
                still = still + 1 if sent == last else 0
                last = sent
                if still >= 20:
                    break
            assert still >= 20 and not task.done(), sent  # back-pressure reached the sender
            assert sent < total
            print(f"never-reading target: sender stuck after {sent} bytes, client queued peak "
                  f"{peak_client}, server buffered peak {peak_server}")
            # bounded: the client's budget (+ one relay read), the server's stream window
            assert peak_client <= p.send_buffer + (64 << 10), peak_client
            assert peak_server <= p.streambuf + (64 << 10), peak_server
            # the session still carries other streams
            r2, w2, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            for i in range(5):
                assert await echo_once(r2, w2, b"still here %d" % i)
            w2.close()
            task.cancel()
            w.close()
        srv.close()
        for h in held:
            h.close()
    run(main())


def test_request_timeout_closes_silent_socks_clients_and_streams():
    p = dataclasses.replace(BASE, request_timeout=0.5)

    async def main():
        async with Tunnel(p) as t:
            cconn, sconn = await ready(t)
            r, w = await asyncio.open_connection("127.0.0.1", t.socks.port)
            w.write(b"\x05\x01")  # an unfinished greeting, then silence
            await w.drain()
            assert await asyncio.wait_for(r.read(), 10) == b""
            w.close()
            st = cconn.open_stream()  # a stream without its app message
            assert await asyncio.wait_for(st.read(), 10) == b""
            st.close()
            assert await until(lambda: not sconn.streams)
    run(main())


def test_idle_tcp_streams_are_closed_and_busy_ones_kept():
    p = dataclasses.replace(BASE, idle_timeout=0.6)

    async def main():
        async with Tunnel(p) as t, echo_server() as eport:
            cconn, sconn = await ready(t)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0
            for i in range(8):  # 1.6 s of traffic every 0.2 s: never idle for 0.6 s
                assert await echo_once(r, w, b"busy %d" % i)
                await asyncio.sleep(0.2)
            assert await asyncio.wait_for(r.read(), 10) == b""  # then silence: closed
            w.close()
            assert await until(lambda: not sconn.streams and not cconn.streams)
    run(main())


@pytest.mark.parametrize("side", ["client", "server"])
def test_idle_udp_flows_expire_and_come_back(side):
    short = dataclasses.replace(BASE, udp_idle_timeout=0.5)
    cp, sp = (short, BASE) if side == "client" else (BASE, short)

    async def main():
        async with Tunnel(cp, server_params=sp) as t, udp_echo() as uport:
            _cconn, sconn = await ready(t)
            got = []
            for round_ in range(2):
                assert t.flows.send("127.0.0.1:1", "127.0.0.1", uport, b"dgram %d" % round_,
                                    got.append)
                assert await until(lambda: len(got) == round_ + 1)
                assert len(t.flows.flows) == 1
                # expired by the idle side; the other follows (stream closed both ways)
                assert await until(lambda: not t.flows.flows and not sconn.streams)
            assert got == [b"dgram 0", b"dgram 1"]
    run(main())


def test_send_budget_reservations_wait_for_room():
    async def main():
        async with Tunnel(BASE) as t:
            cconn, _ = await ready(t)
            cconn.send_budget = 100_000
            assert await cconn.reserve_send(65536) == 65536
            assert await cconn.reserve_send(65536) == 100_000 - 65536
            third = asyncio.ensure_future(cconn.reserve_send(65536))
            await asyncio.sleep(0.2)
            assert not third.done()  # the budget is used up: the reader waits
            cconn.release_send(65536)
            assert await asyncio.wait_for(third, 5) == 65536
            cconn.release_send(65536 + 100_000 - 65536)
            assert cconn.queued_out == cconn.smux.queued_bytes + cconn.kcp.wait_snd * cconn.kcp.mss
    run(main())


def test_stream_to_a_target_that_never_reads_is_freed_after_the_client_leaves(monkeypatch):
    from paqet.tunnel import relay
    monkeypatch.setattr(relay, "LINGER", 0.5)
    held = []

    async def sink(reader, writer):  # accepts and never reads (until the test says so)
        held.append((reader, writer))

    async def read_to_end(reader):
        try:
            while await reader.read(1 << 16):
                pass
            return "eof"
        except ConnectionError:
            return "reset"

    async def main():
        srv = await asyncio.start_server(sink, "127.0.0.1", 0)
        sport = srv.sockets[0].getsockname()[1]
        async with Tunnel(BASE) as t:
            _cconn, sconn = await ready(t)
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", sport)
            assert rep == 0
            block = b"\x33" * (1 << 16)
            for _ in range(400):  # until the sink's socket buffers and the window are full
                w.write(block)
                try:
                    await asyncio.wait_for(w.drain(), 0.5)
                except asyncio.TimeoutError:
                    break
            assert sconn.streams  # the server's relay is blocked writing to the sink
            # The local client goes away with a reset (a FIN would wait behind the bytes it
            # still has queued for us, which nobody will take). Its relay, waiting for window,
            # sees the socket gone; the server's sees the stream end while the sink takes
            # nothing: after LINGER without progress both are reset.
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                  struct.pack("ii", 1, 0))
            w.transport.abort()
            assert await until(lambda: not sconn.streams)
            assert await asyncio.wait_for(read_to_end(held[0][0]), 10) in ("eof", "reset")
        srv.close()
        for _r, hw in held:
            hw.close()

    run(main())


def test_udp_association_remembers_a_bounded_number_of_targets():
    from paqet.client import socks
    from paqet.proto.socks5 import build_udp_header

    class Flows:
        def __init__(self):
            self.sent = 0

        def send(self, local, host, port, data, reply):
            self.sent += 1
            return True

    class Listener:
        flows = Flows()

    assoc = socks._Association(Listener(), "127.0.0.1", 0)

    async def main():
        for i in range(socks.MAX_TARGETS + 200):
            assoc.datagram(build_udp_header("198.18.0.9", 1 + i) + b"x", ("127.0.0.1", 5000))
    run(main())
    assert Listener.flows.sent == socks.MAX_TARGETS + 200
    assert len(assoc.headers) == socks.MAX_TARGETS
    assert "198.18.0.9:1" not in assoc.headers and f"198.18.0.9:{socks.MAX_TARGETS + 200}" in assoc.headers


def test_streams_the_server_opens_are_closed_by_the_client():
    async def main():
        async with Tunnel(BASE) as t, echo_server() as eport:
            cconn, sconn = await ready(t)
            st = sconn.open_stream()
            st.write(b"x" * 100_000)  # nobody on the client would read this
            assert await asyncio.wait_for(st.read(), 10) == b""  # the client's FIN
            st.close()
            assert await until(lambda: not cconn.streams)
            assert cconn.smux.bucket == cconn.smux.max_receive_buffer  # nothing held
            r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", eport)
            assert rep == 0 and await echo_once(r, w)
            w.close()
    run(main())


def test_idle_udp_association_is_closed():
    p = dataclasses.replace(BASE, idle_timeout=0.6)

    async def main():
        async with Tunnel(p) as t:
            await ready(t)
            r, w = await asyncio.open_connection("127.0.0.1", t.socks.port)
            w.write(b"\x05\x01\x00")
            await w.drain()
            assert await r.readexactly(2) == b"\x05\x00"
            w.write(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")  # UDP ASSOCIATE 0.0.0.0:0
            await w.drain()
            assert (await r.readexactly(10))[1] == 0
            # no datagram and no control byte: the association and its control connection end
            assert await asyncio.wait_for(r.read(), 10) == b""
            w.close()
    run(main())
