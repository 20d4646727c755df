"""Static port forwards: a local TCP or UDP port carried to a fixed target via the server."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from paqet.client.pool import ClientPool, NoTunnel
from paqet.client.udpflows import UdpFlows
from paqet.proto import appmsg
from paqet.tunnel.connection import ConnectionClosed
from paqet.tunnel.handoff import handoff
from paqet.tunnel.relay import CHUNK, HeldSocket, relay_held
from paqet.tunnel.stream import StreamClosed, TunnelStream
from paqet.tunnel.tasks import TaskSet

log = logging.getLogger("paqet.forward")

BACKLOG = 100       # what asyncio's create_server uses
ACCEPT_BATCH = 64   # connections accepted per wake-up, at most
ACCEPT_RETRY = 1.0  # seconds accepting pauses after an error such as EMFILE
_NODELAY_INHERITED = sys.platform.startswith("linux")  # from the listening socket
UDP_MAX = 4096
UDP_QUEUE = 64


def split_host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class TcpForward:
    """A local TCP port carried to a fixed target. The forward accepts connections itself
    (its own non-blocking listening sockets), so in the accept callback it can read what
    the client sent already (HTTP and TLS clients send their first bytes at once) and send
    it, the stream's SYN and its header in one datagram before anything else is set up;
    the socket becomes a transport and is relayed after that. With no session ready the
    stream is opened by a task instead."""

    def __init__(self, pool: ClientPool, listen: tuple[str, int], target: str) -> None:
        self.pool = pool
        self.listen = listen
        self.target = target
        self.host, self.port = split_host_port(target)
        self.msg = appmsg.TcpConnect(self.host, self.port)
        self.sockets: list[socket.socket] = []
        self._tasks = TaskSet()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.listen
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, addr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # relayed bytes go out at once (the tunnel batches): accepted sockets
                # inherit this on Linux (uvloop's transports set it themselves, asyncio's
                # connect_accepted_socket does not)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._on_listen, sock, int(sock.family))
        addr = self.sockets[0].getsockname()
        log.info("TCP forwarder listening on %s:%s -> %s", addr[0], addr[1], self.target)

    def _on_listen(self, lsock: socket.socket, family: int) -> None:
        # socket.accept() would build the new socket from the listener's `family` and `type`
        # properties, each an IntEnum conversion (~6 Python calls; ~15 % of the accept
        # callback on a cold cache): the fd comes from _accept() and the socket is made
        # with the family known at start
        accept = lsock._accept
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # out of fds or buffers: the connection waits in the backlog, and the
                # listening socket (still readable) is left alone for ACCEPT_RETRY seconds
                # instead of waking the loop at once again (as asyncio's servers do)
                log.warning("TCP forwarder cannot accept: %s; retrying in %.0f s",
                            exc.strerror or exc, ACCEPT_RETRY)
                loop = asyncio.get_running_loop()
                loop.remove_reader(lsock.fileno())
                loop.call_later(ACCEPT_RETRY, self._resume_listening, lsock, family)
                return
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            try:
                self._accepted(sock, peer)
            except Exception:  # a bug must not leak the socket or stop the accept loop
                log.exception("TCP forwarder: accepting %s failed", peer)
                sock.close()

    def _resume_listening(self, lsock: socket.socket, family: int) -> None:
        if lsock in self.sockets and lsock.fileno() >= 0:
            asyncio.get_running_loop().add_reader(lsock.fileno(), self._on_listen, lsock, family)

    def _accepted(self, sock: socket.socket, peer) -> None:
        sock.setblocking(False)
        if not _NODELAY_INHERITED:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = b""
        handoff()  # the client we pre-empted by waking sends its first bytes meanwhile
        try:
            first = sock.recv(CHUNK)  # what the client sent already, if anything
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            sock.close()
            return
        try:
            st = self.pool.open_now(self.msg)
        except ConnectionClosed:
            st = None
        if st is not None:
            if first:
                try:
                    st.write(first)
                except StreamClosed:
                    sock.close()
                    return
                first = b""
            st.conn.pump_now()  # the datagram leaves before the task below is even made
        self._tasks.spawn(self._serve(sock, peer, st, first))

    async def _serve(self, sock: socket.socket, peer, st: TunnelStream | None,
                     first: bytes) -> None:
        label = f"{peer[0]}:{peer[1]} -> {self.target}"
        if st is None:
            try:
                st = await self.pool.open_tcp(self.host, self.port)
            except NoTunnel as exc:
                log.error("failed to establish stream for %s: %s", label, exc)
                sock.close()
                return
            except BaseException:
                sock.close()
                raise
        log.info("accepted TCP connection %s", label)
        try:
            if first:
                st.write(first)
            _, held = await asyncio.get_running_loop().connect_accepted_socket(HeldSocket, sock)
        except (StreamClosed, OSError) as exc:
            log.debug("TCP connection %s ended before its relay: %s", label, exc)
            st.close()
            sock.close()
            return
        except BaseException:
            st.close()
            sock.close()
            raise
        await relay_held(st, held, label)

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []

    def stop_accepting(self) -> None:
        """Close the listening sockets; connections already accepted go on (a reload)."""
        self._close_sockets()

    async def stop(self) -> None:
        self._close_sockets()
        await self._tasks.cancel_all(1)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, fwd: "UdpForward") -> None:
        self.fwd = fwd

    def datagram_received(self, data: bytes, addr) -> None:
        self.fwd._datagram(data, addr)


class UdpForward:
    """Each source address gets its own stream (via the shared UDP flow table)."""

    def __init__(self, pool: ClientPool, flows: UdpFlows, listen: tuple[str, int],
                 target: str) -> None:
        self.pool = pool
        self.flows = flows
        self.listen = listen
        self.target = target
        self.host, self.port = split_host_port(target)
        self.transport: asyncio.DatagramTransport | None = None
        self.drops = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpListener(self), local_addr=self.listen)
        addr = self.transport.get_extra_info("sockname")
        log.info("UDP forwarder listening on %s:%s -> %s", addr[0], addr[1], self.target)

    def _datagram(self, data: bytes, addr) -> None:
        if len(data) > UDP_MAX:
            self.drops += 1
            log.debug("UDP %s: datagram too large, %d bytes (limit %d)", addr, len(data), UDP_MAX)
            return
        src = f"{addr[0]}:{addr[1]}"
        ok = self.flows.send(src, self.host, self.port, data,
                             reply=lambda payload, a=addr: self._reply(payload, a))
        if not ok:
            self.drops += 1

    def _reply(self, payload: bytes, addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(payload, addr)

    def stop_accepting(self) -> None:
        """UDP has no connections to let finish: the socket closes (a reload)."""
        if self.transport is not None:
            self.transport.close()

    async def stop(self) -> None:
        self.stop_accepting()


__all__ = ["TcpForward", "UdpForward", "split_host_port", "StreamClosed"]
