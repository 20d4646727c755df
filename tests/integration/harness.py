"""An in-process tunnel over loopback UDP: our server and client stacks in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

from paqet.client.pool import ClientPool
from paqet.client.socks import Socks5Listener
from paqet.client.udpflows import UdpFlows
from paqet.net.udp import UdpBackend
from paqet.server.app import Server
from paqet.tunnel.connection import TunnelConnection
from paqet.tunnel.params import TunnelParams


class Tunnel:
    def __init__(self, params: TunnelParams, *, conns: int = 1, dialect: str = "alpha21",
                 username: str = "", password: str = "", health_interval: float = 0,
                 server_dialect: str = "auto", http: bool = False,
                 server_params: TunnelParams | None = None, wait_dial: bool = False) -> None:
        self.wait_dial = wait_dial  # the proxies' option (answer after the server's dial)
        self.server_dialect = server_dialect
        self.http = http
        self.server_params = server_params or params
        self.params = params
        self.conns = conns
        self.dialect = dialect
        self.username, self.password = username, password
        self.health_interval = health_interval

    async def __aenter__(self) -> "Tunnel":
        self.server_backend = UdpBackend("127.0.0.1", 0)
        self.server = Server(self.server_params, self.server_backend, dialect=self.server_dialect)
        await self.server.start()
        addr = ("127.0.0.1", self.server_backend.local_port)
        self.pool = ClientPool(self.params, addr, lambda: UdpBackend("127.0.0.1", 0),
                               conns=self.conns, remote_flags=[0x18], dialect=self.dialect,
                               health_interval=self.health_interval)
        await self.pool.start()
        self.flows = UdpFlows(self.pool)
        self.flows.start()
        self.socks = Socks5Listener(self.pool, self.flows, ("127.0.0.1", 0),
                                    username=self.username, password=self.password,
                                    wait_dial=self.wait_dial)
        await self.socks.start()
        self.httpproxy = None
        if self.http:
            from paqet.client.httpproxy import HttpProxyListener
            self.httpproxy = HttpProxyListener(self.pool, ("127.0.0.1", 0),
                                               username=self.username, password=self.password,
                                               wait_dial=self.wait_dial)
            await self.httpproxy.start()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.httpproxy is not None:
            await self.httpproxy.stop()
        await self.socks.stop()
        await self.flows.close()
        await self.pool.close()
        await self.server.stop()


class ServerPair:
    """A client session `a` and a server session `b` whose streams a Server handles, with
    no sockets between them: each side's datagrams wait in a_out / b_out until a test
    carries them over (so it can look at the target between steps)."""

    def __init__(self, params: TunnelParams, conv: int) -> None:
        self.a_out: list[bytes] = []
        self.b_out: list[bytes] = []
        self.a = TunnelConnection(conv=conv, peer=("b", 1), params=params, client=True,
                                  send=lambda w, p: self.a_out.append(w))
        self.b = TunnelConnection(conv=conv, peer=("a", 1), params=params, client=False,
                                  send=lambda w, p: self.b_out.append(w))
        self.srv = Server(params, backend=None)
        self.srv.serve_streams(self.b)

    async def to_server(self) -> None:
        """Let the client's pending sends happen, then feed them to the server in one batch
        (one pump, as the server's reader does)."""
        await _turns(8)
        out, self.a_out[:] = list(self.a_out), []
        for w in out:
            self.b.datagram_received(w)
        self.b.pump_now()

    async def to_client(self) -> None:
        await _turns(8)
        out, self.b_out[:] = list(self.b_out), []
        for w in out:
            self.a.datagram_received(w)
        self.a.pump_now()

    async def close(self) -> None:
        await self.srv._tasks.cancel_all(1)
        self.a.close()
        self.b.close()


async def session_ready(t: Tunnel) -> None:
    """Wait (up to 10 s) until the tunnel's first session is up and its dialect known."""
    for _ in range(200):
        if t.pool.slots[0].conn is not None and t.pool.slots[0].detected.is_set():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no session")


async def forward_get(port: int) -> tuple[int, str]:
    """Ask a blob_server behind a local forward port for its blob: (bytes, sha256 hex)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET\n")
    h = hashlib.sha256()
    n = 0
    while data := await asyncio.wait_for(r.read(1 << 16), 20):
        h.update(data)
        n += len(data)
    w.close()
    return n, h.hexdigest()


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def blob_server(size: int, seed: bytes = b"blob"):
    """A TCP server on loopback that sends `size` pseudo-random bytes to each client after
    reading one line, then closes. Yields (port, sha256 hex of the bytes)."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    data_hash = hashlib.sha256()
    left = size
    while left > 0:
        data_hash.update(block[:min(left, len(block))])
        left -= len(block)

    async def handle(reader, writer):
        try:
            await reader.readline()
            left = size
            while left > 0:
                chunk = block[:min(left, len(block))]
                writer.write(chunk)
                left -= len(chunk)
                await writer.drain()
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], data_hash.hexdigest()
    finally:
        srv.close()


@contextlib.asynccontextmanager
async def echo_server():
    async def handle(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def socks_connect(socks_port: int, host: str, port: int, *, username: str = "",
                        password: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A minimal SOCKS5 client: returns (reader, writer, reply code)."""
    from paqet.proto.socks5 import encode_address
    r, w = await asyncio.open_connection("127.0.0.1", socks_port)
    if username or password:
        w.write(b"\x05\x01\x02")
        await w.drain()
        assert await r.readexactly(2) == b"\x05\x02"
        u, p = username.encode(), password.encode()
        w.write(bytes((1, len(u))) + u + bytes((len(p),)) + p)
        await w.drain()
        status = await r.readexactly(2)
        if status[1] != 0:
            return r, w, -1
    else:
        w.write(b"\x05\x01\x00")
        await w.drain()
        assert await r.readexactly(2) == b"\x05\x00"
    w.write(b"\x05\x01\x00" + encode_address(host, port))
    await w.drain()
    head = await r.readexactly(4)
    alen = {1: 4, 4: 16}.get(head[3])
    if alen is None:
        alen = (await r.readexactly(1))[0]
    await r.readexactly(alen + 2)
    return r, w, head[1]


async def fetch(socks_port: int, port: int, **kw) -> tuple[int, str]:
    r, w, rep = await socks_connect(socks_port, "127.0.0.1", port, **kw)
    assert rep == 0, rep
    w.write(b"GET\n")
    await w.drain()
    h = hashlib.sha256()
    n = 0
    while data := await r.read(1 << 16):
        h.update(data)
        n += len(data)
    w.close()
    return n, h.hexdigest()


def rand(n: int) -> bytes:
    return os.urandom(n)
