"""A SOCKS5 server connection (RFC 1928, RFC 1929 username/password) as a sans-I/O
state machine, and the UDP request header codec.

Shape (as h11): feed what the client sent with `receive_data(data)` (b"" = EOF), take
events with `next_event()` until it returns None, write `data_to_send()` to the client;
answer a request with `reply(code, bind_host, bind_port)`.

Behaviour follows paqet alpha.21 (docs/spec client-server.md §3) where it is sensible:

* greeting: VER must be 5 (else ProtocolViolation, nothing sent); the one acceptable
  method is 0x00 without credentials, 0x02 with a username or a password; offered anywhere
  in the list it is chosen (`05 M`), otherwise `05 FF` and ProtocolViolation;
* RFC 1929: VER must be 1 (else ProtocolViolation, nothing sent); both fields are compared
  byte-exact (constant time); success `01 00`, failure `01 01` and AuthFailed;
* request: VER must be 5, RSV is not checked; ATYP 1/3/4. Better than upstream: an
  unknown ATYP is answered with REP 0x08 (queued by the machine) before ProtocolViolation,
  and every byte the client sent after the request stays available in `.rest` (also bytes
  fed after the request event).
* CONNECT -> ConnectRequest, UDP ASSOCIATE -> UdpAssociateRequest, anything else (BIND
  included) -> UnsupportedCommand: the caller answers with `reply(REP_COMMAND_NOT_SUPPORTED)`.

Hosts are text: IPv4 dotted quad, IPv6 in RFC 5952 form (an IPv4-mapped IPv6 address is
shown as dotted IPv4, as Go prints it), domain names as sent (UTF-8; undecodable bytes kept
as surrogate escapes so `build_udp_header` reproduces them byte for byte).
"""

from __future__ import annotations

import errno as _errno
import functools
import hmac
import ipaddress
import re

VERSION = 5
AUTH_VERSION = 1
M_NONE, M_GSSAPI, M_USERPASS, M_REFUSED = 0x00, 0x01, 0x02, 0xFF
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

REPLY_NAMES = {
    REP_SUCCEEDED: "succeeded",
    REP_GENERAL_FAILURE: "general SOCKS server failure",
    REP_NOT_ALLOWED: "connection not allowed by ruleset",
    REP_NETWORK_UNREACHABLE: "network unreachable",
    REP_HOST_UNREACHABLE: "host unreachable",
    REP_CONNECTION_REFUSED: "connection refused",
    REP_TTL_EXPIRED: "TTL expired",
    REP_COMMAND_NOT_SUPPORTED: "command not supported",
    REP_ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}


class Socks5Error(ValueError):
    """Malformed SOCKS5 input (UDP header) or an address that cannot be encoded."""


# -- events -------------------------------------------------------------------------------

class _Event:
    __slots__ = ()

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash((type(self),) + tuple(getattr(self, k) for k in self.__slots__))

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({args})"


class AuthFailed(_Event):
    """Wrong RFC 1929 credentials; `01 01` is queued, the connection should be closed."""
    __slots__ = ("username",)

    def __init__(self, username: str) -> None:
        self.username = username


class ConnectRequest(_Event):
    __slots__ = ("host", "port", "atyp")

    def __init__(self, host: str, port: int, atyp: int) -> None:
        self.host, self.port, self.atyp = host, port, atyp


class UdpAssociateRequest(_Event):
    __slots__ = ("host", "port", "atyp")

    def __init__(self, host: str, port: int, atyp: int) -> None:
        self.host, self.port, self.atyp = host, port, atyp


class UnsupportedCommand(_Event):
    """A request with a command other than CONNECT/UDP ASSOCIATE (BIND included)."""
    __slots__ = ("cmd", "host", "port", "atyp")

    def __init__(self, cmd: int, host: str = "", port: int = 0, atyp: int = 0) -> None:
        self.cmd, self.host, self.port, self.atyp = cmd, host, port, atyp


class ProtocolViolation(_Event):
    """The handshake cannot go on; anything the machine decided to answer (05 FF, REP 0x08)
    is in data_to_send(). Close the connection after sending it."""
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


# -- reply codes for dial errors ------------------------------------------------------------

_ERRNO_REPLY = {
    _errno.ENETUNREACH: REP_NETWORK_UNREACHABLE,
    _errno.ENETDOWN: REP_NETWORK_UNREACHABLE,
    _errno.EHOSTUNREACH: REP_HOST_UNREACHABLE,
    _errno.EHOSTDOWN: REP_HOST_UNREACHABLE,
    _errno.EADDRNOTAVAIL: REP_HOST_UNREACHABLE,
    _errno.ECONNREFUSED: REP_CONNECTION_REFUSED,
    _errno.ETIMEDOUT: REP_TTL_EXPIRED,
    _errno.EACCES: REP_NOT_ALLOWED,
    _errno.EPERM: REP_NOT_ALLOWED,
    _errno.EAFNOSUPPORT: REP_ADDRESS_TYPE_NOT_SUPPORTED,
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (-?\d+)\]")
# When asyncio tried several addresses it raises one OSError without errno whose text lists
# each attempt's error; the most telling of those decides (refused proves the host is up).
_PRIORITY = (REP_CONNECTION_REFUSED, REP_HOST_UNREACHABLE, REP_NETWORK_UNREACHABLE,
             REP_TTL_EXPIRED, REP_NOT_ALLOWED, REP_ADDRESS_TYPE_NOT_SUPPORTED)


def _is_dns_error(exc: BaseException) -> bool:
    # socket.gaierror/herror, detected without importing socket (sans-I/O layer rule)
    return any(c.__name__ in ("gaierror", "herror") for c in type(exc).__mro__)


def reply_for_error(exc: BaseException | int) -> int:
    """The RFC 1928 reply code that best describes a failed dial: an exception (OSError with
    errno, DNS error, TimeoutError) or a bare errno value. Unknown -> 0x01."""
    if isinstance(exc, int):
        return _ERRNO_REPLY.get(exc, REP_GENERAL_FAILURE)
    if isinstance(exc, TimeoutError):      # socket.timeout, asyncio.TimeoutError, ETIMEDOUT
        return REP_TTL_EXPIRED
    if _is_dns_error(exc):                 # name does not resolve: the host is unreachable
        return REP_HOST_UNREACHABLE
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return _ERRNO_REPLY.get(exc.errno, REP_GENERAL_FAILURE)
        found = {_ERRNO_REPLY.get(int(n), REP_GENERAL_FAILURE)
                 for n in _ERRNO_IN_TEXT.findall(str(exc))}
        for rep in _PRIORITY:
            if rep in found:
                return rep
    return REP_GENERAL_FAILURE


# -- addresses ------------------------------------------------------------------------------

_PORT = [i.to_bytes(2, "big") for i in range(65536)]


@functools.lru_cache(maxsize=4096)
def _ipv4_text(raw: bytes) -> str:
    return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])


@functools.lru_cache(maxsize=4096)
def _ipv6_text(raw: bytes) -> str:
    a = ipaddress.IPv6Address(raw)
    m = a.ipv4_mapped
    return str(m) if m is not None else str(a)


@functools.lru_cache(maxsize=4096)
def _host_bytes(host: str) -> bytes:
    """ATYP + address bytes for a host text (IPv4, IPv6 with optional zone/brackets, domain)."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(h.split("%", 1)[0] if ":" in h else h)
    except ValueError:
        raw = host.encode("utf-8", "surrogateescape")
        if len(raw) > 255:
            raise Socks5Error(f"domain name too long ({len(raw)} bytes)") from None
        return bytes((ATYP_DOMAIN, len(raw))) + raw
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return bytes((ATYP_IPV4,)) + ip.packed
    return bytes((ATYP_IPV6,)) + ip.packed


def encode_address(host: str, port: int) -> bytes:
    """ATYP DST.ADDR DST.PORT for `host` (IPv4/IPv6 text or a domain name) and `port`."""
    if not 0 <= port <= 65535:
        raise Socks5Error(f"port out of range: {port}")
    return _host_bytes(host) + _PORT[port]


def _parse_address(buf, off: int):
    """(host, port, atyp, end offset), or None while incomplete; Socks5Error for a bad ATYP."""
    n = len(buf)
    if n <= off:
        return None
    atyp = buf[off]
    if atyp == ATYP_IPV4:
        end = off + 7
        if n < end:
            return None
        host = _ipv4_text(bytes(buf[off + 1:off + 5]))
    elif atyp == ATYP_DOMAIN:
        if n < off + 2:
            return None
        end = off + 4 + buf[off + 1]
        if n < end:
            return None
        host = bytes(buf[off + 2:end - 2]).decode("utf-8", "surrogateescape")
    elif atyp == ATYP_IPV6:
        end = off + 19
        if n < end:
            return None
        host = _ipv6_text(bytes(buf[off + 1:off + 17]))
    else:
        raise Socks5Error(f"unsupported address type {atyp}")
    return host, (buf[end - 2] << 8) | buf[end - 1], atyp, end


def parse_udp_header(datagram) -> tuple[str, int, int, bytes, bytes]:
    """RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA -> (host, port, atyp, header, payload).

    RSV is not checked (as upstream); FRAG != 0 (fragmentation is not supported), an unknown
    ATYP or a truncated header raise Socks5Error."""
    if len(datagram) < 4:
        raise Socks5Error("datagram too short")
    if datagram[2] != 0:
        raise Socks5Error(f"fragmented datagram (FRAG {datagram[2]}) not supported")
    r = _parse_address(datagram, 3)
    if r is None:
        raise Socks5Error("truncated address")
    host, port, atyp, end = r
    return host, port, atyp, bytes(datagram[:end]), bytes(datagram[end:])


def build_udp_header(host: str, port: int) -> bytes:
    """RSV FRAG=0 ATYP DST.ADDR DST.PORT for a datagram to or from host:port."""
    return b"\x00\x00\x00" + encode_address(host, port)


def build_reply(rep: int, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
    """`05 REP 00 ATYP BND.ADDR BND.PORT`."""
    if not 0 <= rep <= 255:
        raise Socks5Error(f"reply code out of range: {rep}")
    return bytes((VERSION, rep, 0)) + encode_address(bind_host, bind_port)


# -- the server connection ------------------------------------------------------------------

_GREETING, _AUTH, _REQUEST, _DONE, _CLOSED = range(5)


def _credential(value) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class Socks5Server:
    """One client connection: greeting, optional RFC 1929 auth, one request."""

    def __init__(self, username: str | bytes | None = None,
                 password: str | bytes | None = None) -> None:
        self.username = _credential(username)
        self.password = _credential(password)
        self.auth = bool(self.username or self.password)
        self.method = M_USERPASS if self.auth else M_NONE
        self._state = _GREETING
        self._buf = bytearray()
        self._out = bytearray()
        self._events: list = []
        self.rest = b""        # bytes the client sent after its request
        self.request = None    # the request event once parsed

    @property
    def done(self) -> bool:
        """The handshake is over (request parsed, or failed)."""
        return self._state >= _DONE

    def receive_data(self, data) -> None:
        if self._state == _DONE:
            if data:
                self.rest += bytes(data)
            return
        if self._state == _CLOSED:
            return
        if not data:
            where = ("greeting", "authentication", "request")[self._state]
            return self._fail(f"connection closed during the {where}")
        self._buf += data
        self._advance()

    def next_event(self):
        return self._events.pop(0) if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    reply = staticmethod(build_reply)

    def _fail(self, reason: str) -> None:
        self._state = _CLOSED
        self._buf.clear()
        self._events.append(ProtocolViolation(reason))

    def _advance(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _GREETING:
                if len(buf) < 2:
                    return
                if buf[0] != VERSION:
                    return self._fail(f"unsupported SOCKS version {buf[0]}")
                end = 2 + buf[1]
                if len(buf) < end:
                    return
                offered = buf[2:end]
                del buf[:end]
                if self.method not in offered:
                    self._out += bytes((VERSION, M_REFUSED))
                    return self._fail("no acceptable authentication method")
                self._out += bytes((VERSION, self.method))
                self._state = _AUTH if self.auth else _REQUEST
            elif state == _AUTH:
                if len(buf) < 2:
                    return
                if buf[0] != AUTH_VERSION:
                    return self._fail(f"unsupported authentication version {buf[0]}")
                ulen = buf[1]
                if len(buf) < 3 + ulen:
                    return
                end = 3 + ulen + buf[2 + ulen]
                if len(buf) < end:
                    return
                user = bytes(buf[2:2 + ulen])
                pw = bytes(buf[3 + ulen:end])
                del buf[:end]
                # both compares always run: no timing hint which field was wrong
                ok = hmac.compare_digest(user, self.username) & hmac.compare_digest(
                    pw, self.password)
                if not ok:
                    self._out += b"\x01\x01"
                    self._state = _CLOSED
                    buf.clear()
                    self._events.append(AuthFailed(user.decode("utf-8", "replace")))
                    return
                self._out += b"\x01\x00"
                self._state = _REQUEST
            elif state == _REQUEST:
                if len(buf) < 4:
                    return
                if buf[0] != VERSION:
                    return self._fail(f"unsupported SOCKS version {buf[0]} in request")
                cmd = buf[1]
                try:
                    r = _parse_address(buf, 3)
                except Socks5Error as exc:
                    self._out += build_reply(REP_ADDRESS_TYPE_NOT_SUPPORTED)
                    return self._fail(str(exc))
                if r is None:
                    return
                host, port, atyp, end = r
                self.rest = bytes(buf[end:])
                buf.clear()
                self._state = _DONE
                if cmd == CMD_CONNECT:
                    ev = ConnectRequest(host, port, atyp)
                elif cmd == CMD_UDP:
                    ev = UdpAssociateRequest(host, port, atyp)
                else:
                    ev = UnsupportedCommand(cmd, host, port, atyp)
                self.request = ev
                self._events.append(ev)
                return
            else:
                return
