"""Write delay with nothing outstanding (issue 18), on the simulator's virtual clock: two
KCP+smux endpoints driven as TunnelConnection drives them, with the shell's rule
(`connection.lone_write`: nothing queued, at most one segment in flight) or without it
(kcp-go's write delay: every write waits for the interval's flush). A lone request and its
response each leave at once, so the first byte comes one round trip after the request in
every mode, also behind a keepalive in flight; the response carries the ACK; a stream of
writes keeps its batching."""

import heapq

import pytest

from paqet.kcp.engine import KCP
from paqet.kcp.presets import configure
from paqet.smux import events as sev
from paqet.smux.session import SmuxSession
from paqet.tunnel.connection import lone_write
from sim import Link, Sim

DELAY = 50  # ms each way: RTT 100 ms


class ShellEndpoint:
    """Input per datagram and one pump per batch (flush_pending), the KCP tick every
    interval (flush), and application actions at set times, each followed by a pump. A
    pump moves smux's output into KCP and flushes at once when the mode has no write delay,
    or (`rule`) when nothing was outstanding before the write, as TunnelConnection does."""

    defer_flush = True

    def __init__(self, mode: str, client: bool, rule: bool = True) -> None:
        self.k = configure(KCP(0x1234), mode, mtu=1330, sndwnd=128, rcvwnd=512)
        self.k.defer_flush = True
        self.s = SmuxSession(client=client)
        self.rule = rule
        self.next_tick = 0
        self._actions: list = []
        self._n = 0
        self.on_data = None   # (endpoint, sid, data, now): the application's reaction
        self.got: dict[int, list] = {}   # sid -> [(ms, bytes)] as they arrived
        self.sent: list[tuple[int, int]] = []  # (ms, bytes) of each datagram sent
        self.lone = 0  # writes the rule flushed at once

    def at(self, t: int, action) -> None:
        """Run action(now) at virtual time t (then pump)."""
        self._n += 1
        heapq.heappush(self._actions, (t, self._n, action))

    def input(self, data, now: int) -> None:
        self.k.input(data, now)

    def flush_pending(self, now: int) -> None:
        self._pump(now)

    def flush(self, now: int) -> int:
        while self._actions and self._actions[0][0] <= now:
            heapq.heappop(self._actions)[2](now)
        self._pump(now)
        if now >= self.next_tick:
            self.k.flush(now)
            self.next_tick = now + self.k.interval
        nxt = self.next_tick
        if self._actions and self._actions[0][0] < nxt:
            nxt = self._actions[0][0]
        return nxt - now

    def _pump(self, now: int) -> None:
        k, s = self.k, self.s
        while (d := k.recv()) is not None and d:
            s.receive_data(d, now)
        while (e := s.next_event()) is not None:
            if type(e) is sev.DataReceived:
                self.got.setdefault(e.sid, []).append((now, len(e.data)))
                s.stream_consumed(e.sid, len(e.data))
                if self.on_data is not None:
                    self.on_data(self, e.sid, e.data, now)
        out = s.data_to_send()
        if out:
            lone = k.write_delay and self.rule and lone_write(k)
            self.lone += lone
            k.send(out)
            if lone or not k.write_delay:
                k.flush(now)
        k.flush_pending(now)

    def datagrams_to_send(self):
        out = self.k.datagrams_to_send()
        self.sent.extend((-1, len(d)) for d in out)  # times filled in by the pair
        return out


def pair(mode: str, rule: bool = True):
    a = ShellEndpoint(mode, True, rule)
    b = ShellEndpoint(mode, False, rule)
    sim = Sim(a, b, Link(delay_ms=DELAY, seed=1), Link(delay_ms=DELAY, seed=2))
    return a, b, sim


def stamp(ep: ShellEndpoint, now: int) -> None:
    ep.sent = [(now if t < 0 else t, n) for t, n in ep.sent]


def run(sim, a, b, until, max_ms=20_000):
    def each():
        stamp(a, sim.now)
        stamp(b, sim.now)
    ok = sim.run(until, max_ms=max_ms, each=each)
    stamp(a, sim.now)
    stamp(b, sim.now)
    return ok


def respond(size: int, after: int = 0):
    """The target's behaviour: `size` bytes back on the request's stream, `after` ms later."""
    def on_data(ep, sid, data, now):
        def reply(t):
            ep.s.send_data(sid, b"r" * size)
        if after:
            ep.at(now + after, reply)
        else:
            reply(now)
    return on_data


def request_at(a: ShellEndpoint, t: int, box: dict):
    def go(now):
        sid = a.s.open_stream()
        a.s.send_data(sid, b"GET / HTTP/1.1\r\n\r\n")
        box["sid"], box["t"] = sid, now
    a.at(t, go)


def first_byte_ms(mode: str, rule: bool, when: int = 1007, after: int = 0,
                  busy: tuple = ()) -> int:
    """The request at `when`; `busy`: (ms, bytes) written on a stream of its own before."""
    a, b, sim = pair(mode, rule)
    b.on_data = respond(1024, after)
    box: dict = {}
    for t, n in busy:
        def other(now, n=n):
            a.s.send_data(box.setdefault("other", a.s.open_stream()), b"k" * n)
        a.at(t, other)
    request_at(a, when, box)  # between two ticks, on an idle session
    assert run(sim, a, b, lambda: "sid" in box and box["sid"] in a.got)
    return a.got[box["sid"]][0][0] - box["t"]


@pytest.mark.parametrize("mode", ["normal", "fast", "fast2", "fast3"])
def test_lone_request_and_its_response_each_leave_at_once(mode):
    assert first_byte_ms(mode, rule=True) == 2 * DELAY


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_one_segment_in_flight_does_not_hold_a_request(mode):
    """A keepalive or a FIN not yet acknowledged (one segment: smux sends a NOP every 2 s
    each way, in flight for an RTT and the peer's ACK delay) does not make a request wait;
    two segments in flight do (the request joins the next interval's batch)."""
    assert first_byte_ms(mode, rule=True, busy=((1000, 8),)) == 2 * DELAY
    assert first_byte_ms(mode, rule=True, busy=((1000, 8), (1003, 8))) > 2 * DELAY


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_without_the_rule_write_delay_adds_up_to_an_interval_each_way(mode):
    """What the rule removes (and what makes the test above able to fail)."""
    assert first_byte_ms(mode, rule=False) > 2 * DELAY


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_the_response_carries_the_ack(mode):
    """The server writes its reply with the request's ACK pending: one datagram back (the
    ACK rides along, as an ACK-only datagram would have gone at the tick)."""
    a, b, sim = pair(mode)
    b.on_data = respond(1024)
    box: dict = {}
    request_at(a, 1007, box)
    assert run(sim, a, b, lambda: box and box["sid"] in a.got)
    assert len(b.sent) == 1
    assert a.k.snd_buf == type(a.k.snd_buf)()  # ... and it acknowledged the request


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_a_slow_target_gets_its_ack_at_the_tick_and_its_reply_at_once(mode):
    a, b, sim = pair(mode)
    late = 3 * 40 + 7  # after the server's next tick, whatever the mode
    b.on_data = respond(1024, after=late)
    box: dict = {}
    request_at(a, 1007, box)
    assert run(sim, a, b, lambda: box and box["sid"] in a.got)
    assert a.got[box["sid"]][0][0] - box["t"] == 2 * DELAY + late
    sizes = [n for _, n in b.sent]
    assert len(sizes) == 2 and sizes[0] == 24  # the ACK alone at the tick, then the reply


@pytest.mark.parametrize("mode", ["normal", "fast"])
@pytest.mark.parametrize("size", [50, 500])
def test_a_stream_of_small_writes_keeps_its_batching(mode, size):
    """`size` bytes every ms for 600 ms: with data outstanding the writes wait for the
    tick and join its batch; only the first two writes go alone (the second finds one
    segment in flight)."""
    counts = {}
    for rule in (False, True):
        a, b, sim = pair(mode, rule)
        box: dict = {}

        def open_stream(now, a=a, box=box):
            box["sid"] = a.s.open_stream()
            a.s.send_data(box["sid"], b"w" * size)
        a.at(1000, open_stream)
        for i in range(1, 600):
            a.at(1000 + i, lambda now, a=a, box=box: a.s.send_data(box["sid"], b"w" * size))
        assert run(sim, a, b,
                   lambda: sum(n for _, n in b.got.get(box.get("sid"), [])) >= 600 * size)
        counts[rule] = len(a.sent)
        assert a.lone == 2 * rule
    # each lone write costs at most its own datagram and a partial segment later on
    assert counts[True] <= counts[False] + 2 * 2, counts
    if size == 50:
        assert counts[True] < 600 // 10, counts  # batching: far fewer datagrams than writes


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_interactive_writes_far_apart_each_leave_at_once(mode):
    """Keystrokes 500 ms apart: each finds nothing outstanding and arrives one-way delay
    after it was written."""
    a, b, sim = pair(mode)
    box: dict = {}

    def open_stream(now):
        box["sid"] = a.s.open_stream()
    a.at(1000, open_stream)
    times = [1503 + 500 * i for i in range(5)]  # (the SYN went and was acknowledged)
    for t in times:
        a.at(t, lambda now: a.s.send_data(box["sid"], b"k"))
    assert run(sim, a, b, lambda: len(b.got.get(box.get("sid"), [])) == 5)
    assert [t for t, _ in b.got[box["sid"]]] == [t + DELAY for t in times]
