"""The hand-assembled BPF programs: run by the interpreter in paqet.net.bpf on real frames,
and checked against libpcap's own compilation of the same expression on the same frames."""

import pytest

from paqet.net import bpf
from paqet.wire.frame import FrameBuilder


def frames(link, dst, port):
    b = FrameBuilder(link=link, src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=1234)
    e = 14 if link == "ether" else 0
    v6 = ":" in dst
    good = b.build(b"data", dst, port)
    out = {"ours": good, "other port": b.build(b"data", dst, port ^ 1),
           "syn": b.build(b"data", dst, port, 2)}
    udp = bytearray(good)
    udp[e + (6 if v6 else 9)] = 17
    out["udp"] = bytes(udp)
    out["truncated"] = good[:e + (41 if v6 else 21)]
    if not v6:
        frag = bytearray(good)
        frag[e + 7] = 0x08  # fragment offset 8: no TCP header in it
        out["later fragment"] = bytes(frag)
        opts = bytearray(good[:e]) + bytes([0x46]) + good[e + 1:e + 20] + b"\x01\x01\x01\x00" + good[e + 20:]
        out["ip options"] = bytes(opts)
    if link == "ether":
        arp = bytearray(good)
        arp[12:14] = b"\x08\x06"
        out["arp"] = bytes(arp)
    return out


@pytest.mark.parametrize("link", ["ether", "ip"])
@pytest.mark.parametrize("dst", ["198.18.0.2", "2001:2::2"])
def test_filter_accepts_only_our_port(link, dst):
    prog = bpf.tcp_dst_port(9999, link)
    assert prog[-1] == (0x06, 0, 0, 0)
    for i, (code, jt, jf, k) in enumerate(prog):
        if code in (0x15, 0x45):
            assert i + 1 + max(jt, jf) < len(prog)
    verdict = {name: bpf.run(prog, f) > 0 for name, f in frames(link, dst, 9999).items()}
    want = {name: name in ("ours", "syn", "ip options") for name in verdict}
    assert verdict == want


@pytest.mark.parametrize("link", ["ether", "ip"])
@pytest.mark.parametrize("dst", ["198.18.0.2", "2001:2::2"])
@pytest.mark.parametrize("port", [1, 9999, 65535])
def test_same_verdicts_as_libpcap(link, dst, port):
    try:
        theirs = bpf.compile_pcap(f"tcp and dst port {port}", link)
    except OSError as exc:
        pytest.skip(f"libpcap not available: {exc}")
    ours = bpf.tcp_dst_port(port, link)
    for name, f in frames(link, dst, port).items():
        assert (bpf.run(ours, f) > 0) == (bpf.run(theirs, f) > 0), name


def test_bad_arguments():
    with pytest.raises(ValueError):
        bpf.tcp_dst_port(70000)
    with pytest.raises(ValueError):
        bpf.tcp_dst_port(1, "token-ring")
