"""Our codec + KCP + smux against a real kcp-go/smux peer (Debian's kcptun) over UDP on
loopback: 10 MB byte-exact both ways, as the client side against kcptun-server and as the
server side for kcptun-client, for every kcptun cipher, FEC off and 10/3, smux v1 and v2,
modes fast and fast3 (slow pure-Python ciphers move 1 MB)."""

import asyncio
import hashlib
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kcptun  # noqa: E402

from paqet.net.udp import UdpBackend  # noqa: E402
from paqet.tunnel.endpoint import ClientTunnel, TunnelListener  # noqa: E402
from paqet.tunnel.params import TunnelParams  # noqa: E402

pytestmark = [pytest.mark.kcptun, pytest.mark.timeout(180)]
_reason = kcptun.available()
if _reason:
    pytestmark.append(pytest.mark.skip(reason=f"kcptun interop skipped: {_reason}"))

SLOW = {"tea", "xtea", "twofish", "blowfish", "3des"}
CASES = [(c, fec, v, "fast3" if i % 2 == 0 else "fast")
         for i, c in enumerate(kcptun.CIPHERS) for fec in ((0, 0), (10, 3)) for v in (1, 2)]


def params(crypt, fec, smuxver, mode):
    return TunnelParams.for_mode(mode, block=crypt, key=kcptun.kcptun_key("interop"),
                                 dshard=fec[0], pshard=fec[1], sndwnd=1024, rcvwnd=1024,
                                 smux_version=smuxver, keepalive_ms=2000,
                                 keepalive_timeout_ms=30000)


async def echo_server():
    async def handle(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        finally:
            w.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def exchange(write, read_exactly, size):
    data = os.urandom(size)
    got = bytearray()

    async def sender():
        for i in range(0, size, 65536):
            await write(data[i:i + 65536])

    async def receiver():
        while len(got) < size:
            got.extend(await read_exactly(min(65536, size - len(got))))

    await asyncio.wait_for(asyncio.gather(sender(), receiver()), 120)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("crypt,fec,smuxver,mode", CASES,
                         ids=[f"{c}-fec{f[0]}-v{v}-{m}" for c, f, v, m in CASES])
def test_our_client_against_kcptun_server(crypt, fec, smuxver, mode):
    size = (1 << 20) if crypt in SLOW else (10 << 20)

    async def main():
        echo = await echo_server()
        eport = echo.sockets[0].getsockname()[1]
        kport = kcptun.free_port()
        with kcptun.server(f"127.0.0.1:{kport}", f"127.0.0.1:{eport}", crypt=crypt, mode=mode,
                           fec=fec, smuxver=smuxver):
            tun = ClientTunnel(UdpBackend("127.0.0.1", 0), ("127.0.0.1", kport),
                               params(crypt, fec, smuxver, mode))
            try:
                st = tun.conn.open_stream()

                async def write(b):
                    st.write(b)
                    await st.drain()
                await exchange(write, st.readexactly, size)
                st.close()
            finally:
                tun.close()
        echo.close()
    asyncio.run(main())


@pytest.mark.parametrize("crypt,fec,smuxver,mode", CASES,
                         ids=[f"{c}-fec{f[0]}-v{v}-{m}" for c, f, v, m in CASES])
def test_kcptun_client_against_our_server(crypt, fec, smuxver, mode):
    size = (1 << 20) if crypt in SLOW else (10 << 20)

    async def main():
        echo = await echo_server()
        eport = echo.sockets[0].getsockname()[1]
        backend = UdpBackend("127.0.0.1", 0)
        listener = TunnelListener(backend, params(crypt, fec, smuxver, mode))
        tasks = []

        async def relay(st):
            r, w = await asyncio.open_connection("127.0.0.1", eport)

            async def up():
                while data := await st.read(65536):
                    w.write(data)
                    await w.drain()

            async def down():
                while data := await r.read(65536):
                    st.write(data)
                    await st.drain()
            await asyncio.gather(up(), down(), return_exceptions=True)

        async def serve():
            while (conn := await listener.accept()) is not None:
                async def streams(c=conn):
                    while (st := await c.accept_stream()) is not None:
                        tasks.append(asyncio.ensure_future(relay(st)))
                tasks.append(asyncio.ensure_future(streams()))
        tasks.append(asyncio.ensure_future(serve()))
        lport = kcptun.free_port(kcptun.socket.SOCK_STREAM)
        with kcptun.client(f"127.0.0.1:{lport}", f"127.0.0.1:{backend.local_port}", crypt=crypt,
                           mode=mode, fec=fec, smuxver=smuxver):
            for _ in range(50):
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", lport)
                    break
                except OSError:
                    await asyncio.sleep(0.1)

            async def write(b):
                w.write(b)
                await w.drain()
            await exchange(write, r.readexactly, size)
            w.close()
        for t in tasks:
            t.cancel()
        listener.close()
        echo.close()
    asyncio.run(main())
