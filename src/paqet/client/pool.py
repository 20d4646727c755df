"""The client's tunnel connections: `conn` sessions to the server, streams spread over them
round-robin, PTCPF announced once per session, a PPING/PPONG health check, dialect
detection, and reconnection with backoff.

Upstream opens three smux streams per application connection (an empty probe, a PTCPF
stream and the data stream) and has no health check; here a session announces its flags
once and is checked every `health_interval` seconds instead.

Failover (beyond upstream): with backup servers, a session that fails (smux keepalive
timeout, failed health check, a backend that cannot be opened) reconnects to the next
server in the list, wrapping around. Its streams end with it; new streams go to the new
session. While any session is on a backup, the first server is probed every
`failback_interval` seconds with a separate session; once it answers, sessions move back to
it: new streams use the first server at once, and the backup session is closed when its
last stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from paqet.kcp.rate import SharedPath
from paqet.proto import appmsg
from paqet.tunnel.connection import ConnectionClosed, TunnelConnection
from paqet.tunnel.clock import now_ms
from paqet.tunnel.endpoint import ClientTunnel
from paqet.tunnel.params import TunnelParams
from paqet.tunnel.stream import StreamClosed, TunnelStream
from paqet.tunnel.tasks import TaskSet

log = logging.getLogger("paqet.client")

ENCODED_KEEP = 256  # app messages kept in wire form per pool (ClientPool._encode)

BackendFactory = Callable[[], object]


class NoTunnel(ConnectionError):
    """No healthy tunnel session could be had in time."""


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.tunnel: ClientTunnel | None = None
        self.failures = 0             # consecutive failed reconnects or health checks
        self.ready = asyncio.Event()  # a live session is in place
        self.reconnecting: asyncio.Task | None = None
        self.dialect: str | None = None
        self.caps = 0                 # extensions the server offered (PHELLO)
        self.detected = asyncio.Event()  # dialect known (set at once unless "auto")
        self.server_index = 0         # which of the pool's servers this slot talks to

    @property
    def conn(self) -> TunnelConnection | None:
        t = self.tunnel
        if t is None or t.conn.closed:
            return None
        return t.conn


class ClientPool:
    def __init__(self, params: TunnelParams, server: tuple, backend_factory: BackendFactory, *,
                 conns: int = 1, remote_flags: list[int] | None = None, dialect: str = "alpha21",
                 health_interval: float = 10.0, health_timeout: float = 5.0,
                 open_timeout: float = 15.0, extensions: bool = True,
                 backups: list[tuple] | None = None, failback_interval: float = 30.0) -> None:
        self.extensions = extensions
        self.params = params
        self.server = server   # the first (primary) server
        self.servers = [server] + list(backups or [])
        self.failback_interval = failback_interval
        self.failovers = 0     # times a session moved to another server
        self.failbacks = 0     # times sessions moved back to the first server
        self._retiring: set[ClientTunnel] = set()
        self.backend_factory = backend_factory
        self.slots = [_Slot(i) for i in range(max(1, conns))]
        self.remote_flags = list(remote_flags or [])
        self.configured_dialect = dialect
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.open_timeout = open_timeout
        self._rr = 0
        self._encoded: dict[tuple, bytes] = {}  # (message, dialect) -> wire (_encode)
        #: server -> the rate controllers of the sessions to it (kcp/rate.py SharedPath)
        self._paths: dict[tuple, SharedPath] = {}
        self._tasks = TaskSet()
        self._spawn = self._tasks.spawn
        self._closing = False
        #: called with (conn, reason) whenever a session ends (the runtime's stats)
        self.on_session_closed: Callable[[TunnelConnection, str], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Create every session (no packet is needed for that: KCP has no handshake)."""
        for slot in self.slots:
            self._connect(slot)
        if self.health_interval > 0:
            self._spawn(self._health_loop())
        if len(self.servers) > 1 and self.failback_interval > 0:
            self._spawn(self._failback_loop())

    def connections(self) -> list[TunnelConnection]:
        """Every live session: the slots' and the backup sessions still finishing streams
        after a failback."""
        conns = [s.conn for s in self.slots if s.conn is not None]
        return conns + [t.conn for t in list(self._retiring) if not t.conn.closed]

    def backends(self) -> list:
        """The packet backends of the live slots (one per session)."""
        return [s.tunnel.backend for s in self.slots if s.tunnel is not None]

    def server_of(self, slot: _Slot) -> tuple:
        return self.servers[slot.server_index % len(self.servers)]

    def _connect(self, slot: _Slot) -> None:
        backend = self.backend_factory()
        server = self.server_of(slot)
        path = self._paths.get(server)
        if path is None:
            path = self._paths[server] = SharedPath()
        tunnel = ClientTunnel(backend, server, self.params,
                              on_closed=lambda conn, reason, s=slot: self._on_closed(s, conn, reason),
                              path=path)
        slot.tunnel = tunnel
        slot.ready.set()
        port = getattr(backend, "local_port", "?")
        log.info("connection %d to %s:%s up (local port %s, conv %#010x)", slot.index + 1,
                 server[0], server[1], port, tunnel.conv)
        self._announce_flags(tunnel.conn, slot)
        slot.caps = 0
        if self.configured_dialect == "auto":
            slot.dialect = None
            slot.detected.clear()
            self._spawn(self._detect_dialect(slot, tunnel.conn))
        else:
            slot.dialect = self.configured_dialect
            slot.detected.set()
            if slot.dialect == "alpha21" and self.extensions:
                self._spawn(self._hello(slot, tunnel.conn))

    def _dialect(self, slot: _Slot) -> str:
        return slot.dialect or ("alpha21" if self.configured_dialect == "auto"
                                else self.configured_dialect)

    def _encode(self, msg, slot: _Slot) -> bytes:
        """msg in the slot's dialect. Messages are immutable and a forward or a busy SOCKS
        client repeats its targets, so the wire form is kept (up to ENCODED_KEEP)."""
        key = (msg, self._dialect(slot))
        wire = self._encoded.get(key)
        if wire is None:
            if len(self._encoded) >= ENCODED_KEEP:
                self._encoded.clear()
            wire = self._encoded[key] = appmsg.encode(msg, key[1])
        return wire

    def _announce_flags(self, conn: TunnelConnection, slot: _Slot) -> None:
        async def announce() -> None:
            try:
                st = conn.open_stream()
                st.write(appmsg.encode(appmsg.TcpFlags(tuple(self.remote_flags)),
                                       self._dialect(slot)))
                await st.drain()
                st.close()
            except (StreamClosed, ConnectionError) as exc:
                log.debug("PTCPF announcement on connection %d failed: %s", slot.index + 1, exc)
        if self.remote_flags:
            self._spawn(announce())

    def _on_closed(self, slot: _Slot, conn: TunnelConnection, reason: str) -> None:
        if self.on_session_closed is not None:
            self.on_session_closed(conn, reason)
        if self._closing:
            return
        if slot.tunnel is None or slot.tunnel.conn is not conn:
            return
        server = self.server_of(slot)
        slot.ready.clear()
        if len(self.servers) > 1:
            self._fail_over(slot)
            nxt = self.server_of(slot)
            log.warning("connection %d to %s:%s lost (%s), failing over to %s:%s",
                        slot.index + 1, server[0], server[1], reason, nxt[0], nxt[1])
        else:
            log.info("connection %d to %s:%s lost (%s), reconnecting", slot.index + 1,
                     server[0], server[1], reason)
        try:
            slot.tunnel.backend.close()
        except Exception:
            pass
        slot.tunnel._reader.close()
        if slot.reconnecting is None or slot.reconnecting.done():
            slot.reconnecting = self._spawn(self._reconnect(slot))

    async def _reconnect(self, slot: _Slot) -> None:
        delay = min(10.0, 0.25 * (2 ** min(slot.failures, 6)))
        slot.failures += 1
        await asyncio.sleep(delay)
        while not self._closing:
            try:
                self._connect(slot)
                return
            except Exception as exc:  # OSError, or the runtime's StartupError
                delay = min(10.0, max(0.5, delay * 2))
                log.error("reconnecting connection %d failed: %s (retry in %.1fs)",
                          slot.index + 1, exc, delay)
                if len(self.servers) > 1:
                    self._fail_over(slot)
                await asyncio.sleep(delay)

    def _fail_over(self, slot: _Slot) -> None:
        slot.server_index = (slot.server_index + 1) % len(self.servers)
        self.failovers += 1

    async def _failback_loop(self) -> None:
        """While a slot is on a backup, probe the first server; move slots back when it
        answers."""
        while not self._closing:
            await asyncio.sleep(self.failback_interval)
            away = [s for s in self.slots if s.server_index != 0]
            if not away:
                continue
            if not await self.probe(self.servers[0], self.health_timeout):
                log.debug("first server %s:%s still unreachable", *self.servers[0][:2])
                continue
            if self._closing:
                return
            log.warning("first server %s:%s answers again: moving %d connection(s) back",
                        self.servers[0][0], self.servers[0][1], len(away))
            self.failbacks += 1
            for slot in away:
                if slot.server_index == 0:
                    continue
                old = slot.tunnel
                slot.server_index = 0
                slot.failures = 0
                if slot.reconnecting is not None and not slot.reconnecting.done():
                    slot.reconnecting.cancel()
                if old is not None and not old.conn.closed:
                    self._retire(old)
                try:
                    self._connect(slot)
                except Exception as exc:
                    log.error("connection %d: cannot reconnect to the first server: %s",
                              slot.index + 1, exc)
                    slot.ready.clear()
                    self._fail_over(slot)
                    slot.reconnecting = self._spawn(self._reconnect(slot))

    def _retire(self, tunnel: ClientTunnel) -> None:
        """Let a session's existing streams finish, then close it (at most an hour)."""
        self._retiring.add(tunnel)

        async def wait_idle() -> None:
            try:
                for _ in range(3600):
                    if tunnel.conn.closed or not tunnel.conn.streams:
                        break
                    await asyncio.sleep(1.0)
                await tunnel.aclose("moved back to the first server")
            finally:
                self._retiring.discard(tunnel)
        self._spawn(wait_idle())

    async def probe(self, server: tuple, timeout: float) -> bool:
        """Whether `server` answers a PPING on a short-lived session of its own. Any
        datagram back counts (a gob-era server acknowledges but does not answer PPING)."""
        try:
            backend = self.backend_factory()
        except Exception as exc:  # OSError, or the runtime's StartupError (firewall, socket)
            log.debug("probe of %s:%s: %s", server[0], server[1], exc)
            return False
        tunnel = ClientTunnel(backend, server, self.params)
        conn = tunnel.conn
        try:
            rtt = await self.ping(conn, "alpha21", timeout)
            return rtt is not None or conn.last_rx_ms != conn.created_ms
        except (ConnectionError, OSError):
            return False
        finally:
            try:
                await asyncio.wait_for(tunnel.aclose("probe done"), 1.0)
            except (asyncio.TimeoutError, Exception):
                tunnel.close("probe done")

    async def close(self) -> None:
        self._closing = True
        retiring = list(self._retiring)  # their waiters leave the set when cancelled
        await self._tasks.cancel_all(0)
        for tunnel in retiring:
            tunnel.close("client shutting down")
        for slot in self.slots:
            if slot.tunnel is not None:
                try:
                    await asyncio.wait_for(slot.tunnel.aclose("client shutting down"), 1.0)
                except (asyncio.TimeoutError, Exception):
                    slot.tunnel.close("client shutting down")

    # -- streams -------------------------------------------------------------------------
    async def _pick(self) -> tuple[_Slot, TunnelConnection]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.open_timeout
        while True:
            slot = self._next_slot(ready=False)
            if slot is not None:
                conn = slot.conn
                if not slot.detected.is_set():
                    # the first streams of an `auto` session wait for the dialect probe
                    try:
                        await asyncio.wait_for(slot.detected.wait(), 10.0)
                    except asyncio.TimeoutError:
                        pass
                return slot, conn
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                names = ", ".join(f"{s[0]}:{s[1]}" for s in self.servers)
                raise NoTunnel(f"no tunnel session to {names} within {self.open_timeout:.0f}s")
            waiters = [asyncio.ensure_future(s.ready.wait()) for s in self.slots]
            try:
                await asyncio.wait(waiters, timeout=min(remaining, 1.0),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    def _next_slot(self, ready: bool) -> _Slot | None:
        """The next slot with a session, round robin; ready: only one whose session is open
        and whose dialect is known."""
        n = len(self.slots)
        for i in range(n):
            slot = self.slots[(self._rr + i) % n]
            conn = slot.conn
            if conn is None or (ready and (conn.closed or not slot.detected.is_set())):
                continue
            self._rr = (self._rr + i + 1) % n
            return slot
        return None

    def open_now(self, msg) -> TunnelStream | None:
        """open() without waiting: None unless a session is up and its dialect known."""
        slot = self._next_slot(ready=True)
        if slot is None:
            return None
        st = slot.conn.open_stream()
        st.write(self._encode(msg, slot))
        return st

    async def open(self, msg) -> TunnelStream:
        """A new stream that starts with the app message `msg` (PTCP / PUDP)."""
        slot, conn = await self._pick()
        try:
            st = conn.open_stream()
        except ConnectionClosed as exc:
            raise NoTunnel(str(exc)) from None
        st.write(self._encode(msg, slot))
        return st

    async def open_tcp(self, host: str, port: int) -> TunnelStream:
        return await self.open(appmsg.TcpConnect(host, port))

    async def wait_ready(self) -> None:
        """Return once a session is up and may open another stream (else NoTunnel: none
        within open_timeout, or limits.max_streams reached), so that a proxy can still
        refuse a request it could not carry before it tells its client "connected". The
        next open picks the same session."""
        slot, conn = await self._pick()
        self._rr = slot.index
        if len(conn.streams) >= self.params.max_streams:
            raise NoTunnel(f"session to {conn.peer[0]}:{conn.peer[1]} has {len(conn.streams)} "
                           "streams open (limits.max_streams)")

    async def open_tcp_reported(self, host: str, port: int,
                                first: bytes = b"") -> tuple[TunnelStream, bool]:
        """A TCP stream whose header, and `first` after it (the application's first bytes,
        in the same smux frame), are queued at once, without waiting for the dial: they
        leave in the datagram of the stream's SYN (so do bytes written before the next loop
        turn). The
        flag: the stream's first byte is the server's dial report (relay.SocketRelay's
        `report`): PTCPR, or PTCPS with a server that has only that (its 0 comes alone);
        False with a Go server, where a failed dial is just the stream's end."""
        slot, conn = await self._pick()
        try:
            st = conn.open_stream()
        except ConnectionClosed as exc:
            raise NoTunnel(str(exc)) from None
        if slot.caps & appmsg.CAP_REPORT:
            msg = appmsg.TcpConnectReport(host, port)
        elif slot.caps & appmsg.CAP_STATUS:
            msg = appmsg.TcpConnectStatus(host, port)
        else:
            msg = appmsg.TcpConnect(host, port)
        head = self._encode(msg, slot)
        st.write(head + first if first else head)
        return st, msg.__class__ is not appmsg.TcpConnect

    async def connect_tcp(self, host: str, port: int, timeout: float = 12.0) -> tuple[TunnelStream, int | None]:
        """A TCP stream and, when the server offers the status extension, its dial result
        as a SOCKS5 reply code (None: unknown, as with Go servers)."""
        slot, conn = await self._pick()
        try:
            st = conn.open_stream()
        except ConnectionClosed as exc:
            raise NoTunnel(str(exc)) from None
        if not (slot.caps & appmsg.CAP_STATUS):
            st.write(self._encode(appmsg.TcpConnect(host, port), slot))
            return st, None
        st.write(appmsg.encode(appmsg.TcpConnectStatus(host, port), "alpha21"))
        try:
            async with asyncio.timeout(timeout):
                b = await st.read(1)
        except TimeoutError:
            st.close()
            return st, 0x06
        except StreamClosed:
            b = b""
        if not b:
            st.close()
            return st, 0x01
        return st, b[0]

    async def _hello(self, slot: _Slot, conn: TunnelConnection) -> None:
        """Ask a Python server for extensions; a Go server just closes the stream."""
        try:
            st = conn.open_stream()
        except ConnectionClosed:
            return
        reader = appmsg.MessageReader("alpha21")
        try:
            caps = (appmsg.CAP_STATUS | appmsg.CAP_REPORT
                    | (appmsg.CAP_PACED if conn.paced else 0))
            st.write(appmsg.encode(appmsg.Hello(caps), "alpha21"))
            async with asyncio.timeout(5.0):
                while True:
                    data = await st.read()
                    if not data:
                        return
                    msg = reader.feed(data)
                    if msg is not None:
                        if isinstance(msg, appmsg.Hello) and conn is (slot.conn):
                            slot.caps = msg.caps & (appmsg.CAP_STATUS | appmsg.CAP_REPORT)
                            if msg.caps & appmsg.CAP_PACED:
                                conn.peer_paces()
                            # (any capability: the server is ours)
                            conn.announce_windows = True
                            log.debug("connection %d: server extensions %#x", slot.index + 1,
                                      slot.caps)
                        return
        except (TimeoutError, StreamClosed, appmsg.ProtocolError):
            return
        finally:
            st.close()

    async def open_udp(self, host: str, port: int) -> TunnelStream:
        return await self.open(appmsg.UdpAssociate(host, port))

    # -- health and dialect ------------------------------------------------------------
    async def ping(self, conn: TunnelConnection, dialect: str, timeout: float) -> float | None:
        """One PPING/PPONG round trip on a fresh stream: the RTT in seconds, or None."""
        st = conn.open_stream()
        t0 = time.monotonic()  # not loop.time(): uvloop's is whole milliseconds, cached per turn
        try:
            st.write(appmsg.encode(appmsg.Ping(), dialect))
            reader = appmsg.MessageReader(dialect)
            async with asyncio.timeout(timeout):
                while True:
                    data = await st.read()
                    if not data:
                        return None
                    msg = reader.feed(data)
                    if msg is not None:
                        return time.monotonic() - t0 if isinstance(msg, appmsg.Pong) else None
        except (TimeoutError, StreamClosed, appmsg.ProtocolError):
            return None
        finally:
            st.close()

    async def _detect_dialect(self, slot: _Slot, conn: TunnelConnection) -> None:
        try:
            await self._detect_dialect_inner(slot, conn)
        finally:
            slot.detected.set()

    async def _detect_dialect_inner(self, slot: _Slot, conn: TunnelConnection) -> None:
        """PPING in the alpha.21 encoding: alpha.21 answers 5 bytes, alpha.20 3 bytes, a
        gob-era server nothing (app-protocol.md §4.6)."""
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            if conn.closed:
                return
            st = conn.open_stream()
            got = b""
            try:
                st.write(appmsg.encode(appmsg.Ping(), "alpha21"))
                async with asyncio.timeout(3.0):
                    while len(got) < 5:
                        data = await st.read()
                        if not data:
                            break
                        got += data
            except (TimeoutError, StreamClosed):
                pass
            finally:
                st.close()
            if got[:5] == b"\x50\x01\x02\x00\x00":
                slot.dialect = "alpha21"
            elif got[:3] == b"\x50\x01\x02":
                slot.dialect = "alpha20"
            elif not got and conn.last_rx_ms != conn.created_ms:
                # The server acknowledged our packets but never answered: a gob-era server.
                slot.dialect = "gob"
            else:
                await asyncio.sleep(min(5.0, 1.0 + attempt * 2))
                continue
            log.info("connection %d: server speaks the %s app protocol", slot.index + 1,
                     slot.dialect)
            slot.detected.set()
            if slot.dialect == "alpha21" and self.extensions:
                await self._hello(slot, conn)
            if slot.dialect != "alpha21":
                self._announce_flags(conn, slot)
            return
        log.info("connection %d: server dialect unknown (no answer), using alpha21",
                 slot.index + 1)
        _ = loop

    async def _health_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.health_interval)
            for slot in self.slots:
                conn = slot.conn
                if conn is None or self._dialect(slot) == "gob":
                    continue   # gob-era servers do not answer PPING; smux keepalive decides
                # A busy session proves itself: datagrams arriving is all we need. Only an
                # idle one is pinged, and a late PPONG counts as failure only if nothing at
                # all arrived meanwhile (a PPONG can queue behind megabytes of data).
                if ((now_ms() - conn.last_rx_ms) & 0xFFFFFFFF) < self.health_interval * 1000:
                    slot.failures = 0
                    continue
                rx_before = conn.last_rx_ms
                rtt = await self.ping(conn, self._dialect(slot), self.health_timeout)
                if rtt is not None:
                    slot.failures = 0
                    log.debug("connection %d healthy, PPING rtt %.1f ms", slot.index + 1, rtt * 1000)
                    continue
                if conn.closed or conn.last_rx_ms != rx_before:
                    continue
                log.info("connection %d: no PPONG within %.0fs, reconnecting", slot.index + 1,
                         self.health_timeout)
                conn.close("health check failed")
