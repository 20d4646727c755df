"""smux v1/v2 (xtaci/smux v1.5) as a sans-I/O state machine.

Frames: ver(1) cmd(1) len(2, LE) sid(4, LE) payload. Commands SYN 0, FIN 1, PSH 2, NOP 3,
UPD 4 (v2: consumed u32 LE + window u32 LE). The shell feeds bytes read from KCP with
`receive_data`, pulls events with `next_event`, and writes `data_to_send()` into KCP.
"""

from __future__ import annotations

import collections
import struct

from paqet.smux import events as ev

SYN, FIN, PSH, NOP, UPD = 0, 1, 2, 3, 4
CMD_NAMES = {SYN: "SYN", FIN: "FIN", PSH: "PSH", NOP: "NOP", UPD: "UPD"}
HEADER = struct.Struct("<BBHI")
UPD_BODY = struct.Struct("<II")
INITIAL_PEER_WINDOW = 262144
M32 = 0xFFFFFFFF


class SmuxError(Exception):
    """A call the session cannot honour (unknown stream, closed session...)."""


def encode_frame(version: int, cmd: int, sid: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(version, cmd, len(payload), sid) + payload


def parse_frames(data: bytes, version: int | None = None) -> list[tuple[int, int, int, bytes]]:
    """Split a complete smux byte stream into (ver, cmd, sid, payload); trailing partial
    frames raise ValueError. SYN/FIN/NOP carry no payload whatever their length says."""
    out = []
    off, n = 0, len(data)
    while off < n:
        if n - off < 8:
            raise ValueError("truncated frame header")
        ver, cmd, length, sid = HEADER.unpack_from(data, off)
        off += 8
        if version is not None and ver != version:
            raise ValueError(f"version {ver}")
        if cmd == PSH:
            take = length
        elif cmd == UPD:
            take = 8
        elif cmd in (SYN, FIN, NOP):
            take = 0
        else:
            raise ValueError(f"unknown command {cmd}")
        if n - off < take:
            raise ValueError("truncated frame payload")
        out.append((ver, cmd, sid, bytes(data[off:off + take])))
        off += take
    return out


class _Stream:
    __slots__ = ("sid", "written", "peer_consumed", "peer_window", "read", "incr", "fin_recv")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.written = 0
        self.peer_consumed = 0
        self.peer_window = INITIAL_PEER_WINDOW
        self.read = 0
        self.incr = 0
        self.fin_recv = False


class SmuxSession:
    def __init__(self, *, client: bool, version: int = 2, max_frame_size: int = 65535,
                 max_receive_buffer: int = 4 << 20, max_stream_buffer: int = 2 << 20,
                 keepalive_interval_ms: int = 2000, keepalive_timeout_ms: int = 8000,
                 max_streams: int = 65536, now_ms: int | None = None) -> None:
        if version not in (1, 2):
            raise ValueError("smux version must be 1 or 2")
        if not 0 < max_frame_size <= 65535:
            raise ValueError("max frame size must be 1..65535")
        if not 0 < max_stream_buffer <= max_receive_buffer:
            raise ValueError("max stream buffer must not be larger than max receive buffer")
        if keepalive_timeout_ms < keepalive_interval_ms:
            raise ValueError("keep-alive timeout must be larger than keep-alive interval")
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
        self._ctrl: list[bytes] = []
        self._data: list[bytes] = []
        self.broken: str | None = None
        self._active = False
        self._next_nop = None if now_ms is None else now_ms + keepalive_interval_ms
        self._next_check = None if now_ms is None else now_ms + keepalive_timeout_ms
        self.dropped_frames = 0
        self.refused_streams = 0

    # -- receiving ---------------------------------------------------------------------------
    @property
    def receive_paused(self) -> bool:
        return self.bucket <= 0 or self.broken is not None

    def receive_data(self, data, now_ms: int | None = None) -> None:
        if self.broken is not None:
            return
        rx = self._rx
        rx += data
        n = len(rx)
        off = 0
        unpack = HEADER.unpack_from
        version = self.version
        streams = self.streams
        events = self._events
        while n - off >= 8:
            ver, cmd, length, sid = unpack(rx, off)
            if cmd == PSH:
                if n - off - 8 < length:
                    break
                self._active = True
                if ver != version:
                    self._fail(f"invalid protocol version {ver}")
                    return
                st = streams.get(sid)
                if length:
                    if st is not None:
                        events.append(ev.DataReceived(sid, bytes(rx[off + 8:off + 8 + length])))
                        self.bucket -= length
                    else:
                        self.dropped_frames += 1
                off += 8 + length
                continue
            if cmd == UPD:
                if n - off - 8 < 8:
                    break
            self._active = True
            if ver != version:
                self._fail(f"invalid protocol version {ver}")
                return
            if cmd == NOP:
                off += 8
            elif cmd == SYN:
                off += 8
                if sid not in streams:
                    if len(streams) >= self.max_streams:
                        self.refused_streams += 1
                    else:
                        streams[sid] = _Stream(sid)
                        events.append(ev.StreamOpened(sid))
            elif cmd == FIN:
                off += 8
                st = streams.get(sid)
                if st is not None and not st.fin_recv:
                    st.fin_recv = True
                    events.append(ev.StreamEnded(sid))
            elif cmd == UPD and version == 2:
                consumed, window = UPD_BODY.unpack_from(rx, off + 8)
                off += 16
                st = streams.get(sid)
                if st is not None:
                    st.peer_consumed = consumed
                    st.peer_window = window
                    events.append(ev.StreamWindowUpdated(sid))
            else:
                self._fail(f"invalid command {cmd}")
                return
        if off:
            del rx[:off]

    def _fail(self, reason: str) -> None:
        self.broken = reason
        self._rx.clear()
        self._events.append(ev.ProtocolError(reason))

    def next_event(self):
        return self._events.popleft() if self._events else None

    # -- streams -----------------------------------------------------------------------------
    def open_stream(self) -> int:
        if self.broken is not None:
            raise SmuxError(f"session broken: {self.broken}")
        nxt = self._next_id + 2
        if nxt > M32:
            raise SmuxError("stream ids exhausted (go away)")
        self._next_id = nxt
        self.streams[nxt] = _Stream(nxt)
        self._ctrl.append(HEADER.pack(self.version, SYN, 0, nxt))
        return nxt

    def send_window(self, sid: int) -> int:
        st = self.streams.get(sid)
        if st is None or st.fin_recv:
            return 0
        if self.version == 1:
            return 1 << 30
        inflight = (st.written - st.peer_consumed) & M32
        if inflight & 0x80000000:
            return 0
        return max(0, st.peer_window - inflight)

    def send_data(self, sid: int, data) -> int:
        st = self.streams.get(sid)
        if st is None or st.fin_recv or self.broken is not None:
            return 0
        n = len(data)
        if self.version == 2:
            n = min(n, self.send_window(sid))
            if n <= 0:
                return 0
        mfs = self.max_frame_size
        pack = HEADER.pack
        out = self._data
        ver = self.version
        if n <= mfs:
            out.append(pack(ver, PSH, n, sid))
            out.append(bytes(data[:n]) if n < len(data) or not isinstance(data, bytes) else data)
        else:
            mv = memoryview(data)
            for off in range(0, n, mfs):
                chunk = mv[off:min(n, off + mfs)]
                out.append(pack(ver, PSH, len(chunk), sid))
                out.append(bytes(chunk))
        st.written = (st.written + n) & M32
        return n

    def send_datagram(self, sid: int, data: bytes) -> bool:
        """One datagram as exactly one PSH frame, or nothing (no room yet / too large)."""
        n = len(data)
        if n > self.max_frame_size or n == 0:
            return n == 0
        if self.send_window(sid) < n:
            return False
        return self.send_data(sid, data) == n

    def close_stream(self, sid: int, unread: int = 0) -> None:
        st = self.streams.pop(sid, None)
        if st is None:
            return
        if unread > 0:
            self.bucket += unread
        self._data.append(HEADER.pack(self.version, FIN, 0, sid))

    def stream_consumed(self, sid: int, n: int) -> None:
        if n <= 0:
            return
        self.bucket += n
        st = self.streams.get(sid)
        if st is None or self.version != 2:
            return
        st.read = (st.read + n) & M32
        st.incr += n
        if st.incr >= self.max_stream_buffer // 2 or st.read == n:
            self._ctrl.append(HEADER.pack(2, UPD, 8, sid) +
                              UPD_BODY.pack(st.read, self.max_stream_buffer))
            st.incr = 0

    # -- sending -----------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        ctrl, data = self._ctrl, self._data
        if not ctrl and not data:
            return b""
        if ctrl:
            ctrl.extend(data)
            out = b"".join(ctrl)
            self._ctrl = []
        else:
            out = b"".join(data)
        self._data = []
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._ctrl or self._data)

    # -- keepalive -----------------------------------------------------------------------------
    def get_timer(self) -> int | None:
        if self._next_nop is None:
            return None
        return min(self._next_nop, self._next_check)

    def handle_timer(self, now_ms: int) -> None:
        if self._next_nop is None:
            self._next_nop = now_ms + self.keepalive_interval_ms
            self._next_check = now_ms + self.keepalive_timeout_ms
            return
        if now_ms >= self._next_nop:
            self._ctrl.append(HEADER.pack(self.version, NOP, 0, 0))
            self._next_nop = now_ms + self.keepalive_interval_ms
        if now_ms >= self._next_check:
            if not self._active and self.bucket > 0:
                self._events.append(ev.KeepaliveTimeout())
            self._active = False
            self._next_check = now_ms + self.keepalive_timeout_ms
