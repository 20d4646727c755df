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
