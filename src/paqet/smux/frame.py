"""smux frames (xtaci/smux v1.5): ver(1) cmd(1) length(2, LE) sid(4, LE), then the payload.

Commands SYN 0, FIN 1, PSH 2, NOP 3, UPD 4 (v2 only: consumed u32 LE + window u32 LE).
SYN, FIN and NOP carry nothing whatever their length field says (smux reads no payload for
them), UPD always carries exactly 8 bytes, PSH exactly `length` bytes.
"""

from __future__ import annotations

import struct

SYN, FIN, PSH, NOP, UPD = 0, 1, 2, 3, 4
CMD_NAMES = {SYN: "SYN", FIN: "FIN", PSH: "PSH", NOP: "NOP", UPD: "UPD"}
HEADER = struct.Struct("<BBHI")
HEADER_SIZE = 8
UPD_BODY = struct.Struct("<II")
M32 = 0xFFFFFFFF


class FrameError(ValueError):
    """A byte string that is not a sequence of whole smux frames."""


def encode_frame(version: int, cmd: int, sid: int, payload: bytes = b"") -> bytes:
    if len(payload) > 0xFFFF:
        raise FrameError(f"frame payload of {len(payload)} bytes exceeds 65535")
    return HEADER.pack(version, cmd, len(payload), sid) + payload


def encode_upd(version: int, sid: int, consumed: int, window: int) -> bytes:
    return HEADER.pack(version, UPD, 8, sid) + UPD_BODY.pack(consumed & M32, window & M32)


def payload_size(cmd: int, length: int) -> int | None:
    """Bytes that follow a header with this cmd/length; None for an unknown command."""
    if cmd == PSH:
        return length
    if cmd == UPD:
        return 8
    if cmd in (SYN, FIN, NOP):
        return 0
    return None


def parse_frames(data, version: int | None = None) -> list[tuple[int, int, int, bytes]]:
    """Split a complete smux byte stream into (ver, cmd, sid, payload) tuples.

    Raises FrameError for a truncated frame, an unknown command or (when `version` is
    given) another version."""
    out = []
    off, n = 0, len(data)
    unpack = HEADER.unpack_from
    while off < n:
        if n - off < 8:
            raise FrameError("truncated frame header")
        ver, cmd, length, sid = unpack(data, off)
        off += 8
        if version is not None and ver != version:
            raise FrameError(f"version {ver}")
        take = payload_size(cmd, length)
        if take is None:
            raise FrameError(f"unknown command {cmd}")
        if n - off < take:
            raise FrameError("truncated frame payload")
        out.append((ver, cmd, sid, bytes(data[off:off + take])))
        off += take
    return out
