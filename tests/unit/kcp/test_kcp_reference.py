"""The optimised engine against a plain transcription of kcp-go's rules (refkcp.py): the same
seeded scenario (two endpoints, lossy/reordering/duplicating link, both sides sending,
readers that pause so windows close, FEC-recovered inputs, garbage) must produce exactly the
same datagrams at the same milliseconds, the same return codes and the same bytes read."""

import hashlib
import random

import pytest

from paqet.kcp.engine import KCP
from paqet.kcp.presets import configure
from sim import Link

from refkcp import RefKCP

CASES = {
    # name: (mode or manual tuple, mtu, sndwnd, rcvwnd, stream, link loss)
    "normal": ("normal", 1330, 64, 64, True, 0.05),
    "fast": ("fast", 1330, 128, 128, True, 0.1),
    "fast2": ("fast2", 1330, 32, 32, True, 0.1),
    "fast3": ("fast3", 1330, 256, 64, True, 0.05),
    "fast3-lossy": ("fast3", 400, 64, 16, True, 0.25),
    "congestion": ((0, 20, 2, 0, False, False), 600, 64, 64, True, 0.05),
    "congestion-ndl": ((1, 10, 3, 0, False, True), 300, 48, 24, True, 0.1),
    "resend0": ((0, 10, 0, 0, False, False), 500, 32, 32, True, 0.1),
    "resend0-nc": ((1, 10, 0, 1, False, True), 500, 32, 32, True, 0.1),
    "message": ("fast2", 300, 64, 32, False, 0.05),
    "tiny-window": ((1, 10, 2, 1, False, False), 200, 4, 4, True, 0.1),
    # one side mostly receives and sends only now and then (its input fast path: nothing
    # of its own in flight)
    "fast3-oneway": ("fast3", 1330, 128, 128, True, 0.1),
    "normal-oneway": ("normal", 700, 64, 32, True, 0.05),
}


def scenario(cls, case, seed, ms=2500, defer=False):
    mode, mtu, snd, rcv, stream, loss = CASES[case]
    rng = random.Random(seed)
    eps = []
    for _ in range(2):
        k = configure(cls(0x51), mode, mtu=mtu, sndwnd=snd, rcvwnd=rcv)
        k.stream = stream
        k.defer_flush = defer
        eps.append(k)
    links = [Link(loss=loss, dup=0.05, reorder=0.1, delay_ms=7, jitter_ms=4, seed=seed * 2 + i)
             for i in range(2)]
    trace = []
    nxt = [0, 0]
    budget = [150_000, 60_000]
    rate = [0.5, 0.01 if case.endswith("oneway") else 0.5]
    got = [hashlib.sha256(), hashlib.sha256()]
    reading = [True, True]
    for now in range(ms):
        for i in (0, 1):
            ep = eps[i]
            for d in links[1 - i].due(now):
                regular = rng.random() > 0.05
                if rng.random() < 0.02:  # garbage: a cut or corrupted copy
                    d = d[:rng.randrange(len(d))] if rng.random() < 0.5 else \
                        d[:4] + bytes([rng.randrange(256)]) + d[5:]
                trace.append((now, i, "in", ep.input(d, now, regular)))
            if defer:
                ep.flush_pending(now)
            if budget[i] > 0 and ep.wait_snd < ep.snd_wnd and rng.random() < rate[i]:
                n = min(budget[i], rng.choice((1, 50, 700, 3000, 9000)))
                if not stream:
                    n = min(n, (mtu - 24) * (rcv - 1))
                r = ep.send(rng.randbytes(n))
                trace.append((now, i, "send", n, r))
                if r == 0:
                    budget[i] -= n
            if rng.random() < 0.01:
                reading[i] = not reading[i]
            if reading[i] or now > ms * 3 // 4:
                while (data := ep.recv()) is not None:
                    got[i].update(data)
                    trace.append((now, i, "recv", len(data)))
            if now >= nxt[i]:
                nxt[i] = now + ep.flush(now)
                trace.append((now, i, "next", nxt[i]))
            for d in ep.datagrams_to_send():
                assert len(d) <= mtu
                trace.append((now, i, "out", d))
                links[i].send(d, now)
    trace.append(("stats", eps[0].rx_srtt, eps[0].rx_rttvar, eps[0].rx_rto, eps[0].snd_una,
                  eps[1].rcv_nxt, got[0].hexdigest(), got[1].hexdigest()))
    return trace


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed,defer", [(1, False), (2, False), (3, True)])
def test_same_datagrams_as_reference(case, seed, defer):
    """defer: the tunnel's batching (one flush per millisecond's datagrams), which lets
    many ACKs count up a lost segment before it is resent."""
    want = scenario(RefKCP, case, seed, defer=defer)
    have = scenario(KCP, case, seed, defer=defer)
    outs = sum(1 for t in want if len(t) > 2 and t[2] == "out")
    assert outs > 50
    for i, (w, h) in enumerate(zip(want, have)):
        assert h == w, f"first difference at trace entry {i} of {len(want)}: {h!r} != {w!r}"
    assert len(have) == len(want)


# configurations and seeds from the fuzz run below that caught real mistakes (e.g. an
# FEC-recovered datagram updating the remote window on the receive fast path)
REGRESSIONS = [
    (("fast", 516, 81, 70, True, 0.3), 156, True),
    (("fast3", 763, 37, 4, True, 0.02), 324, True),
]


@pytest.mark.parametrize("params,seed,defer", REGRESSIONS)
def test_regressions_match_reference(params, seed, defer):
    name = f"regression-{seed}"
    CASES[name] = params
    try:
        want = scenario(RefKCP, name, seed, ms=4000, defer=defer)
        have = scenario(KCP, name, seed, ms=4000, defer=defer)
        for i, (w, h) in enumerate(zip(want, have)):
            assert h == w, f"{params} defer={defer}: first difference at entry {i}"
        assert len(have) == len(want)
    finally:
        del CASES[name]


@pytest.mark.fuzz
@pytest.mark.parametrize("seed", range(100, 400))
def test_random_configurations_match_reference(seed):
    """Long run: random settings (modes, manual values, mtu, windows, loss) per seed."""
    rng = random.Random(seed)
    name = f"random-{seed}"
    mode = rng.choice(["normal", "fast", "fast2", "fast3",
                       (rng.randint(0, 2), rng.randint(0, 120), rng.randint(0, 5),
                        rng.randint(0, 1), False, rng.random() < 0.5)])
    CASES[name] = (mode, rng.randint(60, 1400), rng.randint(1, 300), rng.randint(1, 300),
                   rng.random() < 0.8, rng.choice([0.0, 0.02, 0.1, 0.3]))
    try:
        defer = rng.random() < 0.5
        want = scenario(RefKCP, name, seed, ms=4000, defer=defer)
        have = scenario(KCP, name, seed, ms=4000, defer=defer)
        for i, (w, h) in enumerate(zip(want, have)):
            assert h == w, f"{CASES[name]} defer={defer}: first difference at entry {i}"
        assert len(have) == len(want)
    finally:
        del CASES[name]
