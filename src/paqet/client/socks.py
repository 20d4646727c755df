"""The SOCKS5 listener: CONNECT and UDP ASSOCIATE through the tunnel, with optional
username/password, driven by the sans-I/O state machine in paqet.proto.socks5.

CONNECT answers success at once, as upstream, and the application's first bytes leave with
the stream's open: the first byte back arrives one round trip after the request. A failed
dial, which our server reports on the stream, resets the connection (the application reads
ECONNRESET where it would have read a reply code) and the log names the reason. With
`wait_dial` the reply waits for the server's dial result instead and carries its exact
reply code, at the cost of one tunnel round trip per connection (docs/config.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from paqet.client.pool import ClientPool, NoTunnel
from paqet.client.udpflows import UdpFlows
from paqet.proto import socks5
from paqet.tunnel.relay import CHUNK, relay_tcp, reset_transport

log = logging.getLogger("paqet.socks5")

UDP_MAX = 4096
MAX_TARGETS = 1024  # reply headers remembered per UDP association
#: seconds a CONNECT answered at once waits for the application's first bytes, so that they
#: leave with the stream's open (a client that speaks first sends them within a
#: millisecond or so; one whose server speaks first has its dial start this much later)
FIRST_BYTES_WAIT = 0.01


async def first_bytes(reader: asyncio.StreamReader, have: bytes) -> bytes | None:
    """What the application sent after its request: `have` when it sent some already, else
    what arrives within FIRST_BYTES_WAIT (b"" when nothing did); None when it closed."""
    if have:
        return bytes(have)
    try:
        async with asyncio.timeout(FIRST_BYTES_WAIT):
            data = await reader.read(CHUNK)
    except TimeoutError:
        return b""
    return data or None


def _bind_reply(writer: asyncio.StreamWriter) -> tuple[str, int]:
    addr = writer.get_extra_info("sockname")
    return addr[0], addr[1]


class _Relay(asyncio.DatagramProtocol):
    """The UDP relay socket of one association."""

    def __init__(self, assoc: "_Association") -> None:
        self.assoc = assoc

    def datagram_received(self, data: bytes, addr) -> None:
        self.assoc.datagram(data, addr)


class _Association:
    def __init__(self, server: "Socks5Listener", expect_ip: str, expect_port: int) -> None:
        self.server = server
        self.expect_ip = expect_ip
        self.expect_port = expect_port  # 0: learned from the first datagram
        self.client_addr: tuple | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.headers: dict[str, bytes] = {}   # target -> the header the client used for it
        self.drops = 0
        self.last = 0.0  # loop time of the last datagram either way (set when it starts)

    @staticmethod
    def _same_ip(a: str, b: str) -> bool:
        try:
            ia, ib = ipaddress.ip_address(a.split("%")[0]), ipaddress.ip_address(b.split("%")[0])
        except ValueError:
            return a == b
        if isinstance(ia, ipaddress.IPv6Address) and ia.ipv4_mapped:
            ia = ia.ipv4_mapped
        if isinstance(ib, ipaddress.IPv6Address) and ib.ipv4_mapped:
            ib = ib.ipv4_mapped
        return ia == ib

    def datagram(self, data: bytes, addr) -> None:
        self.last = asyncio.get_running_loop().time()
        if not self._same_ip(addr[0], self.expect_ip) or (
                self.expect_port and addr[1] != self.expect_port):
            self.drops += 1
            log.debug("SOCKS5 UDP %s: unexpected source (want %s)", addr, self.expect_ip)
            return
        if self.client_addr is None:
            self.client_addr = addr
        try:
            host, port, _atyp, header, payload = socks5.parse_udp_header(data)
        except socks5.Socks5Error as exc:
            self.drops += 1
            log.debug("SOCKS5 UDP %s: malformed datagram: %s", addr, exc)
            return
        if len(payload) > UDP_MAX:
            self.drops += 1
            log.debug("SOCKS5 UDP %s: payload too large, %d bytes", addr, len(payload))
            return
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        hdr = self.headers.get(target)
        if hdr is None:
            if len(self.headers) >= MAX_TARGETS:  # bounded: forget the oldest target's
                del self.headers[next(iter(self.headers))]  # (live flows keep their copy)
            hdr = self.headers[target] = bytes(header)
        local = f"{addr[0]}:{addr[1]}"
        ok = self.server.flows.send(local, host, port, payload,
                                    reply=lambda p, h=hdr: self.reply(h, p))
        if not ok:
            self.drops += 1

    def reply(self, header: bytes, payload: bytes) -> None:
        self.last = asyncio.get_running_loop().time()
        if self.transport is not None and self.client_addr is not None \
                and not self.transport.is_closing():
            self.transport.sendto(header + payload, self.client_addr)


class Socks5Listener:
    def __init__(self, pool: ClientPool, flows: UdpFlows, listen: tuple[str, int], *,
                 username: str = "", password: str = "",
                 handshake_timeout: float | None = None, wait_dial: bool = False) -> None:
        self.pool = pool
        self.flows = flows
        self.listen = listen
        self.username = username
        self.password = password
        #: reply to CONNECT after the server's dial (exact reply codes, one round trip more)
        self.wait_dial = wait_dial
        #: seconds to finish the handshake and request (limits.request_timeout by default)
        self.handshake_timeout = (pool.params.request_timeout if handshake_timeout is None
                                  else handshake_timeout)
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
        addr = self.server.sockets[0].getsockname()
        log.info("SOCKS5 server listening on %s:%s", addr[0], addr[1])

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
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("SOCKS5 connection from %s ended: %s", peer, exc)
        finally:
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _negotiate(self, reader, writer, peer):
        machine = socks5.Socks5Server(username=self.username or None,
                                      password=self.password or None)
        async with asyncio.timeout(self.handshake_timeout):
            while True:
                out = machine.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                ev = machine.next_event()
                if ev is None:
                    data = await reader.read(4096)
                    if not data:
                        return machine, None
                    machine.receive_data(data)
                    continue
                return machine, ev

    async def _serve(self, reader, writer, peer) -> None:
        try:
            machine, ev = await self._negotiate(reader, writer, peer)
        except TimeoutError:
            log.debug("SOCKS5 negotiation with %s failed: timeout", peer)
            return
        out = machine.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()
        if ev is None:
            return
        bind = _bind_reply(writer)
        if isinstance(ev, socks5.AuthFailed):
            log.info("SOCKS5 authentication failed for %s:%s", peer[0], peer[1])
            return
        if isinstance(ev, socks5.ProtocolViolation):
            log.debug("SOCKS5 request from %s failed: %s", peer, ev.reason)
            return
        if isinstance(ev, socks5.UnsupportedCommand):
            log.debug("SOCKS5 unsupported command %d from %s", ev.cmd, peer)
            writer.write(machine.reply(socks5.REP_COMMAND_NOT_SUPPORTED, "0.0.0.0", 0))
            await writer.drain()
            return
        if isinstance(ev, socks5.ConnectRequest):
            await self._connect(machine, ev, reader, writer, peer, bind)
        elif isinstance(ev, socks5.UdpAssociateRequest):
            await self._associate(machine, ev, reader, writer, peer, bind)

    async def _connect(self, machine, ev, reader, writer, peer, bind) -> None:
        host, port = ev.host, ev.port
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.debug("SOCKS5 CONNECT from %s to %s", peer, target)
        if len(host.encode("utf-8", "surrogateescape")) > 253:
            writer.write(machine.reply(socks5.REP_GENERAL_FAILURE, "0.0.0.0", 0))
            await writer.drain()
            return
        if not self.wait_dial:
            await self._connect_at_once(machine, reader, writer, peer, bind, host, port, target)
            return
        try:
            st, rep = await self.pool.connect_tcp(host, port)
        except NoTunnel as exc:
            log.error("SOCKS5 failed to establish TCP stream for %s -> %s: %s", peer, target, exc)
            writer.write(machine.reply(socks5.REP_GENERAL_FAILURE, "0.0.0.0", 0))
            await writer.drain()
            return
        if rep:
            log.info("SOCKS5 %s -> %s: the server could not connect: %s (reply %#04x)", peer,
                     target, socks5.REPLY_NAMES.get(rep, "unknown"), rep)
            writer.write(machine.reply(rep, "0.0.0.0", 0))
            await writer.drain()
            return
        writer.write(machine.reply(socks5.REP_SUCCEEDED, bind[0], bind[1]))
        log.info("SOCKS5 accepted TCP connection %s:%s -> %s", peer[0], peer[1], target)
        rest = getattr(machine, "rest", b"")
        if rest:
            st.write(bytes(rest))
        await relay_tcp(st, reader, writer, f"{peer[0]}:{peer[1]} -> {target}")
        log.debug("SOCKS5 connection %s -> %s closed", peer, target)

    async def _connect_at_once(self, machine, reader, writer, peer, bind, host: str, port: int,
                               target: str) -> None:
        """Success now, the first bytes with the stream's open; a failed dial resets."""
        try:
            await self.pool.wait_ready()
        except NoTunnel as exc:
            log.error("SOCKS5 failed to establish TCP stream for %s -> %s: %s", peer, target, exc)
            writer.write(machine.reply(socks5.REP_GENERAL_FAILURE, "0.0.0.0", 0))
            await writer.drain()
            return
        writer.write(machine.reply(socks5.REP_SUCCEEDED, bind[0], bind[1]))
        first = await first_bytes(reader, machine.rest)
        if first is None:
            log.debug("SOCKS5 %s -> %s: the client closed before sending anything", peer, target)
            return
        try:
            st, reported = await self.pool.open_tcp_reported(host, port, first)
        except NoTunnel as exc:
            log.error("SOCKS5 failed to establish TCP stream for %s -> %s: %s", peer, target, exc)
            reset_transport(writer.transport)
            return
        log.info("SOCKS5 accepted TCP connection %s:%s -> %s", peer[0], peer[1], target)

        def report(code: int) -> None:
            if code:
                log.info("SOCKS5 %s -> %s: the server could not connect: %s (reply %#04x); "
                         "connection reset", peer, target,
                         socks5.REPLY_NAMES.get(code, "unknown"), code)

        await relay_tcp(st, reader, writer, f"{peer[0]}:{peer[1]} -> {target}",
                        report=report if reported else None)
        log.debug("SOCKS5 connection %s -> %s closed", peer, target)

    async def _associate(self, machine, ev, reader, writer, peer, bind) -> None:
        loop = asyncio.get_running_loop()
        log.debug("SOCKS5 UDP_ASSOCIATE from %s", peer)
        try:
            unspecified = ipaddress.ip_address(ev.host).is_unspecified
        except ValueError:
            unspecified = True  # a domain name: expect the TCP peer
        expect_ip = peer[0] if unspecified else ev.host
        expect_port = 0 if unspecified else ev.port
        assoc = _Association(self, expect_ip, expect_port)
        assoc.last = loop.time()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Relay(assoc), local_addr=(bind[0], 0))
        except OSError as exc:
            log.error("SOCKS5 failed to open UDP relay socket: %s", exc)
            writer.write(machine.reply(socks5.REP_GENERAL_FAILURE, "0.0.0.0", 0))
            await writer.drain()
            return
        assoc.transport = transport
        relay = transport.get_extra_info("sockname")
        writer.write(machine.reply(socks5.REP_SUCCEEDED, relay[0], relay[1]))
        await writer.drain()
        log.debug("SOCKS5 UDP_ASSOCIATE from %s relay=%s expect=%s", peer, relay, expect_ip)
        idle = self.pool.params.idle_timeout
        try:
            # The association lives as long as its control connection (RFC 1928), or until
            # neither datagrams nor control bytes moved for limits.idle_timeout.
            while True:
                wait = None
                if idle > 0:
                    wait = assoc.last + idle - loop.time()
                    if wait <= 0:
                        log.info("SOCKS5 UDP association of %s idle for %.0fs, closing", peer, idle)
                        break
                try:
                    async with asyncio.timeout(wait):
                        if not await reader.read(4096):
                            break
                    assoc.last = loop.time()
                except TimeoutError:
                    continue
        finally:
            transport.close()
            log.debug("SOCKS5 UDP_ASSOCIATE control connection %s closed", peer)
