"""Static port forwards: a local TCP or UDP port carried to a fixed target via the server."""

from __future__ import annotations

import asyncio
import logging

from paqet.client.pool import ClientPool, NoTunnel
from paqet.client.udpflows import UdpFlows
from paqet.tunnel.relay import relay_tcp, set_nodelay
from paqet.tunnel.stream import StreamClosed

log = logging.getLogger("paqet.forward")

UDP_MAX = 4096
UDP_QUEUE = 64


def split_host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class TcpForward:
    def __init__(self, pool: ClientPool, listen: tuple[str, int], target: str) -> None:
        self.pool = pool
        self.listen = listen
        self.target = target
        self.host, self.port = split_host_port(target)
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
        addr = self.server.sockets[0].getsockname()
        log.info("TCP forwarder listening on %s:%s -> %s", addr[0], addr[1], self.target)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            set_nodelay(writer)
            try:
                st = await self.pool.open_tcp(self.host, self.port)
            except NoTunnel as exc:
                log.error("failed to establish stream for %s -> %s: %s", peer, self.target, exc)
                writer.close()
                return
            log.info("accepted TCP connection %s:%s -> %s", peer[0], peer[1], self.target)
            st.conn.defer_pump()
            await relay_tcp(st, reader, writer, f"{peer[0]}:{peer[1]} -> {self.target}")
        finally:
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()


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
