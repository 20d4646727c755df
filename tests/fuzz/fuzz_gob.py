"""Fuzz target: paqet.proto.gob decode_stream, the gob decoder under the alpha19 dialect.

Input: the byte stream. Property: decode_stream returns (dict, used) with 0 < used <= len
or raises Incomplete/GobError, nothing else; a prefix of a stream that decoded is
Incomplete or decodes to the same value (the decoder never reads past what it reports)."""

from _common import instrumented, main

with instrumented(__name__):
    from paqet.proto import gob
    from paqet.proto.appmsg import TcpConnect, TcpFlags, UdpAssociate, Ping, encode


def _decode(buf):
    try:
        return gob.decode_stream(buf)
    except (gob.Incomplete, gob.GobError) as exc:
        return exc


def one_input(data: bytes) -> None:
    r = _decode(data)
    if isinstance(r, tuple):
        value, used = r
        assert isinstance(value, dict) and 0 < used <= len(data)
        again = _decode(data[:used])
        assert isinstance(again, tuple) and again == (value, used), again
        cut = _decode(data[:used - 1])
        assert not isinstance(cut, tuple) or cut[1] <= used - 1


def seeds() -> list[bytes]:
    msgs = [Ping(), TcpFlags((0x18, 0x2)), TcpConnect("198.18.1.2", 8080),
            UdpAssociate("example.test", 53), TcpConnect("2001:2::1", 443)]
    return [encode(m, "gob") for m in msgs] + [gob.DEFS if hasattr(gob, "DEFS") else b""]


if __name__ == "__main__":
    main(one_input, seeds)
