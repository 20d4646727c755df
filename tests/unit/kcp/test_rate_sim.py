"""The delivery-rate sender (kcp/rate.py) and the path-following receive window
(kcp/window.py) on a modelled bottleneck (tests/sim.py: line rate, drop-tail buffer, delay,
random loss), on a virtual clock: no timing in these tests, only what crossed the model."""

import pytest

from paqet.kcp.rate import PROBE_BW, RateController, SharedPath
from paqet.kcp.window import ReceiveWindow
from sim import Bottleneck, BulkKcp, Sim

LINE = 12500          # bytes per ms: 100 Mbit/s
BUFFER = 500          # frames


def bulk(rtt, loss=0.0, *, secs=8, rate=LINE, cc=True, rw=True, peer_paces=None, snd=8192,
         rcv=512, seed=1):
    """A bulk transfer a -> b on a bottleneck each way; returns (sender, receiver, a->b link).
    The receiver asks first (as a download: KCP knows the RTT when the bulk starts)."""
    a = BulkKcp("fast3", snd=snd, rcv=1024, total=1 << 31, backlog=snd,
                cc=RateController(init_cwnd=512) if cc else None, start_after=int(1.5 * rtt))
    b = BulkKcp("fast3", snd=128, rcv=8192 if rw else rcv,
                rw=ReceiveWindow(initial=rcv, maximum=8192) if rw else None)
    if rw:
        b.k.rw.peer_paces = cc if peer_paces is None else peer_paces
    b.request()
    a.request()
    ab = Bottleneck(rate=rate, buffer=BUFFER, delay_ms=rtt // 2, loss=loss, seed=seed)
    ba = Bottleneck(rate=rate, buffer=BUFFER, delay_ms=rtt // 2, loss=loss, seed=seed + 1)
    Sim(a, b, ab, ba).run(lambda: False, max_ms=secs * 1000)
    return a, b, ab


def line_share(b, rate=LINE, bin_ms=500):
    """Per bin, the received payload as a share of the line's payload capacity (frames of
    mtu + 78 bytes on the line, 1306 payload bytes each)."""
    cap = rate * 1306 / (1330 + 78)
    return [x / cap for x in b.rate_series(bin_ms)]


@pytest.mark.parametrize("rtt", [100, 200])
def test_converges_to_the_line_and_holds(rtt):
    a, b, ab = bulk(rtt)
    share = line_share(b)
    # >= 90 % of the modelled line within 3 s (bins are 0.5 s; the bulk starts at 1.5 RTT)
    first = next(i for i, s in enumerate(share) if s >= 0.9)
    assert (first + 1) * 500 <= 3000, share
    # ... and holds within +-15 % of the line from then on
    held = share[first:]
    assert min(held) >= 0.85 and max(held) <= 1.15, share
    assert a.k.cc.mode == PROBE_BW
    # the pacer keeps the bottleneck buffer from overflowing: drops <= 3 % of frames sent
    assert ab.overflow <= 0.03 * ab.sent, (ab.overflow, ab.sent)


def test_the_first_flight_finds_a_long_paths_line_in_one_round_trip():
    """RTT 200 ms: the ACKs of the first flight (512 segments, sent within 25 ms) come back
    at the line's rate; from there the flow goes on at the line's rate, without STARTUP's
    rounds of doubling and the overshoot at their end (before: 0.84 of the line in the
    fifth quarter second and 930 frames lost)."""
    a, b, ab = bulk(200, secs=4)
    assert a.k.cc.exit == "dispersion"
    share = line_share(b, bin_ms=250)
    assert min(share[4:]) >= 0.95, share    # from 1 s on (the bulk starts at 0.3 s)
    assert ab.overflow == 0


def test_slow_line_and_a_large_first_flight():
    a, b, ab = bulk(100, rate=LINE / 5)
    share = line_share(b, rate=LINE / 5)
    assert min(share[4:]) >= 0.85, share
    assert ab.overflow <= 0.03 * ab.sent


@pytest.mark.parametrize("loss,floor", [(0.01, 0.7), (0.05, 0.5)])
def test_random_loss_is_not_congestion(loss, floor):
    a, b, ab = bulk(100, loss)
    share = line_share(b, bin_ms=1000)
    steady = share[3:]
    assert sum(steady) / len(steady) >= floor, share
    assert a.k.fast_retransmissions > 0  # KCP's fast recovery did the repairs


def test_kcp_go_bursts_overrun_the_same_path():
    """The reference: kcp-go's sender (no controller) with windows large enough for the
    path floods the buffer (this is what the controller is for)."""
    a, b, ab = bulk(100, cc=False, rw=False, snd=4096, rcv=4096)
    assert ab.overflow > 0.05 * ab.sent


@pytest.mark.parametrize("loss", [0.0, 0.01])
def test_receive_window_lets_an_unpaced_sender_use_more_of_the_path(loss):
    """A kcp-go sender (windows 1024, as kcptun-server) to a receiver with kcp-go's fixed
    512 window, against our path-following window: more of the line, same sender."""
    _, fixed, _ = bulk(100, loss, cc=False, rw=False, snd=1024, rcv=512)
    _, ours, _ = bulk(100, loss, cc=False, rw=True, snd=1024, rcv=512)
    assert ours.received > 1.1 * fixed.received, (ours.received, fixed.received)


def test_an_unpaced_sender_that_stalled_on_its_own_window_is_not_let_burst():
    """kcp-go's sender stops sndwnd (1024) beyond a hole it repairs and, when the repair is
    acknowledged, sends all the window allows at once. The window beyond the highest
    segment received follows what arrived in the last round trip (a quarter more), so the
    release is not a window's worth in one burst: drops 9.1 % -> 2.7 % of the frames."""
    _, b, ab = bulk(100, cc=False, rw=True, snd=1024, rcv=512, secs=6)
    assert ab.overflow <= 0.03 * ab.sent, (ab.overflow, ab.sent)
    assert b.k.rw.found


def test_paced_peer_gets_a_window_out_of_its_way_until_the_line_is_found():
    _, b, _ = bulk(200, secs=4)
    w = b.k.rw
    assert w.peer_paces and w.found and w.rate > 0
    # then a round trip of the line and PACED_HEADROOM: a STARTUP that goes on cannot
    # put more than that in flight
    from paqet.kcp.window import PACED_HEADROOM
    assert abs(w.target - PACED_HEADROOM * w.rate * w.rtt_min) <= 0.05 * w.target


def two_sessions(rtt, *, start2, total1, total2, pause=None, loss=0.0):
    """Two sessions (sender a_i to receiver b_i) through one bottleneck each way. Session 1
    starts at 1.5 RTT; session 2 at `start2`. `pause`: (ms, more) - session 1 finishes
    total1, and at ms (it has been idle since) gets `more` bytes to send."""
    from sim import Mux

    def pair(start, total, conv):
        a = BulkKcp("fast3", snd=8192, rcv=1024, total=total, backlog=8192, conv=conv,
                    cc=RateController(init_cwnd=512), start_after=start)
        b = BulkKcp("fast3", snd=128, rcv=8192, conv=conv,
                    rw=ReceiveWindow(initial=512, maximum=8192))
        b.k.rw.peer_paces = True
        b.request()
        a.request()
        return a, b

    a1, b1 = pair(int(1.5 * rtt), total1, 0x1001)
    a2, b2 = pair(start2, total2, 0x1002)
    ab = Bottleneck(rate=LINE, buffer=BUFFER, delay_ms=rtt // 2, loss=loss, seed=1)
    ba = Bottleneck(rate=LINE, buffer=BUFFER, delay_ms=rtt // 2, loss=loss, seed=2)
    sim = Sim(Mux(a1, a2), Mux(b1, b2), ab, ba)
    if pause:
        at, more = pause
        sim.run(lambda: sim.now >= at, max_ms=at + 1)
        assert b1.received >= total1
        a1.left = more
    return sim, (a1, b1), (a2, b2), ab


@pytest.mark.parametrize("rtt", [100, 200])
def test_two_sessions_started_together_share_the_line(rtt):
    each = 15_000_000
    sim, (_, b1), (_, b2), _ = two_sessions(rtt, start2=int(1.5 * rtt) + 5, total1=each,
                                            total2=each)
    sim.run(lambda: b1.received >= each or b2.received >= each, max_ms=30_000)
    share = b1.received / (b1.received + b2.received)
    assert 0.35 <= share <= 0.65, share


@pytest.mark.parametrize("rtt", [100, 200])
def test_sessions_to_the_same_host_share_the_line_at_once(rtt):
    """Session 2 starts while session 1 is busy. On their own (each its own model), the
    share of session 1 over the next 5 s is 0.56 (RTT 100 ms) / 0.73 (200 ms): the
    delay-based rule moves shares a few percent a round trip. Between the same two hosts
    (one SharedPath) they split the line at once, and the first flight does not overrun
    the buffer the busy one keeps full."""
    def shares(shared):
        start2 = 3000
        sim, (a1, b1), (a2, b2), ab = two_sessions(rtt, start2=start2, total1=1 << 31,
                                                   total2=1 << 31)
        if shared:
            path = SharedPath()
            path.join(a1.k.cc)
            path.join(a2.k.cc)
        sim.run(lambda: sim.now >= start2, max_ms=start2 + 1)
        r1, r2, o0, s0 = b1.received, b2.received, ab.overflow, ab.sent
        sim.run(lambda: False, max_ms=5000)
        g1, g2 = b1.received - r1, b2.received - r2
        return g1 / (g1 + g2), (ab.overflow - o0) / (ab.sent - s0), (g1 + g2) / 5000 / LINE
    alone, drops_alone, _ = shares(False)
    share, drops, used = shares(True)
    assert 0.45 <= share <= 0.6, share
    assert share < alone - 0.04 and drops <= 0.005 and drops < drops_alone
    assert used >= 0.85, used


@pytest.mark.parametrize("rtt", [100, 200])
def test_a_session_back_from_idle_shares_with_a_new_one(rtt):
    """Session 1 ran alone at the line, paused, and sends again as session 2 starts: it
    starts over in STARTUP (as TCP after idle), not at the whole line's rate it knew."""
    each, at = 15_000_000, 6000
    sim, (a1, b1), (_, b2), _ = two_sessions(rtt, start2=at, total1=20_000_000, total2=each,
                                             pause=(at, each))
    r0 = b1.received
    sim.run(lambda: b1.received - r0 >= each or b2.received >= each, max_ms=30_000)
    got1 = b1.received - r0
    share = got1 / (got1 + b2.received)
    assert 0.35 <= share <= 0.65, share


def test_a_flow_left_alone_finds_the_line_again():
    """Session 2 started beside a busy session 1 and settled at a small share; when
    session 1 ends, a probe that finds room and no queue sends it back to STARTUP (a tenth
    more per probe cycle, 1.6 s at this RTT, would take many seconds). The next probe comes
    within two cycles, wherever in its cycle the flow was when session 1 ended."""
    rtt = 200
    sim, (_, b1), (a2, b2), _ = two_sessions(rtt, start2=1500, total1=40_000_000,
                                             total2=1 << 31)
    sim.run(lambda: b1.received >= 40_000_000, max_ms=30_000)
    assert a2.k.cc.mode == PROBE_BW and a2.k.cc.btlbw < 0.45 * LINE / 1408  # less than half
    sim.run(lambda: a2.k.cc.startups >= 1, max_ms=2 * 8 * rtt + 2 * rtt)
    assert a2.k.cc.startups >= 1
    r0 = b2.received
    sim.run(lambda: False, max_ms=2000)
    share = (b2.received - r0) / 2000 / (LINE * 1306 / (1330 + 78))
    assert share >= 0.6, share  # without going back to STARTUP: 0.33
