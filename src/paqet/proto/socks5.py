"""A SOCKS5 server connection (RFC 1928, RFC 1929 username/password) as a sans-I/O
state machine, and the UDP request header codec.

Feed bytes with `receive_data`, take the next event with `next_event`, send
`data_to_send()`; answer a request with `reply(code, host, port)`.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket

VERSION = 5
AUTH_VERSION = 1
M_NONE, M_USERPASS, M_REFUSED = 0x00, 0x02, 0xFF
CMD_CONNECT, CMD_BIND, CMD_UDP = 1, 2, 3
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4

REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Socks5Error(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class AuthFailed:
    username: str


@dataclasses.dataclass(frozen=True)
class ConnectRequest:
    host: str
    port: int
    atyp: int


@dataclasses.dataclass(frozen=True)
class UdpAssociateRequest:
    host: str
    port: int
    atyp: int


@dataclasses.dataclass(frozen=True)
class UnsupportedCommand:
    cmd: int


@dataclasses.dataclass(frozen=True)
class ProtocolViolation:
    reason: str


def reply_for_error(exc: BaseException) -> int:
    """The RFC 1928 reply code that best describes a dial failure."""
    if isinstance(exc, (TimeoutError,)):
        return REP_TTL_EXPIRED
    if isinstance(exc, socket.gaierror):
        return REP_HOST_UNREACHABLE
    if isinstance(exc, ConnectionRefusedError):
        return REP_CONNECTION_REFUSED
    if isinstance(exc, OSError):
        return {errno.ENETUNREACH: REP_NETWORK_UNREACHABLE,
                errno.EHOSTUNREACH: REP_HOST_UNREACHABLE,
                errno.ECONNREFUSED: REP_CONNECTION_REFUSED,
                errno.ETIMEDOUT: REP_TTL_EXPIRED,
                errno.EACCES: REP_NOT_ALLOWED,
                errno.EPERM: REP_NOT_ALLOWED}.get(exc.errno or 0, REP_GENERAL_FAILURE)
    return REP_GENERAL_FAILURE


def encode_address(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        raw = host.encode("idna") if host.isascii() is False else host.encode()
        if len(raw) > 255:
            raise Socks5Error("domain name too long") from None
        return bytes((ATYP_DOMAIN, len(raw))) + raw + port.to_bytes(2, "big")
    if ip.version == 4:
        return bytes((ATYP_IPV4,)) + ip.packed + port.to_bytes(2, "big")
    return bytes((ATYP_IPV6,)) + ip.packed + port.to_bytes(2, "big")


def _parse_address(buf, off: int) -> tuple[str, int, int, int] | None:
    """(host, port, atyp, end offset), None if incomplete; Socks5Error for a bad ATYP."""
    if len(buf) < off + 1:
        return None
    atyp = buf[off]
    if atyp == ATYP_IPV4:
        end = off + 1 + 4 + 2
        if len(buf) < end:
            return None
        host = str(ipaddress.IPv4Address(bytes(buf[off + 1:off + 5])))
    elif atyp == ATYP_IPV6:
        end = off + 1 + 16 + 2
        if len(buf) < end:
            return None
        a = ipaddress.IPv6Address(bytes(buf[off + 1:off + 17]))
        host = str(a.ipv4_mapped) if a.ipv4_mapped else str(a)
    elif atyp == ATYP_DOMAIN:
        if len(buf) < off + 2:
            return None
        n = buf[off + 1]
        end = off + 2 + n + 2
        if len(buf) < end:
            return None
        host = bytes(buf[off + 2:off + 2 + n]).decode("utf-8", "surrogateescape")
    else:
        raise Socks5Error(f"unsupported address type {atyp}")
    port = int.from_bytes(buf[end - 2:end], "big")
    return host, port, atyp, end


def parse_udp_header(datagram: bytes) -> tuple[str, int, int, bytes, bytes]:
    """RSV(2) FRAG(1) ATYP ADDR PORT DATA -> (host, port, atyp, header bytes, payload)."""
    if len(datagram) < 4:
        raise Socks5Error("datagram too short")
    if datagram[2] != 0:
        raise Socks5Error("fragmented datagrams are not supported")
    try:
        r = _parse_address(datagram, 3)
    except Socks5Error:
        raise
    except ValueError as exc:
        raise Socks5Error(str(exc)) from None
    if r is None:
        raise Socks5Error("truncated address")
    host, port, atyp, end = r
    return host, port, atyp, bytes(datagram[:end]), bytes(datagram[end:])


def build_udp_header(host: str, port: int) -> bytes:
    return b"\x00\x00\x00" + encode_address(host, port)


class Socks5Server:
    """One client connection: greeting, optional RFC 1929 auth, one request."""

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.auth = bool(username or password)
        self.username = (username or "").encode()
        self.password = (password or "").encode()
        self._buf = bytearray()
        self._out = bytearray()
        self._state = "greeting"
        self._events: list = []
        self.rest = b""
        self.request = None

    def receive_data(self, data: bytes) -> None:
        self._buf += data
        try:
            self._advance()
        except (Socks5Error, ValueError) as exc:
            self._fail(str(exc))

    def _fail(self, reason: str) -> None:
        self._state = "done"
        self._events.append(ProtocolViolation(reason))

    def _advance(self) -> None:
        buf = self._buf
        while self._state != "done":
            if self._state == "greeting":
                if len(buf) < 2:
                    return
                if buf[0] != VERSION:
                    return self._fail(f"unsupported SOCKS version {buf[0]}")
                n = buf[1]
                if len(buf) < 2 + n:
                    return
                methods = bytes(buf[2:2 + n])
                del buf[:2 + n]
                want = M_USERPASS if self.auth else M_NONE
                if want not in methods:
                    self._out += bytes((VERSION, M_REFUSED))
                    return self._fail("no acceptable authentication method")
                self._out += bytes((VERSION, want))
                self._state = "auth" if self.auth else "request"
            elif self._state == "auth":
                if len(buf) < 2:
                    return
                if buf[0] != AUTH_VERSION:
                    return self._fail(f"unsupported auth version {buf[0]}")
                ulen = buf[1]
                if len(buf) < 3 + ulen:
                    return
                plen = buf[2 + ulen]
                if len(buf) < 3 + ulen + plen:
                    return
                user = bytes(buf[2:2 + ulen])
                pw = bytes(buf[3 + ulen:3 + ulen + plen])
                del buf[:3 + ulen + plen]
                if user == self.username and pw == self.password:
                    self._out += b"\x01\x00"
                    self._state = "request"
                else:
                    self._out += b"\x01\x01"
                    self._state = "done"
                    self._events.append(AuthFailed(user.decode("utf-8", "replace")))
                    return
            elif self._state == "request":
                if len(buf) < 4:
                    return
                if buf[0] != VERSION:
                    return self._fail(f"unsupported SOCKS version {buf[0]}")
                cmd = buf[1]
                try:
                    r = _parse_address(buf, 3)
                except Socks5Error as exc:
                    self._out += self.reply(REP_ADDRESS_TYPE_NOT_SUPPORTED, "0.0.0.0", 0)
                    return self._fail(str(exc))
                if r is None:
                    return
                host, port, atyp, end = r
                self.rest = bytes(buf[end:])
                del buf[:]
                self._state = "done"
                if cmd == CMD_CONNECT:
                    ev = ConnectRequest(host, port, atyp)
                elif cmd == CMD_UDP:
                    ev = UdpAssociateRequest(host, port, atyp)
                else:
                    ev = UnsupportedCommand(cmd)
                self.request = ev
                self._events.append(ev)
                return

    def next_event(self):
        return self._events.pop(0) if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @staticmethod
    def reply(rep: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
        try:
            addr = encode_address(host, port)
        except Socks5Error:
            addr = encode_address("0.0.0.0", 0)
        return bytes((VERSION, rep, 0)) + addr
