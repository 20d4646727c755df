"""CPU cost of unwanted datagrams at the server: µs per datagram for garbage (one source IP
with random ports, and random source IPs), for a live session's datagrams replayed, and for
well-formed datagrams opening sessions from many addresses; each through the backend's frame
parser and TunnelListener's input path (no sockets: a fake backend), beside the cost of a
legitimate datagram of an established session.

    .venv/bin/python bench/flood.py [--n 20000] [--block aes] [--size 1350]
"""

import argparse
import asyncio
import os
import random
import socket
import time

from paqet.kcp.engine import encode_segment
from paqet.smux.frame import NOP, PSH, encode_frame
from paqet.tunnel.endpoint import TunnelListener
from paqet.tunnel.params import TunnelParams
from paqet.wire.datagram import DatagramCodec
from paqet.wire.frame import FrameBuilder, parse_payload

SERVER = "198.18.0.2"
PORT = 9999


class FakeBackend:
    local_port = PORT

    def __init__(self):
        self.a, self.b = socket.socketpair()
        self.sent = 0

    def fileno(self):
        return self.a.fileno()

    def recv_batch(self, max_n=256):
        return []

    def send(self, payload, addr):
        self.sent += 1

    def set_peer_flags(self, addr, flags):
        pass

    def close(self):
        self.a.close()
        self.b.close()


def frames(payloads, srcs):
    """Whole Ethernet frames as a sender would put them on the wire."""
    out = []
    builders = {}
    for p, (ip, port) in zip(payloads, srcs):
        b = builders.get((ip, port))
        if b is None:
            b = builders[(ip, port)] = FrameBuilder(src_ip4=ip, src_port=port, src_mac=b"\2" * 6,
                                                    dst_mac=b"\4" * 6)
        out.append(b.build(p, SERVER, PORT))
    return out


async def run(listener, raw_frames, repeat=5):
    """µs per frame: parse_payload (the backend's per-frame work) + the listener's input,
    and the loop's turn after every 256 frames (the pumps of sessions that got data: as one
    batch of the reader); CPU time, best of `repeat`."""
    best = float("inf")
    feed = listener._on_datagram
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time: the machine is shared
        for i, f in enumerate(raw_frames):
            item = parse_payload(f, "ether", PORT)
            if item is not None:
                feed(item[0], item[1])
            if i & 255 == 255:
                await asyncio.sleep(0)
        best = min(best, time.process_time() - t0)
    return best / len(raw_frames) * 1e6


def kcp_push(conv, sn, ts, data):
    return encode_segment(conv, 81, 0, 512, ts, sn, 0, data)


async def main_async(a):
    params = TunnelParams.for_mode("fast3", block=a.block, key="bench")
    rng = random.Random(1)
    n = a.n
    results = []

    def fresh():
        lst = TunnelListener(FakeBackend(), params)
        return lst

    # 1. garbage from one IP, random source ports
    garbage = [os.urandom(rng.randint(40, a.size)) for _ in range(n)]
    srcs = [("198.18.0.1", rng.randint(1024, 65535)) for _ in range(n)]
    lst = fresh()
    results.append(("garbage, 1 source IP", await run(lst, frames(garbage, srcs)), lst))
    # 2. garbage from random IPs
    srcs2 = [(f"198.18.{rng.randint(1, 254)}.{rng.randint(1, 254)}", rng.randint(1024, 65535))
             for _ in range(n)]
    lst = fresh()
    results.append(("garbage, random IPs", await run(lst, frames(garbage, srcs2)), lst))
    # 3. a live session: legitimate datagrams first (cost of real input), then the same again
    #    (a replay of captured datagrams)
    codec = DatagramCodec(params.block, "bench")
    conv = 0x12345678
    payload = os.urandom(max(1, codec.kcp_mtu(a.size) - 24))
    # (the first datagram carries an smux NOP, as a client's does, so the session counts
    # as established once it is read)
    nop = encode_frame(2, NOP, 0)
    psh = encode_frame(2, PSH, 5, payload[:len(payload) - 8])  # a stream never opened
    legit = [codec.encode(kcp_push(conv, sn, sn, psh if sn else nop), 0)[0]
             for sn in range(min(n, 4000))]
    src = [("198.18.0.1", 40000)] * len(legit)
    lst = fresh()
    fr = frames(legit, src)
    results.append(("legit session input", await run(lst, fr, repeat=1), lst))
    results.append(("replay into the session", await run(lst, fr), lst))
    # 4. well-formed first datagrams (valid key) from many addresses: new-session attempts
    firsts = [codec.encode(kcp_push(rng.getrandbits(32), 0, 0, b"x"), 0)[0] for _ in range(n)]
    srcs4 = [(f"198.18.{rng.randint(1, 254)}.{rng.randint(1, 254)}", rng.randint(1024, 65535))
             for _ in range(n)]
    lst = fresh()
    results.append(("valid first datagrams, random IPs", await run(lst, frames(firsts, srcs4), repeat=1),
                    lst))
    print(f"block {a.block}, datagrams of 40..{a.size} bytes, {n} per run")
    print(f"{'what':<36}{'µs/datagram':>12}  sessions  drops")
    for name, us, lst in results:
        drops = {k: v for k, v in getattr(lst, "drops", {}).items() if v}
        print(f"{name:<36}{us:>12.2f}  {len(lst.sessions):>8}  {drops}")
        lst.close()
    # the frame parser alone, for reference
    fr = frames(garbage[:n], srcs[:n])
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for f in fr:
            parse_payload(f, "ether", PORT)
        best = min(best, time.process_time() - t0)
    print(f"{'(parse_payload alone)':<36}{best / n * 1e6:>12.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--block", default="aes")
    ap.add_argument("--size", type=int, default=1350)
    a = ap.parse_args()
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
