"""Static port forwards: a local TCP or UDP port carried to a fixed target via the server."""

from __future__ import annotations

import asyncio
import logging

from paqet.client.pool import ClientPool, NoTunnel
from paqet.client.udpflows import UdpFlows
from paqet.proto import appmsg
from paqet.tunnel.connection import ConnectionClosed
from paqet.tunnel.relay import relay_transport, set_nodelay
from paqet.tunnel.stream import StreamClosed, TunnelStream
from paqet.tunnel.tasks import TaskSet

log = logging.getLogger("paqet.forward")

UDP_MAX = 4096
UDP_QUEUE = 64


def split_host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Accepted(asyncio.Protocol):
    """A forwarded connection until a relay takes its transport: what it sends meanwhile
    is kept (reading is paused at once when no session is ready)."""

    def __init__(self, fwd: "TcpForward") -> None:
        self.fwd = fwd
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []
        self.ended = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.fwd._accepted(self, transport)

    def data_received(self, data: bytes) -> None:
        self.held.append(data)

    def eof_received(self) -> bool:
        self.ended = True
        return True

    def connection_lost(self, exc) -> None:
        self.ended = True


class TcpForward:
    """Each accepted connection gets a stream at once when a session is ready (no task
    before the first byte moves), else once one is."""

    def __init__(self, pool: ClientPool, listen: tuple[str, int], target: str) -> None:
        self.pool = pool
        self.listen = listen
        self.target = target
        self.host, self.port = split_host_port(target)
        self.server: asyncio.base_events.Server | None = None
        self._tasks = TaskSet()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Accepted(self), self.listen[0],
                                               self.listen[1])
        addr = self.server.sockets[0].getsockname()
        log.info("TCP forwarder listening on %s:%s -> %s", addr[0], addr[1], self.target)

    def _accepted(self, proto: _Accepted, transport: asyncio.Transport) -> None:
        set_nodelay(transport)
        try:
            st = self.pool.open_now(appmsg.TcpConnect(self.host, self.port))
        except ConnectionClosed:
            st = None
        if st is None:
            transport.pause_reading()
            self._tasks.spawn(self._open_later(proto, transport))
            return
        self._relay(st, proto, transport)

    def _relay(self, st: TunnelStream, proto: _Accepted, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername") or ("?", 0)
        label = f"{peer[0]}:{peer[1]} -> {self.target}"
        log.info("accepted TCP connection %s", label)
        # the stream's SYN and header leave with the first bytes the relay reads
        st.conn.defer_pump()
        relay = relay_transport(st, transport, b"".join(proto.held), proto.ended)
        proto.held = []
        self._tasks.spawn(relay.run(label))

    async def _open_later(self, proto: _Accepted, transport: asyncio.Transport) -> None:
        try:
            st = await self.pool.open_tcp(self.host, self.port)
        except NoTunnel as exc:
            peer = transport.get_extra_info("peername") or ("?", 0)
            log.error("failed to establish stream for %s -> %s: %s", peer, self.target, exc)
            transport.close()
            return
        except BaseException:
            transport.close()
            raise
        if transport.is_closing():
            st.close()
            return
        self._relay(st, proto, transport)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        await self._tasks.cancel_all(1)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, fwd: "UdpForward") -> None:
        self.fwd = fwd

    def datagram_received(self, data: bytes, addr) -> None:
        self.fwd._datagram(data, addr)


class UdpForward:
    """Each source address gets its own stream (via the shared UDP flow table)."""

    def __init__(self, pool: ClientPool, flows: UdpFlows, listen: tuple[str, int],
                 target: str) -> None:
        self.pool = pool
        self.flows = flows
        self.listen = listen
        self.target = target
        self.host, self.port = split_host_port(target)
        self.transport: asyncio.DatagramTransport | None = None
        self.drops = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpListener(self), local_addr=self.listen)
        addr = self.transport.get_extra_info("sockname")
        log.info("UDP forwarder listening on %s:%s -> %s", addr[0], addr[1], self.target)

    def _datagram(self, data: bytes, addr) -> None:
        if len(data) > UDP_MAX:
            self.drops += 1
            log.debug("UDP %s: datagram too large, %d bytes (limit %d)", addr, len(data), UDP_MAX)
            return
        src = f"{addr[0]}:{addr[1]}"
        ok = self.flows.send(src, self.host, self.port, data,
                             reply=lambda payload, a=addr: self._reply(payload, a))
        if not ok:
            self.drops += 1

    def _reply(self, payload: bytes, addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(payload, addr)

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


__all__ = ["TcpForward", "UdpForward", "split_host_port", "StreamClosed"]
