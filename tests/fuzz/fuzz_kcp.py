"""Fuzz target: paqet.kcp.engine KCP.input (and the flush/recv that follow), on an engine
that has data of its own in flight.

Input: a selector byte (preset, stream/message mode, FEC-recovered flag) then records, each
one datagram. Property: input returns only kcp-go's codes (0, -1, -2, -3) and never raises;
queues stay within the windows; every output datagram fits the mtu; afterwards, in stream
mode, an in-order PUSH from the peer is still accepted and read (garbage does not wedge the
receiver)."""

from _common import instrumented, main, pack_records, records

with instrumented(__name__, ("paqet.kcp",)):
    from paqet.kcp.engine import KCP, encode_segment
    from paqet.kcp.presets import configure

MODES = ("normal", "fast", "fast2", "fast3")
CONV = 7
PUSH, ACK, WASK, WINS = 81, 82, 83, 84


def _engine(sel: int) -> KCP:
    k = configure(KCP(CONV), MODES[sel & 3], mtu=200, sndwnd=16, rcvwnd=16)
    k.stream = not sel & 4
    k.send(b"o" * 400)
    k.flush(0)
    k.datagrams_to_send()
    return k


def _bounds(k: KCP) -> None:
    assert len(k.rcv_buf) <= k.rcv_wnd
    assert len(k.rcv_queue) <= k.rcv_wnd
    assert len(k.snd_buf) <= max(k.snd_wnd, k.rmt_wnd) + 1
    assert len(k._unacked) <= len(k.snd_buf)
    for out in k.datagrams_to_send():
        assert len(out) <= k.mtu


def one_input(data: bytes) -> None:
    if not data:
        return
    sel = data[0]
    k = _engine(sel)
    now = 0
    for i, dgram in enumerate(records(data[1:], 8)):
        now += 7
        r = k.input(dgram, now, regular=not (sel >> 3) & (1 << (i % 5)))
        assert r in (0, -1, -2, -3), r
        k.flush(now)
        _bounds(k)
        got = k.recv()
        assert got is None or len(got) <= len(data) * 16
    if k.stream:
        while k.recv() is not None:
            pass
        seg = encode_segment(CONV, PUSH, 0, 64, now, k.rcv_nxt, 0, b"probe")
        assert k.input(seg, now + 1) == 0
        got = k.recv()
        assert got is not None and got.startswith(b"probe"), got


def seeds() -> list[bytes]:
    segs = [encode_segment(CONV, PUSH, 0, 32, 1, 0, 0, b"hello"),
            encode_segment(CONV, PUSH, 1, 32, 2, 1, 0, b"a" * 40) +
            encode_segment(CONV, PUSH, 0, 32, 2, 2, 0, b"b" * 40),
            encode_segment(CONV, ACK, 0, 32, 0, 0, 1),
            encode_segment(CONV, ACK, 0, 32, 0, 3, 2) + encode_segment(CONV, ACK, 0, 32, 0, 1, 2),
            encode_segment(CONV, WASK, 0, 32, 5, 0, 0),
            encode_segment(CONV, WINS, 0, 0, 5, 0, 0),
            encode_segment(CONV, PUSH, 0, 32, 9, 5, 4, b"later")]
    return [bytes((sel,)) + pack_records(segs) for sel in (0, 1, 2, 3, 4, 7, 0xF8)]


if __name__ == "__main__":
    main(one_input, seeds)
