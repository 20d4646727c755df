"""The HTTP proxy listener (beyond upstream): CONNECT tunnels and plain HTTP requests with
absolute-form URIs through the tunnel, with optional Basic proxy authentication. Parsing is
the sans-I/O paqet.proto.httpproxy; this is the asyncio shell around it.

Plain requests keep both connections for the next request when the client (HTTP/1.1, no
`Connection: close`) and the origin (its response framed and not `close`) allow it; the
tunnel stream to the origin is reused while requests go to the same host:port, else a new
one is opened. Responses are relayed as they arrive, untouched; h11 follows them only to
see where each ends.

Nothing waits for the server's dial (as the SOCKS5 listener): a plain request's head leaves
with the stream's open, and a failed dial, which our server reports on the stream, is still
answered with its exact status (502, 504) since no response was sent yet; CONNECT answers
200 at once, its first bytes leave with the open, and a failed dial resets the connection.
`wait_dial` makes CONNECT (and plain requests) wait for the dial result as before.
"""

from __future__ import annotations

import asyncio
import logging

from paqet.client.pool import ClientPool, NoTunnel
from paqet.client.socks import first_bytes
from paqet.proto import httpproxy as hp
from paqet.proto.socks5 import REPLY_NAMES
from paqet.tunnel.relay import CHUNK, relay_tcp, reset_transport
from paqet.tunnel.stream import StreamClosed

log = logging.getLogger("paqet.http")

IDLE_TIMEOUT = 60.0    # seconds a kept-alive client connection may wait for its next request
MAX_REQUESTS = 1000    # requests per client connection
DIAL_TIMEOUT = 12.0    # seconds for the server to connect to the target


class HttpProxyListener:
    def __init__(self, pool: ClientPool, listen: tuple[str, int], *, username: str = "",
                 password: str = "", head_timeout: float | None = None,
                 dial_timeout: float = DIAL_TIMEOUT, wait_dial: bool = False) -> None:
        self.pool = pool
        #: answer after the server's dial (CONNECT's exact status; one round trip more)
        self.wait_dial = wait_dial
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

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already accepted go on (a reload)."""
        if self.server is not None:
            self.server.close()

    async def stop(self) -> None:
        self.stop_accepting()
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

    async def _read_head(self, reader, parser: hp.RequestParser,
                         timeout: float) -> hp.Request:
        async with asyncio.timeout(timeout):
            while True:
                ev = parser.next_event()
                if isinstance(ev, hp.Request):
                    return ev
                parser.receive_data(await reader.read(CHUNK))

    async def _serve(self, reader, writer, peer) -> None:
        parser = hp.RequestParser()
        up: _Upstream | None = None
        try:
            for n in range(MAX_REQUESTS):
                keep = await self._one(reader, writer, peer, parser, n, up)
                if not isinstance(keep, tuple):
                    return
                up, rest = keep
                parser = hp.RequestParser()
                if rest:
                    parser.receive_data(rest)
        finally:
            if up is not None:
                up.st.close()

    async def _one(self, reader, writer, peer, parser, n: int, up: "_Upstream | None"):
        """One request; returns (upstream to keep, bytes already read of the next request)
        when the connection carries on, else None."""
        try:
            # the first request must come promptly; a kept-alive connection may idle longer
            req = await self._read_head(reader, parser,
                                        self.head_timeout if n == 0 else IDLE_TIMEOUT)
        except TimeoutError:
            if n == 0:
                log.debug("HTTP proxy %s: no request head within %.0fs", peer, self.head_timeout)
                await self._reply(writer, 408, "request head timeout")
            return None
        except hp.HttpProxyError as exc:
            if n == 0 or parser.started:
                log.debug("HTTP proxy %s: bad request: %s", peer, exc)
                await self._reply(writer, exc.status, str(exc))
            return None
        if not hp.check_auth(req, self.username, self.password):
            log.info("HTTP proxy authentication failed for %s:%s", peer[0], peer[1])
            await self._reply(writer, 407, "proxy authentication required",
                              [("Proxy-Authenticate", 'Basic realm="paqet"')])
            return None
        target = f"[{req.host}]:{req.port}" if ":" in req.host else f"{req.host}:{req.port}"
        label = f"{peer[0]}:{peer[1]} -> {target}"
        report = False  # the stream's first byte will be the server's dial report
        if up is not None and (up.host, up.port) == (req.host, req.port) and not req.is_connect \
                and not up.st.peer_fin and not up.st.closed and not up.st.buffered:
            # (bytes waiting from the origin after its last response: out of step, not reused)
            st, unknown = up.st, up.unknown  # the origin kept the connection: reuse it
            log.debug("HTTP %s %s%s (kept connection)", req.method, label, req.path[:200])
        else:
            if up is not None:
                up.st.close()
                up = None
            if req.is_connect and not self.wait_dial:
                await self._connect_at_once(req, parser, reader, writer, label, target)
                return None
            try:
                if self.wait_dial:
                    st, rep = await self.pool.connect_tcp(req.host, req.port,
                                                          timeout=self.dial_timeout)
                else:  # the head below leaves with the open; the report comes on the stream
                    st, report = await self.pool.open_tcp_reported(req.host, req.port)
                    rep = 0 if report else None  # (unknown: a failed dial is the end)
            except NoTunnel as exc:
                log.error("HTTP proxy %s: no tunnel: %s", label, exc)
                await self._reply(writer, 502, f"no tunnel to the paqet server: {exc}")
                return None
            if rep:
                st.close()
                self._dial_failed(label, rep)
                await self._reply(writer, hp.status_for_dial(rep), f"cannot connect to {target}")
                return None
            unknown = rep is None
            if req.is_connect:
                log.info("HTTP CONNECT %s", label)
                writer.write(hp.CONNECT_OK)
                rest = parser.trailing
                if rest:
                    st.write(rest)
                await relay_tcp(st, reader, writer, label)
                return None
            log.info("HTTP %s %s%s", req.method, label, req.path[:200])
        keep_alive = hp.wants_keep_alive(req)
        try:
            try:
                st.write(hp.forward_head(req, keep_alive=keep_alive))
            except StreamClosed:
                if up is not None:  # the origin closed the kept connection meanwhile
                    await self._reply(writer, 502, f"{target} closed the kept connection")
                    return None
                raise
            tracker = hp.ResponseTracker(req.method)
            ok = await self._plain(st, parser, req, reader, writer, unknown, target, tracker,
                                   report=report, label=label)
        except BaseException:
            if up is None or up.st is not st:
                st.close()  # (a kept stream is closed by _serve)
            raise
        if not (ok and keep_alive and tracker.done and tracker.reusable):
            if up is None or up.st is not st:
                st.close()
            return None
        if up is None or up.st is not st:
            up = _Upstream(req.host, req.port, st, unknown)
        return up, parser.trailing

    @staticmethod
    def _dial_failed(label: str, code: int) -> None:
        log.info("HTTP proxy %s: the server could not connect: %s (reply %#04x)", label,
                 REPLY_NAMES.get(code, "unknown"), code)

    async def _connect_at_once(self, req, parser, reader, writer, label: str,
                               target: str) -> None:
        """CONNECT: 200 now, the first bytes with the stream's open; a failed dial resets."""
        try:
            await self.pool.wait_ready()
        except NoTunnel as exc:
            log.error("HTTP proxy %s: no tunnel: %s", label, exc)
            await self._reply(writer, 502, f"no tunnel to the paqet server: {exc}")
            return
        log.info("HTTP CONNECT %s", label)
        writer.write(hp.CONNECT_OK)
        first = await first_bytes(reader, parser.trailing)
        if first is None:
            return
        try:
            st, reported = await self.pool.open_tcp_reported(req.host, req.port, first)
        except NoTunnel as exc:
            log.error("HTTP proxy %s: no tunnel: %s", label, exc)
            reset_transport(writer.transport)
            return

        def report(code: int) -> None:
            if code:
                self._dial_failed(label + " (connection reset)", code)

        await relay_tcp(st, reader, writer, label, report=report if reported else None)

    async def _plain(self, st, parser, req, reader, writer, unknown: bool, target: str,
                     tracker: hp.ResponseTracker, report: bool = False, label: str = "") -> bool:
        """Send the body on while relaying the response back (a 100-continue exchange
        needs both at once). True when the request was sent whole and the response relayed
        to its end (the connections may carry another request). report: the stream's first
        byte is the server's dial report (a failure is answered with its status here)."""
        async def body() -> None:
            nonlocal last
            while True:
                ev = parser.next_event()
                if ev is None:
                    data = await reader.read(CHUNK)
                    parser.receive_data(data)
                    continue
                if isinstance(ev, hp.Body):
                    st.write(hp.encode_body(req, ev.data))
                    await st.drain()
                    last = loop.time()
                elif isinstance(ev, hp.End):
                    tail = hp.encode_end(req)
                    if tail:
                        st.write(tail)
                        await st.drain()
                    return

        got = 0
        loop = asyncio.get_running_loop()
        last = loop.time()  # the last byte either way (for limits.idle_timeout)
        failed = 0  # the dial report, when it said the server could not connect

        async def response() -> None:
            nonlocal got, last, report, failed
            try:
                while True:
                    data = await st.read(CHUNK)
                    if report and data:
                        report = False
                        if data[0]:
                            failed = data[0]
                            return
                        data = data[1:]
                        if not data:
                            continue
                    if not data:
                        tracker.feed(b"")
                        return
                    got += len(data)
                    last = loop.time()
                    writer.write(data)
                    await writer.drain()
                    if tracker.feed(data):
                        return  # the response is complete: the stream may carry another
            except StreamClosed:
                pass

        up = asyncio.ensure_future(body())
        down = asyncio.ensure_future(response())
        idle = st.conn.params.idle_timeout
        err = None
        sent = False
        try:
            for _ in range(1 << 20):  # ends with the response, an error or the idle limit
                wait = None
                if idle > 0:
                    wait = last + idle - loop.time()
                    if wait <= 0:
                        log.info("HTTP proxy request to %s idle for %.0fs, closing", target, idle)
                        err = TimeoutError()
                        break
                pending = {t for t in (up, down) if not t.done()}
                await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if up.done() and not up.cancelled() and up.exception() is not None:
                    err = up.exception()   # a malformed body or the client went away
                    break
                if down.done():
                    # complete only if the whole request went out before the response ended
                    # (an early answer from the origin leaves the stream out of step)
                    sent = up.done() and not up.cancelled()
                    break
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
            return sent and tracker.done
        if failed:
            self._dial_failed(label, failed)
            await self._reply(writer, hp.status_for_dial(failed), f"cannot connect to {target}")
        elif isinstance(err, hp.HttpProxyError):
            await self._reply(writer, err.status, str(err))
        elif isinstance(err, TimeoutError):
            await self._reply(writer, 504, f"no response from {target} within {idle:.0f}s")
        elif err is None:
            # nothing came back: the dial failed on a server without the status extension,
            # or the origin closed without answering
            await self._reply(writer, 502, f"no response from {target}"
                              + (" (the server may have failed to connect)" if unknown else ""))
        return False


class _Upstream:
    """A tunnel stream to an origin kept between requests of one client connection."""

    def __init__(self, host: str, port: int, st, unknown: bool) -> None:
        self.host, self.port, self.st, self.unknown = host, port, st, unknown
