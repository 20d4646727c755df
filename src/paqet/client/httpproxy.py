"""The HTTP proxy listener (beyond upstream): CONNECT tunnels and plain HTTP requests with
absolute-form URIs through the tunnel, with optional Basic proxy authentication. Parsing is
the sans-I/O paqet.proto.httpproxy; this is the asyncio shell around it.

One request per client connection: a plain request is forwarded with `Connection: close`,
the origin's response is relayed as it comes, and the connection ends with it.
"""

from __future__ import annotations

import asyncio
import logging

from paqet.client.pool import ClientPool, NoTunnel
from paqet.proto import httpproxy as hp
from paqet.tunnel.relay import CHUNK, relay_tcp, set_nodelay
from paqet.tunnel.stream import StreamClosed

log = logging.getLogger("paqet.http")

DIAL_TIMEOUT = 12.0    # seconds for the server to connect to the target


class HttpProxyListener:
    def __init__(self, pool: ClientPool, listen: tuple[str, int], *, username: str = "",
                 password: str = "", head_timeout: float | None = None,
                 dial_timeout: float = DIAL_TIMEOUT) -> None:
        self.pool = pool
        self.listen = listen
        self.username = username
        self.password = password
        #: seconds for the request head (limits.request_timeout unless given)
        self.head_timeout = pool.params.request_timeout if head_timeout is None else head_timeout
        self.dial_timeout = dial_timeout
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
        addr = self.server.sockets[0].getsockname()
        log.info("HTTP proxy listening on %s:%s", addr[0], addr[1])

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError, StreamClosed) as exc:
            log.debug("HTTP proxy connection from %s ended: %s", peer, exc)
        finally:
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _reply(self, writer, status: int, message: str, headers=None) -> None:
        writer.write(hp.response(status, message, headers))
        await writer.drain()

    async def _read_head(self, reader, parser: hp.RequestParser) -> hp.Request:
        async with asyncio.timeout(self.head_timeout):
            while True:
                ev = parser.next_event()
                if isinstance(ev, hp.Request):
                    return ev
                parser.receive_data(await reader.read(CHUNK))

    async def _serve(self, reader, writer, peer) -> None:
        parser = hp.RequestParser()
        try:
            req = await self._read_head(reader, parser)
        except TimeoutError:
            log.debug("HTTP proxy %s: no request head within %.0fs", peer, self.head_timeout)
            await self._reply(writer, 408, "request head timeout")
            return
        except hp.HttpProxyError as exc:
            log.debug("HTTP proxy %s: bad request: %s", peer, exc)
            await self._reply(writer, exc.status, str(exc))
            return
        if not hp.check_auth(req, self.username, self.password):
            log.info("HTTP proxy authentication failed for %s:%s", peer[0], peer[1])
            await self._reply(writer, 407, "proxy authentication required",
                              [("Proxy-Authenticate", 'Basic realm="paqet"')])
            return
        target = f"[{req.host}]:{req.port}" if ":" in req.host else f"{req.host}:{req.port}"
        try:
            st, rep = await self.pool.connect_tcp(req.host, req.port, timeout=self.dial_timeout)
        except NoTunnel as exc:
            log.error("HTTP proxy %s -> %s: no tunnel: %s", peer, target, exc)
            await self._reply(writer, 502, f"no tunnel to the paqet server: {exc}")
            return
        if rep:
            status = hp.status_for_dial(rep)
            log.info("HTTP proxy %s -> %s: the server could not connect (reply %#04x)", peer,
                     target, rep)
            await self._reply(writer, status, f"cannot connect to {target}")
            return
        set_nodelay(writer)
        label = f"{peer[0]}:{peer[1]} -> {target}"
        if req.is_connect:
            log.info("HTTP CONNECT %s", label)
            writer.write(hp.CONNECT_OK)
            rest = parser.trailing
            if rest:
                st.write(rest)
            await relay_tcp(st, reader, writer, label)
            return
        log.info("HTTP %s %s%s", req.method, label, req.path[:200])
        try:
            st.write(hp.forward_head(req))
            await self._plain(st, parser, req, reader, writer, rep is None, target)
        finally:
            st.close()

    async def _plain(self, st, parser, req, reader, writer, unknown: bool, target: str) -> None:
        """Send the body on while relaying the response back (a 100-continue exchange
        needs both at once); the connection ends with the response."""
        async def body() -> None:
            while True:
                ev = parser.next_event()
                if ev is None:
                    data = await reader.read(CHUNK)
                    parser.receive_data(data)
                    continue
                if isinstance(ev, hp.Body):
                    st.write(hp.encode_body(req, ev.data))
                    await st.drain()
                elif isinstance(ev, hp.End):
                    tail = hp.encode_end(req)
                    if tail:
                        st.write(tail)
                        await st.drain()
                    return

        got = 0

        async def response() -> None:
            nonlocal got
            try:
                while data := await st.read(CHUNK):
                    got += len(data)
                    writer.write(data)
                    await writer.drain()
            except StreamClosed:
                pass

        up = asyncio.ensure_future(body())
        down = asyncio.ensure_future(response())
        err = None
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up.done() and not up.cancelled() and up.exception() is not None:
                err = up.exception()   # a malformed body or the client went away
            else:
                await down
        finally:
            for t in (up, down):
                if not t.done():
                    t.cancel()
            for t in (up, down):
                try:
                    await t
                except BaseException:
                    pass
        if got:
            return
        if isinstance(err, hp.HttpProxyError):
            await self._reply(writer, err.status, str(err))
        elif err is None:
            # nothing came back: the dial failed on a server without the status extension,
            # or the origin closed without answering
            await self._reply(writer, 502, f"no response from {target}"
                              + (" (the server may have failed to connect)" if unknown else ""))
