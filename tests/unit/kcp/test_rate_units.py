"""RateController and ReceiveWindow as pure state machines, and the engine's use of them."""

import pytest

from paqet.kcp import rate as R
from paqet.kcp.engine import KCP
from paqet.kcp.presets import configure
from paqet.kcp.rate import DRAIN, PROBE_BW, PROBE_RTT, STARTUP, RateController
from paqet.kcp.window import ReceiveWindow


def feed(c, now, delivered, rate_segs_per_ms, rtt, inflight, interval=100, alim=False):
    prior = delivered - int(rate_segs_per_ms * interval)
    c.on_ack(now, prior, delivered, interval, alim, rtt, inflight)


def rounds(c, now, dlv, n, bw, ms, rtt, inflight):
    """n rounds of `ms` each delivering bw segments/ms, one ACK with RTT `rtt` at each
    round's end; returns (now, delivered)."""
    for _ in range(n):
        now += ms
        dlv += int(bw * ms)
        feed(c, now, dlv, bw, rtt, inflight)
    return now, dlv


def cruising(bw, rtt, gain=None):
    """A controller past STARTUP that measured `bw` segments/ms at `rtt` ms (at t=100)."""
    c = RateController(init_cwnd=32)
    feed(c, 100, 1000, bw, rtt, 100)
    c.filled = True
    c._enter_probe_bw(100)
    if gain is not None:
        c.pacing_gain = gain
    return c


def test_startup_until_the_bandwidth_stops_growing_then_drain_and_probe():
    c = RateController(init_cwnd=32)
    assert c.mode == STARTUP
    now, dlv = 0, 0
    for bw in (1, 2, 4, 8, 8, 8, 8, 8):   # rounds: growth, then a plateau
        now += 100
        dlv += bw * 100
        feed(c, now, dlv, bw, 100, inflight=int(bw * 150))
    assert c.filled and c.mode in (DRAIN, PROBE_BW)
    now += 100
    feed(c, now, dlv + 800, 8, 100, inflight=100)   # the queue drained: flight <= BDP
    assert c.mode == PROBE_BW
    assert abs(c.btlbw - 8) < 1e-9 and c.min_rtt == 100
    assert c.cwnd == int(2 * 8 * 100 + R.MIN_CWND)
    assert c.pacing_rate in {g * 8 for g in R.CYCLE}


def test_startup_ends_early_on_a_standing_queue():
    c = RateController(init_cwnd=32)
    now, dlv = 0, 0
    for bw in (1, 2, 4):
        now += 100
        dlv += bw * 100
        feed(c, now, dlv, bw, 100, inflight=bw * 150)
    assert not c.filled
    for i in range(R.STARTUP_SAMPLES):   # RTTs 30 % above the minimum, in a row
        now += 5
        feed(c, now, dlv, 4, 130, inflight=600, interval=5)
    assert c.filled


def test_app_limited_samples_do_not_lower_the_estimate():
    c = RateController()
    feed(c, 100, 1000, 10, 50, 100)
    feed(c, 200, 1100, 1, 50, 10, alim=True)
    assert c.btlbw == 10


def test_min_rtt_expiry_probes_rtt_with_half_a_bdp():
    c = RateController()
    feed(c, 100, 1000, 10, 50, 100)
    c.filled = True
    c._enter_probe_bw(100)
    feed(c, 100 + R.MIN_RTT_MS + 1, 2000, 10, 80, 800)
    assert c.mode == PROBE_RTT
    assert c.cwnd == max(R.MIN_CWND, int(c.bdp / 2))


def test_pacing_tokens_and_overdraft():
    c = RateController(init_cwnd=10)
    c.pacing_rate = 4.0          # segments per ms
    c.cwnd = 1000
    c.tokens, c.tokens_t = 0.0, 0
    assert c.allowance(1, 0) == 4          # 1 ms at the rate
    assert c.allowance(2, 0) == 8          # burst cap: 2 ms at the rate (no more at once)
    c.spend(8)
    assert c.allowance(2, 0) == 0 and c.next_send_in() == 1
    assert c.allowance(30, 0) == 4 * R.LATE_MS   # a late timer sends what was due, capped
    c.spend(4 * R.LATE_MS)
    c.spend(20)                            # retransmissions overdraw ...
    assert c.tokens == -8.0                # ... down to one burst
    assert c.next_send_in() == 3
    assert c.allowance(100, 998) == 2      # the flight cap


def test_engine_paces_new_segments_and_wakes_the_shell():
    k = configure(KCP(1), "fast3", sndwnd=4096, rcvwnd=4096)
    k.rmt_wnd = 4096
    k.cc = c = RateController(init_cwnd=1000)
    c.pacing_rate, c.tokens, c.tokens_t = 1.0, 0.0, 0
    k.send(bytes(k.mss * 100))
    k.flush(5)
    sent = len(k.snd_buf)
    assert sent == 5                       # what 5 ms at 1 segment/ms allow
    k.flush(5)
    assert len(k.snd_buf) == sent and k.pace_wait >= 1
    assert k.flush(5) <= k.pace_wait       # the next flush is due when tokens are back
    k.flush(30)                            # 25 ms later (a late timer): LATE_MS' worth
    assert len(k.snd_buf) == sent + R.LATE_MS
    assert len(k.snd_queue) == 100 - sent - R.LATE_MS


def test_engine_without_controller_sends_the_window_at_once():
    k = configure(KCP(1), "fast3", sndwnd=4096, rcvwnd=4096)
    k.rmt_wnd = 4096
    k.send(bytes(k.mss * 100))
    k.flush(5)
    assert len(k.snd_buf) == 100 and k.pace_wait == 0


def test_receive_window_grows_while_the_rate_grows_then_holds_near_the_bdp():
    w = ReceiveWindow(initial=100, maximum=10000)
    w.on_rtt(0, 100)
    now, ts = 0, 5000
    # a sender limited by our window: each round delivers what the window allowed
    for _ in range(6):
        n = w.target
        for i in range(n):
            w.on_data(now + i * 100 // n, ts + now + i * 100 // n, 1)
        now += 100
        w.update(now)
    assert w.target > 100 * 1.25 ** 4
    # the line: 5 segments per ms, whatever the window; the delay base stays
    for _ in range(6):
        for i in range(500):
            w.on_data(now + i // 5, ts + now + i // 5, 1)
        now += 100
        w.update(now)
    assert w.found
    assert 500 <= w.target <= 500 * 1.2


def test_receive_window_shrinks_on_a_standing_queue():
    w = ReceiveWindow(initial=200, maximum=10000)
    w.target = 2000               # grown earlier
    w.on_rtt(0, 100)
    now = 0
    for rnd in range(8):
        q = 0 if rnd < 4 else 30      # from round 4 every arrival is 30 ms late
        for i in range(500):
            w.on_data(now + i // 5, now + i // 5 - q, 1)
        now += 100
        w.update(now)
    assert w.found and w.queue_ms == 30
    assert 200 <= w.target <= 5 * (100 + 6) + 1
    w.target = 100                # never below the window kcp-go would advertise
    for i in range(500):
        w.on_data(now + i // 5, now + i // 5 - 30, 1)
    w.update(now + 100)
    assert w.target == 200


def test_receive_window_advertises_beyond_holes_within_the_bound():
    w = ReceiveWindow(initial=300, maximum=1000)
    assert w.advertise(0) == 300
    assert w.advertise(200) == 500
    assert w.advertise(900) == 1000


def test_engine_advertises_the_window_and_accepts_up_to_the_bound():
    from paqet.kcp.engine import encode_segment, PUSH, parse_segments
    k = configure(KCP(7), "fast3", sndwnd=32, rcvwnd=2048)
    k.rw = ReceiveWindow(initial=64, maximum=2048)
    for sn in (0, 1, 500):               # a hole from 2 to 499
        k.input(encode_segment(7, PUSH, 0, 32, 1000 + sn, sn, 0, b"x"), 10)
    k.flush(10)
    wnds = {s[3] for s in parse_segments(k.datagrams_to_send()[-1])}
    # 501 - rcv_nxt(2) + 64 = 563: the edge is 64 beyond the highest segment received
    assert wnds == {563}
    assert 500 in k.rcv_buf               # accepted: within the memory bound


def test_short_path_is_not_paced_and_resends_are_not_held():
    """Below SHORT_RTT_MS (a LAN) the controller neither paces new data nor holds a
    timeout's resends (at 5 % loss on a LAN, holding them to 4 a flush halved the rate)."""
    k = configure(KCP(1), "fast3", sndwnd=4096, rcvwnd=4096)
    k.rmt_wnd = 4096
    k.cc = c = RateController(init_cwnd=1000)
    c.rtt_seen, c.min_rtt = True, 1
    assert not c.paces
    c.tokens = -50.0
    k.send(bytes(k.mss * 200))
    k.flush(0)
    assert len(k.snd_buf) == 200                   # the window, not tokens
    k.flush(5000)                                  # every segment's RTO has passed
    assert k.lost_segments == 200                  # all resent at once, none held
    c.min_rtt = 50
    assert c.paces


def test_short_path_advertises_kcp_gos_window():
    w = ReceiveWindow(initial=512, maximum=8192)
    w.target = 3000
    assert w.advertise(100) == 3100          # no RTT yet: the path-following window
    w.on_rtt(0, 1)
    assert w.advertise(100, queued=12) == 500   # a LAN: rcvwnd - what the app has not read


def test_a_flight_after_idle_starts_over_in_startup_keeping_the_min_rtt():
    c = cruising(10, 50)
    feed(c, 200, 2000, 10, 50, 0)          # the flight emptied at 200
    # not idle long enough yet (1.5 min RTT and IDLE_MS): the model holds
    c.allowance(200 + R.IDLE_MS, 0)
    assert c.mode == PROBE_BW and c.btlbw == 10
    c.allowance(201 + R.IDLE_MS, 0)
    assert c.mode == STARTUP and not c.filled and c.btlbw == 0
    assert c.min_rtt == 50 and c.cwnd == 32
    # a flight that never emptied is not idle
    d = cruising(10, 50)
    feed(d, 200, 2000, 10, 50, 5)
    d.allowance(5000, 0)
    assert d.mode == PROBE_BW


def test_a_probe_that_finds_room_without_a_queue_goes_back_to_startup():
    def probed(rtt_during, bw_after):
        c = cruising(10, 100)
        c.cycle = len(R.CYCLE) - 1
        c._next_phase(100)                   # the up phase, from an estimate of 10
        assert c.pacing_gain > 1
        feed(c, 250, 3000, bw_after, rtt_during, 1500)
        feed(c, 400, 5000, bw_after, rtt_during, 1500)  # the up phase ends
        feed(c, 550, 7000, bw_after, rtt_during, 1000)  # ... and the down phase
        return c
    assert probed(100, 12).mode == STARTUP         # +20 %, no queue: room
    assert probed(100, 12).startups == 1
    assert probed(130, 12).mode == PROBE_BW        # the same growth behind a queue
    assert probed(100, 10.2).mode == PROBE_BW      # no growth


def test_a_standing_queue_holds_the_flight_to_last_rounds_delivery_plus_alpha():
    c = cruising(10, 100, gain=1.0)
    rounds(c, 100, 1000, 3, 6, 130, 130, 1200)   # 6 segments/ms, every RTT queued
    assert c.queued
    # last round's 6 segments/ms (less the cruise cuts, 5 % a round) x 100 ms + alpha
    assert 0.9 * 600 + R.QUEUE_ALPHA <= c.cwnd <= 600 + R.QUEUE_ALPHA
    # the max filter no longer remembers the 10 of before: a queued round caps it at what
    # the last round delivered (so the flow does not go back to 10 when the rule lets go)
    assert c.btlbw <= 6
    # the rule holds for QUEUE_HOLD rounds without a queue, then lets go (a round is
    # judged when the next one starts)
    now, dlv = rounds(c, 400, 4000, R.QUEUE_HOLD, 6, 100, 100, 600)
    assert c.queued
    rounds(c, now, dlv, 1, 6, 100, 100, 600)
    assert not c.queued and c.cwnd >= R.CWND_GAIN * 600


def test_the_queue_rules_alpha_grows_with_the_minimum_rtt():
    c = RateController(init_cwnd=32)
    feed(c, 100, 1000, 10, 300, 100, interval=300)
    c.filled = True
    c._enter_probe_bw(100)
    c.pacing_gain = 1.0
    now, dlv = 100, 1000
    for _ in range(4):                       # 6 segments/ms, every RTT queued
        now += 300
        dlv += 1800
        feed(c, now, dlv, 6, 360, 2000, interval=300)
    assert c.queued
    # last round's delivery (6 segments/ms, less the cruise cuts) x 300 ms + 150 segments
    # of alpha at this RTT (ALPHA_PER_MS), not QUEUE_ALPHA's 64
    last = c._bw_ring[(c.round - 1) % R.BW_ROUNDS]
    assert 0.8 * 6 <= last <= 6
    assert c.cwnd == int(last * 300 + R.ALPHA_PER_MS * 300) and R.ALPHA_PER_MS * 300 > 64


def paced_window(initial):
    """A receive window for a paced peer whose minimum RTT is 200 ms, at t=0."""
    w = ReceiveWindow(initial=initial, maximum=8192)
    w.peer_paces = True
    w.on_rtt(0, 200)
    w.update(0)
    return w


def test_receive_window_lets_a_paced_startup_double_within_the_round():
    """Against a paced peer in STARTUP, the window follows the arrivals of the round so
    far (PACED_GAIN times), not the end of a round that began before the flight did."""
    w = paced_window(512)
    now, ts = 0, 9000
    for _ in range(50):                    # 750 segments over 50 ms
        for _ in range(15):
            w.on_data(now, ts + now, 1)
        now += 1
        if now % 5 == 0:
            w.update(now)
    assert w.target >= 4 * 700 and not w.found


def test_short_paths_keep_their_flight_after_idle_and_with_a_queue():
    """Below SHORT_RTT_MS (a LAN) a 'queue' is our own processes' work and an idle moment
    says nothing of other flows: neither the queue rule nor the restart applies."""
    c = cruising(50, 2, gain=1.0)
    now, dlv = rounds(c, 100, 1000, 3, 20, 20, 12, 300)   # RTTs far above the 2 ms minimum
    assert not c.queued
    feed(c, now + 1, dlv + 10, 20, 2, 0)
    c.allowance(now + 5000, 0)
    assert c.mode == PROBE_BW and c.btlbw == 50


def first_flight(send_ms, ack_gap_ms, *, rtt=200, n=512, batches=8, c=None, t=None):
    """A controller whose first flight of n segments left over `send_ms` and whose ACKs came
    back in `batches` equal batches `ack_gap_ms` apart (after a hello measured the RTT).
    `c`, `t`: that flight on this controller, from an empty pipe at t (ms)."""
    if c is None:
        c = RateController(init_cwnd=n)
        c.on_ack(rtt, 0, 1, 0, True, rtt, 0)             # the hello: RTT known, pipe empty
        t = rtt + 100
    d0 = c._delivered
    per = n // batches
    for i in range(batches):
        c.allowance(t + i * send_ms // batches, i * per)
        c.spend(per)
    t0 = t + rtt
    for i in range(batches):
        c.on_ack(t0 + i * ack_gap_ms, d0, d0 + per * (i + 1), 0, False, rtt + i * ack_gap_ms,
                 n - per * (i + 1))
    return c


def test_the_first_flights_ack_spacing_gives_the_line_at_once():
    """A first flight that left faster than its ACKs came back was spread by the
    bottleneck: the spacing of its ACKs is the line's rate. STARTUP ends there (its own rate
    samples would take several round trips to find it)."""
    c = first_flight(send_ms=20, ack_gap_ms=7)          # 448 segments in 49 ms
    assert c.mode == PROBE_BW and c.filled and c.exit == "dispersion"
    assert abs(c.btlbw - 448 / 49) < 1e-9
    # a flight whose ACKs came about as fast as it left (here half as fast: an application
    # that fed it slowly) says only that the line is faster
    d = first_flight(send_ms=30, ack_gap_ms=7)
    assert d.mode == STARTUP and not d.filled and d.btlbw < 448 / 49


def test_after_idle_the_next_first_flight_is_measured_and_cruises():
    """A flight after an idle moment starts over in STARTUP and is a first flight again;
    after its dispersion the flow cruises at the estimate (a probe's queue right then would
    read as another flow's and take the jump back)."""
    c = first_flight(20, 7)
    c.on_ack(1000, 1, 513, 0, False, 200, 0)               # all delivered: idle from 1000
    c.allowance(1000 + 301, 0)                               # > IDLE_MS and 1.5 RTT
    assert c.mode == STARTUP and c.btlbw == 0
    first_flight(20, 5, c=c, t=1301)                        # 448 segments in 35 ms
    assert c.mode == PROBE_BW and c.exit == "dispersion" and c.pacing_gain == 1.0
    assert abs(c.btlbw - 448 / 35) < 1e-9


def test_a_bulk_right_behind_a_hello_is_a_first_flight_too():
    """An upload that starts while two of a hello's segments are still unacknowledged
    leaves at the first flight's rate, not STARTUP's floor (a 200-segment flight over 39
    ms, whose ACKs came back in 23, said nothing of the line); the hello's ACK that comes
    back during the flight is not part of its train."""
    c = RateController(init_cwnd=512)
    c.on_ack(200, 0, 1, 0, True, 200, 0)          # the session's first RTT sample
    c.allowance(300, 0)
    c.spend(3)                                    # a hello: three segments
    c.on_ack(500, 1, 2, 0, True, 200, 2)          # one acknowledged, two still in flight
    c.allowance(505, 2)                           # the bulk starts
    assert c.pacing_rate == c._first_flight_rate()
    n, per = 512, 64
    for i in range(8):                            # 512 segments over 20 ms
        c.allowance(505 + i * 20 // 8, 2 + i * per)
        c.spend(per)
    c.on_ack(507, 1, 4, 0, True, 207, n)          # the hello's last two: not the train's
    d0 = 2
    for i in range(8):                            # the train: 7 ms apart (448 after the first)
        c.on_ack(705 + i * 7, d0, 4 + per * (i + 1), 0, False, 200 + i * 7, n - per * (i + 1))
    assert c.mode == PROBE_BW and c.exit == "dispersion"
    assert abs(c.btlbw - 448 / 49) < 1e-9


def test_startup_rounds_count_from_the_first_flight_of_data():
    """A session's rounds of small messages (a hello, ACKs of an upload) are no STARTUP
    rounds: the peer's window holding back the first flight of data is not a full pipe."""
    c = RateController(init_cwnd=512)
    now = dlv = 0
    for _ in range(20):                                     # 20 rounds, a segment each
        now += 200
        c.allowance(now - 100, 0)
        c.spend(1)
        dlv += 1
        c.on_ack(now, dlv - 1, dlv, 0, True, 200, 0)
    assert c.round >= 20
    c.allowance(now + 10, 0)                                # the first flight of data
    c.spend(512)
    c.window_limited()
    assert not c.filled and c.mode == STARTUP


def test_a_first_flight_too_small_or_on_a_short_path_is_not_measured():
    assert first_flight(20, 7, n=32).mode == STARTUP             # < DISP_MIN_SEGS
    assert first_flight(2, 7, rtt=2).exit != "dispersion"        # a LAN: not paced


def test_a_busy_line_takes_the_jump_back():
    """Another flow kept the line busy: the flight's spacing was only our turn among its
    segments, and the queue grows once we send at that rate. JUMP_SAMPLES RTTs in a row
    above the no-queue band take it back: STARTUP from the estimate before the jump."""
    c = first_flight(20, 7)
    before = c._jump_bw
    dlv = 513
    for i in range(R.JUMP_SAMPLES):
        dlv += 20
        c.on_ack(560 + i, 100, dlv, 0, False, 240, 600)     # sent after the first ACK
    assert c.mode == STARTUP and not c.filled and c.exit == "dispersion, busy line"
    assert c.btlbw == before and c.startups == 0
    # on an idle line the RTTs stay near the minimum: the jump holds
    d = first_flight(20, 7)
    dlv = 513
    for i in range(3 * R.JUMP_SAMPLES):
        dlv += 20
        d.on_ack(560 + i, 100, dlv, 0, False, 202 if i % 4 else 230, 600)
    assert d.mode == PROBE_BW and d.exit == "dispersion"


def test_a_queued_flow_is_held_by_its_window_not_its_pacing_rate():
    """Under the queue rule the window (last round's delivery x min RTT + QUEUE_ALPHA) is
    what holds a flow: one with the smaller share paces at that window per minimum RTT, so
    it grows by QUEUE_ALPHA a round while the larger flow's window shrinks (FAST TCP's
    equilibrium: every flow keeps the same QUEUE_ALPHA in the shared queue)."""
    c = cruising(3, 100, gain=1.0)           # a small share of a line of ~9 segments/ms
    now, dlv = rounds(c, 100, 1000, 2, 3, 110, 110, 400)   # 3 segments/ms, every RTT queued
    assert c.queued
    assert c.cwnd == int(3 * 100 + R.QUEUE_ALPHA)
    assert abs(c.pacing_rate - c.cwnd / 100) < 0.02     # above the estimate's 3 per ms
    # a round whose queue fell below the band, but not below half of it, keeps the rule
    mr = c.min_rtt
    band = max(R.NO_QUEUE_MS, mr >> 4)
    now, dlv = rounds(c, now, dlv, 2, 3, 110, mr + band * 3 // 4, 400)
    assert c.queued
    # ... and so do QUEUE_HOLD rounds below half of it (a round is judged when the next
    # one starts); one more lets go
    now, dlv = rounds(c, now, dlv, R.QUEUE_HOLD, 3, 101, mr + 1, 400)
    assert c.queued
    rounds(c, now, dlv, 1, 3, 101, mr + 1, 400)
    assert not c.queued


def test_segments_before_an_application_pause_are_not_measured():
    """A stream's SYN and request leave first, the bulk tens of ms later: the flight to
    measure is the bulk (its send span, its ACKs), not the pause in front of it."""
    c = RateController(init_cwnd=512)
    c.on_ack(200, 0, 1, 0, True, 200, 0)
    c.allowance(300, 0)
    c.spend(3)                                   # the SYN and a request
    first_flight(20, 7, c=c, t=300 + 75)         # the bulk, 75 ms later
    assert c.exit == "dispersion"
    assert abs(c.btlbw - 448 / 49) < 1e-9


def test_a_resends_ack_a_round_trip_later_is_not_part_of_the_train():
    """One segment of the first flight was lost and sent again: its ACK (with the
    flight's delivery state) comes a round trip after the train. The train's spacing is
    the line's rate; counting the late ACK gave a ninth of it (0.99 segments/ms on 8.9)."""
    c = RateController(init_cwnd=512)
    c.on_ack(200, 0, 1, 0, True, 200, 0)
    for i in range(8):
        c.allowance(300 + 2 * i, 64 * i)
        c.spend(64)
    for i in range(8):                                   # 511 of 512 in the train
        c.on_ack(500 + 7 * i, 1, 1 + 64 * (i + 1) - (1 if i == 7 else 0), 0, False, 200, 1)
    c.on_ack(500 + 7 * 7 + 200, 1, 513, 0, False, 200, 0)   # the resend's ACK
    assert c.exit == "dispersion"
    # (up to the ACK before the last, 384 in 42 ms, gives a little more than to the last)
    assert abs(c.btlbw - max((511 - 64) / 49, (448 - 64) / 42)) < 1e-9


def test_a_held_last_ack_does_not_lower_the_dispersions_estimate():
    """The receiver holds the train's last few ACKs a moment for data to ride with (2 ms
    of ACK_HOLD at the end of a 24 ms train read 0.93x the line): the estimate is taken up
    to the ACK before the last when that gives more."""
    c = RateController(init_cwnd=512)
    c.on_ack(200, 0, 1, 0, True, 200, 0)
    for i in range(8):                                   # 203 segments (one stream's window)
        c.allowance(300 + i, 25 * i)
        c.spend(26 if i < 7 else 21)
    dlv = 1
    for ms in range(22):                                 # 9 a ms at the line's rate ...
        dlv += 9
        c.on_ack(500 + ms, 1, dlv, 0, False, 200 + ms, 204 - dlv)
    c.on_ack(500 + 24, 1, 204, 0, False, 224, 0)         # ... and the last 5, held 2 ms
    assert c.exit == "dispersion"
    assert abs(c.btlbw - (199 - 10) / 21) < 1e-9        # 9 a ms
    assert (204 - 10) / 24 < 8.1                         # (to the last ACK: 8.08)


def test_receive_window_opens_to_a_paced_first_flights_train_at_once():
    """A paced peer's short first flight (200 segments, e.g. one stream's 256 KiB smux
    window) arrives as a train at the line's rate (8 segments/ms): the window opens to
    PACED_GAIN round trips of that rate while the train arrives, not to PACED_GAIN x 200
    at the round's end (which would hold the sender's second round trip to ~1000)."""
    from paqet.kcp.window import PACED_GAIN
    w = paced_window(1024)
    now, ts = 300, 9000
    for i in range(25):                      # 200 segments over 25 ms
        for _ in range(8):
            w.on_data(now, ts + now, 1)
        now += 1
        if i == 12:
            w.update(now)                    # mid-train: the ACKs already carry it
            assert w.target >= 0.9 * PACED_GAIN * 8 * 200
    w.update(now)
    assert w.train_rate == pytest.approx(8, rel=0.1)   # (8 a ms, in whole ms)
    w.update(now + 400)                      # the round ends: 200 arrivals do not shrink it
    assert w.target >= 0.9 * PACED_GAIN * 8 * 200 and not w.found
    # a peer that does not pace: no trains, the window grows by rounds
    u = ReceiveWindow(initial=1024, maximum=8192)
    u.on_rtt(0, 200)
    for i in range(25):
        for _ in range(8):
            u.on_data(300 + i, ts + 300 + i, 1)
    u.update(330)
    assert u.train_rate == 0 and u.target == 1024


def busy_member(bw=10, rtt=200, inflight=2000):
    """A controller cruising at `bw` segments/ms with `inflight` in flight, active at 400."""
    c = RateController(init_cwnd=512)
    feed(c, 100, 1000, bw, rtt, inflight, interval=rtt)
    c.filled = True
    c._enter_probe_bw(100)
    c.pacing_gain = 1.0
    feed(c, 400, 1000 + bw * 300, bw, rtt, inflight, interval=rtt)
    c.allowance(400, inflight)
    return c


def test_a_bulk_beside_a_busy_session_to_the_same_host_takes_an_equal_share_at_once():
    """SharedPath: the new session's first flight stops after DISP_MIN_SEGS; it and the
    busy one each get half of what the busy one measured, and the busy one's samples of
    what it had in flight (still coming back at the whole line's rate) do not count."""
    path = R.SharedPath()
    a = busy_member(10)
    path.join(a)
    b = RateController(init_cwnd=512)
    path.join(b)
    b.on_ack(200, 0, 1, 0, True, 200, 0)
    b.allowance(401, 0)
    assert b._ff == 2 and b.pacing_rate == b._first_flight_rate()
    b.spend(R.DISP_MIN_SEGS)
    assert b.mode == PROBE_BW and b.exit == "shared path" and b.pacing_gain == 1.0
    assert b.btlbw == 5 and a.btlbw == 5 and a.cwnd < 2 * 10 * 200
    d = a._delivered
    feed(a, 450, d + 500, 10, 200, 1500, interval=200)    # sent before: not a sample
    assert a.btlbw == 5
    feed(a, 700, a._shared_d + 1000, 5, 200, 1000, interval=200)
    assert a.btlbw == 5
    # alone (the other idle, or only a keepalive in flight): the flight goes on
    c = RateController(init_cwnd=512)
    q = R.SharedPath()
    q.join(c)
    idle = busy_member(10, inflight=1)
    q.join(idle)
    c.on_ack(200, 0, 1, 0, True, 200, 0)
    c.allowance(401, 0)
    c.spend(R.DISP_MIN_SEGS)
    assert c._ff == 2 and c.mode == STARTUP and idle.btlbw == 10
    q.leave(c)
    assert c.path is None and q.members == [idle]


def test_a_session_going_on_after_a_pause_beside_a_sending_one_starts_over():
    """Its model holds the whole line: after any pause, while another session to the same
    host has data in flight, it starts over (and its first flight shares the line out);
    a keepalive in flight does not count."""
    path = R.SharedPath()
    a = busy_member(10)
    path.join(a)
    a.on_ack(500, 3000, 4000, 200, False, 200, 0)          # a's flight emptied at 500
    b = busy_member(10)
    path.join(b)
    b.allowance(510, 0)                                     # b sends: a bulk in flight
    b.spend(100)
    a.allowance(520, 0)                                     # a goes on 20 ms later
    assert a.mode == STARTUP and a.btlbw == 0 and a._ff == 2
    # a keepalive in flight
    p2 = R.SharedPath()
    c = busy_member(10)
    p2.join(c)
    c.on_ack(500, 3000, 4000, 200, False, 200, 0)
    k = busy_member(10, inflight=0)
    p2.join(k)
    k.allowance(510, 0)
    k.spend(1)
    c.allowance(520, 0)
    assert c.mode == PROBE_BW and c.btlbw == 10
