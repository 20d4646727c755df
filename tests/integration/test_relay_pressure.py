"""The callback relay (tunnel.relay) under back-pressure: with a session send budget far
smaller than what parallel streams push, reading a socket pauses and must be resumed by the
session (room in the budget) or the stream (its window took the bytes); a lost wake-up
leaves a transfer stuck. Both directions, several streams at once, every byte checked."""

import asyncio
import dataclasses
import hashlib

import pytest

from harness import Tunnel, blob_server, echo_server, fetch, socks_connect
from paqet.tunnel.params import TunnelParams

pytestmark = pytest.mark.timeout(60)
# a 128 KiB send budget and 64 KiB stream windows: every stream pauses many times
P = dataclasses.replace(TunnelParams.for_mode("fast3", key="pressure"), send_buffer=128 << 10,
                        streambuf=64 << 10, smuxbuf=256 << 10)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


def test_parallel_downloads_with_a_small_send_budget_all_complete_intact():
    size = 3 << 20

    async def main():
        async with Tunnel(P) as t, blob_server(size) as (port, digest):
            results = await asyncio.gather(*(fetch(t.socks.port, port) for _ in range(6)))
            return results, digest, t.pool.slots[0].conn
    results, digest, conn = run(main())
    assert results == [(size, digest)] * 6
    assert not conn._room_waiters or conn.closed  # no relay left waiting for room


def test_parallel_uploads_with_a_small_send_budget_all_echo_back_intact():
    size = 2 << 20
    block = hashlib.sha256(b"up").digest() * 2048  # 64 KiB

    async def one(t, port, i):
        r, w, rep = await socks_connect(t.socks.port, "127.0.0.1", port)
        assert rep == 0
        want = hashlib.sha256()
        got = hashlib.sha256()
        n = 0

        async def reader():
            nonlocal n
            while n < size:
                data = await r.read(1 << 16)
                if not data:
                    break
                got.update(data)
                n += len(data)
        task = asyncio.ensure_future(reader())
        left = size
        while left > 0:
            chunk = block[:min(left, len(block))]
            want.update(chunk)
            w.write(chunk)
            await w.drain()
            left -= len(chunk)
        await asyncio.wait_for(task, 60)
        w.close()
        return n, got.hexdigest() == want.hexdigest()

    async def main():
        async with Tunnel(P) as t, echo_server() as port:
            return await asyncio.gather(*(one(t, port, i) for i in range(4)))
    assert run(main()) == [(size, True)] * 4
