"""The runtime's firewall-owning wrapper is transparent both ways: attributes read and set
on it are the backend's (a reader's `on_stash` callback must reach the AF_PACKET backend)."""

import asyncio

from paqet.runtime import _FirewalledBackend
from paqet.tunnel.endpoint import _Reader


class Inner:
    def __init__(self):
        self.on_stash = None
        self.closed = False
        self.r, self.w = __import__("os").pipe()

    def fileno(self):
        return self.r

    def recv_batch(self, n):
        return []

    def close(self):
        self.closed = True
        for fd in (self.r, self.w):
            __import__("os").close(fd)


class Fw:
    removed = False

    def remove(self):
        self.removed = True


def test_attributes_are_the_backends_both_ways():
    inner, fw = Inner(), Fw()
    b = _FirewalledBackend(inner, fw)
    b.on_stash = print
    assert inner.on_stash is print and b.on_stash is print
    assert "on_stash" not in vars(b)
    b.close()
    assert inner.closed and fw.removed


def test_reader_hooks_the_stash_through_the_wrapper():
    async def main():
        inner = Inner()
        reader = _Reader(_FirewalledBackend(inner, None), lambda p, a: None)
        assert inner.on_stash == reader._stashed
        reader.close()
        assert inner.on_stash is None
        inner.close()
    asyncio.run(main())
