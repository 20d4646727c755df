"""The kernel filter's replay block list (net/bpf.py): the port filter's verdicts are
unchanged, and frames whose payload starts with a blocked word are rejected - checked with
the interpreter and, where allowed, by the kernel accepting the program."""

import os
import random
import socket

import pytest

from paqet.net import bpf
from paqet.wire.frame import FrameBuilder


def frame(payload, port=9999, v6=False, link="ether", flags=None):
    b = FrameBuilder(link=link, src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=4000,
                     src_mac=b"\2" * 6, dst_mac=b"\4" * 6)
    return b.build(payload, "2001:2::2" if v6 else "198.18.0.2", port, flags)


@pytest.mark.parametrize("link", ["ether", "ip"])
@pytest.mark.parametrize("v6", [False, True])
def test_block_list_rejects_exactly_the_listed_words(link, v6):
    rng = random.Random(3)
    blocked = [rng.getrandbits(32) for _ in range(bpf.MAX_BLOCKED)]
    prog = bpf.tcp_dst_port(9999, link, blocked)
    assert len(prog) <= 4096
    plain = bpf.tcp_dst_port(9999, link)
    for w in blocked[::97] + [min(blocked), max(blocked)]:
        f = frame(w.to_bytes(4, "big") + os.urandom(60), v6=v6, link=link)
        assert bpf.run(plain, f) and not bpf.run(prog, f)
    for _ in range(200):
        f = frame(os.urandom(rng.randint(4, 1350)), v6=v6, link=link)
        assert bpf.run(prog, f) == bpf.run(plain, f) == bpf.ACCEPT
    # SYN-layout frames (40-byte TCP header) are judged by their payload too
    w = blocked[5].to_bytes(4, "big")
    assert not bpf.run(prog, frame(w + b"x" * 40, v6=v6, link=link, flags=0x02))
    assert bpf.run(prog, frame(b"\0\0\0\1" + b"x" * 40, v6=v6, link=link, flags=0x02))
    # other ports stay rejected
    assert not bpf.run(prog, frame(os.urandom(64), port=9998, v6=v6, link=link))


def test_block_list_bounds():
    assert bpf.tcp_dst_port(1, "ether", []) == bpf.tcp_dst_port(1, "ether")
    with pytest.raises(ValueError):
        bpf.tcp_dst_port(1, "ether", range(bpf.MAX_BLOCKED + 1))


@pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET needs root")
def test_kernel_accepts_the_largest_program():
    big = {f"198.18.0.{i}": list(range(1000, 1000 + bpf.MAX_PORTS)) for i in range(1, 9)}
    prog = bpf.tcp_dst_port(9999, "ether", range(0, bpf.MAX_BLOCKED * 7919, 7919), big)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        bpf.attach(s, prog)
    finally:
        s.close()


def src_frame(ip, sport, payload=b"\0\0\0\1" + b"x" * 60, v6=False):
    b = FrameBuilder(src_ip4=ip, src_ip6="2001:2::1", src_port=sport, src_mac=b"\2" * 6,
                     dst_mac=b"\4" * 6)
    return b.build(payload, "2001:2::2" if v6 else "198.18.0.2", 9999)


def test_throttled_source_keeps_its_session_ports_and_a_sample():
    throttle = {"198.18.0.1": [4000, 4001], "198.18.0.7": [5000]}
    prog = bpf.tcp_dst_port(9999, "ether", [0x01020304], throttle)
    for rnd, sampled in ((1, False), (64, True)):  # mask 63: 64 & 63 == 0 -> passes
        run = lambda f: bpf.run(prog, f, random_value=rnd)  # noqa: E731
        assert run(src_frame("198.18.0.1", 4000)) and run(src_frame("198.18.0.1", 4001))
        assert run(src_frame("198.18.0.7", 5000))
        assert bool(run(src_frame("198.18.0.1", 4002))) is sampled
        assert bool(run(src_frame("198.18.0.7", 4000))) is sampled
        assert run(src_frame("198.18.0.9", 1234))            # not throttled
        assert run(src_frame("198.18.0.1", 1, v6=True))      # IPv6 is not throttled
        # the block list still applies to every source
        assert not run(src_frame("198.18.0.1", 4000, b"\1\2\3\4" + b"x" * 60))
    with pytest.raises(ValueError):
        bpf.tcp_dst_port(9999, "ether", (), {f"198.18.0.{i}": [1] for i in range(1, 10)})
    big = {f"198.18.0.{i}": list(range(1000, 1000 + bpf.MAX_PORTS)) for i in range(1, 9)}
    prog = bpf.tcp_dst_port(9999, "ip", range(bpf.MAX_BLOCKED), big)
    assert len(prog) <= 4096
