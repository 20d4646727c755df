"""A user's rate limit: a token bucket in bytes that holds back what exceeds the rate, in
order, for at most MAX_DELAY_MS worth of the rate, and drops beyond that. Sans-I/O: the
shell offers datagrams with the time, takes those that are due, and wakes itself when
next_ms() says.

Holding datagrams back (a queue, as a slow link has) rather than dropping them (a policer)
keeps KCP's window from running into losses: the peer sees a longer round trip and its
rate settles at what passes; only a window larger than the queue loses the excess."""

from __future__ import annotations

import collections
import math

MAX_DELAY_MS = 1000       # the queue holds what the rate moves in this time ...
MIN_QUEUE = 256 << 10     # ... but at least this many bytes
BURST_MS = 50             # the bucket holds what the rate moves in this time ...
MIN_BURST = 32 << 10      # ... but at least this many bytes


PASS, WAIT, DROP = 1, 0, -1


class Shaper:
    __slots__ = ("rate", "burst", "max_queue", "tokens", "at", "queue", "queued", "delayed",
                 "dropped")

    def __init__(self, rate: int) -> None:
        self.queue: collections.deque = collections.deque()  # (item, size)
        self.queued = 0       # bytes waiting
        self.delayed = 0      # datagrams that waited
        self.dropped = 0      # datagrams dropped (the queue was full)
        self.at: int | None = None
        self.set_rate(rate)
        self.tokens = float(self.burst)

    def set_rate(self, rate: int) -> None:
        """Bytes per second (a reload); 0 passes everything at once."""
        self.rate = rate
        self.burst = max(MIN_BURST, rate * BURST_MS // 1000)
        self.max_queue = max(MIN_QUEUE, rate * MAX_DELAY_MS // 1000)

    def _refill(self, now_ms: int) -> None:
        at = self.at
        self.at = now_ms
        if at is not None:
            t = self.tokens + ((now_ms - at) & 0xFFFFFFFF) * self.rate / 1000.0
            self.tokens = t if t < self.burst else float(self.burst)

    def offer(self, item, size: int, now_ms: int) -> int:
        """PASS: send `item` now; WAIT: it waits (due() hands it out in its turn); DROP:
        the queue is full (counted)."""
        if not self.rate:
            return PASS
        self._refill(now_ms)
        if not self.queue and self.tokens >= size:
            self.tokens -= size
            return PASS
        if self.queued + size > self.max_queue:
            self.dropped += 1
            return DROP
        self.queue.append((item, size))
        self.queued += size
        self.delayed += 1
        return WAIT

    def due(self, now_ms: int) -> list:
        """The waiting items whose turn has come, in order."""
        q = self.queue
        if not q:
            return []
        if not self.rate:  # the limit was lifted: everything at once
            out = [item for item, _ in q]
            q.clear()
            self.queued = 0
            return out
        self._refill(now_ms)
        out = []
        while q and self.tokens >= q[0][1]:
            item, size = q.popleft()
            self.tokens -= size
            self.queued -= size
            out.append(item)
        return out

    def next_ms(self) -> int | None:
        """Milliseconds until the first waiting item is due (None: nothing waits)."""
        q = self.queue
        if not q:
            return None
        if not self.rate:
            return 0
        need = q[0][1] - self.tokens
        return math.ceil(need * 1000 / self.rate) if need > 0 else 0
