"""paqet's application messages (the first bytes of every smux stream), in the three
dialects upstream has spoken (../shared/spec/app-protocol.md):

* ``alpha21``: ``50 01 TYPE LEN(u16 BE) BODY`` (v1.0.0-alpha.21, the default)
* ``alpha20``: ``50 01 TYPE BODY`` read field by field (alpha.20 only)
* ``gob``: Go encoding/gob of ``Proto{Type, Addr{Host, Port}, TCPF []TCPF}`` (alpha.6–19)

Hosts travel as raw bytes (Go never validates them); we decode them as UTF-8 with surrogateescape so
any byte survives a round trip; encode takes a str (UTF-8 + surrogateescape) or bytes host.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from paqet.proto import gob

MAGIC, VERSION = 0x50, 0x01
PPING, PPONG, PTCPF, PTCP, PUDP = 1, 2, 3, 4, 5
# Extensions between Python peers (alpha21 framing only; docs/protocol.md). A Go server
# answers PHELLO by closing the stream ("unknown message type"), so a client only uses
# PTCPS (PTCPR) after a PHELLO reply listed CAP_STATUS (CAP_REPORT).
PHELLO, PTCPS, PTCPR = 0x10, 0x14, 0x15
CAP_STATUS = 0x01
# the sender of the Hello paces its KCP sends (congestion "bbr"): the receiver may then
# advertise windows that do not need to pace it (kcp/window.py, peer_paces)
CAP_PACED = 0x02
CAP_REPORT = 0x04  # the server reports the dial in its first byte (PTCPR)
MAX_HOST, MAX_FLAGS, MAX_BODY = 253, 64, 4096
DIALECTS = ("alpha21", "alpha20", "gob")

FLAG_BITS = {"F": 0x001, "S": 0x002, "R": 0x004, "P": 0x008, "A": 0x010, "U": 0x020,
             "E": 0x040, "C": 0x080, "N": 0x100}


class ProtocolError(ValueError):
    """A malformed message; str() is upstream's error text."""


@dataclasses.dataclass(frozen=True)
class Ping:
    pass


@dataclasses.dataclass(frozen=True)
class Pong:
    pass


@dataclasses.dataclass(frozen=True)
class TcpFlags:
    flags: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class TcpConnect:
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class UdpAssociate:
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class Hello:
    """Extension: capability exchange (the client's offer, or the server's answer)."""
    caps: int = 0


@dataclasses.dataclass(frozen=True)
class TcpConnectStatus:
    """Extension: PTCP whose server answers one status byte (a SOCKS5 reply code) once the
    dial succeeded or failed, before any data."""
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class TcpConnectReport:
    """Extension: PTCP whose server relays at once and reports the dial in the first byte
    it sends on the stream: 0 in front of the target's first bytes (or its end), else a
    SOCKS5 reply code and then the stream's end. The client does not wait for it."""
    host: str
    port: int


Message = (Ping | Pong | TcpFlags | TcpConnect | UdpAssociate | Hello | TcpConnectStatus
           | TcpConnectReport)
#: the messages that carry an address (PTCP, PUDP and the extensions' PTCPS, PTCPR)
_ADDRESSED = (TcpConnect, UdpAssociate, TcpConnectStatus, TcpConnectReport)


def flags_from_string(s: str) -> int:
    v = 0
    for ch in s:
        v |= FLAG_BITS[ch]
    return v


def flags_to_string(v: int) -> str:
    return "".join(ch for ch, bit in FLAG_BITS.items() if v & bit)


def _host_bytes(host) -> bytes:
    if isinstance(host, (bytes, bytearray)):
        return bytes(host)
    try:
        return host.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ProtocolError("protocol: host is not encodable (lone surrogate)") from None


def _host_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _ip_text(ip, zone=b"") -> str:
    """alpha.6-10 sent net.IP bytes (4 or 16, IPv4 usually in the v4-mapped form), as Go's
    UDPAddr.String() shows them: empty for no IP (the server dials ":port", as Go does),
    "?" + hex for other lengths (a dial then fails, as in Go), "%zone" for IPv6."""
    if not isinstance(ip, bytes) or not ip:
        return ""
    if len(ip) not in (4, 16):
        return "?" + ip.hex()
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        a = a.ipv4_mapped
    text = str(a)
    if isinstance(a, ipaddress.IPv6Address) and isinstance(zone, bytes) and zone:
        text += "%" + _host_text(zone)
    return text


def _type_of(msg) -> int:
    t = type(msg)
    if t is Ping:
        return PPING
    if t is Pong:
        return PPONG
    if t is TcpFlags:
        return PTCPF
    if t is TcpConnect:
        return PTCP
    if t is UdpAssociate:
        return PUDP
    if t is Hello:
        return PHELLO
    if t is TcpConnectStatus:
        return PTCPS
    if t is TcpConnectReport:
        return PTCPR
    raise ProtocolError("protocol: unknown message type")


def _check(msg) -> None:
    if isinstance(msg, _ADDRESSED):
        if msg.host is None:
            raise ProtocolError("protocol: address required")
        hb = _host_bytes(msg.host)
        if len(hb) > MAX_HOST:
            raise ProtocolError(f"protocol: host length {len(hb)} exceeds max {MAX_HOST}")
        if type(msg.port) is not int or not 0 <= msg.port <= 0xFFFF:
            raise ProtocolError(f"protocol: port {msg.port} out of range")
    elif isinstance(msg, TcpFlags):
        if len(msg.flags) > MAX_FLAGS:
            raise ProtocolError(f"protocol: tcpf count {len(msg.flags)} exceeds max {MAX_FLAGS}")


def _body(msg) -> bytes:
    if isinstance(msg, Hello):
        return bytes((msg.caps & 0xFF,))
    if isinstance(msg, _ADDRESSED):
        hb = _host_bytes(msg.host)
        return bytes((len(hb),)) + hb + msg.port.to_bytes(2, "big")
    if isinstance(msg, TcpFlags):
        return bytes((len(msg.flags),)) + b"".join((f & 0x1FF).to_bytes(2, "big")
                                                   for f in msg.flags)
    return b""


def _gob_value(msg) -> bytes:
    fields = [(0, gob.enc_uint(_type_of(msg)))]
    if isinstance(msg, (TcpConnect, UdpAssociate)):
        addr = []
        hb = _host_bytes(msg.host)
        if hb:
            addr.append((0, gob.enc_string(hb)))
        if msg.port:
            addr.append((1, gob.enc_int(msg.port)))
        fields.append((1, gob.enc_struct(addr)))
    elif isinstance(msg, TcpFlags) and msg.flags:
        elems = []
        for f in msg.flags:
            elems.append(gob.enc_struct([(i, b"\x01") for i in range(9) if f & (1 << i)]))
        fields.append((2, gob.enc_uint(len(msg.flags)) + b"".join(elems)))
    return gob.message(gob.enc_int(gob.PROTO_ID) + gob.enc_struct(fields))


def encode(msg, dialect: str = "alpha21") -> bytes:
    t = _type_of(msg)
    _check(msg)
    if t in (PHELLO, PTCPS, PTCPR) and dialect != "alpha21":
        raise ProtocolError("protocol: extensions need the alpha21 dialect")
    if dialect == "alpha21":
        body = _body(msg)
        return bytes((MAGIC, VERSION, t)) + len(body).to_bytes(2, "big") + body
    if dialect == "alpha20":
        body = _body(msg)
        if t == PTCPF and not msg.flags:
            body = b"\x00"
        return bytes((MAGIC, VERSION, t)) + body
    if dialect == "gob":
        return gob.TYPEDEFS + _gob_value(msg)
    raise ValueError(f"unknown dialect {dialect!r}")


class NeedMore(Exception):
    """Incomplete; `need` (0: unknown) is the buffer length below which decoding again is
    sure to raise NeedMore again."""

    def __init__(self, need: int = 0) -> None:
        super().__init__(need)
        self.need = need


def _decode_body(t: int, body: bytes):
    if t == PPING:
        return Ping()
    if t == PPONG:
        return Pong()
    if t == PHELLO:
        return Hello(body[0] if body else 0)
    if t in (PTCP, PUDP, PTCPS, PTCPR):
        if len(body) < 3:
            raise ProtocolError("protocol: truncated address body")
        hl = body[0]
        if hl > MAX_HOST or 1 + hl + 2 != len(body):
            raise ProtocolError(f"protocol: bad host length {hl}")
        host = _host_text(body[1:1 + hl])
        port = int.from_bytes(body[1 + hl:3 + hl], "big")
        if t == PTCPS:
            return TcpConnectStatus(host, port)
        if t == PTCPR:
            return TcpConnectReport(host, port)
        return TcpConnect(host, port) if t == PTCP else UdpAssociate(host, port)
    if t == PTCPF:
        if len(body) < 1:
            raise ProtocolError("protocol: truncated tcpf body")
        n = body[0]
        if n > MAX_FLAGS or 1 + 2 * n != len(body):
            raise ProtocolError(f"protocol: bad tcpf count {n}")
        return TcpFlags(tuple(int.from_bytes(body[1 + 2 * i:3 + 2 * i], "big") & 0x1FF
                              for i in range(n)))
    raise ProtocolError("protocol: unknown message type")


def _check_header(buf: bytes) -> None:
    if buf[0] != MAGIC:
        raise ProtocolError(f"protocol: bad magic byte {buf[0]:#04x} (want {MAGIC:#04x})")
    if len(buf) > 1 and buf[1] != VERSION:
        raise ProtocolError(f"protocol: unsupported version {buf[1]:#04x} (want {VERSION:#04x})")


def decode_alpha21(buf: bytes) -> tuple[object, int]:
    """(message, bytes used); NeedMore when incomplete."""
    if not buf:
        raise NeedMore()
    _check_header(buf)
    if len(buf) < 5:
        raise NeedMore()
    t = buf[2]
    blen = int.from_bytes(buf[3:5], "big")
    if blen > MAX_BODY:
        raise ProtocolError(f"protocol: body length {blen} exceeds max {MAX_BODY}")
    if len(buf) < 5 + blen:
        raise NeedMore()
    body = bytes(buf[5:5 + blen])
    if t in (PPING, PPONG):
        return (Ping() if t == PPING else Pong()), 5 + blen
    return _decode_body(t, body), 5 + blen


def decode_alpha20(buf: bytes) -> tuple[object, int]:
    if not buf:
        raise NeedMore()
    _check_header(buf)
    if len(buf) < 3:
        raise NeedMore()
    t = buf[2]
    if t in (PPING, PPONG):
        return (Ping() if t == PPING else Pong()), 3
    if t in (PTCP, PUDP):
        if len(buf) < 4:
            raise NeedMore()
        hl = buf[3]
        if hl > MAX_HOST:
            raise ProtocolError(f"protocol: host length {hl} exceeds max {MAX_HOST}")
        end = 4 + hl + 2
        if len(buf) < end:
            raise NeedMore()
        return _decode_body(t, bytes(buf[3:end])), end
    if t == PTCPF:
        if len(buf) < 4:
            raise NeedMore()
        n = buf[3]
        if n > MAX_FLAGS:
            raise ProtocolError(f"protocol: tcpf count {n} exceeds max {MAX_FLAGS}")
        end = 4 + 2 * n
        if len(buf) < end:
            raise NeedMore()
        return _decode_body(t, bytes(buf[3:end])), end
    raise ProtocolError("protocol: unknown message type")


def decode_gob(buf: bytes) -> tuple[object, int]:
    try:
        value, used = gob.decode_stream(buf)
    except gob.Incomplete as exc:
        raise NeedMore(exc.need) from None
    except gob.GobError as exc:
        raise ProtocolError(str(exc)) from None
    t = value.get("Type", 0)
    if t in (PTCP, PUDP):
        addr = value.get("Addr")
        if not isinstance(addr, dict):
            raise ProtocolError("protocol: address required")
        if "IP" in addr and "Host" not in addr:
            host = _ip_text(addr["IP"], addr.get("Zone", b""))
        else:
            raw = addr.get("Host", b"")
            host = _host_text(raw) if isinstance(raw, bytes) else ""
        port = addr.get("Port", 0)
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise ProtocolError(f"protocol: port {port} out of range")
        return (TcpConnect(host, port) if t == PTCP else UdpAssociate(host, port)), used
    if t == PTCPF:
        elems = value.get("TCPF") or []
        if not isinstance(elems, list):
            # Go's decoder refuses a TCPF field whose wire type is not a slice
            raise ProtocolError("protocol: TCPF is not a list")
        flags = []
        for elem in elems:
            if not isinstance(elem, dict):
                continue
            v = 0
            for i, name in enumerate(gob.FLAG_FIELDS):
                if elem.get(name):
                    v |= 1 << i
            flags.append(v)
        return TcpFlags(tuple(flags[:MAX_FLAGS])), used
    if t == PPING:
        return Ping(), used
    if t == PPONG:
        return Pong(), used
    raise ProtocolError("protocol: unknown message type")


_DECODERS = {"alpha21": decode_alpha21, "alpha20": decode_alpha20, "gob": decode_gob}


def detect_dialect(buf: bytes) -> str | None:
    """Which dialect the first bytes of a stream are in; None if it cannot be told yet.

    Rules (app-protocol.md §4.6; a message always arrives in its sender's first smux
    frame): not 0x50 → gob. Otherwise the 4th/5th bytes decide: alpha.21's BODYLEN high
    byte is 0 (1 only for a 253-byte host) and its low byte must agree with the body,
    while alpha.20 puts HOSTLEN or COUNT there."""
    n = len(buf)
    if n == 0:
        return None
    if buf[0] != MAGIC:
        return "gob"
    if n >= 2 and buf[1] != VERSION:
        return "alpha21"  # the decoder reports the bad version
    if n < 3:
        return None  # magic and version alone do not tell the dialect
    t = buf[2]
    if t in (PPING, PPONG):
        if n == 3 or (n >= 4 and buf[3] != 0):
            return "alpha20"
        if n >= 5:
            return "alpha21" if buf[4] == 0 or buf[3] == 0 else "alpha20"
        return None
    if t == PTCPF:
        if n == 4 and buf[3] == 0:
            return "alpha20"
        if n >= 4 and buf[3] != 0:
            return "alpha20"
        return "alpha21" if n >= 5 else None
    if t in (PTCP, PUDP):
        if n < 6:
            return None
        if buf[3] == 0 and buf[4] == buf[5] + 3:
            return "alpha21"
        if buf[3] == 1 and buf[4] == 0 and buf[5] == 253:
            return "alpha21"
        return "alpha20"
    return "alpha21"  # unknown types, PHELLO, PTCPS and PTCPR: the decoder decides


class MessageReader:
    """Reads one message from the start of a stream, incrementally.

    ``feed(data)`` returns the message once complete (None until then) and raises
    ProtocolError with upstream's text; ``rest`` holds the bytes after the message;
    ``dialect`` is the dialect used ("auto" picks it from the first bytes)."""

    def __init__(self, dialect: str = "alpha21", max_size: int = 1 << 16) -> None:
        if dialect != "auto" and dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self.dialect = None if dialect == "auto" else dialect
        self._buf = bytearray()
        self.rest = b""
        self.message = None
        self.max_size = max_size
        # decoding again below this many buffered bytes cannot succeed: a gob stream of many
        # type definitions is not re-decoded for every small piece (found while fuzzing: 1-byte
        # pieces after ~56 KB of definitions cost ~9 ms each, quadratic in the stream)
        self._need = 0

    def feed(self, data: bytes):
        if self.message is not None:
            self.rest += data
            return self.message
        self._buf += data
        buf = self._buf
        if self.dialect is None:
            self.dialect = detect_dialect(buf)
            if self.dialect is None:
                return None
        if len(buf) < self._need:
            if len(buf) > self.max_size:
                raise ProtocolError("protocol: message too large")
            return None
        try:
            msg, used = _DECODERS[self.dialect](buf)
        except NeedMore as exc:
            if len(buf) > self.max_size:
                raise ProtocolError("protocol: message too large") from None
            self._need = exc.need
            return None
        self.message = msg
        self.rest = bytes(buf[used:])
        self._buf = bytearray()
        return msg

    def feed_eof(self):
        """End of stream: the error Go's decoder would give for what is buffered."""
        if self.message is not None:
            return self.message
        if not self._buf:
            raise ProtocolError("EOF")
        if self.dialect is None:
            self.dialect = "alpha20" if self._buf[:1] == bytes((MAGIC,)) else "gob"
            try:
                msg, used = _DECODERS[self.dialect](self._buf)
                self.message = msg
                self.rest = bytes(self._buf[used:])
                return msg
            except NeedMore:
                pass
        raise ProtocolError("unexpected EOF")


def decode(buf: bytes, dialect: str = "alpha21"):
    """Decode a complete message (tests, tools): ProtocolError for anything else."""
    r = MessageReader(dialect)
    msg = r.feed(buf)
    if msg is None:
        r.feed_eof()
    return msg
