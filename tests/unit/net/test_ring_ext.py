"""The receive ring drained in C (net._ring) gives what the Python loop gives: the same
payloads and sources, drops, slots handed back, index, and learned MACs, on the recorded Go
frames, on frames the builder makes (IPv4/IPv6, raw IP links) and on damaged ones."""

import json
import mmap
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from paqet.net import afpacket
from paqet.wire import frame as fr

_ring = pytest.importorskip("paqet.net._ring", reason="paqet.net._ring not built (no C compiler)")

V = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vectors", "frames.json")))
FSIZE, FNUM = 2048, 16
MAC_OFF = 66  # where the kernel puts the frame in a TPACKET_V2 slot (any offset >= 32 works)
HDR = struct.Struct("=IIIHH")  # status, len, snaplen, mac, net


class _Fake:
    """The attributes _recv_ring uses, over an anonymous mmap laid out as the kernel does."""

    def __init__(self, link="ether", port=0, learn=False, segments=False) -> None:
        self.segments = segments
        self._ring = mmap.mmap(-1, FSIZE * FNUM)
        self._fsize, self._fnum, self._ri = FSIZE, FNUM, 0
        self.link, self.local_port, self.learn_macs = link, port, learn
        self.ignores_outgoing = True
        self._own = set()
        self.dropped = self.frames_in = 0
        self.builder = fr.FrameBuilder(src_ip4="198.18.0.9", src_port=1)

    def put(self, slot: int, frame: bytes, ready=True) -> None:
        off = slot * FSIZE
        net = MAC_OFF + (14 if self.link == "ether" else 0)
        self._ring[off:off + 16] = HDR.pack(1 if ready else 0, len(frame), len(frame), MAC_OFF, net)
        start = MAC_OFF if self.link == "ether" else net
        self._ring[off + start:off + start + len(frame)] = frame

    def statuses(self):
        return [self._ring[i * FSIZE] for i in range(FNUM)]

    def read(self, n, use_c: bool, monkeypatch):
        monkeypatch.setattr(afpacket, "_ring", _ring if use_c else None)
        got = afpacket.AfPacketBackend._recv_ring(self, n)
        return [(bytes(item[0]),) + tuple(item[1:]) for item in got]


def _twins(**kw):
    return _Fake(**kw), _Fake(**kw)


def _check_same(frames, monkeypatch, n=FNUM, start=0, **kw):
    c, p = _twins(**kw)
    for f in (c, p):
        f._ri = start
        for i, fr_ in enumerate(frames):
            f.put((start + i) % FNUM, fr_)
    got_c = c.read(n, True, monkeypatch)
    got_p = p.read(n, False, monkeypatch)
    assert got_c == got_p
    assert (c._ri, c.dropped, c.frames_in) == (p._ri, p.dropped, p.frames_in)
    assert c.statuses() == p.statuses()
    assert c.builder.dst_macs == p.builder.dst_macs
    return got_c, c


def test_recorded_go_frames(monkeypatch):
    frames = [bytes.fromhex(case["frame"]) for case in V["cases"]]
    got, c = _check_same(frames, monkeypatch, port=None)
    assert len(got) == len(frames)  # every recorded frame is accepted ...
    assert all(s == 0 for s in c.statuses())  # ... and every slot handed back
    want = [case["receiver_sees"]["from"] for case in V["cases"]]
    assert [f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}" for _, a in got] == want


def test_port_filter_drops_and_wraps_around(monkeypatch):
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=4000)
    frames = [b.build(bytes([i]) * (i + 1), "198.18.0.2" if i % 2 else "2001:2::2",
                      5000 if i % 3 else 6000, 0x18) for i in range(10)]
    got, c = _check_same(frames, monkeypatch, start=FNUM - 4, port=5000)
    assert len(got) == 6 and c.dropped == 4 and c._ri == 6
    got, _ = _check_same(frames, monkeypatch, n=3, port=5000)  # at most n frames a call
    assert len(got) <= 3


def test_stops_at_the_first_slot_the_kernel_still_owns(monkeypatch):
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=4000)
    c, p = _twins(port=5000)
    for f in (c, p):
        f.put(0, b.build(b"a", "198.18.0.2", 5000, 0x18))
        f.put(1, b.build(b"b", "198.18.0.2", 5000, 0x18), ready=False)
        f.put(2, b.build(b"c", "198.18.0.2", 5000, 0x18))
    assert c.read(FNUM, True, monkeypatch) == p.read(FNUM, False, monkeypatch) == [
        (b"a", ("198.18.0.1", 4000))]
    assert c._ri == p._ri == 1 and c.statuses()[2] == 1


def test_raw_ip_link(monkeypatch):
    b = fr.FrameBuilder(link="ip", src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=4000)
    frames = [b.build(b"x" * 30, "198.18.0.2", 5000, 0x18),
              b.build(b"y" * 30, "2001:2::2", 5000, 0x18)]
    got, _ = _check_same(frames, monkeypatch, link="ip", port=5000)
    assert [a for _, a in got] == [("198.18.0.1", 4000), ("2001:2::1", 4000)]


def test_learned_macs_reported_only_when_they_change(monkeypatch):
    b = fr.FrameBuilder(src_mac=b"\x02\0\0\0\0\x07", src_ip4="198.18.0.1", src_port=4000)
    frames = [b.build(b"m", "198.18.0.2", 5000, 0x18)] * 3
    _, c = _check_same(frames, monkeypatch, port=5000, learn=True)
    assert c.builder.dst_macs == {"198.18.0.1": b"\x02\0\0\0\0\x07"}
    seen = []
    c.builder.set_dst_mac = lambda ip, mac: seen.append(ip)
    for i, f in enumerate(frames):
        c.put(i, f)
    c._ri = 0
    c.read(FNUM, True, monkeypatch)
    assert seen == []  # known already: no call back into Python


def test_segments_mode_gives_tcp_fields_and_empty_segments(monkeypatch):
    """network.tcp.mode handshake: empty segments (SYN, ACK) are accepted too, with flags,
    seq, ack and the timestamps, wherever the option stands (-1 without one)."""
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=4000)
    frames = [b.build(b"", "198.18.0.2", 5000, fr.SYN, tcp=(7, 0, 11, 0)),
              b.build(b"", "2001:2::2", 5000, fr.SYN | fr.ACK, tcp=(8, 9, 12, 13)),
              b.build(b"data", "198.18.0.2", 5000, fr.PSH | fr.ACK, tcp=(2**32 - 1, 5, 6, 2**32 - 2))]
    no_ts = bytearray(b.build(b"zz", "198.18.0.2", 5000, fr.ACK))
    no_ts[14 + 20 + 20:14 + 20 + 24] = b"\x01\x01\x01\x01"  # NOPs instead of the TS option
    frames.append(bytes(no_ts))
    frames = [bytes(f) for f in frames]
    got, _ = _check_same(frames, monkeypatch, port=5000, segments=True)
    assert got == [(b"", ("198.18.0.1", 4000), fr.SYN, 7, 0, 11, 0),
                   (b"", ("2001:2::1", 4000), fr.SYN | fr.ACK, 8, 9, 12, 13),
                   (b"data", ("198.18.0.1", 4000), fr.PSH | fr.ACK, 2**32 - 1, 5, 6, 2**32 - 2),
                   (b"zz", ("198.18.0.1", 4000), fr.ACK, *got[3][3:5], -1, -1)]
    for item, f in zip(got, frames):
        assert item == fr.parse_segment(f, "ether", 5000)
    got, c = _check_same(frames, monkeypatch, port=5000)  # the default mode: payloads only
    assert [p for p, _ in got] == [b"data", b"zz"] and c.dropped == 2


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=200), cut=st.integers(0, 120),
       flip=st.integers(0, 119), six=st.booleans(), raw=st.booleans(), segments=st.booleans())
def test_damaged_frames_agree(data, cut, flip, six, raw, segments):
    mp = pytest.MonkeyPatch()
    try:
        link = "ip" if raw else "ether"
        b = fr.FrameBuilder(link=link, src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=4000)
        good = b.build(data, "2001:2::2" if six else "198.18.0.2", 5000, 0x18 if cut % 2 else 2)
        bad = bytearray(good[:max(0, len(good) - cut)] if cut % 3 == 0 else good)
        if bad and flip % 2:
            bad[flip % len(bad)] ^= 0xFF
        _check_same([bytes(bad), good], mp, link=link, port=5000, segments=segments)
    finally:
        mp.undo()


def test_bad_geometry_is_an_error_not_a_crash():
    m = mmap.mmap(-1, FSIZE)
    with pytest.raises(ValueError):
        _ring.read(m, 0, FSIZE, 4, 8, True, 0, {}, None)
    with pytest.raises(ValueError):
        _ring.read(m, 1, FSIZE, 1, 8, True, 0, {}, None)
    with pytest.raises((TypeError, BufferError)):
        _ring.read(b"read-only", 0, 32, 1, 8, True, 0, {}, None)


def test_names_cache_is_shared_and_bounded(monkeypatch):
    names = {}
    f = _Fake(port=5000)
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=4000)
    f.put(0, b.build(b"n", "198.18.0.2", 5000, 0x18))
    monkeypatch.setattr(fr, "_src_names", names)
    f.read(FNUM, True, monkeypatch)
    assert names == {bytes([198, 18, 0, 1]): "198.18.0.1"}
    for i in range(65536):
        names[i.to_bytes(4, "big")] = "x"
    b3 = fr.FrameBuilder(src_ip4="198.18.0.3", src_port=4000)
    f.put(1, b3.build(b"n", "198.18.0.2", 5000, 0x18))
    assert f.read(FNUM, True, monkeypatch) == [(b"n", ("198.18.0.3", 4000))]
    assert len(names) == 1  # full: cleared before the new entry, as the Python cache does


def test_the_extension_speaks_the_call_afpacket_makes():
    """afpacket uses the extension only when its API matches (a stale build of another
    call shape, left by a checkout updated without rebuilding, would raise on every
    wakeup and leave the tunnel deaf): the one built here matches."""
    assert _ring.API == afpacket.RING_API
    assert afpacket._ring is _ring or os.environ.get("PAQET_NO_RING_EXT")
