"""A short stream (a request, a small reply) may read while the session's send budget is
spent by bulk transfers, up to FAST_LANE beyond it; a stream that has sent SHORT_STREAM
waits for room like any bulk transfer (tunnel/relay.py)."""

import asyncio
import types

from paqet.tunnel import relay as R


class Conn:
    def __init__(self, budget, queued):
        self.send_budget, self.queued_out = budget, queued

    @property
    def send_backlogged(self):
        return self.queued_out >= self.send_budget


def make(queued, sent):
    loop = asyncio.new_event_loop()
    try:
        st = types.SimpleNamespace(conn=Conn(8 << 20, queued))
        r = R.SocketRelay(st, transport=None, loop=loop)
    finally:
        loop.close()
    r.to_stream = sent
    return r


def test_short_stream_reads_past_a_spent_budget():
    r = make(queued=8 << 20, sent=0)
    assert not r._backlogged()
    assert len(r.get_buffer(-1)) == R.CHUNK


def test_the_fast_lane_is_bounded():
    r = make(queued=(8 << 20) + R.FAST_LANE, sent=0)
    assert r._backlogged()
    assert len(r.get_buffer(-1)) == 1


def test_a_bulk_stream_waits_for_room():
    r = make(queued=8 << 20, sent=R.SHORT_STREAM)
    assert r._backlogged()
    assert len(r.get_buffer(-1)) == 1
    r = make(queued=(8 << 20) - 1000, sent=R.SHORT_STREAM)
    assert not r._backlogged() and len(r.get_buffer(-1)) == 1000
