"""The handoff policy (tunnel.handoff): yield after handing work on, and stop yielding for a
while when yields keep meeting a CPU-bound neighbour."""

import os
import subprocess
import sys

from paqet.tunnel import handoff as H


class Clock:
    """A fake ns clock; each yield advances it by the next duration given."""

    def __init__(self) -> None:
        self.now = 10**12
        self.durations: list[int] = []
        self.yielded = 0

    def __call__(self) -> int:
        return self.now

    def yield_cpu(self) -> None:
        self.yielded += 1
        self.now += self.durations.pop(0) if self.durations else 1_000


def make(**kw):
    c = Clock()
    return c, H.Handoff(clock=c, yield_cpu=c.yield_cpu, **kw)


def test_every_handoff_yields_while_yields_are_short():
    c, h = make()
    c.durations = [300_000] * 50  # peers that run 300 us and block: the intended case
    for _ in range(50):
        h()
    assert c.yielded == 50 and h.yields == 50
    assert h.long_yields == 0 and h.pauses == 0


def test_disabled_or_without_sched_yield_nothing_happens():
    c, h = make(enabled=False)
    h()
    assert c.yielded == 0 and h.yields == 0
    h = H.Handoff(yield_cpu=None)
    assert not h.enabled
    h()  # no AttributeError, no call
    assert h.yields == 0


def test_long_yields_close_together_pause_yielding():
    c, h = make()
    c.durations = [3_000_000] * H.LONG_LIMIT  # a neighbour that used a slice, each time
    for _ in range(H.LONG_LIMIT):
        h()
    assert h.pauses == 1 and h.long_yields == H.LONG_LIMIT
    end = c.now + H.PAUSE_NS
    # paused: no yield at all, however often we hand off, until PAUSE_NS has passed
    for _ in range(100):
        h()
        c.now += H.PAUSE_NS // 100
        if c.now >= end - H.PAUSE_NS // 100:
            break
    c.now = end - 1
    h()
    assert c.yielded == H.LONG_LIMIT
    c.now = end + 1
    h()
    assert c.yielded == H.LONG_LIMIT + 1  # and yields come back after the pause


def test_long_yields_far_apart_do_not_pause():
    c, h = make()
    for _ in range(4 * H.LONG_LIMIT):
        c.durations = [2_000_000]
        h()
        c.now += H.WINDOW_NS // (H.LONG_LIMIT - 1) + 1  # LONG_LIMIT of them span > WINDOW_NS
        c.durations = [50_000]
        h()
    assert h.long_yields == 4 * H.LONG_LIMIT
    assert h.pauses == 0 and c.yielded == 8 * H.LONG_LIMIT


def test_long_yields_older_than_the_window_are_forgotten():
    c, h = make()
    c.durations = [2_000_000] * (H.LONG_LIMIT - 1)
    for _ in range(H.LONG_LIMIT - 1):
        h()
    c.now += H.WINDOW_NS + 1
    c.durations = [2_000_000]
    h()  # LONG_LIMIT long yields, but not within one window
    assert h.pauses == 0 and h.long_yields == H.LONG_LIMIT


def _trip(c, h) -> int:
    """Hand off into a CPU hog until yields pause; the pause's length in ns."""
    for _ in range(H.LONG_LIMIT):
        c.durations = [4_000_000]
        h()
    return h._resume_at - c.now


def test_a_hog_that_stays_doubles_the_pause_up_to_the_limit():
    c, h = make()
    pauses = []
    for _ in range(12):
        pauses.append(_trip(c, h))
        c.now = h._resume_at  # the first handoffs after the pause meet the hog again
    assert pauses[0] == H.PAUSE_NS
    assert pauses[1] == 2 * H.PAUSE_NS and pauses[2] == 4 * H.PAUSE_NS
    assert max(pauses) == pauses[-1] == H.MAX_PAUSE_NS
    assert h.pauses == 12
    # the cost: LONG_LIMIT slices per pause; over an hour with a hog that never leaves
    assert sum(pauses) >= 3600 * 10**9 * 0.5


def test_the_pause_starts_over_once_the_hog_is_gone():
    c, h = make()
    _trip(c, h)
    c.now = h._resume_at
    assert _trip(c, h) == 2 * H.PAUSE_NS
    c.now = h._resume_at
    for _ in range(100):  # a quiet spell longer than RECUR_NS: short yields only
        h()
        c.now += H.RECUR_NS // 50
    assert _trip(c, h) == H.PAUSE_NS


def test_environment_turns_handoffs_off():
    code = "from paqet.tunnel.handoff import handoff; print(handoff.enabled)"
    env = dict(os.environ, PAQET_NO_HANDOFF="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    env.pop("PAQET_NO_HANDOFF")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == str(hasattr(os, "sched_yield")), out.stderr
