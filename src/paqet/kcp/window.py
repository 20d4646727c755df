"""The KCP receive window we advertise, sized from the path (beyond kcp-go).

A KCP sender may have segments up to its una + the receiver's advertised window in flight.
kcp-go advertises `rcvwnd - (segments read but not yet taken by the application)`: a fixed
number, which caps every flow at rcvwnd x mss per round trip on a long path, or, set large,
lets a sender without rate control (a Go paqet, kcptun) send a whole window at once into a
shallow bottleneck buffer. This window follows the path instead:

* the sender's right edge is placed `target` segments beyond the highest segment received
  (not beyond the first hole): a loss does not stall the flow while it is repaired, and the
  edge advances with every arrival, so an unpaced sender is clocked by them;
* `target` is a round trip's worth of the arrival rate (a max filter over ROUNDS rounds of
  one minimum RTT each) with headroom: doubling each round while no queue is seen at first
  (the sender is finding the line), then 1.25 x rate x RTT while the path shows no standing
  queue, and rate x (RTT + QUEUE_MS) when it does;
* a peer that paces itself (one of ours) gets PACED_GAIN times the arrivals of the round so
  far while it is in STARTUP, at once (its flight doubles each round trip), or PACED_GAIN
  round trips at the rate of its fastest train of segments if more (its first flight's
  train gives the line's rate, at which it goes on), then PACED_HEADROOM times the line's
  round trip;
* a peer that does not pace gets, once the line is found, at most a quarter more than what
  arrived in the last round trip beyond the highest segment received: kcp-go's sender,
  stopped on its own sndwnd behind a hole, would send the whole window at once when the
  repair is acknowledged;
* the queue is seen in the one-way delay of arriving segments: their send time stamp (the
  peer's clock) against ours, less the smallest such difference of the last BASE_MS (clock
  offsets cancel out).

Sans-I/O, in segments and milliseconds. The engine feeds arrivals (`on_data`) and its RTT
samples (`on_rtt`); `advertise(span)` gives the window to put in outgoing segments.
"""

from __future__ import annotations

from paqet.kcp.rate import SHORT_RTT_MS  # below it: kcp-go's window, as the sender does not pace

M32 = 0xFFFFFFFF
ROUNDS = 8            # arrival-rate max filter, in rounds
MIN_ROUND_MS = 10     # a round lasts one minimum RTT, at least this long
MIN_WINDOW_MS = 5     # the short window (an eighth of a round) lasts at least this long
BASE_MS = 10_000      # the one-way delay base is the minimum over this long (two halves)
QUEUE_MS = 4          # a standing queue: the round's smallest one-way delay this far above
                      # the base (and 1/16 of the RTT)
STARTUP_GROWTH = 1.25  # growth per round while the line is not found (a sender without
                       # pacing sends what the window allows at once: a doubling would
                       # overrun a buffer of a quarter of the BDP)
FOUND_GROWTH = 1.1     # the line is found when the rate grows less than this per round
PROBE_ROUNDS = 8       # then, one round in so many probes with PROBE_GAIN
PROBE_GAIN = 1.1
PACED_GAIN = 4.0       # a sender that paces itself gets four times the measured BDP: it
                       # caps its own flight at two, and may double it each round trip
PACED_HEADROOM = 1.5   # ... until the line is found: then 1.5 BDP
TRAIN_GAP_MS = 5       # a paced peer's segments less than this apart are one train ...
TRAIN_MIN_SEGS = 64    # ... whose rate (the line's, or the sender's pace if slower) counts
TRAIN_MIN_MS = 8       # once it is this long: its first flight is one (kcp/rate.py)


class ReceiveWindow:
    """`initial`: the window before the path is measured (kcp-go's configured rcvwnd);
    `maximum`: the memory bound (segments); `minimum`: the smallest target."""

    __slots__ = ("target", "initial", "minimum", "maximum", "rtt_min", "rtt_t", "_off",
                 "_base", "_base_prev", "_base_t", "_round_t", "_arrived", "_round_owd",
                 "_rates", "_ri", "rate", "queue_ms", "found", "rounds", "peer_paces",
                 "_full_rate", "_full_cnt", "_probe", "_win_owd", "_win_n", "_win_t",
                 "_win_a0", "_win_a1", "_win_n0", "_last_arrived",
                 "_line", "_line_prev", "_line_t", "_tr_a0", "_tr_a1", "_tr_n",
                 "train_rate")

    def __init__(self, *, initial: int = 512, maximum: int = 8192, minimum: int = 32,
                 now: int = 0) -> None:
        self.initial = initial
        # never below the window kcp-go would advertise: a short path's BDP says little of
        # what our own processes hold in flight
        self.minimum = max(4, minimum, initial)
        self.maximum = max(self.minimum, maximum)
        self.target = max(self.minimum, min(initial, self.maximum))
        self.rtt_min = 0       # ms; 0 = no sample yet
        self.rtt_t = now
        self._off = None       # the first (now - ts): the clocks' offset, roughly
        self._base = None      # smallest one-way delay (relative) in this half of BASE_MS
        self._base_prev = None
        self._base_t = now
        self._round_t = now
        self._arrived = 0
        self._round_owd = None
        self._rates = [0.0] * ROUNDS
        self._ri = 0
        self.rate = 0.0        # segments per ms: the max filter
        self.queue_ms = 0      # the last round's standing queue estimate
        self.found = False     # a standing queue was seen: the line's rate is known
        self.rounds = 0
        #: the peer's sender paces itself (one of ours with rate control: the shell sets
        #: this once the session's hello said so)
        self.peer_paces = False
        self._full_rate = 0.0
        self._full_cnt = 0
        self._probe = 0
        self._win_owd = None
        self._win_n = 0
        self._win_t = now
        self._win_a0 = self._win_a1 = now   # the window's first and last arrival
        self._win_n0 = 0                     # segments in its first arrival
        self._last_arrived = 0                 # arrivals of the last whole round
        self._line = self._line_prev = 0.0
        self._line_t = now
        # the current train of a paced peer's segments (first and last arrival, segments
        # after the first arrival) and the fastest one's rate, while the line is not found
        self._tr_a0 = self._tr_a1 = now
        self._tr_n = 0
        self.train_rate = 0.0

    def on_rtt(self, now: int, rtt: int) -> None:
        """An RTT sample of our own sends (a minimum kept over BASE_MS, never forgotten
        without a new one)."""
        if rtt < 0:
            return
        if self.rtt_min <= 0 or rtt <= self.rtt_min or now - self.rtt_t > BASE_MS:
            self.rtt_min = rtt if rtt > 0 else 1
            self.rtt_t = now

    def on_data(self, now: int, ts: int, n: int) -> None:
        """n new segments arrived; `ts` is the send time stamp of (one of) them."""
        self._arrived += n
        d = (now - ts) & M32
        off = self._off
        if off is None:
            self._off = off = d
        owd = (d - off) & M32
        if owd & 0x80000000:
            owd -= 0x100000000
        r = self._round_owd
        if r is None or owd < r:
            self._round_owd = owd
        # a short window (an eighth of a round trip): its smallest one-way delay and its
        # arrivals; update() looks at each as soon as it is complete
        w = self._win_owd
        if w is None or owd < w:
            self._win_owd = owd
        if not self._win_n:
            self._win_a0 = now
            self._win_n0 = n
        self._win_a1 = now
        self._win_n += n
        if self.peer_paces and not self.found:
            if now - self._tr_a1 > TRAIN_GAP_MS:
                self._tr_a0 = now
                self._tr_n = 0
            else:
                self._tr_n += n
            self._tr_a1 = now

    def update(self, now: int) -> None:
        """Close the short window and the round when they have passed (the engine calls
        this when it flushes)."""
        rtt = self.rtt_min
        if self._tr_n >= TRAIN_MIN_SEGS and self.peer_paces and not self.found and rtt > 0:
            # a train of a paced peer: its rate at once, PACED_GAIN round trips of it (the
            # sender's first flight gives it the line's rate, and it sends at that rate
            # from its second round trip on: held to a round's arrivals x PACED_GAIN, a
            # short first flight, e.g. one stream's 256 KiB smux window, would stall it)
            span = self._tr_a1 - self._tr_a0
            if span >= TRAIN_MIN_MS and self._tr_n > self.train_rate * span:
                self.train_rate = r = self._tr_n / span
                t = int(PACED_GAIN * r * rtt)
                if t > self.target:
                    self.target = t if t < self.maximum else self.maximum
        length = rtt if rtt > MIN_ROUND_MS else MIN_ROUND_MS
        wl = length >> 3
        if now - self._win_t >= (wl if wl > MIN_WINDOW_MS else MIN_WINDOW_MS):
            self._window(now, rtt)
        el = now - self._round_t
        if el < length:
            return
        self._round_t = now
        arrived = self._arrived
        owd = self._round_owd
        self._arrived = 0
        self._last_arrived = arrived
        self._round_owd = None
        if owd is not None:
            # the base: the minimum of this half of BASE_MS and the previous half
            b = self._base
            if b is None or owd < b:
                self._base = b = owd
            if now - self._base_t > BASE_MS // 2:
                self._base_prev, self._base = b, owd
                self._base_t = now
            base = b if self._base_prev is None or b < self._base_prev else self._base_prev
            self.queue_ms = owd - base
        if not arrived or rtt <= 0:
            return
        self.rounds += 1
        rate = arrived / el
        rates = self._rates
        rates[self._ri] = rate
        self._ri = (self._ri + 1) % ROUNDS
        self.rate = best = max(rates)
        # the line's rate, remembered longer than the rounds' filter (an application that
        # pauses or slows down does not shrink the window it gets when it goes on): the
        # largest rate of this half of BASE_MS and of the previous half
        if best > self._line:
            self._line = best
        if now - self._line_t > BASE_MS // 2:
            self._line_prev, self._line = self._line, best
            self._line_t = now
        line = self._line if self._line > self._line_prev else self._line_prev
        limit = QUEUE_MS if QUEUE_MS > rtt >> 4 else rtt >> 4
        if self.peer_paces:
            # the sender paces itself at the path's rate: stay out of its way while it looks
            # for the line (ahead of what its STARTUP may send next round); once the line
            # is found, a round trip of it and PACED_HEADROOM more, so a STARTUP that goes
            # on for a round too many cannot overrun a shallow buffer
            if self.found:
                t = PACED_HEADROOM * line * rtt
            else:
                t = PACED_GAIN * (best if best > self.train_rate else self.train_rate) * rtt
            self.target = int(t) if t > self.minimum else self.minimum
            if not self.found and self.target < self.initial:
                self.target = self.initial
        elif owd is not None and self.queue_ms > limit:
            # a standing queue: a round trip at the line's rate and a small queue (the rate
            # remembered was more than this path gives now)
            self.found = True
            self._line = self._line_prev = best
            t = best * (rtt + limit)
            if t < self.target:
                self.target = int(t)
        elif not self.found:
            # growing while what arrives grows with the window (the sender is limited by
            # it); done when two rounds in a row brought less than FOUND_GROWTH more
            if best >= self._full_rate * FOUND_GROWTH:
                self._full_rate = best
                self._full_cnt = 0
            else:
                self._full_cnt += 1
                if self._full_cnt >= 2:
                    self.found = True
            t = (STARTUP_GROWTH * rate * rtt if not self.found else best * (rtt + limit))
            if t > self.target or self.found:
                self.target = int(t)
        else:
            # the line is found: a round trip at its rate and a small queue; every
            # PROBE_ROUNDS rounds one round with PROBE_GAIN more, to see if the rate grows
            self._probe += 1
            gain = PROBE_GAIN if self._probe % PROBE_ROUNDS == 0 else 1.0
            self.target = int(gain * line * (rtt + limit))
        if self.target < self.minimum:
            self.target = self.minimum
        elif self.target > self.maximum:
            self.target = self.maximum

    def _window(self, now: int, rtt: int) -> None:
        """A short window ended. While the line is not found: when all its arrivals were
        later than the base by a queue's worth, the sender outran the line, and they came
        at the line's rate: the line is found now (half a round trip after the queue began
        to grow), not at the end of a round of it."""
        owd, n, el = self._win_owd, self._win_n, now - self._win_t
        # the rate the segments came at: from the window's first arrival to its last (a
        # window that a burst filled only in part would understate it)
        span, n0 = self._win_a1 - self._win_a0, self._win_n0
        self._win_owd = None
        self._win_n = 0
        self._win_t = now
        if self.peer_paces and not self.found and rtt > 0:
            # a paced sender in STARTUP doubles its flight each round trip: what arrived of
            # this round so far, PACED_GAIN times, at once (the round's end is up to a
            # round trip late, and the sender would be held at last round's window)
            t = int(PACED_GAIN * self._arrived)
            if t > self.target:
                self.target = t if t < self.maximum else self.maximum
        if self.found or owd is None or n < 16 or rtt <= 0 or self.rounds < 2:
            return
        b = self._base
        if self._base_prev is not None and (b is None or self._base_prev < b):
            b = self._base_prev
        if b is None:
            b = self._round_owd
            if b is None:
                return
        limit = QUEUE_MS if QUEUE_MS > rtt >> 4 else rtt >> 4
        if owd - b > limit and 4 * span >= el and n - n0 >= 16:
            self.found = True
            rate = (n - n0) / span
            self.rate = self._line = self._line_prev = rate
            self._rates = [rate] * ROUNDS
            if self.peer_paces:
                t = int(PACED_HEADROOM * rate * rtt)
                self.target = t if t > self.minimum else self.minimum

    def advertise(self, span: int, queued: int = 0) -> int:
        """The window for outgoing segments: `span` (segments from the first missing one to
        the highest received) plus the target, within the memory bound. On a short path
        (a minimum RTT below SHORT_RTT_MS, a LAN): kcp-go's `initial - queued` (segments
        read but not yet taken by the application), as the sender there does not pace: a
        window past the holes only made it resend more per MB at 5 % loss."""
        if 0 < self.rtt_min < SHORT_RTT_MS:
            return self.initial - queued
        t = self.target
        if not self.peer_paces and self.found:
            # a sender without pacing that stopped on its own window (a hole it repairs,
            # kcp-go's sndwnd counted from it) sends all that the window allows the
            # moment the repair is acknowledged: a window's worth in one burst into the
            # bottleneck. Beyond what came in the last round trip it may send a quarter
            # more (what a flow that is not held back sends anyway).
            recent = self._arrived if self._arrived > self._last_arrived else self._last_arrived
            recent += recent >> 2
            if recent < t:
                t = recent if recent > self.minimum else self.minimum
        w = span + t
        return w if w < self.maximum else self.maximum

    def stats(self) -> dict:
        return {"target": self.target, "rate_seg_ms": round(self.rate, 3),
                "rtt_min": self.rtt_min, "queue_ms": self.queue_ms, "found": self.found}
