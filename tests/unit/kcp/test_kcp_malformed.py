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
