"""A deterministic network simulator for sans-I/O endpoints: a virtual millisecond clock and
a lossy link with seeded loss, duplication, reordering and delay.

An endpoint is anything with `input(datagram, now)`, `flush(now) -> ms until next`, and
`datagrams_to_send() -> list[bytes]`. An endpoint whose `defer_flush` is true (a KCP engine
batching the flushes kcp-go does inside Input, as the tunnel does) gets `flush_pending(now)`
after each millisecond's batch of datagrams. `Sim.run()` advances the clock to the next
millisecond at which something happens.
"""

from __future__ import annotations

import heapq
import random


class Link:
    def __init__(self, *, loss=0.0, dup=0.0, reorder=0.0, delay_ms=5, jitter_ms=0, seed=1):
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.delay_ms, self.jitter_ms = delay_ms, jitter_ms
        self._q: list = []
        self._n = 0
        self.sent = self.dropped = self.delivered = 0

    def send(self, data: bytes, now: int) -> None:
        self.sent += 1
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = self.delay_ms + (self.rng.randint(0, self.jitter_ms) if self.jitter_ms else 0)
            if self.rng.random() < self.reorder:
                delay += self.rng.randint(1, 3 * self.delay_ms + 5)
            self._n += 1
            heapq.heappush(self._q, (now + delay, self._n, data))

    def next_time(self):
        """When the next datagram arrives (None if none is in flight)."""
        return self._q[0][0] if self._q else None

    def due(self, now: int) -> list[bytes]:
        out = []
        q = self._q
        while q and q[0][0] <= now:
            out.append(heapq.heappop(q)[2])
        self.delivered += len(out)
        return out


class Sim:
    def __init__(self, a, b, ab: Link, ba: Link) -> None:
        self.a, self.b, self.ab, self.ba = a, b, ab, ba
        self.now = 0
        self.next_a = 0
        self.next_b = 0

    def _out(self, ep, link) -> None:
        for d in ep.datagrams_to_send():
            link.send(d, self.now)

    def step(self) -> None:
        now = self.now
        a, b = self.a, self.b
        got = self.ab.due(now)
        for d in got:
            b.input(d, now)
        if got and getattr(b, "defer_flush", False):
            b.flush_pending(now)
        got = self.ba.due(now)
        for d in got:
            a.input(d, now)
        if got and getattr(a, "defer_flush", False):
            a.flush_pending(now)
        if now >= self.next_a:
            self.next_a = now + max(1, self.a.flush(now))
        if now >= self.next_b:
            self.next_b = now + max(1, self.b.flush(now))
        self._out(self.a, self.ab)
        self._out(self.b, self.ba)
        self.now += 1

    def _skip(self) -> None:
        """Advance the clock to the next millisecond at which something happens: a datagram
        arrives or an endpoint's flush is due. Nothing changes in between, so this gives the
        same run as stepping every millisecond."""
        t = min(self.next_a, self.next_b)
        for link in (self.ab, self.ba):
            n = link.next_time()
            if n is not None and n < t:
                t = n
        if t > self.now:
            self.now = t

    def run(self, until, max_ms: int = 600_000, each=None) -> bool:
        """Step until `until()` is true (True) or max_ms of virtual time pass (False).
        Milliseconds in which nothing can happen are skipped."""
        end = self.now + max_ms
        while self.now < end:
            if each is not None:
                each()
            self.step()
            if until():
                return True
            self._skip()
        return False


class KcpSmuxEndpoint:
    """KCP + smux driven as the tunnel drives them: input per datagram, one pump per step
    (KCP -> smux while the bucket allows, events, smux -> KCP, the deferred flush)."""

    def __init__(self, mode: str, client: bool, *, snd: int = 1024, rcv: int = 1024,
                 smuxbuf: int = 4 << 20, streambuf: int = 2 << 20, conv: int = 0xABCDEF01):
        import hashlib

        from paqet.kcp.engine import KCP
        from paqet.smux.session import SmuxSession
        from paqet.kcp.presets import configure
        k = configure(KCP(conv), mode, mtu=1330, sndwnd=snd, rcvwnd=rcv)
        k.defer_flush = True
        self.k = k
        self.s = SmuxSession(client=client, max_receive_buffer=smuxbuf, max_stream_buffer=streambuf)
        self.smuxbuf = smuxbuf
        self._sha = hashlib.sha256
        self.got: dict = {}
        self.sizes: dict[int, int] = {}
        self.max_unread = 0

    def input(self, data, now):
        self.k.input(data, now)

    def flush(self, now):
        from paqet.smux import events as sev
        k, s = self.k, self.s
        while not s.receive_paused:
            d = k.recv()
            if not d:
                break
            s.receive_data(d, now)
        self.max_unread = max(self.max_unread, self.smuxbuf - s.bucket)
        while (e := s.next_event()) is not None:
            if type(e) is sev.StreamOpened:
                self.got[e.sid] = self._sha()
                self.sizes[e.sid] = 0
            elif type(e) is sev.DataReceived:
                self.got[e.sid].update(e.data)
                self.sizes[e.sid] += len(e.data)
                s.stream_consumed(e.sid, len(e.data))
        out = s.data_to_send()
        if out:
            k.send(out)
        k.flush_pending(now)
        return k.flush(now)

    def datagrams_to_send(self):
        return self.k.datagrams_to_send()
