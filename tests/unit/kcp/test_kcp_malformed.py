"""Malformed KCP input ends as the engine's return code or a counted drop: never an
exception, never an allocation sized by the peer."""

import struct

from hypothesis import given, settings, strategies as st

from paqet.kcp.engine import KCP, encode_segment


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_input(data):
    k = KCP(7)
    k.stream = True
    r = k.input(data, 0)
    assert r in (0, -1, -2, -3)
    k.flush(10)
    k.recv()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 0xFFFFFFFF), st.sampled_from([81, 82, 83, 84]))
def test_hostile_fields(sn, wnd, una, length, cmd):
    k = KCP(7)
    k.stream = True
    seg = struct.pack("<IBBHIIII", 7, cmd, 0, wnd, 0, sn, una, length) + b"x" * 10
    r = k.input(seg, 0)
    assert r in (0, -2)
    assert len(k.rcv_buf) <= k.rcv_wnd
    k.flush(5)


def test_huge_length_is_rejected_without_allocation():
    k = KCP(7)
    seg = struct.pack("<IBBHIIII", 7, 81, 0, 32, 0, 0, 0, 0xFFFFFFFF)
    assert k.input(seg, 0) == -2
    assert k.bad_input == 1 and not k.rcv_buf


def test_foreign_conv_is_dropped():
    k = KCP(7)
    assert k.input(encode_segment(8, 81, 0, 32, 0, 0, 0, b"data"), 0) == -1
    assert k.recv() is None


def _established(loss_every=7):
    """Two engines mid-transfer: segments in flight, some lost, both sides with state."""
    from paqet.kcp.presets import configure
    a = configure(KCP(7), "fast3", mtu=300, sndwnd=64, rcvwnd=64)
    b = configure(KCP(7), "fast3", mtu=300, sndwnd=64, rcvwnd=64)
    a.send(b"a" * 5000)
    b.send(b"b" * 3000)
    seen = []
    for now in range(0, 60, 10):
        for src, dst in ((a, b), (b, a)):
            src.flush(now)
            for i, d in enumerate(src.datagrams_to_send()):
                seen.append(d)
                if i % loss_every:
                    dst.input(d, now + 1)
    return a, b, seen


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_datagrams_against_live_engines(data):
    """Valid datagrams with fields overwritten (sn, una, wnd, len, cmd, frg, ts), truncated or
    spliced, fed to engines with data in flight: never an exception, only kcp-go's codes,
    and state stays within the windows."""
    a, b, seen = _established()
    for step in range(data.draw(st.integers(1, 12))):
        d = bytearray(data.draw(st.sampled_from(seen)))
        off = 24 * data.draw(st.integers(0, max(0, len(d) // 24 - 1)))
        how = data.draw(st.sampled_from(["field", "cut", "splice", "as-is"]))
        if how == "field":
            field = data.draw(st.sampled_from([(5, "<B"), (6, "<H"), (8, "<I"), (12, "<I"),
                                               (16, "<I"), (20, "<I"), (4, "<B")]))
            if off + field[0] + struct.calcsize(field[1]) <= len(d):
                bits = 8 * struct.calcsize(field[1])
                struct.pack_into(field[1], d, off + field[0],
                                 data.draw(st.integers(0, (1 << bits) - 1)))
        elif how == "cut":
            d = d[:data.draw(st.integers(0, len(d)))]
        elif how == "splice":
            d = d + data.draw(st.sampled_from(seen))[:data.draw(st.integers(0, 60))]
        target = data.draw(st.sampled_from([a, b]))
        now = 60 + step * 5
        assert target.input(bytes(d), now, regular=data.draw(st.booleans())) in (0, -1, -2, -3)
        target.flush(now)
        for out in target.datagrams_to_send():
            assert len(out) <= target.mtu
        target.recv()
        assert len(target.rcv_buf) <= target.rcv_wnd
        assert len(target.rcv_queue) <= target.rcv_wnd
        assert len(target.snd_buf) <= target.snd_wnd
        assert len(target._unacked) <= len(target.snd_buf)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10), st.sampled_from(["normal", "fast3"]))
def test_garbage_does_not_wedge_the_receiver(garbage, mode):
    """After any garbage (also garbage carrying our conv id), an in-order PUSH from the peer
    is still accepted and read in stream mode."""
    from paqet.kcp.presets import configure
    k = configure(KCP(7), mode, mtu=200, sndwnd=16, rcvwnd=16)
    k.send(b"o" * 600)
    k.flush(0)
    k.datagrams_to_send()
    for i, g in enumerate(garbage):
        # half of them with our conv, so they get past the first check
        data = struct.pack("<I", 7) + g[4:] if i % 2 and len(g) >= 4 else g
        assert k.input(data, 5 * i) in (0, -1, -2, -3)
        k.flush(5 * i)
    while k.recv() is not None:
        pass
    assert k.input(encode_segment(7, 81, 0, 64, 100, k.rcv_nxt, 0, b"probe"), 100) == 0
    got = k.recv()
    assert got is not None and got.startswith(b"probe")
