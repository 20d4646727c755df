"""UDP flows mapped to streams, as upstream does: one stream per (local address, target)
pair, shared by every SOCKS5 association and UDP forward; a queue of 64 datagrams per flow
while its stream opens; idle flows closed after limits.udp_idle_timeout (60 s)."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Callable

from paqet.client.pool import ClientPool, NoTunnel
from paqet.tunnel.stream import StreamClosed, TunnelStream

log = logging.getLogger("paqet.udp")

Reply = Callable[[bytes], None]


class _Flow:
    __slots__ = ("key", "stream", "queue", "reply", "last_used", "task", "wake", "closed")

    def __init__(self, key: tuple[str, str], reply: Reply, now: float) -> None:
        self.key = key
        self.stream: TunnelStream | None = None
        self.queue: collections.deque[bytes] = collections.deque()
        self.reply = reply
        self.last_used = now
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self.closed = False


class UdpFlows:
    def __init__(self, pool: ClientPool, *, idle_timeout: float | None = None,
                 queue_len: int = 64) -> None:
        self.pool = pool
        #: seconds without a datagram either way (limits.udp_idle_timeout by default)
        self.idle_timeout = (pool.params.udp_idle_timeout if idle_timeout is None
                             else idle_timeout)
        self.queue_len = queue_len
        self.flows: dict[tuple[str, str], _Flow] = {}
        self._sweeper: asyncio.Task | None = None
        self.drops = 0

    def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep())

    def send(self, local: str, host: str, port: int, data: bytes, reply: Reply) -> bool:
        """Queue one datagram of flow (local, host:port); False if dropped (queue full)."""
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        key = (local, target)
        loop = asyncio.get_running_loop()
        flow = self.flows.get(key)
        if flow is None or flow.closed:
            flow = _Flow(key, reply, loop.time())
            self.flows[key] = flow
            flow.task = asyncio.ensure_future(self._run(flow, host, port))
        flow.reply = reply
        flow.last_used = loop.time()
        if len(flow.queue) >= self.queue_len:
            self.drops += 1
            return False
        flow.queue.append(data)
        flow.wake.set()
        return True

    async def _run(self, flow: _Flow, host: str, port: int) -> None:
        reader: asyncio.Task | None = None
        try:
            try:
                st = await self.pool.open_udp(host, port)
            except NoTunnel as exc:
                log.error("failed to establish UDP stream for %s -> %s: %s", flow.key[0],
                          flow.key[1], exc)
                return
            flow.stream = st
            log.info("accepted UDP connection %d for %s -> %s", st.sid, flow.key[0], flow.key[1])
            reader = asyncio.ensure_future(self._read(flow, st))
            while not flow.closed:
                while flow.queue:
                    await st.send_datagram(flow.queue.popleft())
                flow.wake.clear()
                if reader.done():
                    break
                await flow.wake.wait()
        except StreamClosed as exc:
            log.debug("UDP flow %s -> %s ended: %s", flow.key[0], flow.key[1], exc)
        finally:
            flow.closed = True
            if reader is not None:
                reader.cancel()
            if flow.stream is not None:
                flow.stream.close()
            if self.flows.get(flow.key) is flow:
                del self.flows[flow.key]

    async def _read(self, flow: _Flow, st: TunnelStream) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await st.read_datagram()
                if not data:
                    break
                flow.last_used = loop.time()
                flow.reply(data)
        except StreamClosed:
            pass
        flow.closed = True
        flow.wake.set()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for flow in list(self.flows.values()):
                if now - flow.last_used >= self.idle_timeout:
                    log.debug("closing idle UDP stream for %s -> %s", flow.key[0], flow.key[1])
                    flow.closed = True
                    flow.wake.set()
                    if flow.stream is not None:
                        flow.stream.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in list(self.flows.values()):
            flow.closed = True
            flow.wake.set()
            if flow.task is not None:
                flow.task.cancel()
        self.flows.clear()
