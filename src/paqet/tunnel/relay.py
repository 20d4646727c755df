"""Relaying bytes between a tunnel stream and a local socket, with back-pressure both ways.

Each direction reads only when the other side has taken the previous chunk (`drain`), so a
slow reader on either side stops the other instead of growing a buffer. When one direction
ends, its data is flushed and the other side is closed (smux cannot half-close: once a
peer's FIN arrived, writes on that stream fail — smux.md §4).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from paqet.tunnel.stream import StreamClosed, TunnelStream

log = logging.getLogger("paqet.relay")

CHUNK = 65536


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Relayed bytes go out at once: the tunnel does its own batching."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
BENIGN = (ConnectionError, StreamClosed, asyncio.IncompleteReadError, TimeoutError, EOFError)


async def _stream_to_socket(st: TunnelStream, writer: asyncio.StreamWriter) -> int:
    n = 0
    while True:
        data = await st.read(CHUNK)
        if not data:
            break
        writer.write(data)
        n += len(data)
        await writer.drain()
    return n


async def _socket_to_stream(reader: asyncio.StreamReader, st: TunnelStream) -> int:
    n = 0
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        st.write(data)
        n += len(data)
        await st.drain()
    return n


async def relay_tcp(st: TunnelStream, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, label: str = "") -> tuple[int, int]:
    """Copy both ways until either side ends; returns (bytes to socket, bytes to stream)."""
    up = asyncio.ensure_future(_stream_to_socket(st, writer))
    down = asyncio.ensure_future(_socket_to_stream(reader, st))
    sent = recv = 0
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            if task in done and task.exception() is not None:
                exc = task.exception()
                if isinstance(exc, BENIGN):
                    log.debug("relay %s ended: %s", label, exc)
                else:
                    log.error("relay %s failed: %s", label, exc)
    finally:
        for task in (up, down):
            if not task.done():
                task.cancel()
        for task in (up, down):
            try:
                v = await task
            except BaseException:
                v = 0
            if task is up:
                sent = v or 0
            else:
                recv = v or 0
        try:
            if not st.closed and not st.peer_fin:
                await asyncio.wait_for(st.drain(), 5)
        except BaseException:
            pass
        st.close()
        try:
            writer.close()
        except Exception:
            pass
    return sent, recv
