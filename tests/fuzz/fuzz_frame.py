"""Fuzz target: paqet.wire.frame parse_frame / parse_payload on captured frames.

Input: one selector byte (link type, port filter, buffer type) then the frame. Property:
both parsers return None or agree, never raise, and the payload is a non-empty slice of
the frame."""

import sys

from _common import instrumented, main

with instrumented(__name__):
    from paqet.wire import frame as fr


def one_input(data: bytes) -> None:
    if not data:
        return
    sel, buf = data[0], data[1:]
    link = "ether" if sel & 1 else "ip"
    want = 4000 if sel & 2 else None
    view = memoryview(buf) if sel & 4 else buf
    p = fr.parse_frame(view, link, want)
    q = fr.parse_payload(buf, link, want)
    assert (p is None) == (q is None)
    if p is not None:
        assert q == (p.payload, (p.src_ip, p.src_port))
        assert 0 < len(p.payload) <= len(buf)
        assert want is None or p.dst_port == want


def seeds() -> list[bytes]:
    out = []
    for link, sel in (("ether", 1), ("ip", 0)):
        b = fr.FrameBuilder(link=link, src_ip4="198.18.0.1", src_ip6="2001:2::1", src_port=3)
        for dst in ("198.18.0.2", "2001:2::2"):
            for payload in (b"p", bytes(range(64))):
                for s in (sel, sel | 2, sel | 4):
                    port = 4000 if s & 2 else 4
                    out.append(bytes((s,)) + b.build(payload, dst, port))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
