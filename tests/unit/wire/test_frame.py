"""Raw frames: byte-exact against frames built by upstream's SendHandle, parsed back,
checked by scapy as an independent decoder, and the parser fuzzed."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from paqet.wire import frame as fr

V = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vectors", "frames.json")))
BITS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128, "NS": 256}


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["name"])
def test_build_matches_upstream(case):
    dec = case["decoded"]
    ip = dec.get("ipv4") or dec.get("ipv6")
    tcp = dec["tcp"]
    b = fr.FrameBuilder(src_mac=mac(dec["ethernet"]["src_mac"]), dst_mac=mac(dec["ethernet"]["dst_mac"]),
                        src_ip4=ip["src"] if "ipv4" in dec else None,
                        src_ip6=ip["src"] if "ipv6" in dec else None,
                        src_port=tcp["src_port"], start_ms=V["start_ms"])
    b.counter = case["ts_counter"] - 1
    flags = sum(BITS[f] for f in tcp["flags"])
    out = b.build(bytes.fromhex(tcp["payload"]), ip["dst"], tcp["dst_port"], flags)
    assert out.hex() == case["frame"]


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["name"])
def test_parse_vectors(case):
    p = fr.parse_frame(bytes.fromhex(case["frame"]))
    tcp = case["decoded"]["tcp"]
    assert p is not None
    host = p.src_ip if ":" not in p.src_ip else f"[{p.src_ip}]"
    assert f"{host}:{p.src_port}" == case["receiver_sees"]["from"]
    assert p.payload.hex() == tcp["payload"]
    assert p.flags == sum(BITS[f] for f in tcp["flags"])
    assert (p.seq, p.ack, p.window) == (tcp["seq"], tcp["ack"], tcp["window"])


def test_live_capture_parses():
    frames = V["live_capture"]["frames"]
    assert frames
    for f in frames:
        p = fr.parse_frame(bytes.fromhex(f["frame"]))
        assert p is not None and p.payload and p.window == 65535


def test_vector_checksums_hold():
    """The recorded frames were moved onto the test ranges with their checksums recomputed
    (frames.json "readdressed"); scapy, recomputing independently, agrees with every one."""
    scapy = pytest.importorskip("scapy.all")
    frames = [c["frame"] for c in V["cases"]] + [f["frame"] for f in V["live_capture"]["frames"]]
    for hexframe in frames:
        pkt = scapy.Ether(bytes.fromhex(hexframe))
        ip = pkt[scapy.IP] if scapy.IP in pkt else pkt[scapy.IPv6]
        assert ip.src.startswith(("198.18.", "2001:2::"))
        want = (pkt[scapy.TCP].chksum, getattr(ip, "chksum", None))
        del pkt[scapy.TCP].chksum
        if scapy.IP in pkt:
            del pkt[scapy.IP].chksum
        again = scapy.Ether(bytes(pkt))
        ip2 = again[scapy.IP] if scapy.IP in again else again[scapy.IPv6]
        assert (again[scapy.TCP].chksum, getattr(ip2, "chksum", None)) == want


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("flags", [fr.PSH | fr.ACK, fr.SYN, fr.SYN | fr.ACK, 0x1FF, 0])
@pytest.mark.parametrize("link", ["ether", "ip"])
def test_scapy_agrees(v6, flags, link):
    scapy = pytest.importorskip("scapy.all")
    b = fr.FrameBuilder(link=link, src_mac=b"\x02" * 6, dst_mac=b"\x04" * 6, src_ip4="198.18.0.1",
                        src_ip6="2001:2::1", src_port=40000, start_ms=123456)
    dst = "2001:2::2" if v6 else "198.18.0.2"
    payload = os.urandom(1333)
    raw = b.build(payload, dst, 9999, flags)
    pkt = scapy.Ether(raw) if link == "ether" else (scapy.IPv6(raw) if v6 else scapy.IP(raw))
    ipl = pkt[scapy.IPv6] if v6 else pkt[scapy.IP]
    tcp = pkt[scapy.TCP]
    want_tcp = tcp.chksum
    del tcp.chksum
    if not v6:
        want_ip = ipl.chksum
        del ipl.chksum
    rebuilt = (scapy.Ether(bytes(pkt)) if link == "ether" else
               (scapy.IPv6(bytes(pkt)) if v6 else scapy.IP(bytes(pkt))))
    assert rebuilt[scapy.TCP].chksum == want_tcp
    if not v6:
        assert rebuilt[scapy.IP].chksum == want_ip
        assert ipl.tos == 0xB8 and ipl.ttl == 64 and ipl.flags == "DF"
    assert bytes(tcp.payload) == payload
    p = fr.parse_frame(raw, link)
    assert (p.src_port, p.dst_port, p.flags, p.payload) == (40000, 9999, flags, payload)


def test_peer_flags_cycle():
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1, local_flags=[fr.PSH | fr.ACK])
    b.set_peer_flags(("198.18.0.2", 5), [fr.SYN, fr.ACK])
    got = [fr.parse_frame(b.build(b"x", "198.18.0.2", 5)).flags for _ in range(3)]
    assert got == [fr.SYN, fr.ACK, fr.SYN]
    assert fr.parse_frame(b.build(b"x", "198.18.0.3", 5)).flags == fr.PSH | fr.ACK
    b.set_peer_flags(("198.18.0.2", 5), None)
    assert fr.parse_frame(b.build(b"x", "198.18.0.2", 5)).flags == fr.PSH | fr.ACK


def test_not_ours_is_none():
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1)
    good = b.build(b"payload", "198.18.0.2", 9)
    assert fr.parse_frame(good, want_port=10) is None
    assert fr.parse_frame(good[:-7]) is None  # truncated below the IP total length
    empty = b.build(b"", "198.18.0.2", 9)
    assert fr.parse_frame(empty) is None
    arp = good[:12] + b"\x08\x06" + good[14:]
    assert fr.parse_frame(arp) is None


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["ether", "ip"]))
def test_parser_fuzz(data, link):
    p = fr.parse_frame(data, link)
    assert p is None or p.payload
    q = fr.parse_payload(data, link)
    assert (p is None and q is None) or q == (p.payload, (p.src_ip, p.src_port))


@pytest.mark.parametrize("dst", ["198.18.0.2", "2001:2::2", "::ffff:198.18.0.2"])
@pytest.mark.parametrize("flags", [fr.PSH | fr.ACK, fr.SYN | fr.ACK])
@pytest.mark.parametrize("plen", [1, 2, 1350, 1351])
def test_partial_checksum_completes_to_full(dst, flags, plen):
    """header(partial=True) leaves the pseudo-header sum for the kernel: finishing the sum
    over TCP header + payload, as the kernel does, gives build()'s checksum."""
    kw = dict(src_mac=b"\x02" * 6, dst_mac=b"\x04" * 6, src_ip4="198.18.0.1", src_ip6="2001:2::1",
              src_port=40000, start_ms=987654321)
    payload = os.urandom(plen)
    full = fr.FrameBuilder(**kw).build(payload, dst, 9999, flags)
    vb = fr.FrameBuilder(vnet=True, **kw)
    h = bytes(vb.header(payload, dst, 9999, flags, partial=True))
    flags_, gso, hdr_len, gso_size, start, off = fr.VNET_HDR.unpack_from(h)
    assert (flags_, gso, off) == (1, 0, 16)
    frame = bytearray(h[fr.VNET_HDR_LEN:] + payload)
    assert start == (34 if ":" not in dst or dst.startswith("::ffff:") else 54)
    frame[start + 16:start + 18] = fr.checksum(frame[start:]).to_bytes(2, "big")
    assert bytes(frame) == full


@pytest.mark.parametrize("dst", ["198.18.0.2", "2001:2::2"])
def test_ip_only_round_trip(dst):
    eth = fr.FrameBuilder(src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=5, start_ms=7)
    ip = fr.FrameBuilder(link="ip", src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=5, start_ms=7)
    a, b = eth.build(b"hello", dst, 6), ip.build(b"hello", dst, 6)
    assert a[14:] == b and b[0] >> 4 == (6 if ":" in dst else 4)
    p = fr.parse_frame(b, "ip", 6)
    assert (p.src_port, p.dst_port, p.dst_ip, p.payload) == (5, 6, dst, b"hello")
    assert fr.parse_payload(b, "ip", 6) == (b"hello", (p.src_ip, 5))
    assert fr.parse_frame(b, "ether") is None or fr.parse_frame(b, "ether").payload != b"hello"


def test_counter_and_peer_mac():
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1, dst_mac=b"\x01" * 6)
    assert b.build(b"x", "198.18.0.9", 2)[:6] == b"\x01" * 6
    b.set_dst_mac("198.18.0.9", b"\x09" * 6)
    assert b.build(b"x", "198.18.0.9", 2)[:6] == b"\x09" * 6
    assert b.build(b"x", "198.18.0.8", 2)[:6] == b"\x01" * 6
    assert b.counter == 3
    with pytest.raises(fr.FrameError):
        b.build(b"x", "2001:2::1", 2)  # no IPv6 source configured


def test_vlan_and_fragments_are_not_ours():
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1)
    good = b.build(b"payload", "198.18.0.2", 9)
    vlan = good[:12] + b"\x81\x00\x00\x05" + good[12:]
    assert fr.parse_frame(vlan) is None  # as upstream: a tagged frame has no TCP layer
    frag = bytearray(good)
    frag[20] |= 0x20  # MF
    assert fr.parse_frame(bytes(frag)) is None and fr.parse_payload(bytes(frag)) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.sampled_from(["198.18.0.2", "2001:2::2"]),
       st.sampled_from(["ether", "ip"]), st.integers(0, 80), st.binary(max_size=8))
def test_parser_fuzz_mutated_frames(payload, dst, link, cut, junk):
    """Truncated and overwritten real frames: the parsers agree and never raise."""
    b = fr.FrameBuilder(link=link, src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=3)
    raw = bytearray(b.build(payload or b"p", dst, 4))
    pos = cut % len(raw)
    raw[pos:pos + len(junk)] = junk
    data = bytes(raw[:len(raw) - cut // 2])
    p = fr.parse_frame(data, link)
    q = fr.parse_payload(data, link)
    assert (p is None) == (q is None)
    if p is not None:
        assert q == (p.payload, (p.src_ip, p.src_port)) and p.payload


# -- tcp=: the handshake mode's frames (caller-chosen seq/ack/timestamps) ------------------

@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("flags,plen", [(fr.SYN, 0), (fr.SYN | fr.ACK, 0), (fr.ACK, 0),
                                        (fr.FIN | fr.ACK, 0), (fr.PSH | fr.ACK, 1350)])
def test_segment_fields_scapy_agrees(v6, flags, plen):
    """What header(tcp=...) writes is what an independent decoder reads: the given seq, ack,
    timestamps (a SYN-ACK's TSecr too), Linux's SYN options, and correct checksums."""
    scapy = pytest.importorskip("scapy.all")
    b = fr.FrameBuilder(src_mac=b"\x02" * 6, dst_mac=b"\x04" * 6, src_ip4="198.18.0.1",
                        src_ip6="2001:2::1", src_port=40000)
    dst = "2001:2::2" if v6 else "198.18.0.2"
    payload = os.urandom(plen)
    raw = b.build(payload, dst, 9999, flags, tcp=(0xFFFFFFF0, 123456789, 4000000000, 77))
    pkt = scapy.Ether(raw)
    tcp = pkt[scapy.TCP]
    assert (tcp.seq, tcp.ack, int(tcp.flags), tcp.window) == (0xFFFFFFF0, 123456789, flags, 65535)
    opts = dict(tcp.options)
    assert opts["Timestamp"] == (4000000000, 77)
    if flags & fr.SYN:
        assert [o[0] for o in tcp.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
        assert opts["MSS"] == 1460 and opts["WScale"] == 8
    want = tcp.chksum
    del tcp.chksum
    assert scapy.Ether(bytes(pkt))[scapy.TCP].chksum == want
    assert fr.parse_segment(raw, "ether", 9999) == (
        payload, ("2001:2::1" if v6 else "198.18.0.1", 40000), flags, 0xFFFFFFF0, 123456789,
        4000000000, 77)


def test_given_tcp_values_are_upstreams_synthetic_ones_when_the_same():
    """header(tcp=...) differs from the default only in where seq/ack/timestamps come from:
    fed upstream's synthetic values it makes the default's bytes (the Go vectors pin those,
    test_build_matches_upstream), and it leaves the flag cycle's counter alone."""
    a = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1, start_ms=5000)
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1, start_ms=5000)
    for flags in (fr.PSH | fr.ACK, fr.SYN, fr.SYN | fr.ACK):
        h = a.header(b"abc", "198.18.0.2", 9, flags)
        p = fr.parse_segment(bytes(h) + b"abc", "ether")
        assert b.header(b"abc", "198.18.0.2", 9, flags, tcp=p[3:7]) == h
    assert b.counter == 0 and a.counter == 3


@pytest.mark.parametrize("dst", ["198.18.0.2", "2001:2::2"])
@pytest.mark.parametrize("plen", [0, 1, 1351])
def test_segment_partial_checksum_completes_to_full(dst, plen):
    kw = dict(src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=40000)
    payload = os.urandom(plen)
    full = fr.FrameBuilder(**kw).build(payload, dst, 9, fr.ACK, tcp=(1, 2, 3, 4))
    h = bytes(fr.FrameBuilder(vnet=True, **kw).header(payload, dst, 9, fr.ACK, True, (1, 2, 3, 4)))
    start = fr.VNET_HDR.unpack_from(h)[4]
    frame = bytearray(h[fr.VNET_HDR_LEN:] + payload)
    frame[start + 16:start + 18] = fr.checksum(frame[start:]).to_bytes(2, "big")
    assert bytes(frame) == full


def test_timestamps_found_wherever_the_option_stands():
    b = fr.FrameBuilder(src_ip4="198.18.0.1", src_port=1)
    syn = b.build(b"", "198.18.0.2", 9, fr.SYN, tcp=(1, 0, 0xABCDEF01, 0))
    assert fr.parse_segment(syn)[5:] == (0xABCDEF01, 0)   # after MSS and SACK-permitted
    data = bytearray(b.build(b"x", "198.18.0.2", 9, fr.ACK, tcp=(1, 0, 5, 6)))
    data[34 + 20:34 + 24] = b"\x01\x01\x01\x00"   # NOP NOP NOP EOL: no timestamps
    assert fr.parse_segment(bytes(data))[5:] == (-1, -1)
    data[34 + 20:34 + 24] = b"\x01\x01\x08\x09"   # a bad option length
    assert fr.parse_segment(bytes(data))[5:] == (-1, -1)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["ether", "ip"]))
def test_parse_segment_fuzz(data, link):
    """parse_segment never raises and agrees with parse_frame on frames with a payload."""
    s = fr.parse_segment(data, link)
    p = fr.parse_frame(data, link)
    if p is not None:
        assert s is not None and s[:5] == (p.payload, (p.src_ip, p.src_port), p.flags, p.seq, p.ack)
    elif s is not None:
        assert s[0] == b""
