"""App messages in all three dialects against the Go encoders' own bytes and errors."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from paqet.proto import appmsg, gob
from paqet.proto.appmsg import (MessageReader, Ping, Pong, ProtocolError, TcpConnect, TcpFlags,
                                UdpAssociate, decode, detect_dialect, encode)

V = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vectors", "appmsg.json")))
DIALECT_KEYS = {"alpha21": "alpha21", "alpha20": "alpha20", "gob": "alpha19_gob"}


def msg_from_fields(f):
    t = f["type"]
    if t == 1:
        return Ping()
    if t == 2:
        return Pong()
    if t == 3:
        return TcpFlags(tuple(appmsg.flags_from_string(s) for s in f["tcpf_strings"]))
    cls = TcpConnect if t == 4 else UdpAssociate
    return cls(f["host"], f["port"])


def cases(dialect):
    msgs = V[DIALECT_KEYS[dialect]]["messages"]
    return [pytest.param(m, id=m["name"]) for m in msgs]


@pytest.mark.parametrize("dialect", ["alpha21", "alpha20", "gob"])
def test_vectors_encode_and_decode(dialect):
    for m in V[DIALECT_KEYS[dialect]]["messages"]:
        want = msg_from_fields(m["fields"])
        wire = bytes.fromhex(m["wire"])
        assert encode(want, dialect) == wire, m["name"]
        assert decode(wire, dialect) == want, m["name"]
        r = MessageReader(dialect)
        got = None
        for i in range(len(wire)):
            got = r.feed(wire[i:i + 1]) or got
        assert got == want and r.rest == b""


@pytest.mark.parametrize("dialect", ["alpha21", "alpha20", "gob"])
def test_decode_errors_have_upstream_text(dialect):
    errors = V[DIALECT_KEYS[dialect]]["decode_errors"]
    assert errors
    for e in errors:
        wire = bytes.fromhex(e["wire"])
        if e["error"] is None:
            assert decode(wire, dialect) is not None
            continue
        with pytest.raises(ProtocolError) as exc:
            decode(wire, dialect)
        assert str(exc.value) == e["error"], e["name"]


def test_write_errors_have_upstream_text():
    samples = {
        "host 254 bytes": TcpConnect("a" * 254, 80),
        "port 65536": TcpConnect("h", 65536),
        "port -1": TcpConnect("h", -1),
        "nil address": TcpConnect(None, 80),
        "65 tcpf entries": TcpFlags((0x18,) * 65),
    }
    for e in V["write_errors"]:
        msg = samples.get(e["name"])
        if msg is None:
            continue
        for dialect in ("alpha21", "alpha20"):
            with pytest.raises(ProtocolError) as exc:
                encode(msg, dialect)
            assert str(exc.value) == e[f"error_{dialect}"]


def test_gob_typedefs_are_byte_exact():
    assert gob.TYPEDEFS.hex() == V["alpha19_gob"]["typedefs_prefix"]


def test_gob_reader_leaves_following_bytes():
    wire = encode(TcpConnect("198.18.1.2", 8080), "gob") + b"payload"
    r = MessageReader("gob")
    assert r.feed(wire) == TcpConnect("198.18.1.2", 8080)
    assert r.rest == b"payload"


def test_gob_alpha6_udpaddr_form():
    # alpha.6-10: Addr is net.UDPAddr{IP []byte, Port int, Zone string}
    w1 = bytes.fromhex("2eff81030101075544504164647201ff820001030102495001"
                       "0a00010450 6f727401040001045a6f6e65010c000000".replace(" ", ""))
    prefix = gob.TYPEDEFS[:48] + w1 + gob.TYPEDEFS[48 + 37:]
    value = bytes.fromhex("1cff80010401011000000000000000000000ffff0102030401ffa00000")
    assert decode(prefix + value, "gob") == TcpConnect("1.2.3.4", 80)


@pytest.mark.parametrize("msg", [Ping(), Pong(), TcpFlags(()), TcpFlags((0x18, 0x2)),
                                 TcpConnect("example.com", 443), TcpConnect("", 80),
                                 UdpAssociate("2001:2::1", 53), TcpConnect("a" * 253, 1)])
def test_auto_detection(msg):
    for dialect in ("alpha21", "alpha20", "gob"):
        wire = encode(msg, dialect)
        assert detect_dialect(wire) == dialect or (dialect == "alpha20" and isinstance(msg, TcpConnect) and msg.host == "")
        r = MessageReader("auto")
        assert r.feed(wire) == msg
        assert r.rest == b""


hosts = st.text(max_size=60).filter(lambda s: len(s.encode("utf-8", "surrogateescape")) <= 253)
messages = st.one_of(
    st.just(Ping()), st.just(Pong()),
    st.lists(st.integers(0, 0x1FF), max_size=64).map(lambda l: TcpFlags(tuple(l))),
    st.builds(TcpConnect, hosts, st.integers(0, 65535)),
    st.builds(UdpAssociate, hosts, st.integers(0, 65535)))


@settings(max_examples=300, deadline=None)
@given(messages, st.sampled_from(["alpha21", "alpha20", "gob"]))
def test_roundtrip(msg, dialect):
    assert decode(encode(msg, dialect), dialect) == msg


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["alpha21", "alpha20", "gob", "auto"]))
def test_garbage_raises_only_protocol_error(data, dialect):
    r = MessageReader(dialect)
    try:
        if r.feed(data) is None:
            r.feed_eof()
    except ProtocolError:
        pass


def test_unknown_type_write_error():
    e = next(e for e in V["write_errors"] if e["name"] == "unknown type 0x06")
    for dialect in ("alpha21", "alpha20", "gob"):
        with pytest.raises(ProtocolError) as exc:
            encode(object(), dialect)
        assert str(exc.value) == e["error_alpha21"] == e["error_alpha20"]


def test_hosts_are_any_bytes_and_survive_a_round_trip():
    raw = bytes(range(256))[:253]
    host = raw.decode("utf-8", "surrogateescape")
    for dialect in ("alpha21", "alpha20", "gob"):
        wire = encode(TcpConnect(host, 7), dialect)
        assert raw in wire
        assert decode(wire, dialect) == TcpConnect(host, 7)
    with pytest.raises(ProtocolError):
        encode(TcpConnect("\ud800", 1), "alpha21")  # not representable as bytes
    with pytest.raises(ProtocolError, match="port 80 out of range"):
        encode(TcpConnect("h", "80"), "alpha21")


@pytest.mark.parametrize("wire,dialect", [
    ("5001010000", "alpha21"), ("500101", "alpha20"), ("50010400030000 50".replace(" ", ""), "alpha21"),
    ("500103000100", "alpha21"), ("50010300", "alpha20"), ("5001030100 18".replace(" ", ""), "alpha20"),
    ("2f7f", "gob"), ("0102", "gob"),
])
def test_reader_exposes_the_detected_dialect(wire, dialect):
    r = MessageReader("auto")
    try:
        r.feed(bytes.fromhex(wire))
    except ProtocolError:
        pass
    assert r.dialect == dialect


def test_detection_limits_are_as_documented():
    # alpha.20 PTCP "" port 0x0300 is indistinguishable from the start of an alpha.21 PTCP
    # with an empty host: auto takes alpha.21 and waits for the port (docs/protocol.md).
    assert detect_dialect(bytes.fromhex("500104000300")) == "alpha21"
    assert detect_dialect(bytes.fromhex("5001040003")) is None  # undecided: wait
    assert detect_dialect(b"P") is None and detect_dialect(b"") is None


def _valid(dialect):
    return [encode(m, dialect) for m in (Ping(), TcpFlags((0x18, 0x2)), TcpConnect("example.com", 443),
                                         UdpAssociate("2001:2::1", 53), TcpConnect("", 80))]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["alpha21", "alpha20"]), st.integers(0, 4),
       st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=3),
       st.binary(max_size=8), st.integers(1, 7))
def test_corrupted_binary_raises_only_protocol_error_whatever_the_split(dialect, which, flips, tail, piece):
    wire = bytearray(_valid(dialect)[which])
    for pos, val in flips:
        wire[pos % len(wire)] = val
    wire = bytes(wire) + tail

    def run(step):
        r = MessageReader(dialect)
        try:
            for i in range(0, len(wire), step):
                if r.feed(wire[i:i + step]) is not None:
                    r.feed(wire[i + step:])
                    return "ok", r.message, r.rest
            return "ok", r.feed_eof(), r.rest
        except ProtocolError as exc:
            return "err", str(exc)

    assert run(piece) == run(len(wire) or 1)


@settings(max_examples=300, deadline=None)
@given(messages, st.sampled_from(["alpha21", "alpha20", "gob"]), st.binary(max_size=20))
def test_auto_reader_decodes_a_first_frame_and_keeps_the_rest(msg, dialect, data):
    if dialect == "alpha20" and isinstance(msg, (TcpConnect, UdpAssociate)) and msg.host == "" \
            and (msg.port >> 8) == (msg.port & 0xFF) + 3:
        return  # the one documented ambiguity
    if dialect == "alpha20":
        data = b""  # alpha.20 has no length: only a frame holding just the message is decidable
    r = MessageReader("auto")
    assert r.feed(encode(msg, dialect) + data) == msg
    assert r.rest == data
    assert r.dialect == dialect


def test_magic_and_version_alone_leave_the_dialect_open():
    """Found by tests/fuzz/fuzz_appmsg.py: two bytes (magic, version) made auto-detection
    pick alpha.21, so an alpha.20 message whose first piece was 2 bytes never decoded."""
    assert detect_dialect(b"P\x01") is None
    assert detect_dialect(b"P\x02") == "alpha21"  # a bad version: the decoder says so
    wire = encode(UdpAssociate("example.test", 53), "alpha20")
    r = MessageReader("auto")
    assert r.feed(wire[:2]) is None
    assert r.feed(wire[2:] + b"rest") == UdpAssociate("example.test", 53)
    assert (r.dialect, r.rest) == ("alpha20", b"rest")


def test_gob_tcpf_field_that_is_not_a_slice_is_a_protocol_error():
    """Found by tests/fuzz/fuzz_appmsg.py: a Proto whose TCPF field's wire type is an
    integer (type id 6) reached the flag loop as an int (TypeError). Go's decoder refuses a
    type mismatch; so do we, with the one error the reader documents."""
    import base64
    crash = base64.b64decode(
        "ly9/AwEBBVByb3RvAf+AAAEDAQRUeXBlAQYAAQRBZGRyAf+CAAEEVENQRgH/BgAAACT/gQMBAQRBZGRyAf+CAAEC"
        "AQRIb3N0AQwAAQRQb3J0AQQAAAAa/4UCAQELW2Nvbl1mLlRDUEYB/4YAAf+GAABZ/4MDAQEEVENQRgH/hAABCQED"
        "RklOAQIAAQNTWU4BAgABA1JTVAECAAEDUFNIAQIAAQNBQ08BAgABA1VSRwECAAEDRUNFAQIAAQNDV1IBAgABAk5T"
        "AQIAAAAP/4ABAwIBAAAAAgQBAQEAAgEAAA==")
    body = crash[1:]  # the fuzz input's first byte selects the dialect (gob) and the split
    value, _ = gob.decode_stream(body)
    assert isinstance(value.get("TCPF"), int)  # the shape that used to raise TypeError
    with pytest.raises(ProtocolError, match="TCPF"):
        decode(body, "gob")
    r = MessageReader("gob")
    with pytest.raises(ProtocolError):
        r.feed(body)


@pytest.mark.parametrize("cls,t", [(appmsg.TcpConnectStatus, 0x14), (appmsg.TcpConnectReport, 0x15)])
def test_dial_result_extensions_are_ptcp_bodies_with_their_own_type(cls, t):
    """PTCPS and PTCPR (docs/protocol.md): PTCP's body under their own type, alpha21 framing
    only; an auto reader with bytes after the header keeps them (the first bytes to relay)."""
    msg = cls("198.18.0.9", 8080)
    wire = encode(msg, "alpha21")
    assert wire == bytes((0x50, 0x01, t)) + encode(TcpConnect("198.18.0.9", 8080))[3:]
    reader = MessageReader("auto")
    assert reader.feed(wire + b"GET / HTTP/1.1\r\n") == msg
    assert reader.rest == b"GET / HTTP/1.1\r\n"
    for dialect in ("alpha20", "gob"):
        with pytest.raises(ProtocolError):
            encode(msg, dialect)
