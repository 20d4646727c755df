"""TCP and UDP echo servers for the e2e tests (run inside the server namespace)."""
import asyncio
import sys


class Udp(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t

    def datagram_received(self, data, addr):
        self.t.sendto(data, addr)


async def main(port):
    async def handle(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()
    await asyncio.start_server(handle, None, port)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Udp, local_addr=("0.0.0.0", port))
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
