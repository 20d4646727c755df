"""smux v1/v2 (xtaci/smux v1.5) as a sans-I/O state machine.

The shell feeds bytes read from KCP with `receive_data`, pulls events with `next_event`,
writes `data_to_send()` into KCP and calls `handle_timer` when `get_timer` says so.
Nothing here reads a clock or touches a socket.

Bounds: incoming bytes are parsed as they arrive (at most one partial frame, <= 65543
bytes, is kept); delivered payloads are charged to the session bucket and the shell stops
feeding while `receive_paused`. Outgoing bytes are exactly what the caller handed in
(v2: no more than the peer's window), so nothing here grows without the caller's say.
"""

from __future__ import annotations

import collections

from paqet.smux import events as ev
from paqet.smux.frame import (CMD_NAMES, FIN, HEADER, M32, NOP, PSH, SYN, UPD, UPD_BODY,  # noqa: F401
                              FrameError, encode_frame, encode_upd, parse_frames)

INITIAL_PEER_WINDOW = 262144
#: bytes a stream may consume before its first window update stops waiting (stream_consumed)
LAZY_UPD_LIMIT = 65536
ERR_INVALID_PROTOCOL = "invalid protocol"      # smux's ErrInvalidProtocol text
ERR_GO_AWAY = "stream id overflows, should start a new connection"


class SmuxError(Exception):
    """A call the session cannot honour (broken session, stream ids exhausted)."""


class _Stream:
    __slots__ = ("sid", "written", "peer_consumed", "peer_window", "read", "incr", "fin_recv",
                 "buffered")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.written = 0          # bytes sent in PSH, mod 2**32
        self.peer_consumed = 0    # from the peer's last UPD
        self.peer_window = INITIAL_PEER_WINDOW
        self.read = 0             # bytes the application consumed, mod 2**32 (v2 UPD)
        self.incr = 0             # consumed since the last UPD
        self.fin_recv = False
        self.buffered = 0         # delivered (DataReceived) but not yet consumed: bucket debt


class SmuxSession:
    def __init__(self, *, client: bool, version: int = 2, max_frame_size: int = 65535,
                 max_receive_buffer: int = 4 << 20, max_stream_buffer: int = 2 << 20,
                 keepalive_interval_ms: int = 2000, keepalive_timeout_ms: int = 8000,
                 max_streams: int = 65536, now_ms: int | None = None) -> None:
        if version not in (1, 2):
            raise ValueError("unsupported protocol version")
        if keepalive_interval_ms <= 0:
            raise ValueError("keep-alive interval must be positive")
        if keepalive_timeout_ms < keepalive_interval_ms:
            raise ValueError("keep-alive timeout must be larger than keep-alive interval")
        if not 0 < max_frame_size <= 65535:
            raise ValueError("max frame size must be positive and at most 65535")
        if not 0 < max_receive_buffer <= 0x7FFFFFFF:
            raise ValueError("max receive buffer must be positive")
        if not 0 < max_stream_buffer <= max_receive_buffer:
            raise ValueError("max stream buffer must be positive and not larger than "
                             "max receive buffer")
        self.client = client
        self.version = version
        self.max_frame_size = max_frame_size
        self.max_receive_buffer = max_receive_buffer
        self.max_stream_buffer = max_stream_buffer
        self.keepalive_interval_ms = keepalive_interval_ms
        self.keepalive_timeout_ms = keepalive_timeout_ms
        self.max_streams = max_streams
        self.bucket = max_receive_buffer
        self.streams: dict[int, _Stream] = {}
        self._next_id = 1 if client else 0
        self._rx = bytearray()
        self._events: collections.deque = collections.deque()
        self._ctrl: list = []                 # SYN, UPD, NOP: sent before any data
        self._data: dict[int, list] = {}      # sid -> [hdr, payload, hdr, payload, ...]
        # streams whose first window update waits for other frames (data_to_send) or the
        # timer (data_to_send(lazy=True)): see stream_consumed
        self._lazy: dict[int, None] = {}
        self.broken: str | None = None
        self._active = False
        # the bucket ran out since the last handle_timer (the shell stopped feeding frames)
        self._starved = False
        self._next_nop = None if now_ms is None else now_ms + keepalive_interval_ms
        self._next_check = None if now_ms is None else now_ms + keepalive_timeout_ms
        self.dropped_frames = 0               # PSH for unknown/closed streams
        self.refused_streams = 0              # SYN beyond max_streams (answered with FIN)
        self.queued_bytes = 0                 # payload bytes queued since data_to_send
        self.ignored_syns = 0                 # SYN for an id already in use

    # -- receiving ---------------------------------------------------------------------------
    @property
    def receive_paused(self) -> bool:
        """True while the shell should not feed more KCP bytes in (bucket used up)."""
        return self.bucket <= 0 or self.broken is not None

    def receive_data(self, data, now_ms: int | None = None) -> None:
        """Parse bytes read from KCP (any split); queues events."""
        if self.broken is not None or not data:
            return
        rx = self._rx
        if rx:
            rx += data
            buf = rx
        else:
            buf = data
        n = len(buf)
        off = 0
        unpack = HEADER.unpack_from
        version = self.version
        streams = self.streams
        push = self._events.append
        Data = ev.DataReceived
        while n - off >= 8:
            ver, cmd, length, sid = unpack(buf, off)
            self._active = True  # smux marks the session alive on every whole header
            if ver != version:
                self._fail(f"frame version {ver}, session version {version}")
                return
            if cmd == PSH:
                end = off + 8 + length
                if end > n:
                    break
                if length:
                    st = streams.get(sid)
                    if st is not None:
                        push(Data(sid, bytes(buf[off + 8:end])))
                        st.buffered += length
                        self.bucket -= length
                    else:
                        self.dropped_frames += 1
                off = end
            elif cmd == NOP:
                off += 8
            elif cmd == UPD:
                if version != 2:
                    self._fail("UPD frame in a version 1 session")
                    return
                if n - off < 16:
                    break
                st = streams.get(sid)
                if st is not None:
                    st.peer_consumed, st.peer_window = UPD_BODY.unpack_from(buf, off + 8)
                    push(ev.StreamWindowUpdated(sid))
                off += 16
            elif cmd == SYN:
                off += 8
                if sid in streams:
                    self.ignored_syns += 1
                elif len(streams) >= self.max_streams:
                    # Refused cleanly: the peer's stream reads EOF at once instead of
                    # waiting for an answer that never comes.
                    self.refused_streams += 1
                    self._ctrl.append(HEADER.pack(version, FIN, 0, sid))
                else:
                    streams[sid] = _Stream(sid)
                    push(ev.StreamOpened(sid))
            elif cmd == FIN:
                off += 8
                st = streams.get(sid)
                if st is not None and not st.fin_recv:
                    st.fin_recv = True
                    push(ev.StreamEnded(sid))
            else:
                self._fail(f"unknown command {cmd}")
                return
        if self.bucket <= 0:
            self._starved = True
        if buf is rx:
            if off:
                del rx[:off]
        elif off < n:
            rx += memoryview(buf)[off:]

    def _fail(self, detail: str) -> None:
        self.broken = f"{ERR_INVALID_PROTOCOL}: {detail}"
        self._rx = bytearray()
        self._events.append(ev.ProtocolError(ERR_INVALID_PROTOCOL, detail))

    def next_event(self):
        return self._events.popleft() if self._events else None

    # -- streams -----------------------------------------------------------------------------
    def open_stream(self, announce: bool = False) -> int:
        """Queue SYN for a new stream (client ids 3, 5, 7, ...; server 2, 4, ...).
        `announce` (v2, between our peers): a UPD with our stream window right behind the
        SYN, when it is larger than the INITIAL_PEER_WINDOW the peer assumes: the first
        round trip of a download is not held to 256 KiB."""
        if self.broken is not None:
            raise SmuxError(f"session broken: {self.broken}")
        nxt = self._next_id + 2
        if nxt > M32:
            raise SmuxError(ERR_GO_AWAY)
        self._next_id = nxt
        st = self.streams[nxt] = _Stream(nxt)
        self._ctrl.append(HEADER.pack(self.version, SYN, 0, nxt))
        if announce and self.version == 2 and self.max_stream_buffer > INITIAL_PEER_WINDOW:
            self._queue_upd(st)
        return nxt

    def send_window(self, sid: int) -> int:
        """Bytes `send_data` would accept now on this stream."""
        st = self.streams.get(sid)
        if st is None or st.fin_recv or self.broken is not None:
            return 0
        if self.version == 1:
            return 1 << 30
        inflight = (st.written - st.peer_consumed) & M32
        if inflight & 0x80000000:  # peer consumed more than sent: smux's ErrConsumed
            return 0
        return max(0, st.peer_window - inflight)

    def send_data(self, sid: int, data) -> int:
        """Queue PSH frames (<= max_frame_size each); returns the bytes accepted now
        (v2: up to the peer's window). 0 for unknown streams and after the peer's FIN."""
        st = self.streams.get(sid)
        if st is None or st.fin_recv or self.broken is not None:
            return 0
        total = len(data)
        n = total
        if self.version == 2:
            inflight = (st.written - st.peer_consumed) & M32
            if inflight & 0x80000000:
                return 0
            win = st.peer_window - inflight
            if win <= 0:
                return 0
            if n > win:
                n = win
        if n <= 0:
            return 0
        q = self._data.get(sid)
        if q is None:
            q = self._data[sid] = []
        mfs = self.max_frame_size
        pack = HEADER.pack
        ver = self.version
        if n <= mfs and n == total and type(data) is bytes:
            q.append(pack(ver, PSH, n, sid))
            q.append(data)
        else:
            # Slices of an immutable buffer stay views (joined once in data_to_send);
            # anything mutable is copied now.
            mv = memoryview(data)
            keep = mv.readonly
            for off in range(0, n, mfs):
                end = off + mfs if off + mfs < n else n
                q.append(pack(ver, PSH, end - off, sid))
                q.append(mv[off:end] if keep else bytes(mv[off:end]))
        st.written = (st.written + n) & M32
        self.queued_bytes += n
        return n

    def send_datagram(self, sid: int, data) -> bool:
        """One datagram as exactly one PSH frame, or nothing (no window yet / too large).
        An empty datagram is accepted and sends nothing (as a Go Write of 0 bytes)."""
        n = len(data)
        if n > self.max_frame_size:
            return False
        if n == 0:
            return sid in self.streams and self.broken is None
        if self.send_window(sid) < n:
            return False
        return self.send_data(sid, data) == n

    def close_stream(self, sid: int, unread: int | None = None) -> None:
        """Queue FIN (after this stream's queued data) and forget the stream. The bytes
        delivered but never consumed go back to the bucket (`unread` is not needed; the
        session counts them itself). Later frames for the id are discarded."""
        st = self.streams.pop(sid, None)
        if st is None:
            return
        if self._lazy and sid in self._lazy:  # it goes before the FIN, as Go's would
            del self._lazy[sid]
            self._queue_upd(st)
        if st.buffered:
            self.bucket += st.buffered
        q = self._data.get(sid)
        if q is None:
            q = self._data[sid] = []
        q.append(HEADER.pack(self.version, FIN, 0, sid))
        q.append(b"")

    def stream_consumed(self, sid: int, n: int) -> bool:
        """The application read n bytes of this stream: refund the bucket; v2 sends UPD
        after the first read and whenever max_stream_buffer/2 were read since the last.
        True when that queued a frame to send."""
        st = self.streams.get(sid)
        if st is None or n <= 0:
            return False  # a closed stream's debt was refunded by close_stream
        if n > st.buffered:
            n = st.buffered
            if n <= 0:
                return False
        st.buffered -= n
        self.bucket += n
        if self.version != 2:
            return False
        first = st.read == 0 and st.incr == 0
        st.read = (st.read + n) & M32
        st.incr += n
        lazy = self._lazy
        if st.incr >= self.max_stream_buffer // 2 or (lazy and sid in lazy
                                                      and st.read >= LAZY_UPD_LIMIT):
            self._queue_upd(st)
            lazy.pop(sid, None)
            return True
        if first:
            if self.max_stream_buffer >= INITIAL_PEER_WINDOW:
                # Go's smux sends this one at once. It only widens the window the peer
                # already assumes, so it waits for other frames, the timer, or
                # LAZY_UPD_LIMIT bytes read: a short request/response stream does not cost
                # a datagram (and the peer's ACK of it) for it.
                lazy[sid] = None
                return False
            self._queue_upd(st)
            return True
        return False

    def set_buffers(self, max_receive_buffer: int, max_stream_buffer: int) -> bool:
        """Change the session's receive buffer and the per-stream window we announce (the
        shell sizes them from the path). A larger window is announced at once (v2: a UPD
        for every stream that has received data); a smaller one with the next UPD. True
        when frames were queued."""
        if not 0 < max_stream_buffer <= max_receive_buffer <= 0x7FFFFFFF:
            raise ValueError("buffers must be positive, the stream's not the larger")
        self.bucket += max_receive_buffer - self.max_receive_buffer
        self.max_receive_buffer = max_receive_buffer
        grew = max_stream_buffer > self.max_stream_buffer
        self.max_stream_buffer = max_stream_buffer
        if not grew or self.version != 2:
            return False
        queued = False
        for st in self.streams.values():
            if st.read or st.buffered:
                self._queue_upd(st)
                queued = True
        return queued

    def _queue_upd(self, st: _Stream) -> None:
        """UPD with what the application consumed so far; the half-window count restarts."""
        self._ctrl.append(encode_upd(2, st.sid, st.read, self.max_stream_buffer))
        st.incr = 0

    # -- sending -----------------------------------------------------------------------------
    def data_to_send(self, lazy: bool = False, limit: int = 0) -> bytes:
        """All queued frames: control frames first, then data frames round-robin between
        streams (one frame per stream per turn; a stream's own frames keep their order).
        Waiting first window updates go with any other frame, or alone when lazy is set
        (the shell's timer). `limit` > 0: data frames only until their payload reaches
        `limit` bytes; the rest stays queued (so a stream that writes later still gets
        its turn before them); `limit` < 0: control frames only."""
        if self._lazy and (lazy or self._ctrl or self._data):
            self._flush_lazy()
        if limit < 0:
            ctrl = self._ctrl
            self._ctrl = []
            return b"".join(ctrl)
        if 0 < limit < self.queued_bytes:
            return self._data_upto(limit)
        ctrl, data = self._ctrl, self._data
        self.queued_bytes = 0
        if not data:
            if not ctrl:
                return b""
            self._ctrl = []
            return b"".join(ctrl)
        self._ctrl = []
        self._data = {}
        if len(data) == 1:
            (q,) = data.values()
            if ctrl:
                ctrl += q
                return b"".join(ctrl)
            return b"".join(q)
        parts = ctrl
        queues = list(data.values())
        i = 0
        while queues:
            live = []
            for q in queues:
                parts.append(q[i])
                parts.append(q[i + 1])
                if len(q) > i + 2:
                    live.append(q)
            queues = live
            i += 2
        return b"".join(parts)

    def _data_upto(self, limit: int) -> bytes:
        parts = self._ctrl
        self._ctrl = []
        queues = [[sid, q, 0] for sid, q in self._data.items()]
        size = 0
        first: list = []   # streams whose turn the limit cut off: they go first next time
        while queues:
            live = []
            for n, e in enumerate(queues):
                sid, q, i = e
                parts.append(q[i])
                payload = q[i + 1]
                parts.append(payload)
                size += len(payload)
                e[2] = i = i + 2
                if len(q) > i:
                    live.append(e)
                if size >= limit:
                    first = queues[n + 1:]
                    break
            queues = live
            if size >= limit:
                break
        rest = {}
        for sid, q, i in first + queues:
            rest[sid] = q[i:] if i else q
        self._data = rest
        self.queued_bytes -= size
        return b"".join(parts)

    def _flush_lazy(self) -> None:
        streams = self.streams
        for sid in self._lazy:
            st = streams.get(sid)
            if st is not None:
                self._queue_upd(st)
        self._lazy.clear()

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._ctrl or self._data)

    # -- keepalive -----------------------------------------------------------------------------
    def get_timer(self) -> int | None:
        """When handle_timer is next due (None until the first handle_timer call when the
        session was made without now_ms)."""
        if self._next_nop is None:
            return None
        return min(self._next_nop, self._next_check)

    def handle_timer(self, now_ms: int) -> None:
        """NOP every keepalive interval; KeepaliveTimeout once no frame header at all has
        arrived for the timeout while the bucket was not exhausted. Go's smux checks once
        per timeout period, so it notices a dead peer 1-2 timeouts after its last frame;
        here the silence is measured from the first call after the last frame (calls come
        at least every keepalive interval): timeout to timeout + interval. Not on the wire."""
        if self._next_nop is None:
            self._next_nop = now_ms + self.keepalive_interval_ms
            self._next_check = now_ms + self.keepalive_timeout_ms
            return
        if now_ms >= self._next_nop:
            self._ctrl.append(HEADER.pack(self.version, NOP, 0, 0))
            self._next_nop = now_ms + self.keepalive_interval_ms
        if self._active or self._starved or self.bucket <= 0:
            # heard from the peer, or flow-controlled (the shell stopped feeding frames),
            # since the last call: the silence starts now
            self._active = False
            self._starved = self.bucket <= 0
            self._next_check = now_ms + self.keepalive_timeout_ms
        elif now_ms >= self._next_check:
            self._events.append(ev.KeepaliveTimeout())
            self._next_check = now_ms + self.keepalive_timeout_ms
