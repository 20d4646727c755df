"""encode -> decode is the identity for every cipher x FEC setting; damaged datagrams are
dropped and counted, never raised."""

import pytest
from hypothesis import given, settings, strategies as st

from paqet.wire.crypto import BLOCKS, derive_key
from paqet.wire.datagram import DatagramCodec

KEY = derive_key("property-key")
FEC = [(0, 0), (10, 3), (2, 1)]
FAST = [b for b in BLOCKS if b not in ("tea", "xtea", "twofish")]


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("d,p", FEC)
def test_roundtrip_every_cipher_and_fec(block, d, p):
    tx = DatagramCodec(block, KEY, dshard=d, pshard=p)
    rx = DatagramCodec(block, KEY, dshard=d, pshard=p)
    sent = [bytes([i]) * (24 + i * 37 % 1200) for i in range(25)]
    got = []
    for i, kcp in enumerate(sent):
        assert len(kcp) <= tx.kcp_mtu(1350)
        for wire in tx.encode(kcp, i):
            assert len(wire) <= 1350
            got.extend(x for x, regular in rx.decode(wire) if regular)
    assert got == sent


@pytest.mark.parametrize("block", FAST)
def test_fec_recovers_lost_data(block):
    tx = DatagramCodec(block, KEY, dshard=4, pshard=2)
    rx = DatagramCodec(block, KEY, dshard=4, pshard=2)
    sent = [bytes([i + 1]) * (30 + i) for i in range(4)]
    wires = [w for i, k in enumerate(sent) for w in tx.encode(k, i)]
    assert len(wires) == 6
    got = []
    for i, w in enumerate(wires):
        if i in (0, 2):
            continue
        got.extend(bytes(x) for x, _ in rx.decode(w))
    assert sorted(got) == sorted(sent)
    assert rx.stats.fec_recovered == 2


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FAST), st.sampled_from(FEC), st.binary(min_size=24, max_size=1300),
       st.integers(0, 2000), st.integers(1, 255))
def test_corruption_is_dropped(block, fec, kcp, pos, xor):
    tx = DatagramCodec(block, KEY, dshard=fec[0], pshard=fec[1])
    rx = DatagramCodec(block, KEY, dshard=fec[0], pshard=fec[1])
    wire = bytearray(tx.encode(kcp, 0)[0])
    if block in ("none", "null"):
        return  # nothing authenticates these
    i = pos % len(wire)
    if i < 16:
        i = 16 + i  # the random nonce itself is not covered by the CRC (kcp-go's format)
    if i >= len(wire):
        return
    wire[i] ^= xor
    out = rx.decode(bytes(wire))
    assert out == []


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BLOCKS), st.sampled_from(FEC), st.binary(max_size=1600))
def test_garbage_never_raises(block, fec, data):
    rx = DatagramCodec(block, KEY, dshard=fec[0], pshard=fec[1])
    rx.decode(data)
    assert rx.stats.datagrams_in == 1


@pytest.mark.parametrize("block", FAST)
def test_truncated_is_counted(block):
    tx = DatagramCodec(block, KEY)
    rx = DatagramCodec(block, KEY)
    wire = tx.encode(b"k" * 100, 0)[0]
    for n in (0, 5, 11, 19, 27, len(wire) - 1):
        out = rx.decode(wire[:n])
        if block not in ("none", "null"):
            assert out == []
    s = rx.stats
    if block not in ("none", "null"):
        assert s.short + s.crc_errors + s.auth_errors == 6


PROBE = b"\x07\x00\x00\x00\x51\x00\x20\x00" + bytes(16) + b"probe"


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(FAST), st.sampled_from(FEC), st.lists(st.binary(max_size=300), max_size=12),
       st.booleans())
def test_garbage_then_a_valid_datagram_still_decodes(block, fec, garbage, sealed):
    """Output stays bounded for any datagram (at most 1 + dshard payloads, none longer than
    the longest datagram so far) and garbage - also garbage under a valid cipher layer, which reaches the
    FEC decoder - does not stop a valid datagram afterwards from reaching KCP."""
    d, p = fec
    tx = DatagramCodec(block, KEY, dshard=d, pshard=p)
    rx = DatagramCodec(block, KEY, dshard=d, pshard=p)
    longest = 0
    for g in garbage:
        wire = tx.seal(g) if sealed else g
        longest = max(longest, len(wire))
        out = rx.decode(wire)
        assert len(out) <= 1 + max(d, 1)
        # a recovered shard is as long as its group's longest packet
        assert all(len(x) <= (len(wire) if regular else longest) for x, regular in out)
    got = [bytes(x) for w in tx.encode(PROBE, 5) for x, regular in rx.decode(w) if regular]
    assert PROBE in got
