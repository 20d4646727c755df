"""smux v1/v2: golden frames from xtaci/smux, the recorded sessions, flow control,
keepalive and malformed input."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from paqet.smux import events as ev
from paqet.smux.session import (CMD_NAMES, FIN, NOP, PSH, SYN, UPD, SmuxSession, encode_frame,
                                parse_frames)

V = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vectors", "smux.json")))


@pytest.mark.parametrize("case", V["explicit_frames"], ids=[c["name"] for c in V["explicit_frames"]])
def test_explicit_frames(case):
    wire = bytes.fromhex(case["wire"])
    f = case["frame"]
    [(ver, cmd, sid, payload)] = parse_frames(wire)
    assert (ver, CMD_NAMES[cmd], sid) == (f["ver"], f["cmd"], f["sid"])
    assert payload.hex() == f.get("data", "")
    assert encode_frame(ver, cmd, sid, payload) == wire


@pytest.mark.parametrize("sess", V["sessions"], ids=lambda s: f"v{s['version']}")
def test_recorded_sessions_parse(sess):
    for key in ("c2s", "s2c"):
        frames = parse_frames(bytes.fromhex(sess[f"{key}_bytes"]), sess["version"])
        want = sess[f"{key}_frames"]
        assert [(CMD_NAMES[c], s, p.hex()) for _, c, s, p in frames] == \
               [(w["cmd"], w["sid"], w.get("data", "")) for w in want]


def _no_nops(data, version):
    return [(c, s, p) for _, c, s, p in parse_frames(data, version) if c != NOP]


@pytest.mark.parametrize("sess", V["sessions"], ids=lambda s: f"v{s['version']}")
def test_client_produces_the_recorded_stream(sess):
    """Replaying the scenario through our client session yields smux's own frames."""
    v = sess["version"]
    c = SmuxSession(client=True, version=v, max_stream_buffer=2097152, max_receive_buffer=4194304)
    s2c = bytes.fromhex(sess["s2c_bytes"])
    out = b""
    for _ in range(2):
        sid = c.open_stream()
        assert c.send_data(sid, b"hello") == 5
        out += c.data_to_send()
    c.receive_data(s2c, 0)
    got = {}
    while (e := c.next_event()) is not None:
        if isinstance(e, ev.DataReceived):
            got[e.sid] = e.data
            c.stream_consumed(e.sid, len(e.data))
    assert got == {3: b"HELLO", 5: b"HELLO"}
    c.close_stream(3)
    c.close_stream(5)
    out += c.data_to_send()
    want = _no_nops(bytes.fromhex(sess["c2s_bytes"]), v)
    assert sorted(_no_nops(out, v)) == sorted(want)
    assert [x for x in _no_nops(out, v) if x[0] == SYN] == [x for x in want if x[0] == SYN]


def pair(version=2, **kw):
    return SmuxSession(client=True, version=version, **kw), SmuxSession(client=False, version=version, **kw)


def pump(a, b):
    b.receive_data(a.data_to_send(), 0)


def drain_events(s):
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def test_stream_ids_and_open_close():
    c, s = pair()
    assert [c.open_stream() for _ in range(3)] == [3, 5, 7]
    pump(c, s)
    assert drain_events(s) == [ev.StreamOpened(3), ev.StreamOpened(5), ev.StreamOpened(7)]
    c.close_stream(5)
    pump(c, s)
    assert drain_events(s) == [ev.StreamEnded(5)]
    assert s.send_data(5, b"x") == 0  # after the peer's FIN, writes fail


def test_v2_window_limits_and_upd_reopens():
    c, s = pair(max_stream_buffer=65536, max_receive_buffer=1 << 20)
    sid = c.open_stream()
    assert c.send_data(sid, b"a" * 300000) == 262144  # initial peer window
    assert c.send_data(sid, b"a") == 0
    pump(c, s)
    evs = drain_events(s)
    total = sum(len(e.data) for e in evs if isinstance(e, ev.DataReceived))
    assert total == 262144
    assert s.bucket == (1 << 20) - 262144
    s.stream_consumed(sid, total)
    pump(s, c)
    assert ev.StreamWindowUpdated(sid) in drain_events(c)
    assert c.send_window(sid) == 65536


def test_frames_never_exceed_max_frame_size():
    c, s = pair(max_frame_size=1000)
    sid = c.open_stream()
    c.send_data(sid, b"z" * 5000)
    frames = parse_frames(c.data_to_send(), 2)
    assert [len(p) for _, cmd, _, p in frames if cmd == PSH] == [1000] * 5


def test_datagram_is_one_frame_or_nothing():
    c, s = pair()
    sid = c.open_stream()
    assert c.send_datagram(sid, b"d" * 4096)
    assert not c.send_datagram(sid, b"d" * 70000)
    c.send_data(sid, b"x" * (262144 - 4096 - 100))
    assert not c.send_datagram(sid, b"d" * 200)  # would have to split: wait instead
    assert c.send_datagram(sid, b"d" * 100)


def test_v1_has_no_upd_and_rejects_one():
    c, s = pair(version=1)
    sid = c.open_stream()
    c.send_data(sid, b"q" * 10)
    pump(c, s)
    drain_events(s)
    s.stream_consumed(sid, 10)
    assert all(cmd != UPD for _, cmd, _, _ in parse_frames(s.data_to_send(), 1))
    s.receive_data(encode_frame(1, UPD, sid, b"\0" * 8), 0)
    assert isinstance(drain_events(s)[-1], ev.ProtocolError)


def test_bad_version_breaks_the_session():
    c, s = pair()
    s.receive_data(encode_frame(1, SYN, 3), 0)
    assert drain_events(s) == [ev.ProtocolError("invalid protocol version 1")]
    s.receive_data(encode_frame(2, SYN, 3), 0)
    assert drain_events(s) == []


def test_keepalive_nop_and_timeout():
    c = SmuxSession(client=True, keepalive_interval_ms=100, keepalive_timeout_ms=300, now_ms=0)
    c.handle_timer(100)
    assert parse_frames(c.data_to_send(), 2) == [(2, NOP, 0, b"")]
    c.handle_timer(300)
    assert drain_events(c) == [ev.KeepaliveTimeout()]
    c2 = SmuxSession(client=True, keepalive_interval_ms=100, keepalive_timeout_ms=300, now_ms=0)
    c2.receive_data(encode_frame(2, NOP, 0), 250)
    c2.handle_timer(300)
    assert drain_events(c2) == []


def test_unknown_stream_data_is_dropped_uncharged():
    c, s = pair()
    s.receive_data(encode_frame(2, PSH, 99, b"abc") + encode_frame(2, FIN, 99), 0)
    assert drain_events(s) == []
    assert s.bucket == s.max_receive_buffer


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 2))
def test_garbage_never_raises(data, version):
    s = SmuxSession(client=False, version=version)
    for i in range(0, len(data), 7):
        s.receive_data(data[i:i + 7], 0)
    drain_events(s)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=20))
def test_bytes_roundtrip_in_arbitrary_pieces(chunks):
    c, s = pair()
    sid = c.open_stream()
    for ch in chunks:
        assert c.send_data(sid, ch) == len(ch)
    wire = c.data_to_send()
    for i in range(0, len(wire), 333):
        s.receive_data(wire[i:i + 333], 0)
    got = b"".join(e.data for e in drain_events(s) if isinstance(e, ev.DataReceived))
    assert got == b"".join(chunks)
