"""An asyncio view of one smux stream: read/write with back-pressure, and datagram mode.

The stream never touches the sans-I/O machines directly except through its connection,
which owns them; it only keeps the bytes that arrived for it and the bytes the application
handed in but the smux window has not yet taken.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol


class StreamOwner(Protocol):
    """What a stream uses of its connection (tunnel.connection.TunnelConnection): named here,
    so that this module does not import the connection that imports it."""

    peer: tuple[str, int]
    smux: object             # smux.session.SmuxSession
    pending_out: int         # bytes in the streams' pending queues
    send_backlogged: bool

    def now_ms(self) -> int: ...
    async def wait_send_room(self) -> None: ...
    def _schedule_pump(self) -> None: ...
    def _stream_consumed(self, st: "TunnelStream", n: int) -> None: ...
    def _close_stream(self, st: "TunnelStream") -> None: ...


class StreamClosed(ConnectionError):
    """The stream (or its whole session) is gone: nothing more can be written."""


class TunnelStream:
    """One smux stream. Byte-stream methods: read(), write(), drain(), write_eof()/close().
    Datagram methods (one smux frame per datagram): read_datagram(), send_datagram()."""

    __slots__ = (
        "conn", "sid", "_chunks", "_buffered", "_eof", "_closed", "_error", "_readable",
        "_writable", "_pending", "_pending_bytes", "_local_closed", "peer_fin", "opened_at",
        "_sink", "_on_eof", "_on_writable",
    )

    def __init__(self, conn: StreamOwner, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False          # peer sent FIN (or the session died): no more data will come
        self._closed = False       # fully closed: no reads or writes
        self._local_closed = False  # we sent FIN
        self._error: BaseException | None = None
        # made when a reader or writer first waits (most streams of a relay never do)
        self._readable: asyncio.Event | None = None
        self._writable: asyncio.Event | None = None
        self._pending: collections.deque[memoryview] = collections.deque()
        self._pending_bytes = 0
        self.peer_fin = False
        self.opened_at = conn.now_ms()
        #: a relay's callbacks (tunnel.relay): data straight to its socket instead of the
        #: buffer, the end of the stream, and room to write again (one-shot)
        self._sink = None
        self._on_eof = None
        self._on_writable = None

    @property
    def ended(self) -> bool:
        """The peer's FIN arrived, or the stream or its session is gone."""
        return self._eof

    def _wait_readable(self):
        ev = self._readable = _cleared(self._readable)
        return ev.wait()

    def _wait_writable(self):
        ev = self._writable = _cleared(self._writable)
        return ev.wait()

    def _wake_reader(self) -> None:
        ev = self._readable
        if ev is not None:
            ev.set()

    def __repr__(self) -> str:
        return f"<TunnelStream {self.sid} on {self.conn.peer}>"

    # -- called by the connection ----------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if self._closed:
            return
        sink = self._sink
        if sink is not None:
            sink(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake_reader()

    def _feed_eof(self) -> None:
        self._eof = True
        self.peer_fin = True
        self._wake_reader()
        # smux: once the peer's FIN arrived, writes on this stream fail.
        self._wake_writer()
        if self._on_eof is not None:
            self._on_eof()

    def _abort(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._eof = True
        self._closed = True
        self._drop_pending()
        self._wake_reader()
        self._wake_writer()
        if self._on_eof is not None:
            self._on_eof()

    def _wake_writer(self) -> None:
        ev = self._writable
        if ev is not None:
            ev.set()
        cb = self._on_writable
        if cb is not None:
            self._on_writable = None
            cb()

    def _drop_pending(self) -> None:
        self.conn.pending_out -= self._pending_bytes
        self._pending.clear()
        self._pending_bytes = 0

    def _push_pending(self) -> None:
        """Hand pending bytes to smux as far as its window allows."""
        sess = self.conn.smux
        pend = self._pending
        while pend:
            chunk = pend[0]
            n = sess.send_data(self.sid, chunk)
            if n <= 0:
                break
            self._pending_bytes -= n
            self.conn.pending_out -= n
            if n < len(chunk):
                pend[0] = chunk[n:]
                break
            pend.popleft()
        if not pend:
            self._wake_writer()

    # -- reading -----------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return self._buffered

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all buffered when n < 0); b"" at end of stream."""
        while not self._chunks:
            if self._eof:
                if self._error is not None and not isinstance(self._error, EOFError):
                    raise StreamClosed(str(self._error))
                return b""
            await self._wait_readable()
        return self.read_nowait(n)

    def read_nowait(self, n: int = -1) -> bytes:
        """Up to n of the bytes buffered now (all when n < 0); b"" when none are."""
        chunks = self._chunks
        if not chunks:
            return b""
        if n < 0 or n >= self._buffered:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            parts = []
            need = n
            while need > 0:
                c = chunks[0]
                if len(c) <= need:
                    parts.append(c)
                    chunks.popleft()
                    need -= len(c)
                else:
                    parts.append(c[:need])
                    chunks[0] = c[need:]
                    need = 0
            data = b"".join(parts)
        self._buffered -= len(data)
        self.conn._stream_consumed(self, len(data))
        return data

    async def readexactly(self, n: int) -> bytes:
        parts = []
        while n > 0:
            chunk = await self.read(n)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    async def read_datagram(self) -> bytes:
        """The payload of the next smux frame (a UDP datagram); b"" at end of stream."""
        while not self._chunks:
            if self._eof:
                return b""
            await self._wait_readable()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        self.conn._stream_consumed(self, len(data))
        return data

    # -- writing -----------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._closed or self._local_closed:
            raise StreamClosed(f"stream {self.sid} is closed")
        if self.peer_fin:
            raise StreamClosed(f"stream {self.sid}: peer closed it")
        if self._error is not None:
            raise StreamClosed(str(self._error))

    def write(self, data: bytes) -> None:
        """Queue bytes; they go out as the smux window allows. Await drain() for back-pressure."""
        self._check_writable()
        if not data:
            return
        if not self._pending:
            n = self.conn.smux.send_data(self.sid, data)
            if n:
                self.conn._schedule_pump()
            if n >= len(data):
                return
            data = memoryview(data)[n:]
        else:
            data = memoryview(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.conn.pending_out += len(data)

    async def drain(self) -> None:
        while True:
            if self._error is not None:
                raise StreamClosed(str(self._error))
            if self.peer_fin and self._pending:
                raise StreamClosed(f"stream {self.sid}: peer closed it")
            if not self._pending and not self.conn.send_backlogged:
                return
            if not self._pending:
                await self.conn.wait_send_room()
            else:
                await self._wait_writable()

    async def send_datagram(self, data: bytes) -> None:
        """Send one datagram as exactly one smux frame, waiting for window if needed."""
        while True:
            self._check_writable()
            if self.conn.smux.send_datagram(self.sid, data):
                self.conn._schedule_pump()
                return
            await self._wait_writable()

    def close(self) -> None:
        """Send FIN after the queued bytes and forget the stream. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._local_closed = True
        self._chunks.clear()
        self._drop_pending()  # not sent: a stream's queued bytes go only while it is open
        self.conn._close_stream(self)
        self._wake_reader()
        self._wake_writer()

    @property
    def closed(self) -> bool:
        return self._closed


def _cleared(ev: asyncio.Event | None) -> asyncio.Event:
    """An unset event to wait on: `ev` cleared, or a new one."""
    if ev is None:
        return asyncio.Event()
    ev.clear()
    return ev
