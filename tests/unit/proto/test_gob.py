"""Gob decoding beyond paqet's own encoder: what any Go encoder may send for Proto."""

import pytest
from hypothesis import given, settings, strategies as st

from paqet.proto import gob
from paqet.proto.appmsg import (MessageReader, ProtocolError, TcpConnect, TcpFlags, UdpAssociate,
                                decode, encode)
from paqet.proto.gob import enc_int, enc_string, enc_struct, enc_uint, message


def _wire(tid, kind, body):
    return message(enc_int(-tid) + enc_struct([(kind, body)]))


def _common(name, tid):
    return enc_struct([(0, enc_string(name)), (1, enc_int(tid))])


def struct_def(tid, name, fields):
    flist = enc_uint(len(fields)) + b"".join(
        enc_struct([(0, enc_string(n)), (1, enc_int(i))]) for n, i in fields)
    return _wire(tid, 2, enc_struct([(0, _common(name, tid)), (1, flist)]))


def slice_def(tid, name, elem):
    return _wire(tid, 1, enc_struct([(0, _common(name, tid)), (1, enc_int(elem))]))


def map_def(tid, name, key, elem):
    return _wire(tid, 3, enc_struct([(0, _common(name, tid)), (1, enc_int(key)), (2, enc_int(elem))]))


def array_def(tid, name, elem, n):
    return _wire(tid, 0, enc_struct([(0, _common(name, tid)), (1, enc_int(elem)), (2, enc_int(n))]))


def opaque_def(tid, name):  # a GobEncoder type
    return _wire(tid, 4, enc_struct([(0, _common(name, tid))]))


# A Go program with more types: other ids, another field order, extra fields of every kind.
P, A, F, FS, M, ARR, OP = 90, 77, 200, 1000, 71, 72, 73
DEFS = (map_def(M, b"map[string]int", 6, 2) + array_def(ARR, b"[3]uint8", 3, 3) + opaque_def(OP, b"Time")
        + struct_def(P, b"Proto", [(b"Extra", M), (b"TCPF", FS), (b"Weight", 4), (b"Addr", A),
                                   (b"Arr", ARR), (b"When", OP), (b"Cplx", 7), (b"Type", 3)])
        + struct_def(A, b"Addr", [(b"Port", 2), (b"Note", 6), (b"Host", 6)])
        + slice_def(FS, b"[]TCPF", F)
        + struct_def(F, b"TCPF", [(b"ACK", 1), (b"PSH", 1), (b"Bogus", 2), (b"SYN", 1)]))


def value(t, addr=None, tcpf=None):
    fields = [(0, enc_uint(1) + enc_string(b"k") + enc_int(5))]
    if tcpf is not None:
        fields.append((1, enc_uint(len(tcpf)) + b"".join(tcpf)))
    fields.append((2, enc_uint(0xF83F)))  # float64 1.5
    if addr is not None:
        fields.append((3, addr))
    fields += [(4, enc_uint(3) + b"\x01\x02\x03"), (5, enc_string(b"\x01opaque")),
               (6, enc_uint(1) + enc_uint(2)), (7, enc_uint(t))]
    return message(enc_int(P) + enc_struct(fields))


def test_other_ids_order_and_unknown_fields():
    addr = enc_struct([(0, enc_int(443)), (1, enc_string(b"note")), (2, enc_string(b"example.com"))])
    assert decode(DEFS + value(4, addr=addr), "gob") == TcpConnect("example.com", 443)
    assert decode(DEFS + value(5, addr=addr), "gob") == UdpAssociate("example.com", 443)
    pa = enc_struct([(0, b"\x01"), (1, b"\x01")])
    syn = enc_struct([(2, enc_int(7)), (3, b"\x01")])
    assert decode(DEFS + value(3, tcpf=[pa, syn, b"\x00"]), "gob") == TcpFlags((0x18, 0x2, 0))


def test_missing_fields_are_zero():
    defs = struct_def(64, b"Proto", [(b"Type", 3), (b"Addr", 65)]) + \
        struct_def(65, b"Addr", [(b"Host", 6), (b"Port", 2)])
    empty_addr = message(enc_int(64) + enc_struct([(0, enc_uint(4)), (1, enc_struct([]))]))
    assert decode(defs + empty_addr, "gob") == TcpConnect("", 0)
    no_tcpf = message(enc_int(64) + enc_struct([(0, enc_uint(3))]))
    assert decode(defs + no_tcpf, "gob") == TcpFlags(())
    no_addr = message(enc_int(64) + enc_struct([(0, enc_uint(4))]))
    with pytest.raises(ProtocolError, match="address required"):
        decode(defs + no_addr, "gob")


def _udpaddr_msg(ip, port, zone=b""):
    defs = gob.TYPEDEFS[:48] + struct_def(65, b"UDPAddr", [(b"IP", 5), (b"Port", 2), (b"Zone", 6)]) \
        + gob.TYPEDEFS[48 + 37:]
    fields = [(0, enc_string(ip))] if ip else []
    fields.append((1, enc_int(port)))
    if zone:
        fields.append((2, enc_string(zone)))
    return defs + message(enc_int(64) + enc_struct([(0, enc_uint(5)), (1, enc_struct(fields))]))


@pytest.mark.parametrize("ip,zone,host", [
    (bytes([198, 18, 0, 7]), b"", "198.18.0.7"),
    (bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 7]), b"", "198.18.0.7"),
    (bytes.fromhex("20010002000000000000000000000001"), b"", "2001:2::1"),
    (bytes.fromhex("fe800000000000000000000000000001"), b"eth0", "fe80::1%eth0"),
    (b"", b"", ""),
    (b"\x01\x02\x03", b"", "?010203"),
])
def test_alpha6_udpaddr_forms(ip, zone, host):
    assert decode(_udpaddr_msg(ip, 53, zone), "gob") == UdpAssociate(host, 53)


@pytest.mark.parametrize("wire,text", [
    (message(enc_int(6) + b"\x00" + enc_string(b"x")), "not a struct"),
    (message(enc_int(99) + b"\x00"), "unknown type id 99"),
    (struct_def(64, b"Proto", [(b"Type", 3)]) * 2, "duplicate type id 64"),
    (struct_def(12, b"Proto", [(b"Type", 3)]), "bad or duplicate type id 12"),
    (struct_def(64, b"Proto", [(b"Type", 8)]), "unsupported type id 8"),
    (b"\xf0" + bytes(20), "out of range"),
    (b"\xfd\x01\x00\x01" + bytes(10), "invalid message length"),
    (struct_def(64, b"P", [(b"Type", 1)]) + message(enc_int(64) + b"\x01\x02\x00"), "invalid bool 2"),
    (struct_def(64, b"P", [(b"Type", 3)]) + message(enc_int(64) + b"\x05\x01\x00"), "field number"),
])
def test_malformed_gob_is_a_protocol_error(wire, text):
    with pytest.raises(ProtocolError, match=text):
        decode(wire, "gob")


def test_nesting_and_counts_are_bounded():
    # a struct type containing a slice of itself: depth is capped, not recursion-limited
    defs = struct_def(64, b"Proto", [(b"Type", 3), (b"Self", 65)]) + slice_def(65, b"[]Proto", 64)
    inner = enc_struct([(0, enc_uint(1))])
    for _ in range(20):
        inner = enc_struct([(0, enc_uint(1)), (1, enc_uint(1) + inner)])
    with pytest.raises(ProtocolError, match="nesting too deep"):
        decode(defs + message(enc_int(64) + inner), "gob")
    huge = message(enc_int(64) + enc_struct([(1, enc_uint(10 ** 9))]))
    with pytest.raises(ProtocolError, match="too long"):
        decode(defs + huge, "gob")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([DEFS + value(4, addr=enc_struct([(2, enc_string(b"h"))])),
                        encode(TcpConnect("198.18.1.2", 8080), "gob"),
                        encode(TcpFlags((0x18, 0x2)), "gob")]),
       st.lists(st.tuples(st.integers(0, 10 ** 4), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(1, 50))
def test_corrupted_gob_raises_only_protocol_error(wire, flips, piece):
    wire = bytearray(wire)
    for pos, val in flips:
        wire[pos % len(wire)] = val
    whole = MessageReader("gob")
    try:
        res = ("ok", whole.feed(bytes(wire)) or whole.feed_eof(), whole.rest)
    except ProtocolError as exc:
        res = ("err", str(exc))
    r = MessageReader("gob")
    got = None
    try:
        for i in range(0, len(wire), piece):
            got = r.feed(bytes(wire[i:i + piece]))
            if got is not None:
                break
        inc = ("ok", got or r.feed_eof(), (r.rest + bytes(wire[i + piece:])) if got else r.rest)
    except ProtocolError as exc:
        inc = ("err", str(exc))
    assert inc == res  # the result does not depend on how the bytes were split


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([encode(TcpConnect("198.18.1.2", 8080), "gob"),
                        encode(TcpFlags((0x18, 0x2)), "gob")]),
       st.lists(st.tuples(st.integers(0, 10 ** 4), st.integers(0, 255)), max_size=4),
       st.binary(max_size=30))
def test_decode_stream_reads_only_what_it_reports(wire, flips, tail):
    """decode_stream returns (dict, used) or raises Incomplete/GobError; the first `used`
    bytes alone decode to the same value (nothing after them was looked at)."""
    wire = bytearray(wire)
    for pos, val in flips:
        wire[pos % len(wire)] = val
    data = bytes(wire) + tail
    try:
        value, used = gob.decode_stream(data)
    except (gob.Incomplete, gob.GobError):
        return
    assert isinstance(value, dict) and 0 < used <= len(data)
    assert gob.decode_stream(data[:used]) == (value, used)


def test_small_pieces_after_many_definitions_are_not_re_decoded(monkeypatch):
    """Found while looking into the gob fuzz target's falling exec rate (not a crash it
    reported; its inputs are too small to show it): the reader re-decoded the whole
    buffered gob stream for every piece, so ~56 KB of type definitions followed by the
    last message in 1-byte pieces cost ~9 ms per byte. Now a piece that cannot complete
    the message in progress is only buffered; the outcome is unchanged."""
    from paqet.proto import appmsg
    defs = b"".join(gob._struct_def(200 + i, b"T%d" % i, [(b"F" * 200 + b"%d" % j, 6) for j in range(18)])
                    for i in range(10))
    wire = encode(TcpConnect("198.18.1.2", 8080), "gob")
    calls = []
    real = gob.decode_stream
    monkeypatch.setattr(gob, "decode_stream", lambda buf: calls.append(len(buf)) or real(buf))
    r = MessageReader("gob")
    assert r.feed(defs) is None
    tail = wire + b"rest"
    got = None
    for i in range(len(tail)):
        got = r.feed(tail[i:i + 1])
    assert got == TcpConnect("198.18.1.2", 8080) and r.rest == b"rest"
    assert len(calls) <= 2 * len(gob.message(b"")) + len(wire) // 8 + 8, len(calls)
    # the byte-wise outcome equals the whole-buffer outcome, also for a stream that fails
    bad = defs + b"\x05\x00\x00\x00\x00\x00"
    whole = MessageReader("gob")
    with pytest.raises(ProtocolError) as e1:
        whole.feed(bad)
    pieces = MessageReader("gob")
    with pytest.raises(ProtocolError) as e2:
        for i in range(len(bad)):
            pieces.feed(bad[i:i + 1])
    assert str(e1.value) == str(e2.value)
