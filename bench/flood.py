"""CPU cost of unwanted datagrams at the server: µs per datagram for garbage (one source IP
with random ports, and random source IPs), for a live session's datagrams replayed, and for
well-formed datagrams opening sessions from many addresses; each through the backend's frame
parser and TunnelListener's input path (no sockets: a fake backend), beside the cost of a
legitimate datagram of an established session.

Then the same garbage (random source IPs) against a server with one user and with --users
users (tunnel.users: every user's key may have to be tried): µs per datagram as fast as it
goes, and the CPU share of a flood paced at --rate frames a second for --seconds, the two
servers alternating --repeat times in this run, with the ratio of each pair.

    .venv/bin/python bench/flood.py [--n 20000] [--block aes] [--size 1350] [--users 20]
                                    [--rate 100000] [--seconds 2] [--repeat 3]
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
from paqet.tunnel.users import UserSpec
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
    await users_flood(a, params, garbage, srcs2)


async def paced(listener, raw_frames, rate: float, seconds: float) -> tuple[float, float]:
    """Feed frames at `rate` a second for `seconds` (cycling through raw_frames), the
    reader's way (parse, then the listener), yielding to the loop between batches of 256.
    Returns (CPU seconds, frames fed, wall seconds)."""
    feed = listener._on_datagram
    n = len(raw_frames)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    c0 = time.process_time()
    sent = 0
    end = t0 + seconds
    while True:
        now = loop.time()
        if now >= end:
            break
        due = int((now - t0) * rate)
        if due <= sent:
            await asyncio.sleep(min(0.001, end - now))
            continue
        for _ in range(min(due - sent, 256)):
            item = parse_payload(raw_frames[sent % n], "ether", PORT)
            if item is not None:
                feed(item[0], item[1])
            sent += 1
        await asyncio.sleep(0)
    return time.process_time() - c0, sent, loop.time() - t0


async def users_flood(a, params, garbage, srcs):
    """Garbage from random source IPs against 1 user and a.users users."""
    raw = frames(garbage, srcs)
    many = [UserSpec(f"user{i}", f"bench-key-{i}") for i in range(a.users)]
    one = many[:1]

    def listener(users):
        return TunnelListener(FakeBackend(), params, users=users)
    print(f"\ngarbage from random source IPs, a server with 1 user and with {a.users} users")
    lst1, lstn = listener(one), listener(many)
    u1 = await run(lst1, raw)
    un = await run(lstn, raw)
    print(f"  as fast as it goes: {u1:.2f} µs/datagram with 1 user, {un:.2f} with {a.users} "
          f"({un / u1:.2f}x); drops with {a.users}: "
          f"{ {k: v for k, v in lstn.drops.items() if v} }")
    lst1.close()
    lstn.close()
    print(f"  paced at {a.rate:.0f} frames/s for {a.seconds:g} s each, alternating; CPU "
          f"per frame (a busy machine may not reach the rate: the share of a core is "
          f"given at the rate reached):")
    ratios = []
    for r in range(a.repeat):
        got = {}
        for label, users in (("1", one), (str(a.users), many)):
            lst = listener(users)
            cpu, sent, wall = await paced(lst, raw, a.rate, a.seconds)
            got[label] = cpu / sent
            tried = lst.drops.get("trial_limit", 0)
            print(f"    run {r + 1}, {label:>3} user(s): {cpu / sent * 1e6:5.2f} µs/frame, "
                  f"{sent / wall:8.0f} frames/s, CPU {cpu / wall * 100:5.1f} % of a core, "
                  f"trial_limit drops {tried}", flush=True)
            lst.close()
        ratios.append(got[str(a.users)] / got["1"])
        print(f"    run {r + 1}: {a.users} users / 1 user = {ratios[-1]:.2f}x", flush=True)
    print(f"  CPU per frame, {a.users} users / 1 user: min {min(ratios):.2f}x, max "
          f"{max(ratios):.2f}x over {len(ratios)} pairs")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--block", default="aes")
    ap.add_argument("--size", type=int, default=1350)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rate", type=float, default=100000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
