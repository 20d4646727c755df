"""Handing the CPU on after handing work on (beyond upstream; docs/decisions.md, "Handoffs").

When we write to a socket of another process on this host (a frame the peer's packet socket
takes, a connect to a local target, bytes for a local application), Linux wakes that process
with a "sync" wake-up: the waker is expected to sleep soon, so the wakee is queued on the
waker's CPU. An event loop does not sleep soon: it goes on with the rest of its batch (the
relay's bookkeeping, the next callback), and the process it woke waits behind it, 130-330 us
a hop on the benchmark machine (`perf sched`), while the other CPU idles. A 1 KiB fetch
crosses four such hops.

`handoff()` gives the CPU away once (sched_yield) right after such a write: a process queued
behind us runs now and we continue when it blocks; with nobody queued the call returns at
once (~1 us). The call sites are the hops of a request: the end of a send of datagrams, a
forward's accept (the application that is connecting was pre-empted by our wake-up and has
its request ready), the server's early dial, and a relay's writes to its socket while the
stream is young (relay.HANDOFF_BYTES: a yield per write would slow a bulk download).

A yield also hands the CPU to whatever else is runnable there, such as a CPU-bound process,
which then keeps it for a whole time slice (3-5 ms measured here). The peers a handoff is
for block again within a few hundred us (yields in a fetch benchmark: median 50-110 us,
under 1 in 100 above 1 ms). So a yield longer than LONG_NS counts as meeting such a
neighbour; LONG_LIMIT of them within WINDOW_NS stop yields for a pause: PAUSE_NS at first,
doubled (up to MAX_PAUSE_NS) each time the first yields after a pause trip it again, as
they do while the neighbour stays. A persistent CPU hog thus costs a few slices in the first
minute and two every five minutes after. PAQET_NO_HANDOFF=1 in the environment turns
handoffs off.
"""

from __future__ import annotations

import collections
import os
import time

LONG_NS = 1_500_000  # a yield that kept us off the CPU this long: someone used a slice
LONG_LIMIT = 2  # this many of those ...
WINDOW_NS = 1_000_000_000  # ... within this long ...
PAUSE_NS = 5_000_000_000  # ... and no yields for this long; doubled while it recurs ...
MAX_PAUSE_NS = 300_000_000_000  # ... up to this
RECUR_NS = 10_000_000_000  # tripped again this soon after a pause: it recurs


class Handoff:
    """The yield policy; the clock and the yield are injectable for tests."""

    def __init__(self, enabled: bool = True, clock=time.perf_counter_ns,
                 yield_cpu=getattr(os, "sched_yield", None)) -> None:
        self.enabled = enabled and yield_cpu is not None
        self._clock = clock
        self._yield = yield_cpu
        self._resume_at = 0
        self._pause = PAUSE_NS
        self._long: collections.deque[int] = collections.deque(maxlen=LONG_LIMIT)
        self.yields = 0  # yields made
        self.long_yields = 0  # ... that kept us off the CPU longer than LONG_NS
        self.pauses = 0  # times those stopped yields

    def __call__(self) -> None:
        if not self.enabled:
            return
        clock = self._clock
        t0 = clock()
        if t0 < self._resume_at:
            return
        self._yield()
        self.yields += 1
        t1 = clock()
        if t1 - t0 > LONG_NS:
            self._long_yield(t1)

    def _long_yield(self, now: int) -> None:
        self.long_yields += 1
        long = self._long
        long.append(now)
        if len(long) < LONG_LIMIT or now - long[0] > WINDOW_NS:
            return
        long.clear()
        if self.pauses and now - self._resume_at <= RECUR_NS:
            self._pause = min(self._pause * 2, MAX_PAUSE_NS)
        else:
            self._pause = PAUSE_NS
        self._resume_at = now + self._pause
        self.pauses += 1


handoff = Handoff(enabled=not os.environ.get("PAQET_NO_HANDOFF"))
