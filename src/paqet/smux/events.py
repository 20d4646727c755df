"""Events a SmuxSession reports to its shell (h11 style: one module of plain records)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened stream `sid` (SYN)."""
    sid: int


@dataclasses.dataclass(frozen=True, slots=True)
class DataReceived:
    """The payload of one PSH frame: UDP datagram boundaries ride on these."""
    sid: int
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer sent FIN: buffered data stays readable; writes on the stream now fail."""
    sid: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamWindowUpdated:
    """A v2 UPD arrived: the stream may accept more bytes."""
    sid: int


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolError:
    """Bad version or command: smux stops reading this session for good."""
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class KeepaliveTimeout:
    """Nothing at all arrived during a whole keepalive-timeout period."""
