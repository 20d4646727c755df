"""Events a SmuxSession reports to its shell (h11 style: one module of plain records).

Plain slotted dataclasses (not frozen: a frozen dataclass costs ~0.5 us more per event,
and one DataReceived is made per PSH frame)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class StreamOpened:
    """The peer opened stream `sid` (SYN for an id not in use)."""
    sid: int


@dataclasses.dataclass(slots=True)
class DataReceived:
    """The payload of one PSH frame: UDP datagram boundaries ride on these. The bytes
    are charged to the session's receive bucket until `stream_consumed` returns them."""
    sid: int
    data: bytes


@dataclasses.dataclass(slots=True)
class StreamEnded:
    """The peer sent FIN: buffered data stays readable; writes on the stream now fail
    (smux: no half-close for the side that received FIN)."""
    sid: int


@dataclasses.dataclass(slots=True)
class StreamWindowUpdated:
    """A v2 UPD arrived: the stream may accept more bytes (see `send_window`)."""
    sid: int


@dataclasses.dataclass(slots=True)
class ProtocolError:
    """Bad version or command: smux stops reading this session for good. `reason` is
    smux's error text ("invalid protocol"), `detail` says what was wrong."""
    reason: str
    detail: str = ""


@dataclasses.dataclass(slots=True)
class KeepaliveTimeout:
    """Nothing at all arrived during a whole keepalive-timeout period."""
