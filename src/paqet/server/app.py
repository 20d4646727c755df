"""The paqet server: accept tunnel sessions, read one app message per stream, dial targets
(TCP and UDP) and relay; answer PPING; apply each client's TCP flags (PTCPF)."""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket

from paqet.proto import appmsg, socks5
from paqet.tunnel.connection import TunnelConnection
from paqet.tunnel.endpoint import TunnelListener
from paqet.tunnel.guard import ListenerLimits
from paqet.tunnel.handoff import handoff
from paqet.tunnel.params import TunnelParams
from paqet.tunnel.relay import HeldSocket, relay_held
from paqet.tunnel.stream import StreamClosed, TunnelStream
from paqet.tunnel.tasks import TaskSet

log = logging.getLogger("paqet.server")

DIAL_TIMEOUT = 8.0
UDP_MAX = 4096
UDP_QUEUE = 64  # datagrams from a target waiting for the stream's window; more are dropped


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpTarget(asyncio.DatagramProtocol):
    """A target's datagrams go into a bounded queue that one task sends down the stream
    (UDP semantics: when the stream's window is shut, the newest datagrams are dropped)."""

    def __init__(self, st: TunnelStream) -> None:
        self.st = st
        self.transport: asyncio.DatagramTransport | None = None
        self.error: Exception | None = None
        self.loop = loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.queue: collections.deque[bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.drops = 0
        self.last = loop.time()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) > UDP_MAX or len(self.queue) >= UDP_QUEUE:
            self.drops += 1
            return
        self.last = self.loop.time()
        self.queue.append(data)
        self.wake.set()

    async def forward(self) -> None:
        try:
            while True:
                while self.queue:
                    await self.st.send_datagram(self.queue.popleft())
                self.wake.clear()
                await self.wake.wait()
        except StreamClosed:
            self._finish(None)

    def error_received(self, exc: Exception) -> None:
        self._finish(exc)

    def connection_lost(self, exc) -> None:
        self._finish(exc)

    def _finish(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(exc)


class Server:
    def __init__(self, params: TunnelParams, backend, *, dial_timeout: float = DIAL_TIMEOUT,
                 max_sessions: int | None = None, dialect: str = "auto",
                 limits: ListenerLimits | None = None, users=None) -> None:
        #: "auto" tells the dialect per stream; a fixed one makes this server read only that
        #: dialect, as an old Go release would (used to test clients against them)
        self.dialect = dialect
        self.params = params
        self.backend = backend
        self.dial_timeout = dial_timeout
        self.listener: TunnelListener | None = None
        self.max_sessions = max_sessions
        self.limits = limits
        self.users = users  # tunnel.users.UserSpec list; None: params.key, one unnamed user
        self._tasks = TaskSet()
        self._spawn = self._tasks.spawn
        self._stopping = False

    async def start(self) -> None:
        self.listener = TunnelListener(self.backend, self.params, max_sessions=self.max_sessions,
                                       limits=self.limits, users=self.users,
                                       on_session_closed=self._session_closed)
        self._spawn(self._accept_loop())

    async def _accept_loop(self) -> None:
        assert self.listener is not None
        while True:
            conn = await self.listener.accept()
            if conn is None:
                return
            log.info("accepted new connection from %s:%s", conn.peer[0], conn.peer[1])
            self.serve_streams(conn)

    def serve_streams(self, conn: TunnelConnection) -> None:
        """Handle the streams a session's client opens (each once the pump's events that
        brought it are processed: `_opened`)."""
        conn.set_stream_handler(lambda st: conn.after_events(lambda: self._opened(conn, st)))

    def _session_closed(self, conn: TunnelConnection, reason: str) -> None:
        if not self._stopping:
            log.info("connection from %s:%s closed: %s", conn.peer[0], conn.peer[1], reason)
        try:
            self.backend.set_peer_flags(conn.peer, None)
        except Exception:
            pass

    def _opened(self, conn: TunnelConnection, st: TunnelStream) -> None:
        """A new stream, with the bytes that came with its SYN (a client sends its header
        there, and often the first bytes to relay too). When they hold a TCP connect to an
        IP address, the target is dialled here, in the pump, and the bytes after the header
        go to it as soon as it is connected (at once for a target on this host): no task,
        loop turn or resolver before the request leaves. The rest (and every other message)
        is handled by the stream's task. This runs inside the session's pump: whatever goes
        wrong here ends the stream, never the session."""
        try:
            early = self._early(st)
        except Exception:
            log.exception("stream %d from %s:%s failed", st.sid, conn.peer[0], conn.peer[1])
            st.close()
            return
        self._spawn(self._stream(conn, st, early))

    def _early(self, st: TunnelStream):
        """(message or its error, reader, socket or dial error or None, connected) from the
        bytes buffered now, or None when there are none."""
        if not st.buffered:
            return None
        reader = appmsg.MessageReader(self.dialect)
        try:
            msg = reader.feed(st.read_nowait())
        except Exception as exc:  # reported by the stream's task, as before
            msg = exc
        sock = _dial_now(msg)
        ready = isinstance(sock, socket.socket) and _connected(sock)
        if ready:
            if isinstance(msg, appmsg.TcpConnectStatus) and not st.peer_fin:
                st.write(b"\x00")  # connected: the client may send
            reader.rest = _send_now(sock, reader.rest)
            handoff()  # the target, when on this host, takes its connection and request now
        return msg, reader, sock, ready

    async def _stream(self, conn: TunnelConnection, st: TunnelStream, early=None) -> None:
        try:
            await self._handle(conn, st, early)
        except (StreamClosed, ConnectionError) as exc:
            log.debug("stream %d from %s ended: %s", st.sid, conn.peer, exc)
        except Exception:
            log.exception("stream %d from %s failed", st.sid, conn.peer)
        finally:
            st.close()
            log.debug("stream %d from %s:%s closed", st.sid, conn.peer[0], conn.peer[1])

    async def _read_message(self, st: TunnelStream, reader=None):
        reader = reader or appmsg.MessageReader(self.dialect)
        async with asyncio.timeout(self.params.request_timeout):
            while True:
                data = await st.read(65536)
                if not data:
                    if reader.dialect == "alpha20" or reader.dialect is None:
                        msg = reader.feed_eof() if hasattr(reader, "feed_eof") else None
                        if msg is not None:
                            return msg, reader
                    raise EOFError("EOF")
                msg = reader.feed(data)
                if msg is not None:
                    return msg, reader

    async def _handle(self, conn: TunnelConnection, st: TunnelStream, early=None) -> None:
        msg, reader, sock, ready = early or (None, None, None, False)
        try:
            if isinstance(msg, Exception):
                raise msg
            if msg is None:
                msg, reader = await self._read_message(st, reader)
        except appmsg.ProtocolError as exc:
            log.error("failed to read protocol message from stream %d: %s", st.sid, exc)
            return
        except (EOFError, TimeoutError) as exc:
            log.debug("failed to read protocol message from stream %d: %s", st.sid, exc or "EOF")
            return
        if isinstance(msg, appmsg.Ping):
            st.write(appmsg.encode(appmsg.Pong(), reader.dialect or "alpha21"))
            await st.drain()
        elif isinstance(msg, appmsg.TcpFlags):
            flags = list(msg.flags)
            self.backend.set_peer_flags(conn.peer, flags or None)
            log.debug("client %s:%s set TCP flags %s", conn.peer[0], conn.peer[1], flags)
        elif isinstance(msg, appmsg.Hello) and self.dialect == "auto":
            if msg.caps & appmsg.CAP_PACED:
                conn.peer_paces()
            caps = (appmsg.CAP_STATUS | appmsg.CAP_REPORT
                    | (appmsg.CAP_PACED if conn.paced else 0))
            st.write(appmsg.encode(appmsg.Hello(caps), "alpha21"))
            await st.drain()
        elif isinstance(msg, appmsg.TcpConnect):
            await self._tcp(conn, st, msg.host, msg.port, reader.rest, sock=sock, ready=ready)
        elif isinstance(msg, appmsg.TcpConnectStatus):
            await self._tcp(conn, st, msg.host, msg.port, reader.rest, status=not ready,
                            sock=sock, ready=ready)
        elif isinstance(msg, appmsg.TcpConnectReport):
            await self._tcp(conn, st, msg.host, msg.port, reader.rest, report=True,
                            sock=sock, ready=ready)
        elif isinstance(msg, appmsg.UdpAssociate):
            await self._udp(conn, st, msg.host, msg.port, reader.rest)
        else:
            log.error("unknown protocol type %s on stream %d", type(msg).__name__, st.sid)

    async def _tcp(self, conn, st: TunnelStream, host: str, port: int, rest: bytes,
                   status: bool = False, sock: socket.socket | OSError | None = None,
                   ready: bool = False, report: bool = False) -> None:
        """Dial host:port (or finish the dial _opened started: `sock`, connected when
        `ready`, and then `rest` is what the target did not take yet), answer a PTCPS
        (`status`: at once) or a PTCPR (`report`: a failure at once, success in front of
        the target's first bytes, so it never costs a datagram of its own), and relay."""
        target = join_host_port(host, port)
        log.info("accepted TCP stream %d: %s:%s -> %s", st.sid, conn.peer[0], conn.peer[1], target)
        loop = asyncio.get_running_loop()
        try:
            if isinstance(sock, OSError):
                raise sock
            if sock is not None:
                if not ready:
                    async with asyncio.timeout(self.dial_timeout):
                        await _wait_connected(loop, sock)
                _, held = await loop.create_connection(HeldSocket, sock=sock)
            else:
                async with asyncio.timeout(self.dial_timeout):
                    _, held = await loop.create_connection(HeldSocket, host or "localhost", port)
        except asyncio.CancelledError:
            if isinstance(sock, socket.socket):
                sock.close()
            raise
        except (OSError, TimeoutError) as exc:
            if isinstance(sock, socket.socket):
                sock.close()
            log.error("failed to establish TCP connection to %s for stream %d: %s",
                      target, st.sid, exc or "timeout")
            if status or report:
                st.write(bytes((socks5.reply_for_error(exc),)))
                await st.drain()
            return
        if status:
            st.write(b"\x00")
        if rest:
            held.transport.write(rest)
        sent, recv = await relay_held(st, held, f"stream {st.sid} -> {target}",
                                      head=b"\x00" if report else b"")
        log.debug("closed TCP connection %s for stream %d (%d up, %d down)", target, st.sid,
                  sent, recv)

    async def _udp(self, conn, st: TunnelStream, host: str, port: int, rest: bytes) -> None:
        target = join_host_port(host, port)
        log.info("accepted UDP stream %d: %s:%s -> %s", st.sid, conn.peer[0], conn.peer[1], target)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.dial_timeout):
                transport, proto = await loop.create_datagram_endpoint(
                    lambda: _UdpTarget(st), remote_addr=(host or "localhost", port))
        except (OSError, TimeoutError) as exc:
            log.error("failed to establish UDP connection to %s for stream %d: %s",
                      target, st.sid, exc or "timeout")
            return
        try:
            if rest:
                transport.sendto(rest)
            reader_task = asyncio.ensure_future(self._udp_up(st, transport, proto))
            down_task = asyncio.ensure_future(proto.forward())
            idle = self.params.udp_idle_timeout
            while True:
                wait = proto.last + idle - loop.time()
                if wait <= 0:
                    log.debug("UDP stream %d to %s idle for %.0fs, closing", st.sid, target, idle)
                    break
                done, _ = await asyncio.wait({reader_task, proto.done}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if done:
                    break
            if proto.done.done() and proto.done.result() is not None:
                log.error("UDP stream %d failed for %s: %s", st.sid, target, proto.done.result())
            reader_task.cancel()
            down_task.cancel()
        finally:
            transport.close()
            log.debug("closed UDP connection %s for stream %d", target, st.sid)

    async def _udp_up(self, st: TunnelStream, transport, proto: _UdpTarget) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await st.read_datagram()
            if not data:
                return
            proto.last = loop.time()
            if len(data) <= UDP_MAX:
                transport.sendto(data)

    async def stop(self) -> None:
        self._stopping = True
        if self.listener is not None:
            self.listener.close()
        await self._tasks.cancel_all(2)


_TCP_MESSAGES = (appmsg.TcpConnect, appmsg.TcpConnectStatus, appmsg.TcpConnectReport)
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux, BSDs; not macOS
_STREAM_NONBLOCK = socket.SOCK_STREAM | _NONBLOCK


def _dial_now(msg) -> socket.socket | OSError | None:
    """Start a TCP connect for a PTCP/PTCPS/PTCPR message to an IP address: a non-blocking
    socket whose SYN is out (None for anything else: names are resolved by the task)."""
    if not isinstance(msg, _TCP_MESSAGES) or not msg.port:
        return None
    host = msg.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        return None  # a name (or not an address): the task resolves it
    try:  # non-blocking from socket() on: no setblocking() call (a syscall) after it
        sock = socket.socket(family, _STREAM_NONBLOCK)
    except OSError as exc:  # out of fds, ...: reported by the stream's task
        return exc
    try:
        if not _NONBLOCK:
            sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((host, msg.port))
    except OSError as exc:
        sock.close()
        return exc
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        return OSError(err, os.strerror(err))
    return sock


def _connected(sock: socket.socket) -> bool:
    """The connect finished (a target on this host: within connect() itself)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _send_now(sock: socket.socket, data: bytes) -> bytes:
    """Send what the connected socket takes now; the rest (or all, on an error, which the
    transport then meets and reports) is returned."""
    if not data:
        return data
    try:
        n = sock.send(data)
    except OSError:
        return data
    return data[n:]


async def _wait_connected(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait for a non-blocking connect to finish; raise its error."""
    fd = sock.fileno()
    done = loop.create_future()
    loop.add_writer(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
