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


class Bottleneck:
    """A modelled bottleneck, one direction: random loss at entry, a drop-tail buffer of
    `buffer` frames in front of a line of `rate` bytes per ms, then a constant delay (one
    FIFO: order is kept). Each datagram costs `overhead` bytes more on the line (the frame's
    Ethernet/IP/TCP headers and the codec's). Same interface as Link."""

    def __init__(self, *, rate: float, buffer: int, delay_ms: int, loss: float = 0.0,
                 overhead: int = 78, seed: int = 1) -> None:
        import collections
        self.rng = random.Random(seed)
        self.rate, self.buffer, self.delay_ms, self.loss = rate, buffer, delay_ms, loss
        self.overhead = overhead
        self._line_free = 0.0
        self._exits: collections.deque = collections.deque()  # line exit times queued
        self._q: collections.deque = collections.deque()      # (due ms, data), FIFO
        self.sent = self.dropped = self.overflow = self.delivered = 0
        self.bytes_delivered = 0
        self.max_queue = 0

    def queued(self, now: float) -> int:
        ex = self._exits
        while ex and ex[0] <= now:
            ex.popleft()
        return len(ex)

    def send(self, data: bytes, now: int) -> None:
        self.sent += 1
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        n = self.queued(now)
        if n >= self.buffer:
            self.overflow += 1
            return
        start = self._line_free if self._line_free > now else float(now)
        end = start + (len(data) + self.overhead) / self.rate
        self._line_free = end
        self._exits.append(end)
        if n + 1 > self.max_queue:
            self.max_queue = n + 1
        due = int(end + self.delay_ms + 0.999999)
        self._q.append((due, data))

    def next_time(self):
        return self._q[0][0] if self._q else None

    def due(self, now: int) -> list[bytes]:
        out = []
        q = self._q
        while q and q[0][0] <= now:
            d = q.popleft()[1]
            out.append(d)
            self.bytes_delivered += len(d)
        self.delivered += len(out)
        return out


class BulkKcp:
    """A KCP endpoint (stream mode, kcp-go's defaults for a mode, our batching) with a bulk
    source that keeps `backlog` segments queued while it has bytes left to send, and a sink
    that reads everything. `cc`: attach a rate controller (kcp.rate.RateController); `rw`:
    a receive window (kcp.window.ReceiveWindow)."""

    defer_flush = True

    def __init__(self, mode: str = "fast3", *, snd: int = 1024, rcv: int = 1024,
                 total: int = 0, backlog: int = 256, cc=None, conv: int = 0x1234,
                 mtu: int = 1330, start_after: int = 0, rw=None) -> None:
        from paqet.kcp.engine import KCP
        from paqet.kcp.presets import configure
        k = configure(KCP(conv), mode, mtu=mtu, sndwnd=snd, rcvwnd=rcv)
        k.defer_flush = True
        if cc is not None:
            k.cc = cc
        if rw is not None:
            k.rw = rw
        self.k = k
        # the bulk starts when the peer's first bytes arrive (a request: by then KCP knows
        # the peer's window and the RTT, as in a real download); `request` sends them
        self.total = total
        self.left = 0 if total else 0
        self.started = False
        self.asked = False
        self.start_after = start_after
        self.backlog = backlog
        self.received = 0
        self.marks: list = []  # (ms, bytes received so far), one per flush that read data
        self._chunk = bytes(k.mss) * 16

    def input(self, data, now):
        self.k.input(data, now)

    def flush_pending(self, now):
        self._read(now)
        self._fill(now)
        self.k.flush_pending(now)

    def _read(self, now):
        k = self.k
        got = 0
        while True:
            d = k.recv()
            if not d:
                break
            got += len(d)
        if got:
            self.received += got
            self.marks.append((now, self.received))
            self.asked = True

    def request(self, n: int = 100) -> None:
        """Queue n bytes for the peer (a request that starts its bulk, or a hello)."""
        self.k.send(bytes(n))

    def _fill(self, now):
        k = self.k
        if self.total and not self.started and self.asked and now >= self.start_after:
            self.started = True
            self.start_ms = now
            self.left = self.total
        while self.left > 0 and k.wait_snd < self.backlog:
            n = min(self.left, len(self._chunk))
            k.send(self._chunk[:n])
            self.left -= n

    def flush(self, now):
        self._read(now)
        self._fill(now)
        r = self.k.flush(now)
        if self.total and not self.started and self.asked:
            r = min(r, max(1, self.start_after - now))
        return r

    def datagrams_to_send(self):
        return self.k.datagrams_to_send()

    def rate_series(self, bin_ms: int = 100) -> list[float]:
        """Bytes received per ms in consecutive bins of bin_ms from 0."""
        out = []
        prev = 0
        i = 0
        marks = self.marks
        if not marks:
            return out
        end = marks[-1][0]
        for t in range(bin_ms, end + 1, bin_ms):
            while i < len(marks) and marks[i][0] <= t:
                i += 1
            cur = marks[i - 1][1] if i else 0
            out.append((cur - prev) / bin_ms)
            prev = cur
        return out


class Mux:
    """Several endpoints on one side of a shared path (sessions of different clients behind
    the same bottleneck): each datagram carries its endpoint's index in one byte in front
    (the model charges it to the line like any other byte)."""

    def __init__(self, *eps) -> None:
        self.eps = eps
        self.defer_flush = any(getattr(e, "defer_flush", False) for e in eps)
        self._got: set = set()
        self._next = [0] * len(eps)

    def input(self, data, now):
        i = data[0]
        self.eps[i].input(data[1:], now)
        self._got.add(i)

    def flush_pending(self, now):
        for i in self._got:
            e = self.eps[i]
            if getattr(e, "defer_flush", False):
                e.flush_pending(now)
        self._got.clear()

    def flush(self, now):
        nxt = self._next
        for i, e in enumerate(self.eps):
            if now >= nxt[i]:
                nxt[i] = now + max(1, e.flush(now))
        return max(1, min(nxt) - now)

    def datagrams_to_send(self):
        out = []
        for i, e in enumerate(self.eps):
            tag = bytes((i,))
            out.extend(tag + d for d in e.datagrams_to_send())
        return out
