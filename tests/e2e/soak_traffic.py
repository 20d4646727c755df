"""Mixed, checksummed traffic through a paqet client (run inside the client namespace).

    soak_traffic.py SECONDS TARGET_IP TARGET_PORT OUT.json [WORKERS]

Workers loop over a weighted mix until SECONDS have passed: downloads through SOCKS5
(1 KiB .. 8 MiB, sha256 against the expected blob), echo uploads through SOCKS5 and through
the TCP forward on 127.0.0.1:8081 (every byte compared), bursts of short streams opened and
closed, UDP exchanges through SOCKS5 UDP ASSOCIATE and through the UDP forward on
127.0.0.1:5353 (every datagram compared). SOCKS5 is on 127.0.0.1:1080. Writes a JSON
summary: operations, bytes checked, bytes corrupted, bytes lost, errors (first few kept).
"""

import asyncio
import hashlib
import json
import os
import random
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))
from paqet.proto.socks5 import build_udp_header, encode_address, parse_udp_header  # noqa: E402
from soak_target import blob_chunks  # noqa: E402

SOCKS = ("127.0.0.1", 1080)
TCP_FWD = ("127.0.0.1", 8081)
UDP_FWD = ("127.0.0.1", 5353)
OP_TIMEOUT = 120.0


class Stats:
    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.checked = 0
        self.corrupted = 0
        self.lost = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.datagrams = 0

    def ok(self, kind: str, n: int) -> None:
        self.ops[kind] = self.ops.get(kind, 0) + 1
        self.checked += n

    def fail(self, kind: str, detail: str, lost: int = 0, corrupted: int = 0) -> None:
        self.error_count += 1
        self.lost += lost
        self.corrupted += corrupted
        if len(self.errors) < 20:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {kind}: {detail}")


async def socks_open(host: str, port: int):
    r, w = await asyncio.open_connection(*SOCKS)
    w.write(b"\x05\x01\x00")
    await w.drain()
    if await r.readexactly(2) != b"\x05\x00":
        raise ConnectionError("SOCKS5 greeting refused")
    w.write(b"\x05\x01\x00" + encode_address(host, port))
    await w.drain()
    head = await r.readexactly(4)
    alen = {1: 4, 4: 16}.get(head[3])
    if alen is None:
        alen = (await r.readexactly(1))[0]
    await r.readexactly(alen + 2)
    if head[1] != 0:
        w.close()
        raise ConnectionError(f"SOCKS5 reply {head[1]:#04x}")
    return r, w


async def download(st: Stats, ip: str, port: int, rng: random.Random) -> None:
    size = rng.choice([1024, 16384, 65536, 300_000, 1 << 20, 1 << 20, 4 << 20, 8 << 20])
    seed = rng.randrange(1 << 30)
    want = hashlib.sha256()
    for c in blob_chunks(size, seed):
        want.update(c)
    r, w = await socks_open(ip, port)
    got = hashlib.sha256()
    n = 0
    try:
        w.write(f"{size} {seed}\n".encode())
        await w.drain()
        while data := await r.read(1 << 16):
            got.update(data)
            n += len(data)
    finally:
        w.close()
    if n != size:
        st.fail("download", f"{n} of {size} bytes", lost=size - n)
    elif got.digest() != want.digest():
        st.fail("download", f"{size} bytes, checksum differs", corrupted=size)
    else:
        st.ok("download", size)


async def echo_over(st: Stats, kind: str, r, w, rng: random.Random, total: int) -> None:
    payload = rng.randbytes(min(total, 1 << 16))
    sent = 0
    got = 0
    bad = 0

    async def writer():
        nonlocal sent
        while sent < total:
            n = min(len(payload), total - sent)
            w.write(payload[:n])
            sent += n
            await w.drain()

    task = asyncio.ensure_future(writer())
    try:
        while got < total:
            data = await r.read(1 << 16)
            if not data:
                break
            # the echo comes back in the order written: compare against the pattern
            off = got % len(payload)
            i = 0
            while i < len(data):
                k = min(len(data) - i, len(payload) - off)
                if data[i:i + k] != payload[off:off + k]:
                    bad += k
                i += k
                off = 0
            got += len(data)
        await task
    finally:
        task.cancel()
        w.close()
    if got < total:
        st.fail(kind, f"{got} of {total} echoed bytes", lost=total - got)
    elif bad:
        st.fail(kind, f"{bad} of {total} echoed bytes differ", corrupted=bad)
    else:
        st.ok(kind, total)


async def socks_echo(st, ip, port, rng):
    r, w = await socks_open(ip, port + 1)
    await echo_over(st, "socks_echo", r, w, rng, rng.choice([100, 5000, 200_000, 2 << 20]))


async def forward_echo(st, ip, port, rng):
    r, w = await asyncio.open_connection(*TCP_FWD)
    await echo_over(st, "forward_echo", r, w, rng, rng.choice([100, 5000, 200_000, 1 << 20]))


async def short_streams(st, ip, port, rng):
    for _ in range(rng.randrange(5, 30)):
        r, w = await socks_open(ip, port + 1)
        msg = rng.randbytes(rng.randrange(1, 2000))
        w.write(msg)
        await w.drain()
        try:
            got = await r.readexactly(len(msg))
        except asyncio.IncompleteReadError as exc:
            w.close()
            st.fail("short_stream", "closed early", lost=len(msg) - len(exc.partial))
            continue
        w.close()
        if got != msg:
            st.fail("short_stream", "differs", corrupted=len(msg))
        else:
            st.ok("short_stream", len(msg))


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.q: asyncio.Queue = asyncio.Queue()

    def connection_made(self, t) -> None:
        self.t = t

    def datagram_received(self, data, addr) -> None:
        self.q.put_nowait(data)


async def _udp_exchanges(st, kind, send, recv, rng, count) -> None:
    """One datagram out, its echo back, count times (each compared)."""
    for i in range(count):
        msg = i.to_bytes(4, "big") + rng.randbytes(rng.randrange(1, 1400))
        got = None
        for _attempt in range(3):  # UDP: a datagram may be dropped by a local queue
            send(msg)
            try:
                got = await asyncio.wait_for(recv(), 5.0)
            except asyncio.TimeoutError:
                continue
            break
        st.datagrams += 1
        if got is None:
            st.fail(kind, f"datagram {i} unanswered", lost=len(msg))
        elif got != msg:
            st.fail(kind, f"datagram {i} differs", corrupted=len(msg))
        else:
            st.ok(kind, len(msg))


async def udp_associate(st, ip, port, rng):
    r, w = await asyncio.open_connection(*SOCKS)
    loop = asyncio.get_running_loop()
    tr = None
    try:
        w.write(b"\x05\x01\x00")
        await w.drain()
        assert await r.readexactly(2) == b"\x05\x00"
        w.write(b"\x05\x03\x00" + encode_address("0.0.0.0", 0))
        await w.drain()
        head = await r.readexactly(4)
        if head[1] != 0:
            raise ConnectionError(f"UDP ASSOCIATE reply {head[1]:#04x}")
        addr = await r.readexactly(6)
        relay = (socket.inet_ntoa(addr[:4]), int.from_bytes(addr[4:], "big"))
        tr, proto = await loop.create_datagram_endpoint(_UdpClient, local_addr=("127.0.0.1", 0))
        hdr = build_udp_header(ip, port + 1)

        async def recv():
            while True:
                data = await proto.q.get()
                return parse_udp_header(data)[4]
        await _udp_exchanges(st, "udp_associate", lambda m: tr.sendto(hdr + m, relay), recv,
                             rng, rng.randrange(10, 100))
    finally:
        if tr is not None:
            tr.close()
        w.close()


async def udp_forward(st, ip, port, rng):
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_datagram_endpoint(_UdpClient, remote_addr=UDP_FWD)
    try:
        await _udp_exchanges(st, "udp_forward", tr.sendto, proto.q.get, rng,
                             rng.randrange(10, 100))
    finally:
        tr.close()


MIX = [(download, 4), (socks_echo, 3), (forward_echo, 2), (short_streams, 2),
       (udp_associate, 2), (udp_forward, 2)]


async def worker(st: Stats, ip: str, port: int, end: float, seed: int) -> None:
    rng = random.Random(seed)
    funcs = [f for f, wgt in MIX for _ in range(wgt)]
    while time.monotonic() < end:
        f = rng.choice(funcs)
        try:
            await asyncio.wait_for(f(st, ip, port, rng), OP_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, AssertionError) as exc:
            st.fail(f.__name__, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)


async def main() -> None:
    seconds, ip, port, out = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 6
    st = Stats()
    t0 = time.monotonic()
    end = t0 + seconds
    await asyncio.gather(*(worker(st, ip, port, end, 1000 + i) for i in range(workers)))
    summary = {"seconds": round(time.monotonic() - t0, 1), "workers": workers, "ops": st.ops,
               "operations": sum(st.ops.values()), "bytes_checked": st.checked,
               "datagrams": st.datagrams, "bytes_corrupted": st.corrupted,
               "bytes_lost": st.lost, "errors": st.error_count, "first_errors": st.errors}
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
