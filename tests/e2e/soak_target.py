"""Targets for the soak and fault tests (run inside the server namespace).

    soak_target.py PORT

PORT     TCP: reads one line "SIZE SEED\\n" and answers SIZE bytes of blob(SEED), then closes
         (a never-ending stream when SIZE is 0).
PORT+1   TCP and UDP echo.
PORT+2   TCP: accepts and never reads (a stuck target).
PORT+3   TCP: reads one line "SIZE SEED\\n", sends SIZE bytes of blob(SEED), then resets the
         connection (RST) instead of closing it.
"""

import asyncio
import random
import socket
import struct
import sys

BLOCK = 65536


def block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def blob_chunks(size: int, seed: int):
    """The bytes of blob(seed): its 64 KiB block repeated, cut at size."""
    b = block(seed)
    left = size
    while left > 0:
        n = min(left, BLOCK)
        yield b[:n]
        left -= n


class _Udp(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t

    def datagram_received(self, data, addr):
        self.t.sendto(data, addr)


async def _blob(r, w, reset=False):
    try:
        line = await r.readline()
        size, seed = map(int, line.split())
        if size == 0:
            b = block(seed)
            while True:
                w.write(b)
                await w.drain()
        for chunk in blob_chunks(size, seed):
            w.write(chunk)
            await w.drain()
        if reset:
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (ConnectionError, ValueError):
        pass
    finally:
        w.close()


async def _echo(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


async def main(port: int) -> None:
    stuck = []

    async def sink(r, w):
        stuck.append(w)  # never read, never closed

    servers = [await asyncio.start_server(_blob, None, port),
               await asyncio.start_server(_echo, None, port + 1),
               await asyncio.start_server(sink, None, port + 2),
               await asyncio.start_server(lambda r, w: _blob(r, w, reset=True), None, port + 3)]
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Udp, local_addr=("0.0.0.0", port + 1))
    print("targets ready", flush=True)
    _ = servers
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
