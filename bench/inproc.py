"""Whole-stack throughput in one process over loopback UDP (no root): SOCKS5 client ->
tunnel -> server -> TCP source. Prints MB/s and CPU seconds per MB; --profile shows where
the time goes.

    .venv/bin/python bench/inproc.py [--mb 30] [--mode fast3] [--block aes] [--profile]
"""

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))

from harness import Tunnel, blob_server, fetch  # noqa: E402
from paqet.tunnel.params import TunnelParams  # noqa: E402


async def once(params, size):
    async with Tunnel(params) as t, blob_server(size) as (port, digest):
        t0, c0 = time.perf_counter(), time.process_time()
        n, got = await fetch(t.socks.port, port)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        assert n == size and got == digest
        return dt, dc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=30)
    ap.add_argument("--mode", default="fast3")
    ap.add_argument("--block", default="aes")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sndwnd", type=int, default=1024)
    ap.add_argument("--rcvwnd", type=int, default=1024)
    ap.add_argument("--loss", type=float, default=0.0, help="drop this fraction of datagrams")
    a = ap.parse_args()
    if a.loss:
        import random
        from paqet.net.udp import UdpBackend
        rng = random.Random(5)
        orig = UdpBackend.send

        def lossy(self, payload, addr):
            if rng.random() >= a.loss:
                orig(self, payload, addr)
        UdpBackend.send = lossy
    params = TunnelParams.for_mode(a.mode, block=a.block, key="bench", sndwnd=a.sndwnd,
                                   rcvwnd=a.rcvwnd)
    size = a.mb << 20
    prof = cProfile.Profile() if a.profile else None
    if prof:
        prof.enable()
    dt, dc = asyncio.run(once(params, size))
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    print(f"{a.mode}/{a.block}: {a.mb} MB in {dt:.2f} s = {a.mb / dt:.1f} MB/s, "
          f"{dc / a.mb * 1000:.1f} ms CPU per MB (both ends, one process)")


if __name__ == "__main__":
    main()
