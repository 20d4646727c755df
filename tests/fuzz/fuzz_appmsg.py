"""Fuzz target: paqet.proto.appmsg MessageReader in every dialect (alpha21, alpha20, gob)
and with auto-detection, plus decode().

Input: a selector byte (dialect, how the stream is split) then the stream. Property: only
ProtocolError is raised; the outcome does not depend on the split; a decoded message
re-encodes in its dialect and leaves the following bytes in `rest`; the reader buffers at
most max_size bytes before giving up."""

from _common import chunks, instrumented, main

with instrumented(__name__):
    from paqet.proto.appmsg import (MessageReader, Ping, ProtocolError, TcpConnect, TcpFlags,
                                    UdpAssociate, decode, encode)

DIALECTS = ("alpha21", "alpha20", "gob", "auto")
MAX = 4096  # a small max_size so that the "too large" path is reachable


def _read(pieces, dialect):
    r = MessageReader(dialect, max_size=MAX)
    try:
        for p in pieces:
            msg = r.feed(p)
            assert len(r._buf) <= MAX + len(p)
            if msg is not None:
                return ("ok", msg, r.rest, r.dialect)
        return ("ok", r.feed_eof(), r.rest, r.dialect)
    except ProtocolError as exc:
        return ("err", str(exc))


def one_input(data: bytes) -> None:
    if not data:
        return
    sel, body = data[0], data[1:]
    dialect = DIALECTS[sel & 3]
    if dialect == "auto":
        # detection may decide on the first 3-5 bytes (an alpha.20 PING is 3 bytes); a peer's
        # first message arrives in one smux frame (docs/protocol.md), so the split starts
        # after the 6 bytes that decide every case
        pieces = [body[:6]] + chunks(body[6:], sel >> 2)
    else:
        pieces = chunks(body, sel >> 2)
    split = _read(pieces, dialect)
    whole = _read([body], dialect)
    if split[0] == "ok" and whole[0] == "ok":
        assert split[1] == whole[1] and split[3] == whole[3]
        # the message itself is the same; how much of the tail arrived depends on the split
        assert body.endswith(whole[2])
    else:
        # an error can only come earlier or later by the split (e.g. "too large" vs. a
        # decode error), never turn a complete message into an error
        assert split[0] == whole[0] or len(body) > MAX, (split, whole)
    if dialect != "auto":
        try:
            decode(body, dialect)
        except ProtocolError:
            pass


def seeds() -> list[bytes]:
    msgs = [Ping(), TcpFlags((0x18, 0x2)), TcpConnect("198.18.1.2", 8080),
            UdpAssociate("example.test", 53), TcpConnect("2001:2::1", 443)]
    out = []
    for i, d in enumerate(("alpha21", "alpha20", "gob")):
        for m in msgs:
            wire = encode(m, d)
            out.append(bytes((i,)) + wire + b"rest")
            out.append(bytes((3 | 0x80 | (5 << 2),)) + wire)
    return out


if __name__ == "__main__":
    main(one_input, seeds)
