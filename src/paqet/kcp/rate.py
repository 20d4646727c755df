"""A delivery-rate sender for KCP, in the spirit of BBR (Cardwell et al., "BBR:
Congestion-Based Congestion Control", ACM Queue 2016; the Linux tcp_bbr.c).

kcp-go with `nocongestion` (every paqet preset) sends whatever the windows allow at once;
on a long path that is a burst of up to a window into a shallow bottleneck buffer. This
controller decides *when* and *how much* our KCP sender sends, never what goes on the wire:

* it models the path by two numbers: the bottleneck bandwidth (the largest delivery rate
  measured over the last BW_ROUNDS round trips) and the round-trip propagation time (the
  smallest RTT sample of the last MIN_RTT_MS);
* new data leaves at `pacing_rate` = gain x bandwidth, in bursts of at most a couple of
  milliseconds' worth (tokens), and never more than `cwnd` = gain x BDP segments are in
  flight;
* the first flight from an empty pipe leaves within FIRST_FLIGHT_MS; when its ACKs come
  back spread out by the bottleneck (twice as slowly as it left), their spacing is the
  line's rate and the flow goes on at it from the second round trip (PROBE_BW); RTT samples
  in a row above the no-queue band in the next rounds mean another flow shared the line
  (its turns spread the flight), and STARTUP takes over again;
* otherwise STARTUP doubles the rate each round trip until the bandwidth stops growing, the
  RTT shows a standing queue, or our receiver's window holds it back; DRAIN empties the
  queue that left; PROBE_BW cycles gains up / down / 1 x 6 (one min-RTT each; a probe adds at
  most PROBE_QUEUE_MS of queue) to find more bandwidth and give it back; PROBE_RTT lowers
  the in-flight cap to half a BDP for 200 ms when the minimum RTT has not been seen for
  MIN_RTT_MS. A short path (min RTT < SHORT_RTT_MS) is not paced;
* sharing with other sessions: a round whose every RTT shows a queue holds the flight to
  what the last round delivered plus QUEUE_ALPHA segments (ALPHA_PER_MS per ms of minimum
  RTT on long paths), and paces at that window per minimum RTT (each flow keeps the same
  few in the shared queue, so the shares drift together, FAST TCP's equilibrium), until
  QUEUE_HOLD rounds show no queue; such a round also caps the bandwidth estimate at what
  the last round delivered; sessions between the same two hosts share a SharedPath: a
  bulk that starts beside busy ones takes an equal share of the line at once and they
  give it up, and one that goes on after any pause while another sends starts over (its
  model holds the whole line); a flight after an idle moment starts over in STARTUP
  (TCP's slow start after idle); a probe that found room and no queue goes back to
  STARTUP (the flow beside it ended);
* loss is not a signal (random loss on long paths is not congestion): KCP's own fast
  retransmission and RTO repair it, retransmissions are charged to the pacing budget, and
  the budget pays for their share while the path shows no queue. docs/decisions.md has
  the measurements behind each choice.

Units: segments, milliseconds, segments per millisecond. Sans-I/O: the engine calls
`on_ack` once per input datagram that acknowledged something (with one rate sample, taken as
BBR does from the most recently sent segment acknowledged), and asks `allowance` /
`next_send_in` while flushing.
"""

from __future__ import annotations

STARTUP, DRAIN, PROBE_BW, PROBE_RTT = "startup", "drain", "probe_bw", "probe_rtt"
HIGH_GAIN = 2.885              # 2/ln 2: BBR's startup gain
STARTUP_GAIN = 2.0             # ours: the rate still doubles each round trip, and the flight
                               # cap (2 BDP) bounds the queue STARTUP's last round leaves
STARTUP_QUEUE_MS = 10          # STARTUP also ends on RTTs this much (or 1/4 of the minimum,
STARTUP_QUEUE_MAX = 20         # up to this) above the minimum, in a quarter round trip of
STARTUP_SAMPLES = 8            # samples in a row (and at least this many)
DRAIN_GAIN = 1 / HIGH_GAIN
CWND_GAIN = 2.0
CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BW_ROUNDS = 10                 # max filter of the bandwidth, in round trips
MIN_RTT_MS = 10_000            # the minimum RTT expires after this long unseen
PROBE_RTT_MS = 200
FULL_BW_GROWTH = 1.25          # STARTUP ends after FULL_BW_COUNT rounds below this growth
FULL_BW_COUNT = 3
BURST_MS = 2                   # pacing tokens kept at most: this many ms at the pacing rate
LATE_MS = 8                    # ... or the ms since the last send, up to this many
MIN_BURST = 4                  # ... and never fewer segments than this
MIN_CWND = 4
SHORT_RTT_MS = 5               # below this minimum RTT (a LAN): no pacing, no PROBE_RTT, no
                               # queue rule, no restart after idle
RTX_SHARE_MAX = 0.15           # the pacing budget pays for at most this share of resends,
PROBE_QUEUE_MS = 20            # a bandwidth probe adds a queue of at most this many ms
STANDING_QUEUE_MS = 10         # PROBE_BW: a round of RTTs this much (or 1/8) above the
CRUISE_CUT = 0.95              # minimum at gain 1 lowers the estimate by 5 %
QUEUE_ALPHA = 64               # ... and a round of RTTs above it by NO_QUEUE_MS (or 1/16)
ALPHA_PER_MS = 0.5             # caps the flight at last round's delivery x min RTT + this many
                               # segments (or this many per ms of minimum RTT, if more): every
                               # flow keeps the same few in the shared queue, so a flow with
                               # more of the line gives way to one with less
QUEUE_HOLD = 3                 # the rule holds until this many rounds in a row showed no queue
IDLE_MS = 200                  # nothing in flight for this long (or 1.5 minimum RTTs, TCP's
                               # RTO): the next flight starts over in STARTUP (the minimum RTT
                               # kept), as TCP's slow start after idle (RFC 2861)
NO_QUEUE_MS = 5                # while the last RTT was within this (or 1/16) of the minimum
FIRST_FLIGHT_MS = 25           # the first flight from an empty pipe leaves within this many
                               # ms (or half the minimum RTT, when one is known) ...
DISP_MIN_SEGS = 64             # ... and when it was at least this many segments (those sent
                               # before a pause of FF_GAP_MS not counted), its ACKs,
DISP_MIN_MS = 8                # spread over at least this many ms, and SPREAD times slower
DISP_SPREAD = 2.0              # than it left, give the bottleneck's rate at once (dispersion)
FF_GAP_MS = 5                  # (a pause of the application within the first flight)
FF_PRE_MAX = 16                # (it may begin with this many segments still in flight)
ACTIVE_MIN = 16                # a session with this many in flight is sending (SharedPath)
JUMP_SAMPLES = 8               # ... unless this many RTT samples in a row in the next
JUMP_ROUNDS = 1                # round show a queue (NO_QUEUE_MS or 1/16): the line is busy,
BUSY_SHARE = 0.5               # and STARTUP goes on from this share of the dispersion's rate


class RateController:
    """The sender's model of the path and its pacing. `init_cwnd` is the flight allowed
    before the first RTT sample (paced only by the first estimate), `max_cwnd` a hard cap
    (the engine's memory bound)."""

    __slots__ = ("mode", "btlbw", "min_rtt", "min_rtt_t", "rtt_seen", "round", "_next_round",
                 "_bw_ring", "_bw_rounds", "full_bw", "full_cnt", "filled", "cycle", "cycle_t",
                 "pacing_gain", "cwnd_gain", "pacing_rate", "cwnd", "init_cwnd", "max_cwnd",
                 "tokens", "tokens_t", "probe_rtt_end", "probe_rtt_round", "rounds_app_limited",
                 "samples", "_cycle_n", "_high_rtts", "exit", "_high_t",
                 "rtx_share", "_sent_new", "_sent_rtx", "_no_queue", "_rtt_round_min", "queued",
                 "_calm",
                 "_idle_t",
                 "_probe_bw0", "_probe_rtt_hi", "_startup_round", "startups",
                 "_now", "_delivered", "_ff", "_ff_n", "_ff_t0", "_ff_t1", "_ff_d0", "_ff_skip",
                 "_ff_pre",
                 "_ack_t0", "_ack_d0", "_ack_t1", "_ack_d1", "_ack_k", "_ack_tp", "_ack_dp",
                 "_jump_d", "_jump_bw", "_jump_n", "_jump_end", "path", "_shared_d", "_inflight")

    def __init__(self, *, init_cwnd: int = 32, max_cwnd: int = 1 << 16, now: int = 0) -> None:
        self.mode = STARTUP
        self.btlbw = 0.0            # segments per ms
        self.min_rtt = 0            # ms (0 until the first sample)
        self.min_rtt_t = now
        self.rtt_seen = False
        self.round = 0
        self._next_round = 0        # delivered count that starts the next round
        self._bw_ring = [0.0] * BW_ROUNDS  # per-round maxima, indexed by round % BW_ROUNDS
        self._bw_rounds = [-1] * BW_ROUNDS
        self.full_bw = 0.0
        self.full_cnt = 0
        self.filled = False
        self.cycle = 0
        self.cycle_t = now
        self._cycle_n = 0
        self.pacing_gain = STARTUP_GAIN
        self.cwnd_gain = STARTUP_GAIN
        self.init_cwnd = max(MIN_CWND, init_cwnd)
        self.max_cwnd = max(self.init_cwnd, max_cwnd)
        self.cwnd = self.init_cwnd
        # before any RTT sample: the initial flight within ~1 ms
        self.pacing_rate = STARTUP_GAIN * self.init_cwnd
        self.tokens = float(self.init_cwnd)
        self.tokens_t = now
        self.probe_rtt_end = -1
        self.probe_rtt_round = -1
        self.rounds_app_limited = 0
        self.samples = 0
        self._high_rtts = 0
        self.exit = ""              # why STARTUP ended (stats)
        self._high_t = 0
        self.rtx_share = 0.0        # retransmissions per new segment, last round
        self._sent_new = self._sent_rtx = 0
        self._no_queue = True
        self._rtt_round_min = -1
        self.queued = False
        self._calm = 0
        self._idle_t = -1           # when the flight became empty (-1: it is not)
        self._probe_bw0 = 0.0       # the estimate when the last probe began (0: none open)
        self._probe_rtt_hi = 0      # the largest RTT sample since then
        self._startup_round = 0
        self.startups = 0           # STARTUPs after the first (after idle, or a probe) (stats)
        # the first flight from an empty pipe (see _dispersion): 1 = armed, 2 = being sent
        # (_ff_n segments from _ff_t0 to _ff_t1, none acknowledged before: _ff_d0), 0 = done
        self._now = now
        self._delivered = 0
        self._ff = 1
        self._ff_n = self._ff_t0 = self._ff_t1 = self._ff_d0 = self._ff_skip = 0
        self._ff_pre = 0            # segments in flight when it began (a hello's, a SYN's)
        self._ack_t0 = self._ack_d0 = self._ack_t1 = self._ack_d1 = self._ack_k = 0
        self._ack_tp = self._ack_dp = 0     # the train's last ACK of an earlier ms
        # after the jump to the dispersion's rate: the delivered count then (-1: no check
        # open), the estimate before it, and the RTT samples since
        self._jump_d = -1
        self._jump_bw = 0.0
        self._jump_n = self._jump_end = 0
        #: the SharedPath of the sessions between the same two hosts (None: on its own)
        self.path: SharedPath | None = None
        self._shared_d = -(1 << 62)  # rate samples of segments sent before a share: stale
        self._inflight = 0          # at the last ACK

    # -- the model ---------------------------------------------------------------------------
    @property
    def bdp(self) -> float:
        """Bandwidth-delay product in segments (the RTT floored at 1 ms: the clock's unit)."""
        return self.btlbw * (self.min_rtt if self.min_rtt > 1 else 1)

    def _bw_scale(self, f: float) -> None:
        self._bw_ring = [v * f for v in self._bw_ring]
        self.btlbw *= f

    def window_limited(self) -> None:
        """The peer's receive window, not pacing, holds our data back. Our own receiver
        caps a paced sender at a little more than the path's BDP once it has seen the
        line (kcp/window.py): in STARTUP, past its first rounds (the peer's window before
        it measured anything), that is a full pipe."""
        if self.mode == STARTUP and not self.filled and self.round > self._startup_round + 3:
            self.filled = True
            self.exit = "peer window"

    def _bw_cap_last(self) -> None:
        """A round with a standing queue: the max filter holds no more than what the last
        round delivered (the flow's share now, not the whole line it had before another
        flow came), so that when the queue is gone it does not go on at the old rate."""
        i = (self.round - 1) % BW_ROUNDS
        if self._bw_rounds[i] != self.round - 1:
            return
        last = self._bw_ring[i]
        if last <= 0 or last >= self.btlbw:
            return
        self._bw_ring = [v if v < last else last for v in self._bw_ring]
        self.btlbw = last

    def _bw_update(self, rate: float) -> None:
        i = self.round % BW_ROUNDS
        if self._bw_rounds[i] != self.round:
            self._bw_rounds[i] = self.round
            self._bw_ring[i] = rate
        elif rate > self._bw_ring[i]:
            self._bw_ring[i] = rate
        lo = self.round - BW_ROUNDS
        best = 0.0
        for r, v in zip(self._bw_rounds, self._bw_ring):
            if r > lo and v > best:
                best = v
        self.btlbw = best

    def _round_rtx(self) -> None:
        new, rtx = self._sent_new, self._sent_rtx
        if new + rtx >= 16:
            # smoothed over rounds (a burst of resends after one overflow is not the path)
            share = rtx / new if new > 0 else RTX_SHARE_MAX
            share = 0.75 * self.rtx_share + 0.25 * share
            self.rtx_share = share if share < RTX_SHARE_MAX else RTX_SHARE_MAX
            self._sent_new = self._sent_rtx = 0

    def on_ack(self, now: int, prior_delivered: int, delivered: int, interval: int,
               app_limited: bool, rtt: int, inflight: int) -> None:
        """One acknowledgement event. `delivered`: segments acknowledged so far;
        `prior_delivered`: that count when the sampled segment was sent, `interval` the ms
        over which the difference was delivered (0: no sample); `rtt`: the datagram's RTT
        sample in ms (-1 = none); `inflight`: segments still unacknowledged."""
        # an interval shorter than the path's RTT comes from ACK compression: no sample
        rate = ((delivered - prior_delivered) / interval
                if interval > 0 and interval >= self.min_rtt else 0.0)
        self._delivered = delivered
        if self._ff == 2:
            self._dispersion(now, prior_delivered, delivered)
        elif self._jump_d >= 0 and rtt >= 0 and prior_delivered >= self._jump_d and \
                inflight > self.init_cwnd:
            # (a flight at the initial window's floor may keep a queue of its own on a path
            # whose BDP is smaller: no sign of another flow)
            self._jump_check(rtt)
        round_start = False
        if prior_delivered >= self._next_round:
            self._next_round = delivered
            self.round += 1
            round_start = True
            self._round_rtx()
            if app_limited:
                self.rounds_app_limited += 1
            prev_rtt_min, self._rtt_round_min = self._rtt_round_min, -1
        if rtt >= 0 and (self._rtt_round_min < 0 or rtt < self._rtt_round_min):
            self._rtt_round_min = rtt
        if rate > 0 and (not app_limited or rate > self.btlbw) and \
                prior_delivered >= self._shared_d:
            self.samples += 1
            self._bw_update(rate)
        if rtt >= 0:
            mr = self.min_rtt
            self._no_queue = rtt <= mr + (mr >> 4 if mr >> 4 > NO_QUEUE_MS else NO_QUEUE_MS)
        expired = now - self.min_rtt_t > MIN_RTT_MS
        if rtt >= 0 and (not self.rtt_seen or rtt <= self.min_rtt or expired):
            self.min_rtt = rtt
            self.min_rtt_t = now
            self.rtt_seen = True
        if expired and self.mode != PROBE_RTT and self.rtt_seen:
            if self.min_rtt >= SHORT_RTT_MS:
                self._enter_probe_rtt(now)
            else:
                self.min_rtt_t = now

        self._idle_t = now if inflight == 0 else -1
        self._inflight = inflight
        if rtt > self._probe_rtt_hi:
            self._probe_rtt_hi = rtt
        mode = self.mode
        if mode == STARTUP or mode == DRAIN:
            if not self.filled and rtt >= 0 and self.round > 1 and not app_limited:
                # a standing queue: RTT samples above the minimum by a quarter of it
                # (STARTUP_QUEUE_MS at least, STARTUP_QUEUE_MAX at most) for a quarter of
                # a round trip (and STARTUP_SAMPLES of them); a burst's queue, or the
                # jitter of a busy host, is gone sooner
                mr = self.min_rtt
                q = mr >> 2
                q = STARTUP_QUEUE_MS if q < STARTUP_QUEUE_MS else (
                    STARTUP_QUEUE_MAX if q > STARTUP_QUEUE_MAX else q)
                if rtt > mr + q:
                    if not self._high_rtts:
                        self._high_t = now
                    self._high_rtts += 1
                    if self._high_rtts >= STARTUP_SAMPLES and \
                            now - self._high_t >= q:
                        self.filled = True
                        self.exit = f"queue (rtt {rtt} ms, min {mr} ms)"
                else:
                    self._high_rtts = 0
            if round_start and not app_limited and not self.filled:
                if self.btlbw >= self.full_bw * FULL_BW_GROWTH:
                    self.full_bw = self.btlbw
                    self.full_cnt = 0
                else:
                    self.full_cnt += 1
                # the bandwidth stopped growing for FULL_BW_COUNT rounds: the pipe is full
                if self.full_cnt >= FULL_BW_COUNT:
                    self.filled = True
                    self.exit = "plateau"
            if mode == STARTUP and self.filled:
                self.mode = mode = DRAIN
                self.pacing_gain = DRAIN_GAIN
                self.cwnd_gain = STARTUP_GAIN
            if mode == DRAIN and inflight <= self.bdp:
                self._enter_probe_bw(now)
        elif mode == PROBE_BW:
            phase_ms = self.min_rtt if self.min_rtt > 1 else 1
            gain = self.pacing_gain
            if round_start and prev_rtt_min >= 0:
                mr = self.min_rtt
                if gain == 1.0 and prev_rtt_min > mr + max(STANDING_QUEUE_MS, mr >> 3):
                    # cruising at the estimate, yet every RTT of a whole round shows a
                    # queue: the estimate is high (ACKs that came in a bunch gave a rate
                    # sample above the line), and pacing at it only grows the queue until
                    # the buffer overflows. Take CRUISE_CUT off it.
                    self._bw_scale(CRUISE_CUT)
                # a round whose every RTT showed a queue: the flight is held to what the
                # last round delivered plus QUEUE_ALPHA (see _set_rates); not on a short
                # path, where what queues is our own processes' work
                band = NO_QUEUE_MS if NO_QUEUE_MS > mr >> 4 else mr >> 4
                # (once on, it holds while the queue stays above half the band, and for
                # QUEUE_HOLD rounds below it: the shares' queue comes and goes with the
                # flows' phases, and each time the rule let go the larger flow took the
                # line back at its old estimate)
                if mr < SHORT_RTT_MS:
                    self.queued = False
                elif prev_rtt_min > mr + (band >> 1 if self.queued else band):
                    self.queued = True
                    self._calm = 0
                    self._bw_cap_last()
                elif self.queued:
                    self._calm += 1
                    if self._calm >= QUEUE_HOLD:
                        self.queued = False
            if now - self.cycle_t > phase_ms:
                # the 1.25 phase runs until the flight reached 1.25 BDP (or a round passed
                # twice over); the 0.75 one may end early once the queue is gone
                if gain > 1 and inflight < gain * self.bdp and now - self.cycle_t <= 2 * phase_ms:
                    pass
                else:
                    self._next_phase(now)
            elif gain < 1 and inflight <= self.bdp:
                self._next_phase(now)
        elif mode == PROBE_RTT:
            if self.probe_rtt_end < 0:
                if inflight <= self._probe_rtt_cwnd():
                    self.probe_rtt_end = now + PROBE_RTT_MS
                    self.probe_rtt_round = self.round
            elif now >= self.probe_rtt_end and self.round > self.probe_rtt_round:
                self.min_rtt_t = now
                if self.filled:
                    self._enter_probe_bw(now)
                else:
                    self.mode = STARTUP
                    self.pacing_gain = self.cwnd_gain = STARTUP_GAIN
        self._set_rates()

    def _dispersion(self, now: int, prior_delivered: int, delivered: int) -> None:
        """ACKs of the first flight from an empty pipe. It left within FIRST_FLIGHT_MS (faster
        than most lines), so its segments passed the bottleneck back to back and their ACKs
        come back spaced at the line's rate: when they are spread out over a longer time
        than the flight took to leave, that spacing is the bottleneck's bandwidth. STARTUP
        needs several round trips to find it (its rate samples lag a round behind, so its
        flight grows by about 1.4 a round, not 2), and ends with an overshoot into the
        buffer; a long path's transfer has only a few dozen round trips. With the estimate
        the flow goes on at the line's rate from the second round trip on."""
        if not self._ff_n or now - self._ff_t0 < self.min_rtt >> 1:
            return      # too early for the flight's: a segment's sent before it (a hello's)
        d0 = self._ff_d0
        if d0 <= prior_delivered <= d0 + self._ff_pre:
            # a segment of the first flight (nothing was acknowledged when it left)
            if delivered - self._ff_d0 <= self._ff_skip:
                return      # sent before the application's pause (a request, a SYN)
            k = self._ack_k
            if k >= 3 and now - self._ack_t1 > DISP_MIN_MS and \
                    now - self._ack_t1 > self.min_rtt >> 1:
                # half a round trip after the train: a resend's ACK (a segment of the
                # flight was lost and sent again); the train ended with the ACK before
                # (shorter gaps are another flow's turns in the queue: part of the train)
                self._dispersion_end(now)
                return
            if k == 0:
                self._ack_t0, self._ack_d0 = now, delivered
            elif now != self._ack_t1:
                self._ack_tp, self._ack_dp = self._ack_t1, self._ack_d1
            self._ack_t1, self._ack_d1 = now, delivered
            self._ack_k += 1
            if delivered - self._ff_d0 >= self._ff_n >= DISP_MIN_SEGS + self._ff_skip:
                self._dispersion_end(now)     # every segment of it is in
        elif prior_delivered > d0 + self._ff_pre and self._ff_n - self._ff_skip >= DISP_MIN_SEGS:
            # a segment sent after the first ACK came back: the first flight is all in
            # (but for losses)
            self._dispersion_end(now)

    def _dispersion_end(self, now: int) -> None:
        self._ff = 0
        n = self._ack_d1 - self._ack_d0
        span = self._ack_t1 - self._ack_t0
        if self._ff_n - self._ff_skip < DISP_MIN_SEGS or self._ack_k < 3 or span < DISP_MIN_MS or \
                n < DISP_MIN_SEGS // 2 or not self.rtt_seen or self.min_rtt < SHORT_RTT_MS:
            return
        rate = n / span
        tp = self._ack_tp - self._ack_t0
        if self._ack_k >= 4 and tp >= DISP_MIN_MS and \
                self._ack_dp - self._ack_d0 >= DISP_MIN_SEGS // 2:
            # the receiver holds its last ACKs a moment for data to ride with (ACK_HOLD;
            # a host's scheduling delays them too, never hastens them): up to the train's
            # ACK before the last, when that gives more (a 24 ms train read 0.93x the line
            # with its last ACK, 0.99x without)
            r = (self._ack_dp - self._ack_d0) / tp
            if r > rate:
                rate = r
        sent = self._ff_t1 - self._ff_t0
        if span < DISP_SPREAD * (sent if sent > 1 else 1) or rate <= self.btlbw or \
                self.mode != STARTUP:
            return      # the ACKs came as fast as the flight left: the line is faster
        # (checked from the segments sent after the flight's first ACK came back on: the
        # earliest that show whether the queue the flight left behind drains)
        # (a busy line: the flight's ACKs came at the share it took from the other flows
        # while it went out faster than they did; STARTUP goes on from half of it, not
        # from nothing, where the others' queue ends it at once)
        self._jump_d, self._jump_n = self._ff_d0 + 1, 0
        b = BUSY_SHARE * rate
        self._jump_bw = b if b > self.btlbw else self.btlbw
        self._jump_end = self.round + JUMP_ROUNDS
        # (at the estimate, not in a probe: the check that follows reads a queue as
        # another flow's)
        self._cruise_at(rate, "dispersion", now)

    def _cruise_at(self, rate: float, why: str, now: int) -> None:
        """STARTUP is over with an estimate from elsewhere (a dispersion, a SharedPath's
        share): PROBE_BW, cruising at gain 1 at `rate`, not in a probe."""
        self._bw_update(rate)
        self.filled = True
        self.exit = why
        self._enter_probe_bw(now)
        if self.pacing_gain != 1.0:
            self.cycle, self.pacing_gain, self._probe_bw0 = 2, 1.0, 0.0

    def _jump_check(self, rtt: int) -> None:
        """RTT samples of segments sent after the first flight's ACKs began to come back,
        for JUMP_ROUNDS rounds after the jump to the dispersion's rate. On an idle line the
        flight's own queue is gone by then. When another flow keeps the line busy (or
        starts beside us), its segments took turns with the flight's, so the spacing was
        our share of the arrivals, not a free line, and a queue stays and grows: after
        JUMP_SAMPLES samples in a row above the no-queue band, back to STARTUP from the
        estimate before the jump. Only for JUMP_ROUNDS round: an estimate a few percent
        above the line also builds a queue, slowly (at 1 % loss on the bench, 3 % above it
        took the check over in the third round, and the flow back to a ninth of the
        line)."""
        if self.round > self._jump_end:
            self._jump_d = -1
            return
        mr = self.min_rtt
        if rtt <= mr + (mr >> 4 if mr >> 4 > NO_QUEUE_MS else NO_QUEUE_MS):
            self._jump_n = 0
            return
        self._jump_n += 1
        if self._jump_n < JUMP_SAMPLES or self.mode != PROBE_BW:
            return
        self._jump_d = -1
        self._bw_ring = [0.0] * BW_ROUNDS
        self._bw_rounds = [-1] * BW_ROUNDS
        self.btlbw = 0.0
        if self._jump_bw > 0:
            self._bw_update(self._jump_bw)
        self.exit = "dispersion, busy line"
        self._enter_startup()
        self.startups -= 1      # the same STARTUP, not another one

    def _restart(self, now: int) -> None:
        """A flight after an idle moment: the path may carry other flows now, and a model
        of it from before would send at the whole line's rate at once (a session that was
        busy before took most of the line from one that starts beside it). Start over in
        STARTUP from the initial flight; the minimum RTT is kept."""
        self._idle_t = -1
        self._bw_ring = [0.0] * BW_ROUNDS
        self._bw_rounds = [-1] * BW_ROUNDS
        self.btlbw = 0.0
        self.exit = ""
        self._ff = 1
        self._enter_startup()
        self._set_rates()

    def _enter_probe_bw(self, now: int) -> None:
        self.mode = PROBE_BW
        self.cwnd_gain = CWND_GAIN
        # start anywhere but the 0.75 phase (as tcp_bbr), deterministic per controller
        self._cycle_n += 1
        self.cycle = (2 + self._cycle_n * 3) % len(CYCLE)
        if self.cycle == 1:
            self.cycle = 2
        self.cycle_t = now
        self.pacing_gain = self._gain(self.cycle)
        self._probe_bw0 = self.btlbw if self.pacing_gain > 1.0 else 0.0
        self._probe_rtt_hi = 0

    def _gain(self, phase: int) -> float:
        """The cycle's gain for a phase: a probe adds (and the next phase takes back) a
        queue of at most PROBE_QUEUE_MS at the line's rate, so a long path's probe does not
        overrun a buffer of a few tens of ms (1.25 / 0.75 up to an RTT of 80 ms)."""
        g = CYCLE[phase]
        if g == 1.0:
            return g
        mr = self.min_rtt if self.min_rtt > 1 else 1
        d = PROBE_QUEUE_MS / mr
        if d > g - 1.0 if g > 1 else d > 1.0 - g:
            return g
        return 1.0 + d if g > 1 else 1.0 - d

    def _next_phase(self, now: int) -> None:
        g = self.pacing_gain
        if g < 1.0 and self._probe_bw0 > 0:
            # a probe and the phase after it are over: when the bandwidth grew by at least
            # half the probe's gain and no RTT sample showed a queue, the line has room
            # (a flow beside us ended, or we left STARTUP early behind another's queue):
            # look for the line again as STARTUP does, not by a tenth per cycle
            g_up = self._gain(self.cycle - 1)
            room = self.btlbw >= self._probe_bw0 * (1.0 + 0.5 * (g_up - 1.0))
            mr = self.min_rtt
            calm = self._probe_rtt_hi <= mr + (mr >> 4 if mr >> 4 > NO_QUEUE_MS else NO_QUEUE_MS)
            self._probe_bw0 = 0.0
            if room and calm and mr >= SHORT_RTT_MS:
                self._enter_startup()
                return
        self.cycle = (self.cycle + 1) % len(CYCLE)
        self.cycle_t = now
        self.pacing_gain = self._gain(self.cycle)
        if self.pacing_gain > 1.0:
            self._probe_bw0 = self.btlbw
            self._probe_rtt_hi = 0

    def _enter_startup(self) -> None:
        """STARTUP again, from the estimate there is (none after idle)."""
        self.mode = STARTUP
        self.filled = False
        self.queued = False
        self._calm = 0
        self._probe_bw0 = 0.0
        self.full_bw = self.btlbw
        self.full_cnt = 0
        self._high_rtts = 0
        self._startup_round = self.round
        self.pacing_gain = self.cwnd_gain = STARTUP_GAIN
        self.startups += 1

    def _enter_probe_rtt(self, now: int) -> None:
        self.mode = PROBE_RTT
        self.pacing_gain = 1.0
        self.probe_rtt_end = -1

    def _probe_rtt_cwnd(self) -> float:
        return max(MIN_CWND, self.bdp / 2)

    def _set_rates(self) -> None:
        bw = self.btlbw
        if bw > 0:
            rate = self.pacing_gain * bw
            if not self.filled:
                # the first samples come from a flight that had just started and understate
                # the path: STARTUP paces at least the initial window per round trip
                # (the first flight from an empty pipe leaves faster: _first_flight_rate)
                if self._ff == 1 or (self._ff == 2 and not self._ack_k):
                    floor = self._first_flight_rate()
                else:
                    floor = self.pacing_gain * self.init_cwnd / (
                        self.min_rtt if self.min_rtt > 1 else 1)
                if rate < floor:
                    rate = floor
            self.pacing_rate = rate
            bdp = self.bdp
            if self.queued and self.mode == PROBE_BW:
                # a standing queue shared with other flows: each keeps QUEUE_ALPHA segments
                # in it beyond what it delivered last round (not the max filter's 10 rounds),
                # so the shares drift together (Vegas' rule), and the queue stays small
                i = (self.round - 1) % BW_ROUNDS
                last = self._bw_ring[i] if self._bw_rounds[i] == self.round - 1 else bw
                mr = self.min_rtt if self.min_rtt > 1 else 1
                alpha = ALPHA_PER_MS * mr
                cwnd = last * mr + (alpha if alpha > QUEUE_ALPHA else QUEUE_ALPHA)
                # ... and the window, not the pacing rate, is what holds each flow: a flow
                # with the smaller share paces at its window per minimum RTT (QUEUE_ALPHA
                # more a round than it delivered), so it grows towards the others' share
                # while theirs, with the same QUEUE_ALPHA in a queue they share, shrinks
                if cwnd / mr > self.pacing_rate:
                    self.pacing_rate = cwnd / mr
            else:
                cwnd = self.cwnd_gain * bdp + MIN_CWND
            if self.mode == PROBE_RTT:
                cwnd = self._probe_rtt_cwnd()
            elif cwnd < self.init_cwnd and (not self.filled or self.min_rtt < SHORT_RTT_MS):
                # never less than kcp-go would send at once: on a short path (a LAN, where
                # the RTT is below the clock's ms) the BDP says little of what our own
                # processes keep in flight, and STARTUP's first estimates lag behind (once
                # a long path is measured, its BDP holds: a flow with a small share of a
                # path whose BDP is near the initial window would keep a queue of its own)
                cwnd = self.init_cwnd
        elif self.rtt_seen:
            self.pacing_rate = self._first_flight_rate()
            cwnd = self.init_cwnd
        else:
            return
        burst = self.pacing_rate * BURST_MS
        if self.tokens > burst and self.tokens > MIN_BURST:
            self.tokens = burst if burst > MIN_BURST else MIN_BURST
        if cwnd < MIN_CWND:
            cwnd = MIN_CWND
        elif cwnd > self.max_cwnd:
            cwnd = self.max_cwnd
        self.cwnd = int(cwnd)

    def _first_flight_rate(self) -> float:
        """No estimate yet: the first flight leaves within FIRST_FLIGHT_MS (or half a round
        trip), faster than most lines, so that its ACKs show the line's rate (_dispersion);
        at most a 512-segment flight every 25 ms, as a 50 ms path's STARTUP paced it."""
        half = self.min_rtt >> 1
        ms = FIRST_FLIGHT_MS if half > FIRST_FLIGHT_MS else (half if half > 1 else 1)
        return self.init_cwnd / ms

    # -- pacing ------------------------------------------------------------------------------
    @property
    def paces(self) -> bool:
        """Pacing is on: a path long enough to have a measured minimum RTT of at least
        SHORT_RTT_MS (a short path is not paced)."""
        return not (self.rtt_seen and self.min_rtt < SHORT_RTT_MS)

    def allowance(self, now: int, inflight: int) -> int:
        """Segments that may leave now: pacing tokens (refilled since the last call) within
        the in-flight cap. New data only; retransmissions are charged with `spend`."""
        if inflight == 0 and self._idle_t >= 0 and self.filled and self.min_rtt >= SHORT_RTT_MS:
            idle = now - self._idle_t
            if (idle > IDLE_MS and idle > self.min_rtt + (self.min_rtt >> 1)) or (
                    self.path is not None and self.path.active(self, now)):
                # (after any pause, when another session to the same host has data in
                # flight: its model of the path holds the whole line, and the first flight
                # that follows shares it out, SharedPath)
                self._restart(now)
        self._now = now
        if self._ff and inflight <= FF_PRE_MAX:
            if inflight == 0 and self._ff == 2 and self._ff_n - self._ff_skip >= DISP_MIN_SEGS:
                self._dispersion_end(now)
            elif self._ff == 1 or (self._ff_n - self._ff_skip < DISP_MIN_SEGS and (
                    self._ack_k or (not inflight and self._ff_n))):
                # the next flight is the first one (one too small to measure, the
                # session's hello, was acknowledged; a few segments of it may still be in
                # flight: a bulk that starts right behind a hello is a first flight too)
                self._ff = 2
                self._ff_n = self._ack_k = self._ff_skip = 0
                self._ff_d0 = self._delivered
                self._ff_pre = inflight
                if self.mode == STARTUP:
                    # STARTUP's rounds count from the first flight of data (a session's
                    # rounds of hellos and ACKs say nothing of the peer's window)
                    self._startup_round = self.round
                self._set_rates()
        room = self.cwnd - inflight
        if not self.paces:
            # a short path: no bottleneck buffer far away to spare a burst, and a pacer
            # at ms resolution would only slow our own processes down
            return room if room > 0 else 0
        rate = self.pacing_rate
        t = self.tokens_t
        if now != t:
            # a timer that fired late (a busy event loop) may send what was due meanwhile,
            # up to LATE_MS of it: the pacing rate holds on a host whose timers are coarse
            el = now - t
            burst = rate * (BURST_MS if el < BURST_MS else (el if el < LATE_MS else LATE_MS))
            if burst < MIN_BURST:
                burst = MIN_BURST
            # the budget also pays for the share of retransmissions: the bandwidth estimate
            # counts what was delivered once, and a path with random loss (5 %: a tenth of
            # sends go again, lost ACKs included) would otherwise see its rate sink
            # (only while the path shows no queue: resends after overflows are not paid)
            tok = self.tokens + el * rate * (1.0 + (self.rtx_share if self._no_queue else 0.0))
            self.tokens = tok if tok < burst else burst
            self.tokens_t = now
        tok = int(self.tokens)
        return tok if tok < room else (room if room > 0 else 0)

    def spend(self, n: int, retransmitted: int = 0) -> None:
        """n segments left, `retransmitted` of them sent again. Retransmissions may overdraw
        the budget: new data then waits until it is paid back."""
        self._sent_new += n - retransmitted
        self._sent_rtx += retransmitted
        self._idle_t = -1           # (in flight now: the next ACK says how much)
        self._inflight += n
        if self._ff == 2 and not self._ack_k:
            if self._ff_n and self._ff_n < DISP_MIN_SEGS + self._ff_skip and \
                    self._now - self._ff_t1 > FF_GAP_MS:
                # the application paused after a few segments (a request, a stream's SYN):
                # the flight to measure starts now
                self._ff_skip = self._ff_n
                self._ff_t0 = self._now
            if not self._ff_n:
                self._ff_t0 = self._now
            self._ff_n += n - retransmitted
            self._ff_t1 = self._now
            if self.path is not None and self._ff_n - self._ff_skip >= DISP_MIN_SEGS and \
                    self.rtt_seen and self.min_rtt >= SHORT_RTT_MS:
                # a bulk's first flight: beside busy sessions to the same host, a share
                # of the line at once instead of the rest of the flight into their queue
                self.path.share_with(self, self._now)
        tok = self.tokens - n
        floor = -self.pacing_rate * BURST_MS
        self.tokens = tok if tok > floor else floor

    def next_send_in(self) -> int:
        """ms until the pacing budget holds a whole segment again (>= 1)."""
        need = 1.0 - self.tokens
        if need <= 0:
            return 1
        ms = need / self.pacing_rate if self.pacing_rate > 0 else 1000
        return max(1, int(ms + 0.999))

    def stats(self) -> dict:
        return {"mode": self.mode, "btlbw_seg_ms": round(self.btlbw, 3),
                "min_rtt": self.min_rtt, "pacing_rate_seg_ms": round(self.pacing_rate, 3),
                "cwnd": self.cwnd, "round": self.round, "startup_exit": self.exit,
                "rtx_share": round(self.rtx_share, 3), "startups": self.startups}


class SharedPath:
    """The rate controllers of the sessions between the same two hosts (a client's
    connections to one server, a server's sessions from one client address): they cross
    the same bottleneck, so they share what they know of it, as RFC 3124's congestion
    manager does. A session whose first flight would start beside busy ones takes an equal
    share of the line at once, and the busy ones give it up: a first flight sent within
    FIRST_FLIGHT_MS into their queue overran a shallow buffer, and the shares then took
    seconds to even out on a long path (a delay-based rule moves them by a few percent a
    round trip). Sans-I/O: the shell makes one per host and passes it to its sessions."""

    __slots__ = ("members",)

    def __init__(self) -> None:
        self.members: list[RateController] = []

    def join(self, c: RateController) -> None:
        if c.path is not self:
            self.members.append(c)
            c.path = self

    def leave(self, c: RateController) -> None:
        if c.path is self:
            self.members.remove(c)
            c.path = None

    def active(self, c: RateController, now: int) -> bool:
        """Whether another member has data in flight (ACTIVE_MIN segments at least: not a
        keepalive) and was active within a minimum RTT."""
        for m in self.members:
            if m is not c and m._idle_t < 0 and m._inflight >= ACTIVE_MIN and \
                    now - m._now <= (m.min_rtt if m.min_rtt > 1 else 1):
                return True
        return False

    def share_with(self, c: RateController, now: int) -> bool:
        """`c` has sent the first DISP_MIN_SEGS of a first flight (a bulk): when other
        members are busy (cruising in PROBE_BW with data in flight, active within a
        minimum RTT), every one of them and `c` get an equal share of what they measured
        together, and `c` goes on at it (PROBE_BW at gain 1, as after a dispersion) instead
        of sending the rest of the flight. False when no member is busy."""
        busy = [m for m in self.members if m is not c and m.mode == PROBE_BW and m.btlbw > 0
                and m._idle_t < 0 and m._inflight >= ACTIVE_MIN
                and now - m._now <= (m.min_rtt if m.min_rtt > 1 else 1)]
        if not busy:
            return False
        share = sum(m.btlbw for m in busy) / (len(busy) + 1)
        for m in busy:
            if m.btlbw > share:
                m._bw_scale(share / m.btlbw)
                # (what was in flight still comes back at the old rate for a round: rate
                # samples count again from segments sent after it was all delivered)
                m._shared_d = m._delivered + m._inflight
                m._set_rates()
        c._ff = 0
        c._cruise_at(share, "shared path", now)
        c._set_rates()
        return True
