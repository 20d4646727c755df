"""Capture, garbage and replay floods over AF_PACKET for tests/e2e/test_flood.py (run
inside a namespace; every mode stops after its time limit or on SIGTERM).

    flood_tool.py capture IFACE DST_IP PORT OUT SECONDS
        frames to DST_IP:PORT leaving IFACE -> OUT (4-byte length + frame each), stops on
        SIGTERM, after SECONDS or at 200000 frames
    flood_tool.py garbage IFACE SRC_MAC DST_MAC SRC_IP DST_IP PORT SECONDS
        random payloads (40..1350 bytes) from random source ports, valid IP/TCP checksums
    flood_tool.py replay IFACE FILE SECONDS
        the captured frames as they were (the client's headers, payloads and checksums)
Both floods send as fast as one process can and print "sent N frames in S s" at the end.
"""

import os
import random
import signal
import socket
import struct
import sys
import time

from paqet.wire.frame import FrameBuilder

ETH_P_ALL = 3
stop = False


def _term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, _term)


def capture(iface, dst_ip, port, out, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, ETH_P_ALL))
    s.settimeout(0.2)
    n = 0
    end = time.monotonic() + seconds
    with open(out, "wb") as f:
        while not stop and time.monotonic() < end and n < 200000:
            try:
                raw = s.recv(4096)
            except (socket.timeout, InterruptedError):
                continue
            if len(raw) < 54 or raw[12:14] != b"\x08\x00" or raw[23] != 6:
                continue
            if socket.inet_ntoa(raw[30:34]) != dst_ip:
                continue
            ihl = (raw[14] & 15) * 4
            if struct.unpack_from("!H", raw, 14 + ihl + 2)[0] != port:
                continue
            f.write(struct.pack("!I", len(raw)) + raw)
            f.flush()
            n += 1
    print(f"captured {n} frames", flush=True)


def _mac(text):
    return bytes.fromhex(text.replace(":", ""))


def _blast(iface, frames, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    send = s.send
    n = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while not stop and time.monotonic() < end:
        for fr in frames:
            try:
                send(fr)
            except OSError:  # ENOBUFS: the queue is full, keep going
                pass
        n += len(frames)
    dt = time.monotonic() - t0
    print(f"sent {n} frames in {dt:.2f} s ({n / dt:.0f}/s)", flush=True)


def garbage(iface, src_mac, dst_mac, src_ip, dst_ip, port, seconds):
    rng = random.Random(os.getpid())
    frames = []
    for _ in range(256):
        b = FrameBuilder(src_mac=_mac(src_mac), dst_mac=_mac(dst_mac), src_ip4=src_ip,
                         src_port=rng.randint(1024, 65535))
        for _ in range(16):
            frames.append(b.build(os.urandom(rng.randint(40, 1350)), dst_ip, port))
    _blast(iface, frames, seconds)


def replay(iface, path, seconds):
    frames = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + 4 <= len(data):
        (n,) = struct.unpack_from("!I", data, off)
        frames.append(data[off + 4:off + 4 + n])
        off += 4 + n
    if not frames:
        print("nothing to replay", flush=True)
        sys.exit(1)
    print(f"replaying {len(frames)} frames;", end=" ", flush=True)
    _blast(iface, frames, seconds)


def main(argv):
    mode = argv[0]
    if mode == "capture":
        capture(argv[1], argv[2], int(argv[3]), argv[4], float(argv[5]))
    elif mode == "garbage":
        garbage(*argv[1:6], int(argv[6]), float(argv[7]))
    elif mode == "replay":
        replay(argv[1], argv[2], float(argv[3]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
