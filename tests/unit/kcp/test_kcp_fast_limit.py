"""KCP.fast_limit: a lost fast retransmission is fast-retransmitted again (kcp-go <= v5.6.20,
ikcp's fastlimit) instead of waiting for the RTO (kcp-go since v5.6.50, the default)."""

import pytest

from paqet.kcp.engine import KCP
from paqet.kcp.presets import configure

PUSH, ACK = 81, 82


def _pair(fast_limit):
    a = configure(KCP(7), "fast3", mtu=200, sndwnd=64, rcvwnd=64)
    b = configure(KCP(7), "fast3", mtu=200, sndwnd=64, rcvwnd=64)
    a.fast_limit = fast_limit
    return a, b


def _segments(datagrams):
    """(cmd, sn) of every segment in KCP datagrams."""
    out = []
    for d in datagrams:
        off = 0
        while off + 24 <= len(d):
            cmd, sn, ln = d[off + 4], int.from_bytes(d[off + 12:off + 16], "little"), \
                int.from_bytes(d[off + 20:off + 24], "little")
            out.append((cmd, sn))
            off += 24 + ln
    return out


def _run(fast_limit, ms=25):
    """Segment 0 is lost, then its first fast retransmission is lost too; everything else
    arrives. Returns the ms at which segment 0 finally reached the receiver."""
    a, b = _pair(fast_limit)
    now = 0
    drops0 = 0
    for i in range(40):
        a.send(bytes([i]) * 100)
    for now in range(0, ms):
        a.flush(now)
        for d in a.datagrams_to_send():
            segs = _segments([d])
            if (PUSH, 0) in segs and drops0 < 2:
                drops0 += 1
                continue
            b.input(d, now)
        b.flush(now)
        for d in b.datagrams_to_send():
            a.input(d, now)
        if b.rcv_nxt > 0:
            return now, drops0
    return None, drops0


def test_default_waits_for_the_rto_after_a_lost_fast_retransmission():
    got, drops = _run(0, ms=25)
    assert drops == 2
    assert got is None  # rto (30 ms) not yet reached: segment 0 still missing


@pytest.mark.parametrize("limit", [3, 5])
def test_fast_limit_resends_again_without_waiting_for_the_rto(limit):
    got, drops = _run(limit, ms=25)
    assert drops == 2
    assert got is not None and got < 25


def test_fast_limit_is_bounded():
    """With every copy of segment 0 lost, fast retransmissions stop at the limit until an
    RTO fires."""
    a, b = _pair(3)
    for i in range(60):
        a.send(bytes([i]) * 100)
    sent0 = 0
    for now in range(0, 29):  # before the first RTO (30 ms)
        a.flush(now)
        for d in a.datagrams_to_send():
            if (PUSH, 0) in _segments([d]):
                sent0 += 1
                continue
            b.input(d, now)
        b.flush(now)
        for d in b.datagrams_to_send():
            a.input(d, now)
    # counted again after transmissions 1 and 2 (fewer than 3): the first transmission,
    # then three fast retransmissions, the last of which waits for the RTO
    assert sent0 == 4
