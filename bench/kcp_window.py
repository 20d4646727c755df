"""Does a large window stay cheap? KCP with the rate controller on a modelled bottleneck
(tests/sim.py: line rate, 500-frame buffer, delay, random loss), virtual clock, one process:
the line rate grows with the RTT so that the flight grows from a few hundred to several
thousand segments, and the CPU time per segment sent (sender and receiver together, fast and
RTO retransmissions, out-of-order buffer, ACK processing) is printed beside the smallest
case's, measured in the same run. Flat ratios mean amortised O(1) per segment.

    .venv/bin/python bench/kcp_window.py [--seconds 6] [--loss 1]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from sim import Bottleneck, BulkKcp, Sim  # noqa: E402

from paqet.kcp.rate import RateController  # noqa: E402
from paqet.kcp.window import ReceiveWindow  # noqa: E402

# (RTT ms, line bytes per ms): BDP in segments ~ rate * rtt / 1408
CASES = [(20, 12500), (100, 12500), (200, 12500), (200, 37500), (200, 75000)]


def run(rtt: int, rate: float, loss: float, seconds: float) -> dict:
    a = BulkKcp("fast3", snd=16384, rcv=1024, total=1 << 40, backlog=16384,
                cc=RateController(init_cwnd=512, max_cwnd=16384), start_after=2 * rtt)
    b = BulkKcp("fast3", snd=128, rcv=16384, rw=ReceiveWindow(initial=512, maximum=16384))
    b.k.rw.peer_paces = True
    b.request()
    a.request()
    ab = Bottleneck(rate=rate, buffer=max(500, int(rate * rtt / 1408 / 2)), delay_ms=rtt // 2,
                    loss=loss, seed=1)
    ba = Bottleneck(rate=rate, buffer=500, delay_ms=rtt // 2, loss=loss, seed=2)
    sim = Sim(a, b, ab, ba)
    peak = [0]

    def each():
        n = len(a.k._unacked)
        if n > peak[0]:
            peak[0] = n
    t = time.process_time()
    sim.run(lambda: False, max_ms=int(seconds * 1000), each=each)
    cpu = time.process_time() - t
    sent = a.k.segments_out
    return {"rtt": rtt, "mbit": rate * 8 / 1000, "bdp": int(rate * rtt / 1408),
            "peak_flight": peak[0], "segments": sent, "cpu_s": cpu,
            "us_per_segment": cpu / max(1, sent) * 1e6,
            "retrans": a.k.retransmissions, "line_pct": b.received / (seconds * 1000 * rate)
            * 100}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="virtual seconds per case")
    ap.add_argument("--loss", type=float, default=1.0, help="random loss each way, %%")
    a = ap.parse_args()
    rows = []
    for rtt, rate in CASES:
        r = run(rtt, rate, a.loss / 100, a.seconds)
        rows.append(r)
        print(f"[bench] RTT {rtt} ms, {r['mbit']:.0f} Mbit/s: peak flight {r['peak_flight']}, "
              f"{r['segments']} segments, {r['us_per_segment']:.1f} us each", flush=True)
    ref = rows[0]["us_per_segment"]
    print(f"\n| RTT ms | line Mbit/s | BDP segs | peak flight | segments | retrans | "
          f"% of line | CPU us/segment | ratio to the first |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rtt']} | {r['mbit']:.0f} | {r['bdp']} | {r['peak_flight']} | "
              f"{r['segments']} | {r['retrans']} | {r['line_pct']:.0f} | "
              f"{r['us_per_segment']:.1f} | {r['us_per_segment'] / ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
