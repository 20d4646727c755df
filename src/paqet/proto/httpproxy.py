"""Sans-I/O HTTP proxy requests: the request head a proxy client sends (CONNECT in authority
form, or a plain request with an absolute-form URI), its body, and the head to forward.

h11 does the HTTP/1.1 parsing (request line, header syntax, Content-Length / chunked body
framing, a bound on the head's size); this module adds what is proxy-specific: the target
in the request line, Basic proxy authentication, the headers a proxy must not forward, and
error responses. Nothing here raises anything but HttpProxyError.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field

import h11

MAX_HEAD = 16384  # bytes: a request head larger than this is refused (431)

#: headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the proxy's own
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})

REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed",
           407: "Proxy Authentication Required", 408: "Request Timeout",
           431: "Request Header Fields Too Large", 502: "Bad Gateway",
           504: "Gateway Timeout", 505: "HTTP Version Not Supported"}


class HttpProxyError(Exception):
    """A request the proxy cannot serve; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str                       # upper case, e.g. "CONNECT", "GET"
    target: str                       # the request-target as received
    host: str                         # where to connect (no brackets around IPv6)
    port: int
    path: str = ""                    # origin-form path for plain requests ("" for CONNECT)
    http_version: str = "1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # names as received
    chunked: bool = False             # the body arrives (and is forwarded) chunked

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


@dataclass
class Body:
    data: bytes


@dataclass
class End:
    pass


def _host_port(authority: str, default_port: int | None) -> tuple[str, int]:
    if not authority or "@" in authority:
        raise HttpProxyError(400, f"bad authority {authority!r}")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise HttpProxyError(400, f"bad authority {authority!r}")
        host, rest = authority[1:end], authority[end + 1:]
        if ":" not in host:
            raise HttpProxyError(400, f"bad IPv6 literal in {authority!r}")
        if rest and not rest.startswith(":"):
            raise HttpProxyError(400, f"bad authority {authority!r}")
        port_s = rest[1:] if rest else None
    else:
        host, sep, port_s = authority.rpartition(":")
        if not sep:
            host, port_s = authority, None
        elif ":" in host:
            raise HttpProxyError(400, f"IPv6 address without brackets in {authority!r}")
    if port_s is None or port_s == "":
        if default_port is None:
            raise HttpProxyError(400, f"no port in {authority!r}")
        port = default_port
    else:
        if not port_s.isascii() or not port_s.isdigit() or len(port_s) > 5:
            raise HttpProxyError(400, f"bad port in {authority!r}")
        port = int(port_s)
    if not 1 <= port <= 65535:
        raise HttpProxyError(400, f"port out of range in {authority!r}")
    if not host or len(host.encode("utf-8", "surrogateescape")) > 253 \
            or any(c in host for c in " /\\?#%\t\r\n\0"):
        raise HttpProxyError(400, f"bad host in {authority!r}")
    return host, port


def parse_target(method: str, target: str) -> tuple[str, int, str]:
    """(host, port, origin-form path) from a proxy request's target."""
    if method == "CONNECT":
        host, port = _host_port(target, None)
        return host, port, ""
    scheme, sep, rest = target.partition("://")
    if not sep:
        raise HttpProxyError(400, "a proxy request needs an absolute URI (http://host/path)")
    if scheme.lower() != "http":
        raise HttpProxyError(400, f"unsupported scheme {scheme!r}: use CONNECT for https")
    cut = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if 0 <= i < cut:
            cut = i
    authority, path = rest[:cut], rest[cut:]
    path = path.split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    host, port = _host_port(authority, 80)
    return host, port, path


class RequestParser:
    """Feed bytes from the proxy client; next_event() yields one Request, then Body chunks
    and End for a plain request (a CONNECT request has no body: End follows at once, and
    `trailing` holds the bytes the client sent after the head). None means more data is
    needed. Only one request per parser: a proxied connection carries one request."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self._h = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head
        self._pre: bytearray | None = bytearray()  # the head's bytes until its end is seen
        self.request: Request | None = None
        self.done = False
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        if self.done:
            return
        if not data:
            self._eof = True
        pre = self._pre
        if pre is not None and data:
            # h11 bounds only an incomplete head: bound a complete one too
            start = max(0, len(pre) - 3)
            pre += data[:self.max_head + 4 - len(pre)]
            end = pre.find(b"\r\n\r\n", start)
            if end < 0:
                end = pre.find(b"\n\n", max(0, start))
            if end >= 0:
                self._pre = None
                if end > self.max_head:
                    raise HttpProxyError(431, f"request head larger than {self.max_head} bytes")
            elif len(pre) > self.max_head:
                self._pre = None
                raise HttpProxyError(431, f"request head larger than {self.max_head} bytes")
        try:
            self._h.receive_data(data)
        except h11.ProtocolError as exc:
            raise HttpProxyError(400, str(exc) or "malformed request") from None

    @property
    def started(self) -> bool:
        """Whether any byte of a request arrived (a kept-alive connection that just ends
        is no error)."""
        return self._pre is None or bool(self._pre)

    @property
    def trailing(self) -> bytes:
        return bytes(self._h.trailing_data[0])

    def next_event(self) -> Request | Body | End | None:
        if self.done:
            return None
        try:
            ev = self._h.next_event()
        except h11.ProtocolError as exc:
            status = getattr(exc, "error_status_hint", 400)
            if status not in REASONS:
                status = 400
            raise HttpProxyError(status, str(exc) or "malformed request") from None
        except Exception as exc:  # h11 validates its own state; never let it escape
            raise HttpProxyError(400, f"malformed request: {exc!r}") from None
        if ev is h11.NEED_DATA:
            if self._eof:
                raise HttpProxyError(400, "the client closed before the request was complete")
            return None
        if ev is h11.PAUSED:
            return None
        if isinstance(ev, h11.Request):
            return self._request(ev)
        if isinstance(ev, h11.Data):
            return Body(bytes(ev.data))
        if isinstance(ev, h11.EndOfMessage):
            self.done = True
            return End()
        if isinstance(ev, h11.ConnectionClosed):
            raise HttpProxyError(400, "the client closed before the request was complete")
        raise HttpProxyError(400, f"unexpected {type(ev).__name__}")

    def _request(self, ev: h11.Request) -> Request:
        try:
            method = ev.method.decode("ascii").upper()
            target = ev.target.decode("ascii")
        except UnicodeDecodeError:
            raise HttpProxyError(400, "non-ASCII request line") from None
        host, port, path = parse_target(method, target)
        headers = [(bytes(k), bytes(v)) for k, v in ev.headers.raw_items()]
        chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
        if chunked and any(k.lower() == b"content-length" for k, _ in headers):
            # both framings: the classic request-smuggling shape; refuse rather than guess
            raise HttpProxyError(400, "both Transfer-Encoding and Content-Length")
        self.request = Request(method=method, target=target, host=host, port=port, path=path,
                               http_version=ev.http_version.decode("ascii", "replace"),
                               headers=headers, chunked=chunked)
        return self.request


def check_auth(req: Request, username: str, password: str) -> bool:
    """Basic proxy authentication: True when not configured or the credentials match."""
    if not username and not password:
        return True
    value = req.header(b"proxy-authorization")
    if not value:
        return False
    scheme, _, cred = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        raw = base64.b64decode(cred.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, pw = raw.partition(b":")
    if not sep:
        return False
    ok_user = hmac.compare_digest(user, username.encode("utf-8"))
    ok_pw = hmac.compare_digest(pw, password.encode("utf-8"))
    return ok_user and ok_pw


def _authority(host: str, port: int) -> bytes:
    h = f"[{host}]" if ":" in host else host
    return (h if port == 80 else f"{h}:{port}").encode("utf-8", "surrogateescape")


def wants_keep_alive(req: Request) -> bool:
    """Whether the client wants its connection kept for another request: HTTP/1.1 without a
    `close` in Connection or Proxy-Connection (HTTP/1.0 clients get one request)."""
    if req.http_version != "1.1":
        return False
    for k, v in req.headers:
        if k.lower() in (b"connection", b"proxy-connection") and \
                any(t.strip().lower() == b"close" for t in v.split(b",")):
            return False
    return True


def forward_head(req: Request, keep_alive: bool = False) -> bytes:
    """The head to send to the origin server: origin-form target, Host from the URI, no
    hop-by-hop or proxy headers (nor those the client's Connection header names), and
    `Connection: close` unless the origin connection is to be kept (`keep_alive`)."""
    named = set()
    for k, v in req.headers:
        if k.lower() == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    lines = [f"{req.method} {req.path} HTTP/1.1".encode("ascii"),
             b"Host: " + _authority(req.host, req.port)]
    for k, v in req.headers:
        low = k.lower()
        if low in HOP_BY_HOP or low in named or low == b"host":
            continue
        lines.append(k + b": " + v)
    if req.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class ResponseTracker:
    """Follows the origin's response to one request (its bytes are relayed untouched) to
    tell where it ends and whether the origin keeps the connection for another request.
    `done`: the response is complete; `reusable`: ... and the connection stays usable;
    `broken`: not parseable (then relay until the origin closes, and do not reuse)."""

    def __init__(self, method: str) -> None:
        self.done = False
        self.reusable = False
        self.broken = False
        self.status: int | None = None
        self._h = h11.Connection(h11.CLIENT)
        try:  # put the client side where it is once the request went out (method matters:
            # a response to HEAD has no body)
            self._h.send(h11.Request(method=method.encode("ascii", "replace"), target=b"/",
                                     headers=[(b"Host", b"origin")]))
            self._h.send(h11.EndOfMessage())
        except Exception:
            self.broken = True

    def feed(self, data: bytes) -> bool:
        """Bytes from the origin (b"" = it closed); returns `done`."""
        if self.done and data:
            self.reusable = False  # bytes after the response: the connection is out of step
        if self.done or self.broken:
            return self.done
        try:
            self._h.receive_data(data)
            for _ in range(1000):
                ev = self._h.next_event()
                if ev is h11.NEED_DATA or ev is h11.PAUSED:
                    break
                if isinstance(ev, h11.Response):
                    self.status = ev.status_code
                elif isinstance(ev, h11.EndOfMessage):
                    self.done = True
                    self.reusable = (bool(data) and self._h.their_state is h11.DONE
                                     and not self._h.trailing_data[0])
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    self.broken = True
                    break
        except Exception:  # h11.ProtocolError, or its state checks
            self.broken = True
        return self.done


def encode_body(req: Request, data: bytes) -> bytes:
    if not req.chunked:
        return data
    return b"%x\r\n" % len(data) + data + b"\r\n" if data else b""


def encode_end(req: Request) -> bytes:
    return b"0\r\n\r\n" if req.chunked else b""


def response(status: int, message: str = "", headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete error (or other) response that ends the connection."""
    body = (message.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8", "replace") \
        if message else b""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}",
              "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


CONNECT_OK = b"HTTP/1.1 200 Connection established\r\n\r\n"

#: SOCKS5 reply codes (the server's dial status) -> HTTP status
_STATUS = {0x01: 502, 0x02: 502, 0x03: 502, 0x04: 502, 0x05: 502, 0x06: 504, 0x07: 502,
           0x08: 502}


def status_for_dial(rep: int) -> int:
    return _STATUS.get(rep, 502)


__all__ = ["HttpProxyError", "Request", "Body", "End", "RequestParser", "parse_target",
           "check_auth", "wants_keep_alive", "forward_head", "ResponseTracker", "encode_body", "encode_end", "response",
           "status_for_dial", "CONNECT_OK", "MAX_HEAD"]
