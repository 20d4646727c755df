"""KCP throughput in one process (no crypto, a simulated link with a virtual clock).

Part 1: two KCP engines alone; part 2: KCP + smux on both ends. For fast and fast3 at 0 % and
5 % loss: bytes delivered per CPU second and CPU µs per segment sent, beside a bytes-copy
reference measured in the same run.

    .venv/bin/python bench/kcp.py [--mb 20] [--profile] [--only kcp|smux]
"""

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from sim import KcpSmuxEndpoint, Link, Sim  # noqa: E402

from paqet.kcp.engine import KCP  # noqa: E402
from paqet.kcp.presets import configure  # noqa: E402


def run_kcp(mode, loss, size):
    """Two bare engines: the sender keeps its window full, the receiver reads every step."""
    a, b = KCP(0x1234), KCP(0x1234)
    configure(a, mode, mtu=1330, sndwnd=1024, rcvwnd=1024)
    configure(b, mode, mtu=1330, sndwnd=1024, rcvwnd=1024)
    a.defer_flush = b.defer_flush = True   # one flush per received batch, as the tunnel does
    sim = Sim(a, b, Link(loss=loss, delay_ms=5, seed=3), Link(loss=loss, delay_ms=5, seed=4))
    chunk = os.urandom(65536)
    sent = [0]
    got = [0]
    mss = a.mss

    def feed():
        room = a.send_room
        while room > 0 and sent[0] < size:
            a.send(chunk)
            sent[0] += len(chunk)
            room -= (len(chunk) + mss - 1) // mss
        d = b.recv()
        if d:
            got[0] += len(d)

    c0 = time.process_time()
    ok = sim.run(lambda: got[0] >= size, max_ms=3_600_000, each=feed)
    cpu = time.process_time() - c0
    assert ok
    return size / cpu / 1e6, cpu / a.segments_out * 1e6, sim.now


def run_smux(mode, loss, size):
    a, b = KcpSmuxEndpoint(mode, True), KcpSmuxEndpoint(mode, False)
    sim = Sim(a, b, Link(loss=loss, delay_ms=5, seed=3), Link(loss=loss, delay_ms=5, seed=4))
    sid = a.s.open_stream()
    chunk = os.urandom(65536)
    sent = [0]

    def feed():
        while sent[0] < size and a.k.wait_snd < 2 * a.k.snd_wnd:
            n = a.s.send_data(sid, chunk)
            if not n:
                break
            sent[0] += n
            a.k.send(a.s.data_to_send())
    c0 = time.process_time()
    ok = sim.run(lambda: sum(b.sizes.values()) >= size, max_ms=3_600_000, each=feed)
    cpu = time.process_time() - c0
    assert ok
    return size / cpu / 1e6, cpu / a.k.segments_out * 1e6, sim.now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--only", choices=("kcp", "smux"))
    a = ap.parse_args()
    size = a.mb << 20
    blob = os.urandom(1306)
    t0 = time.process_time()
    for _ in range(200000):
        bytes(bytearray(blob))
    copy_us = (time.process_time() - t0) / 200000 * 1e6
    print(f"reference: bytes copy of one 1306-byte segment {copy_us:.2f} µs")
    prof = cProfile.Profile() if a.profile else None
    for name, fn in (("kcp", run_kcp), ("kcp+smux", run_smux)):
        if a.only and not name.startswith(a.only if a.only == "kcp+smux" else a.only) or (
                a.only == "smux" and name == "kcp"):
            continue
        for mode in ("fast", "fast3"):
            for loss in (0.0, 0.05):
                if prof:
                    prof.enable()
                mbps, us, vt = fn(mode, loss, size)
                if prof:
                    prof.disable()
                print(f"{name:<8} {mode:<5} loss {loss:>3.0%}: {mbps:7.1f} MB per CPU second, "
                      f"{us:6.2f} µs CPU per segment sent ({us / copy_us:.0f}x a copy), "
                      f"virtual time {vt / 1000:.1f} s")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
