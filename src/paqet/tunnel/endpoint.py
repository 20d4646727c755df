"""Tunnel endpoints over a packet backend: a client's dialled connection, and the server's
listener that demultiplexes peers by address (kcp-go's rules, kcp-go-framing.md §5)."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from typing import Callable

from paqet.tunnel.connection import TunnelConnection
from paqet.tunnel.params import TunnelParams
from paqet.wire.datagram import DatagramCodec

log = logging.getLogger("paqet.tunnel")

_conv_sn = struct.Struct("<I8xI")  # conv at 0, sn at 12 of a KCP segment header


def _addr_key(addr: tuple) -> tuple:
    """Peers are keyed by (ip, port); an IPv4-mapped IPv6 address equals its IPv4 form."""
    ip, port = addr[0], addr[1]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, port


class _Reader:
    """Registers a backend's fd with the loop and drains every ready datagram per wakeup."""

    def __init__(self, backend, on_datagram: Callable[[bytes, tuple], None],
                 on_batch_end: Callable[[], None] | None = None, batch: int = 256) -> None:
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.on_datagram = on_datagram
        self.on_batch_end = on_batch_end
        self.batch = batch
        self.fd = backend.fileno()
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            items = self.backend.recv_batch(self.batch)
        except OSError as exc:
            log.error("reading from the packet socket failed: %s", exc)
            return
        cb = self.on_datagram
        for payload, addr in items:
            cb(payload, addr)
        if self.on_batch_end is not None:
            self.on_batch_end()

    def close(self) -> None:
        if self.fd is not None:
            try:
                self.loop.remove_reader(self.fd)
            except (ValueError, OSError):
                pass
            self.fd = None


class ClientTunnel:
    """One client connection: its own backend (own local port), one KCP conv, one smux
    client session, talking only to `server`."""

    def __init__(self, backend, server: tuple, params: TunnelParams,
                 on_closed: Callable[[TunnelConnection, str], None] | None = None,
                 conv: int | None = None) -> None:
        self.backend = backend
        self.server = _addr_key(server)
        self.params = params
        self.conv = conv if conv is not None else int.from_bytes(os.urandom(4), "little")
        self.conn = TunnelConnection(conv=self.conv, peer=server, send=backend.send,
                                     params=params, client=True, on_closed=on_closed)
        self._reader = _Reader(backend, self._on_datagram, self.conn.pump_now)

    def _on_datagram(self, payload: bytes, addr: tuple) -> None:
        if _addr_key(addr) == self.server:
            self.conn.datagram_received(payload)

    def close(self, reason: str = "closed") -> None:
        self.conn.close(reason)
        self._reader.close()
        self.backend.close()

    async def aclose(self, reason: str = "closed") -> None:
        await self.conn.aclose(reason)
        self._reader.close()
        self.backend.close()


class TunnelListener:
    """The server side: one backend, a session per peer address, accept() for new ones."""

    def __init__(self, backend, params: TunnelParams, *, backlog: int = 128,
                 max_sessions: int = 4096,
                 on_session_closed: Callable[[TunnelConnection, str], None] | None = None) -> None:
        self.backend = backend
        self.params = params
        self.sessions: dict[tuple, TunnelConnection] = {}
        self._accept_q: asyncio.Queue[TunnelConnection] = asyncio.Queue()
        self.backlog = backlog
        self.max_sessions = max_sessions
        self.on_session_closed = on_session_closed
        # Decodes first datagrams of unknown peers (its FEC state is thrown away).
        self._probe = DatagramCodec(params.block, params.key, dshard=params.dshard,
                                    pshard=params.pshard)
        self.drops = {"no_conv": 0, "backlog_full": 0, "table_full": 0, "conv_mismatch": 0}
        self._dirty: set[TunnelConnection] = set()  # sessions fed in the current batch
        self._reader = _Reader(backend, self._on_datagram, self._batch_end)
        self.closed = False

    def _on_datagram(self, payload: bytes, addr: tuple) -> None:
        key = _addr_key(addr)
        conn = self.sessions.get(key)
        if conn is not None:
            if conn.datagram_received(payload):
                self._dirty.add(conn)
                return
            conn.close("the peer restarted with a new conversation")
        self._new_peer(payload, key, addr)

    def _new_peer(self, payload: bytes, key: tuple, addr: tuple) -> None:
        decoded = self._probe.decode(payload)
        conv = None
        for kcp_bytes, regular in decoded:
            if regular and len(kcp_bytes) >= 24:
                conv, _sn = _conv_sn.unpack_from(kcp_bytes, 0)
                break
        if conv is None:
            self.drops["no_conv"] += 1
            return
        if self._accept_q.qsize() >= self.backlog:
            self.drops["backlog_full"] += 1
            return
        if len(self.sessions) >= self.max_sessions:
            self.drops["table_full"] += 1
            return
        conn = TunnelConnection(conv=conv, peer=addr, send=self.backend.send, params=self.params,
                                client=False, on_closed=self._closed_cb)
        self.sessions[key] = conn
        conn.datagram_received(payload)
        self._accept_q.put_nowait(conn)

    def _batch_end(self) -> None:
        dirty = self._dirty
        while dirty:
            dirty.pop().pump_now()

    def _closed_cb(self, conn: TunnelConnection, reason: str) -> None:
        key = _addr_key(conn.peer)
        if self.sessions.get(key) is conn:
            del self.sessions[key]
        if self.on_session_closed is not None:
            self.on_session_closed(conn, reason)

    async def accept(self) -> TunnelConnection | None:
        if self.closed:
            return None
        conn = await self._accept_q.get()
        return conn

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._reader.close()
        for conn in list(self.sessions.values()):
            conn.close("server shutting down")
        self.sessions.clear()
        self.backend.close()
        self._accept_q.put_nowait(None)  # type: ignore[arg-type]
