"""Relaying bytes between a tunnel stream and a local socket, with back-pressure both ways.

The relay takes the socket's transport over with a buffered protocol, so bytes move in the
callbacks that produced them: what the socket delivers goes into the stream inside the read
callback, and what the tunnel decodes for the stream goes to the socket inside the pump
(the stream's sink). No task has to be scheduled per hop; with two tasks per relay the 1 KiB
fetch spent two extra loop turns on each side (docs/decisions.md).

Back-pressure: the socket is read only while the session's send budget has room and the
stream's window took the previous chunk (the read size is what the budget has room for;
reading pauses otherwise and resumes when the stream or the session signals room). Bytes
for a socket whose transport is above its high-water mark stay in the stream, unconsumed,
so the stream's smux window closes towards the peer. When one direction ends, its data is
flushed and the other side is closed (smux cannot half-close: once a peer's FIN arrived,
writes on that stream fail — smux.md §4).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Callable

from paqet.tunnel.handoff import handoff
from paqet.tunnel.stream import StreamClosed, TunnelStream

log = logging.getLogger("paqet.relay")

CHUNK = 65536
#: seconds without progress after which a relay whose one side has ended (peer FIN, session
#: gone, local FIN or RST) is reset, and the time a closed socket gets to flush. Without it
#: a target or local client that never reads (or a window that never opens) would hold the
#: socket, the stream and their buffers until limits.idle_timeout.
LINGER = 10.0
#: while a stream has given its socket no more than this, each write the pump gathered is
#: followed by a handoff (tunnel.handoff): the application reads a short reply at once
#: instead of waiting behind the rest of our batch (fetch p50 -30 us in two A/B runs). Past
#: it, no yield: one per write cost a bulk download 10 % of its rate.
HANDOFF_BYTES = 64 << 10

# One read buffer for every relay: each read is handed over (copied into the stream) in the
# same callback, before any other read can start.
_READ_BUF = memoryview(bytearray(CHUNK))
#: a stream that has sent less than SHORT_STREAM so far (a request, a short reply) may read
#: while the session's send budget is spent, up to FAST_LANE beyond it: its bytes then go
#: out with the next pump (smux sends streams round-robin) instead of waiting until the bulk
#: transfers that filled the budget drained it (at 100 Mbit/s, 8 MiB is 0.7 s)
SHORT_STREAM = 64 << 10
FAST_LANE = 1 << 20


# Relayed bytes go out at once (the tunnel does its own batching): asyncio and uvloop set
# TCP_NODELAY on the TCP transports their servers accept and create_connection dials
# (test_forward_relay checks the dials), so the relay sets nothing itself. The TCP forward,
# which accepts its own sockets, sets it on them.


class HeldSocket(asyncio.Protocol):
    """A socket's protocol until a relay takes its transport over (relay_transport): what
    the socket sends meanwhile is kept, and whether it ended."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []
        self.ended = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.held.append(data)

    def eof_received(self) -> bool:
        self.ended = True
        return True

    def connection_lost(self, exc) -> None:
        self.ended = True

    def take(self) -> bytes:
        """The bytes held so far (then none)."""
        data = b"".join(self.held)
        self.held = []
        return data


class DialFailed(ConnectionError):
    """The server reported that it could not connect to the target (PTCPR): `code` is the
    SOCKS5 reply code, 0x01 when the stream ended before any report."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the server could not connect (reply {code:#04x})")
        self.code = code


BENIGN = (ConnectionError, StreamClosed, asyncio.IncompleteReadError, TimeoutError, EOFError)


class SocketRelay(asyncio.BufferedProtocol):
    """The socket's protocol while it is relayed to `st`. done's result: None when a side
    ended normally, else the exception that ended it."""

    def __init__(self, st: TunnelStream, transport: asyncio.Transport,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.st = st
        self.conn = st.conn
        self.transport = transport
        self.loop = loop
        self.done: asyncio.Future = loop.create_future()
        self.last = loop.time()   # when bytes last moved either way (idle timeout)
        self.to_socket = 0
        self.to_stream = 0
        self.wpaused = False      # the transport's buffer is above its high-water mark
        self.rpaused = False      # we stopped reading the socket (no room in the tunnel)
        self.sock_ended = False   # the socket sent FIN, was reset or closed
        self._out: list[bytes] = []  # the stream's bytes gathered during a pump (_sink)
        self._head = b""          # goes in front of the socket's first bytes (or its end)
        #: called with the dial report that the stream's first byte is (PTCPR), until it came
        self._report: Callable[[int], None] | None = None

    # -- taking over ---------------------------------------------------------------------
    def start(self, leftover: bytes = b"", sock_done: bool = False, head: bytes = b"",
              report: Callable[[int], None] | None = None) -> None:
        """Take the transport over; `leftover`: bytes its previous protocol had read and
        not handed on; sock_done: that protocol saw the socket end. `head`: bytes for the
        stream in front of the socket's first (the server's dial report, PTCPR). `report`:
        the stream's first byte is a dial report, not data: called with it (0 = connected);
        any other value resets the socket and ends the relay with DialFailed."""
        st, tr = self.st, self.transport
        self._head = head
        self._report = report
        tr.set_protocol(self)
        self.wpaused = tr.get_write_buffer_size() > tr.get_write_buffer_limits()[1]
        st._on_eof = self._on_stream_end
        self._flush_stream()
        if self.done.done():
            return
        if leftover:
            self._to_stream(leftover)
            if self.done.done():
                return
        if sock_done or tr.is_closing():
            self.sock_ended = True
            self._write_head()
            self._finish(None)
            return
        self._check_room()
        if not self.rpaused and not tr.is_reading():
            tr.resume_reading()

    # -- socket -> stream ----------------------------------------------------------------
    def get_buffer(self, sizehint: int):
        conn = self.conn
        room = conn.send_budget - conn.queued_out
        if self.to_stream < SHORT_STREAM:
            room += FAST_LANE
        if room >= CHUNK:
            return _READ_BUF
        return _READ_BUF[:room if room > 0 else 1]

    def buffer_updated(self, nbytes: int) -> None:
        self._to_stream(bytes(_READ_BUF[:nbytes]))

    def _to_stream(self, data: bytes) -> None:
        if self.done.done():
            return
        if self._head:
            data = self._head + data
            self._head = b""
        try:
            self.st.write(data)
        except StreamClosed as exc:
            self._finish(exc)
            return
        if not self.to_stream:
            # the first bytes (a request, a response's head): send them with whatever
            # waits for them (the stream's SYN and header) now, not a loop turn or two on
            self.conn.pump_now()
        self.to_stream += len(data)
        self.last = self.loop.time()
        self._check_room()

    def _check_room(self) -> None:
        """Pause reading while the stream holds unsent bytes or the session's budget is
        spent; _room resumes it."""
        st = self.st
        if st._pending:
            st._on_writable = self._room
        elif self._backlogged():
            self.conn.on_send_room(self._room)
        else:
            return
        if not self.rpaused:
            self.rpaused = True
            self.transport.pause_reading()

    def _backlogged(self) -> bool:
        """The session's send budget is spent (for a stream that has sent little so far:
        the budget and FAST_LANE more, so a short reply does not wait behind the bulk
        transfers that filled the budget)."""
        conn = self.conn
        if self.to_stream < SHORT_STREAM:
            return conn.queued_out >= conn.send_budget + FAST_LANE
        return conn.send_backlogged

    def _room(self) -> None:
        if not self.rpaused or self.done.done():
            return
        st = self.st
        if st._pending and not st._closed:
            st._on_writable = self._room
        elif self._backlogged() and not self.conn.closed:
            self.conn.on_send_room(self._room)
        else:
            self.rpaused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def _write_head(self) -> None:
        """The head, when the socket ended before sending anything."""
        head = self._head
        if head and not self.done.done():
            self._head = b""
            try:
                self.st.write(head)
            except StreamClosed:
                pass

    def eof_received(self) -> bool:
        self.sock_ended = True
        self._write_head()
        st = self.st
        if not st._pending and not self.done.done():
            # every byte is with smux already: FIN now, behind them (often in the same
            # datagram), not after run() wakes
            st.close()
        self._finish(None)
        return True  # the transport is closed by run()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sock_ended = True
        self._write_head()
        self._finish(exc)

    # -- stream -> socket ----------------------------------------------------------------
    def _sink(self, data: bytes) -> None:
        """The stream's bytes as the pump decodes them: gathered, and written once the
        pump's events are processed (one write per pump, not per smux frame)."""
        out = self._out
        if not out:
            self.conn.after_events(self._write_out)
        out.append(data)

    def _write_out(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        if self.transport.is_closing():
            return  # the socket is gone (or the relay ended): nobody takes these bytes
        if len(out) == 1:
            self._write(out[0])
        else:
            self.transport.writelines(out)
            n = 0
            for c in out:
                n += len(c)
            self._wrote(n)
        if self.to_socket <= HANDOFF_BYTES:
            handoff()

    def _write(self, data: bytes) -> None:
        self.transport.write(data)
        self._wrote(len(data))

    def _wrote(self, n: int) -> None:
        """n bytes of the stream went to the socket: the stream's window gets them back."""
        self.to_socket += n
        self.last = self.loop.time()
        self.conn._stream_consumed(self.st, n)

    def _flush_stream(self) -> None:
        """Write what the stream holds while the transport takes it; then hand the stream
        the sink (bytes go straight through), or end when the stream has ended."""
        self._write_out()  # what the sink gathered goes first
        st = self.st
        chunks = st._chunks
        if self._report is not None:
            if chunks:
                rest = self._take_report(chunks[0])
                if rest is None:
                    return
                st._buffered -= 1
                if rest:
                    chunks[0] = rest
                else:
                    chunks.popleft()
            elif st._eof:
                self._dial_failed(0x01)  # the stream ended without a report
                return
        while chunks and not self.wpaused:
            data = chunks.popleft()
            st._buffered -= len(data)
            self._write(data)
        if chunks or self.wpaused:
            return
        if st._eof:
            err = st._error
            if err is None and not self.done.done():
                # the peer's FIN and every byte before it reached the transport: close both
                # now (the transport sends its buffer, then FIN; our FIN leaves with the
                # ACK), not after run() wakes. smux cannot half-close: writes on this
                # stream would fail from here on anyway.
                self.transport.close()
                st.close()
            self._finish(_end_reason(st))
        elif not self.done.done():
            st._sink = self._sink if self._report is None else self._report_sink

    def _report_sink(self, data: bytes) -> None:
        """The sink while the dial report is due: its byte, then the rest to the sink."""
        rest = self._take_report(data)
        if rest is not None:
            self.st._sink = self._sink
            if rest:
                self._sink(rest)

    def _take_report(self, data: bytes) -> bytes | None:
        """Read the dial report off the stream's first bytes: the bytes after it, or None
        when it is a failure (the relay then ends)."""
        code = data[0]
        self.conn._stream_consumed(self.st, 1)
        if code:
            self._dial_failed(code)
            return None
        report, self._report = self._report, None
        report(0)
        return data[1:]

    def _dial_failed(self, code: int) -> None:
        """The server could not connect: tell the owner, and reset the socket, so that its
        application (which was told "connected") sees an error, not a clean end."""
        report, self._report = self._report, None
        if report is not None:
            report(code)
        reset_transport(self.transport)
        self._finish(DialFailed(code))

    def _on_stream_end(self) -> None:
        st = self.st
        if st._closed:  # the stream or its session is gone
            self._finish(_end_reason(st))
        elif not st._chunks:
            self._flush_stream()

    def pause_writing(self) -> None:
        self.wpaused = True
        self.st._sink = None

    def resume_writing(self) -> None:
        self.wpaused = False
        if not self.done.done():
            self._flush_stream()

    # -- ending --------------------------------------------------------------------------
    def _finish(self, exc: BaseException | None) -> None:
        st = self.st
        st._sink = None
        st._on_eof = None
        st._on_writable = None
        if self.done.done():
            return
        self.done.set_result(exc)
        if not self.rpaused and not self.transport.is_closing():
            self.rpaused = True
            try:
                self.transport.pause_reading()
            except Exception:
                pass


    # -- supervising ---------------------------------------------------------------------
    async def run(self, label: str = "", idle_timeout: float | None = None) -> tuple[int, int]:
        """Wait until either side ends, or until no byte moved either way for idle_timeout
        seconds (0: no limit; None: the session's limits.idle_timeout); then flush the
        stream, close both, and return (bytes to socket, bytes to stream)."""
        st, transport, loop = self.st, self.transport, self.loop
        if idle_timeout is None:
            idle_timeout = st.conn.params.idle_timeout
        try:
            while not self.done.done():
                now = loop.time()
                idle_at = self.last + idle_timeout if idle_timeout > 0 else float("inf")
                stall_at = self.last + LINGER
                if now >= idle_at:
                    log.info("relay %s idle for %.0fs, closing", label, idle_timeout)
                    break
                if now >= stall_at and (st.ended or _socket_ended(self)):
                    # One side is gone and the other has taken nothing for LINGER seconds
                    # (a reader that never reads, a window that never opens): do not let it
                    # pin the socket, the stream and their buffers.
                    log.info("relay %s: one side ended and nothing moved for %.0fs, "
                             "resetting", label, LINGER)
                    _abort(transport)
                    break
                wake = min(idle_at, stall_at if stall_at > now else now + LINGER)
                await asyncio.wait((self.done,), timeout=wake - now)
            if self.done.done():
                exc = self.done.result()
                if exc is not None:
                    if isinstance(exc, BENIGN):
                        log.debug("relay %s ended: %s", label, exc)
                    else:
                        log.error("relay %s failed: %s", label, exc)
        finally:
            self._finish(None)
            try:
                if not st.closed and not st.peer_fin:
                    await asyncio.wait_for(st.drain(), 5)
            except BaseException:
                pass
            st.close()
            try:
                transport.close()
                if transport.get_write_buffer_size():
                    # close() waits for the buffer to drain: bounded by LINGER
                    loop.call_later(LINGER, _abort, transport)
            except Exception:
                pass
        return self.to_socket, self.to_stream


def relay_transport(st: TunnelStream, transport: asyncio.Transport, leftover: bytes = b"",
                    sock_done: bool = False, head: bytes = b"",
                    report: Callable[[int], None] | None = None) -> SocketRelay:
    """Start relaying between st and a socket's transport at once (bytes flow from here
    on); await the result's run() to supervise it and close both at the end. head, report:
    the dial report of PTCPR, to send (server) or to read (client): SocketRelay.start."""
    relay = SocketRelay(st, transport, asyncio.get_running_loop())
    relay.start(leftover, sock_done, head, report)
    return relay


async def relay_tcp(st: TunnelStream, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, label: str = "",
                    idle_timeout: float | None = None,
                    report: Callable[[int], None] | None = None) -> tuple[int, int]:
    """relay_transport() for a socket opened as asyncio streams (what the reader had
    buffered goes first), supervised until the end; returns (bytes to socket, bytes to
    stream)."""
    buffered = getattr(reader, "_buffer", None)
    leftover = bytes(buffered) if buffered else b""
    if buffered:
        buffered.clear()
    sock_done = bool(getattr(reader, "_eof", False)) or reader.exception() is not None
    return await _run_relay(st, writer.transport, leftover, sock_done, label, idle_timeout,
                            report=report)


async def relay_held(st: TunnelStream, held: HeldSocket, label: str = "",
                     idle_timeout: float | None = None, head: bytes = b"") -> tuple[int, int]:
    """relay_tcp() for a socket dialled or accepted with a HeldSocket protocol."""
    return await _run_relay(st, held.transport, held.take(), held.ended, label, idle_timeout,
                            head=head)


async def _run_relay(st, transport, leftover, sock_done, label, idle_timeout, head=b"",
                     report=None):
    try:
        relay = relay_transport(st, transport, leftover, sock_done, head, report)
    except BaseException:
        st.close()
        transport.close()
        raise
    return await relay.run(label, idle_timeout)


def _end_reason(st: TunnelStream) -> BaseException | None:
    """How an ended stream ended, for the relay's result: None for the peer's FIN."""
    err = st._error
    return StreamClosed(str(err)) if err is not None and not isinstance(err, EOFError) else None


_TCP_GONE = (7, 8, 9)  # TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK: the peer sent FIN or RST


def _socket_ended(relay: SocketRelay) -> bool:
    """The socket's peer has finished (FIN or RST), even while we are not reading it (its
    data waits in the kernel's buffers): asked from the kernel (TCP_INFO's state) on Linux."""
    tr = relay.transport
    if relay.sock_ended or tr.is_closing():
        return True
    sock = tr.get_extra_info("socket")
    if sock is not None and hasattr(socket, "TCP_INFO"):
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] in _TCP_GONE
        except (OSError, TypeError, ValueError):
            pass
    return False


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def reset_transport(transport: asyncio.BaseTransport) -> None:
    """Close the socket with a TCP RST (its peer reads ECONNRESET), not FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except (OSError, AttributeError, TypeError):
            pass
    _abort(transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    try:
        transport.abort()
    except Exception:
        pass
