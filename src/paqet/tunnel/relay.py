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
#: seconds without progress after which a relay whose one side has ended (peer FIN, session
#: gone, local FIN or RST) is reset, and the time a closed socket gets to flush. Without it
#: a target or local client that never reads (or a window that never opens) would hold the
#: socket, the stream and their buffers until limits.idle_timeout.
LINGER = 10.0


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Relayed bytes go out at once: the tunnel does its own batching."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
BENIGN = (ConnectionError, StreamClosed, asyncio.IncompleteReadError, TimeoutError, EOFError)


class _Activity:
    """When bytes last moved either way (loop time), for the idle-stream timeout."""
    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now


async def _stream_to_socket(st: TunnelStream, writer: asyncio.StreamWriter,
                            act: _Activity) -> int:
    n = 0
    loop = asyncio.get_running_loop()
    while True:
        data = await st.read(CHUNK)
        if not data:
            break
        writer.write(data)
        n += len(data)
        act.last = loop.time()
        await writer.drain()
    return n


async def _socket_to_stream(reader: asyncio.StreamReader, st: TunnelStream,
                            act: _Activity) -> int:
    """Reads only what the session's send budget has room for (reserved before the read),
    so bytes from local sockets and targets never pile up beyond limits.session_send_buffer
    (plus what the kernel's socket buffers hold)."""
    n = 0
    conn = st.conn
    loop = asyncio.get_running_loop()
    while True:
        room = await conn.reserve_send(CHUNK)
        try:
            data = await reader.read(room)
            if data:
                st.write(data)  # now counted as pending or queued
        finally:
            conn.release_send(room)
        if not data:
            break
        n += len(data)
        act.last = loop.time()
        await st.drain()
    return n


async def relay_tcp(st: TunnelStream, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, label: str = "",
                    idle_timeout: float | None = None) -> tuple[int, int]:
    """Copy both ways until either side ends, or until no byte moved either way for
    idle_timeout seconds (0: no limit; None: the session's limits.idle_timeout); returns
    (bytes to socket, bytes to stream)."""
    if idle_timeout is None:
        idle_timeout = st.conn.params.idle_timeout
    loop = asyncio.get_running_loop()
    act = _Activity(loop.time())
    up = asyncio.ensure_future(_stream_to_socket(st, writer, act))
    down = asyncio.ensure_future(_socket_to_stream(reader, st, act))
    sent = recv = 0
    done: set = set()
    try:
        while True:
            now = loop.time()
            idle_at = act.last + idle_timeout if idle_timeout > 0 else float("inf")
            stall_at = act.last + LINGER
            if now >= idle_at:
                log.info("relay %s idle for %.0fs, closing", label, idle_timeout)
                break
            if now >= stall_at and (st.ended.is_set() or _socket_ended(reader, writer)):
                # One side is gone and the other has taken nothing for LINGER seconds (a
                # reader that never reads, a window that never opens): do not let it pin
                # the socket, the stream and their buffers.
                log.info("relay %s: one side ended and nothing moved for %.0fs, resetting",
                         label, LINGER)
                _abort(writer)
                break
            wake = min(idle_at, stall_at if stall_at > now else now + LINGER)
            done, _ = await asyncio.wait({up, down}, timeout=wake - now,
                                         return_when=asyncio.FIRST_COMPLETED)
            if done:
                break
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
            if writer.transport.get_write_buffer_size():
                # close() waits for the buffer to drain: bounded by LINGER
                loop.call_later(LINGER, _abort, writer)
        except Exception:
            pass
    return sent, recv


_TCP_GONE = (7, 8, 9)  # TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK: the peer sent FIN or RST


def _socket_ended(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """The socket's peer has finished (FIN or RST), even while we are not reading it (its
    data waits in our buffers): asked from the kernel (TCP_INFO's state) on Linux."""
    if reader.exception() is not None or writer.transport.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    if sock is not None and hasattr(socket, "TCP_INFO"):
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] in _TCP_GONE
        except (OSError, TypeError, ValueError):
            pass
    return bool(getattr(reader, "_eof", False))


def _abort(writer: asyncio.StreamWriter) -> None:
    try:
        writer.transport.abort()
    except Exception:
        pass
