"""The hand-assembled BPF programs, run by a tiny classic-BPF interpreter on real frames."""

import struct

import pytest

from paqet.net.afpacket import bpf_tcp_dst_port
from paqet.wire.frame import FrameBuilder


def run_bpf(prog, pkt):
    a = x = 0
    pc = 0
    for _ in range(100):
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == 0x28:
            a = struct.unpack_from("!H", pkt, k)[0] if k + 2 <= len(pkt) else None
        elif code == 0x30:
            a = pkt[k] if k < len(pkt) else None
        elif code == 0x48:
            a = struct.unpack_from("!H", pkt, x + k)[0] if x + k + 2 <= len(pkt) else None
        elif code == 0xB1:
            x = 4 * (pkt[k] & 0xF)
        elif code == 0x54:
            a &= k
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x45:
            pc += jt if a & k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x}")
        if a is None:
            return 0
    raise AssertionError("no return")


@pytest.mark.parametrize("link", ["ether", "ip"])
@pytest.mark.parametrize("dst", ["198.18.0.2", "2001:2::2"])
def test_filter_accepts_only_our_port(link, dst):
    b = FrameBuilder(link=link, src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=1234)
    prog = bpf_tcp_dst_port(9999, link)
    assert prog[-1] == (0x06, 0, 0, 0)
    for i, (code, jt, jf, k) in enumerate(prog):
        if code in (0x15, 0x45):
            assert i + 1 + max(jt, jf) < len(prog)
    assert run_bpf(prog, b.build(b"data", dst, 9999)) > 0
    assert run_bpf(prog, b.build(b"data", dst, 9998)) == 0
    udp = bytearray(b.build(b"data", dst, 9999))
    off = (14 if link == "ether" else 0) + (9 if ":" not in dst else 6)
    udp[off] = 17
    assert run_bpf(prog, bytes(udp)) == 0
