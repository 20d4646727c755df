"""The delivery-rate sender (kcp/rate.py) and the path-following receive window
(kcp/window.py) on a modelled bottleneck (tests/sim.py: line rate, drop-tail buffer, delay,
random loss), on a virtual clock: no timing in these tests, only what crossed the model."""

import pytest

from paqet.kcp.rate import PROBE_BW, RateController
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


def test_paced_peer_gets_a_window_out_of_its_way_until_the_line_is_found():
    _, b, _ = bulk(200, secs=4)
    w = b.k.rw
    assert w.peer_paces and w.found and w.rate > 0
    # then a round trip of the line and PACED_HEADROOM: a STARTUP that goes on cannot
    # put more than that in flight
    from paqet.kcp.window import PACED_HEADROOM
    assert abs(w.target - PACED_HEADROOM * w.rate * w.rtt_min) <= 0.02 * w.target
