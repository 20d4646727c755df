"""A deterministic network simulator for sans-I/O endpoints: a virtual millisecond clock and
a lossy link with seeded loss, duplication, reordering and delay.

An endpoint is anything with `input(datagram, now)`, `flush(now) -> ms until next`, and
`datagrams_to_send() -> list[bytes]`; `Sim.step()` advances the clock by one millisecond.
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
        for d in self.ab.due(now):
            self.b.input(d, now)
        for d in self.ba.due(now):
            self.a.input(d, now)
        if now >= self.next_a:
            self.next_a = now + max(1, self.a.flush(now))
        if now >= self.next_b:
            self.next_b = now + max(1, self.b.flush(now))
        self._out(self.a, self.ab)
        self._out(self.b, self.ba)
        self.now += 1

    def run(self, until, max_ms: int = 600_000, each=None) -> bool:
        """Step until `until()` is true (True) or max_ms of virtual time pass (False)."""
        end = self.now + max_ms
        while self.now < end:
            if each is not None:
                each()
            self.step()
            if until():
                return True
        return False
