"""`paqet dump` text without capturing: upstream's layout (Go hex.Dump) and the decoded view
with KCP headers from real datagrams (FEC, wrong key, not-KCP payloads)."""

import re

import pytest

from paqet.kcp.engine import ACK, PUSH, encode_segment
from paqet.net.dump import FrameFormatter, MARK_BEGIN, MARK_END, clock_text, hexdump
from paqet.wire.datagram import DatagramCodec
from paqet.wire.frame import FrameBuilder, parse_frame

T = 1_700_000_000.123  # any wall time


def frame(payload, *, v6=False, flags=None):
    b = FrameBuilder(src_ip4="198.18.0.1", src_ip6="2001:2:0:1::1", src_port=40000,
                     local_flags=flags)
    raw = b.build(payload, "2001:2:0:1::2" if v6 else "198.18.0.2", 9999)
    f = parse_frame(raw, "ether", 9999)
    assert f is not None
    return f


def test_hexdump_matches_go():
    assert hexdump(b"PING") == "00000000  50 49 4e 47" + " " * 39 + "|PING|"
    assert hexdump(b"Go is an open source programming language.").splitlines() == [
        "00000000  47 6f 20 69 73 20 61 6e  20 6f 70 65 6e 20 73 6f  |Go is an open so|",
        "00000010  75 72 63 65 20 70 72 6f  67 72 61 6d 6d 69 6e 67  |urce programming|",
        "00000020  20 6c 61 6e 67 75 61 67  65 2e                    | language.|"]
    assert hexdump(bytes(range(8))) == ("00000000  00 01 02 03 04 05 06 07" + " " * 27
                                        + "|........|")
    assert hexdump(b"") == ""


def test_upstream_view():
    text = FrameFormatter(9999, listen=":9999").format(frame(b"PING"), T)
    assert text.splitlines() == [
        f"[{clock_text(T)}] Packet: 198.18.0.1:40000 -> :9999 | Length: 4 bytes",
        MARK_BEGIN, hexdump(b"PING"), MARK_END]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.123", clock_text(T))
    v6 = FrameFormatter(9999).format(frame(b"x", v6=True), T)
    assert "Packet: [2001:2:0:1::1]:40000 -> :9999 | Length: 1 bytes" in v6


def test_decoded_view_without_key_shows_the_tcp_header():
    text = FrameFormatter(9999, decoded=True).format(frame(b"abc", flags=[0x02]), T)
    assert "IN  198.18.0.1:40000 > 198.18.0.2:9999 [S]" in text
    assert "ttl 64" in text and text.endswith("| 3 bytes")
    out = FrameFormatter(9999, decoded=True).format(frame(b"abc", v6=True), T, outgoing=True)
    assert "OUT [2001:2:0:1::1]:40000 > [2001:2:0:1::2]:9999 [PA]" in out


@pytest.mark.parametrize("block", ["aes", "aes-128-gcm", "xor", "none", "null"])
def test_decoded_view_shows_kcp_headers(block):
    tx = DatagramCodec(block, "dump-key")
    kcp = encode_segment(0x1234, PUSH, 0, 128, 5000, 7, 3, b"hello") + \
        encode_segment(0x1234, ACK, 0, 128, 5001, 6, 3)
    (wire,) = tx.encode(kcp, 0)
    fmt = FrameFormatter(9999, block=block, key="dump-key")
    lines = fmt.format(frame(wire), T).splitlines()
    assert lines[1] == "  kcp conv=0x00001234 PUSH sn=7 una=3 frg=0 wnd=128 ts=5000 len=5"
    assert lines[2] == "  kcp conv=0x00001234 ACK  sn=6 una=3 frg=0 wnd=128 ts=5001 len=0"
    assert (fmt.stats.datagrams, fmt.stats.segments, fmt.stats.undecodable) == (1, 2, 0)


def test_wrong_key_and_garbage_are_reported_not_raised():
    (wire,) = DatagramCodec("aes", "right").encode(encode_segment(1, PUSH, 0, 1, 1, 1, 0, b"x"), 0)
    fmt = FrameFormatter(9999, block="aes", key="wrong")
    assert "not a datagram for this block/key (CRC/tag check failed)" in fmt.format(frame(wire), T)
    assert "too short" in fmt.format(frame(b"PING"), T)
    plain = FrameFormatter(9999, block="none", key="")
    # a decryptable datagram whose content is not KCP: reported, not raised
    (junk,) = DatagramCodec("none", "").encode(b"\xff" * 30, 0)
    assert "malformed KCP datagram" in plain.format(frame(junk), T)
    assert fmt.stats.undecodable == 2


def test_fec_parity_and_recovery_are_labelled():
    tx = DatagramCodec("aes", "k", dshard=2, pshard=1)
    rx = FrameFormatter(9999, block="aes", key="k", dshard=2, pshard=1)
    wires = []
    for sn in range(2):
        wires += tx.encode(encode_segment(9, PUSH, 0, 32, 100, sn, 0, b"data%d" % sn), 0)
    assert len(wires) == 3  # two data shards, one parity
    first = rx.format(frame(wires[0]), T)
    assert "sn=0" in first
    text = rx.format(frame(wires[2]), T)  # parity; the second data shard was "lost"
    assert "FEC parity shard" in text
    assert "sn=1" in text and "(recovered by FEC)" in text


def _hexdump_reference(data):
    """The layout spelled out byte by byte (Go's hex.Dump), to check the sliced version."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hx = " ".join(f"{b:02x}" for b in chunk[:8])
        if len(chunk) > 8:
            hx += "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hx:<49} |{asc}|")
    return "\n".join(lines)


from hypothesis import given, strategies as st  # noqa: E402


@given(st.binary(max_size=200))
def test_hexdump_equals_the_byte_by_byte_layout(data):
    assert hexdump(data) == _hexdump_reference(data)
