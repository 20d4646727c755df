"""SOCKS5 server state machine and UDP header codec (paqet.proto.socks5): table-driven
handshakes byte for byte, every split of the input, error-to-reply mapping, and the UDP
request header both ways."""

import errno
import socket

import pytest

from paqet.proto import socks5 as s

GREET_NONE = b"\x05\x01\x00"
REQ_V4 = b"\x05\x01\x00\x01\xc6\x12\x00\x01\x00\x50"                      # 198.18.0.1:80
REQ_V6 = b"\x05\x01\x00\x04" + bytes.fromhex("20010002" + "00" * 11 + "01") + b"\x01\xbb"
REQ_DOM = b"\x05\x01\x00\x03\x0bexample.com\x00\x35"
UDP_REQ_ZERO = b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
FAIL_REPLY = b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"


def run(data: bytes, username=None, password=None, split: int | None = None):
    """Feed `data` (whole, or in chunks of `split`); return (events, bytes sent, machine)."""
    m = s.Socks5Server(username, password)
    chunks = [data] if split is None else [data[i:i + split] for i in range(0, len(data), split)]
    events, out = [], b""
    for c in chunks:
        m.receive_data(c)
        out += m.data_to_send()
        while (ev := m.next_event()) is not None:
            events.append(ev)
    return events, out, m


# (name, credentials, client bytes, expected events, expected bytes sent)
CASES = [
    ("connect-v4", (None, None), GREET_NONE + REQ_V4,
     [s.ConnectRequest("198.18.0.1", 80, 1)], b"\x05\x00"),
    ("connect-v6", (None, None), GREET_NONE + REQ_V6,
     [s.ConnectRequest("2001:2::1", 443, 4)], b"\x05\x00"),
    ("connect-domain", (None, None), GREET_NONE + REQ_DOM,
     [s.ConnectRequest("example.com", 53, 3)], b"\x05\x00"),
    ("empty-domain", (None, None), GREET_NONE + b"\x05\x01\x00\x03\x00\x00\x16",
     [s.ConnectRequest("", 22, 3)], b"\x05\x00"),
    ("v4-mapped-v6-as-dotted", (None, None),
     GREET_NONE + b"\x05\x01\x00\x04" + b"\x00" * 10 + b"\xff\xff\xc6\x12\x00\x02\x00\x50",
     [s.ConnectRequest("198.18.0.2", 80, 4)], b"\x05\x00"),
    ("udp-associate", (None, None), GREET_NONE + UDP_REQ_ZERO,
     [s.UdpAssociateRequest("0.0.0.0", 0, 1)], b"\x05\x00"),
    ("bind-unsupported", (None, None), GREET_NONE + b"\x05\x02\x00\x01\xc6\x12\x00\x01\x00\x50",
     [s.UnsupportedCommand(2, "198.18.0.1", 80, 1)], b"\x05\x00"),
    ("cmd-9-unsupported", (None, None), GREET_NONE + b"\x05\x09\x00\x03\x01a\x00\x01",
     [s.UnsupportedCommand(9, "a", 1, 3)], b"\x05\x00"),
    ("method-among-many", (None, None), b"\x05\x03\x01\x02\x00" + REQ_V4,
     [s.ConnectRequest("198.18.0.1", 80, 1)], b"\x05\x00"),
    ("rsv-not-checked", (None, None), GREET_NONE + b"\x05\x01\x7f\x01\xc6\x12\x00\x01\x00\x50",
     [s.ConnectRequest("198.18.0.1", 80, 1)], b"\x05\x00"),
    ("no-methods", (None, None), b"\x05\x00",
     [s.ProtocolViolation("no acceptable authentication method")], b"\x05\xff"),
    ("only-userpass-offered", (None, None), b"\x05\x01\x02",
     [s.ProtocolViolation("no acceptable authentication method")], b"\x05\xff"),
    ("greeting-version-4", (None, None), b"\x04\x01\x00",
     [s.ProtocolViolation("unsupported SOCKS version 4")], b""),
    ("request-version-4", (None, None), GREET_NONE + b"\x04" + REQ_V4[1:],
     [s.ProtocolViolation("unsupported SOCKS version 4 in request")], b"\x05\x00"),
    ("bad-atyp-gets-0x08", (None, None), GREET_NONE + b"\x05\x01\x00\x02\x00\x00\x00\x00",
     [s.ProtocolViolation("unsupported address type 2")],
     b"\x05\x00" + b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"),
    ("userpass-ok", ("user", "pass"), b"\x05\x01\x02" + b"\x01\x04user\x04pass" + REQ_V4,
     [s.ConnectRequest("198.18.0.1", 80, 1)], b"\x05\x02\x01\x00"),
    ("userpass-wrong-password", ("user", "pass"), b"\x05\x01\x02" + b"\x01\x04user\x04pasS",
     [s.AuthFailed("user")], b"\x05\x02\x01\x01"),
    ("userpass-wrong-user", ("user", "pass"), b"\x05\x01\x02" + b"\x01\x04usex\x04pass",
     [s.AuthFailed("usex")], b"\x05\x02\x01\x01"),
    ("userpass-prefix-is-not-a-match", ("user", "pass"), b"\x05\x01\x02\x01\x03use\x03pas",
     [s.AuthFailed("use")], b"\x05\x02\x01\x01"),
    ("password-only-empty-user", (None, "pw"), b"\x05\x01\x02\x01\x00\x02pw" + REQ_DOM,
     [s.ConnectRequest("example.com", 53, 3)], b"\x05\x02\x01\x00"),
    ("auth-required-none-offered", ("user", "pass"), GREET_NONE,
     [s.ProtocolViolation("no acceptable authentication method")], b"\x05\xff"),
    ("auth-version-5", ("user", "pass"), b"\x05\x01\x02\x05\x04user\x04pass",
     [s.ProtocolViolation("unsupported authentication version 5")], b"\x05\x02"),
    ("utf8-credentials", ("ü", "ß"), b"\x05\x01\x02\x01\x02\xc3\xbc\x02\xc3\x9f" + REQ_V4,
     [s.ConnectRequest("198.18.0.1", 80, 1)], b"\x05\x02\x01\x00"),
]


@pytest.mark.parametrize("name,creds,data,events,sent", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("split", [None, 1, 2, 3, 7])
def test_handshake_table(name, creds, data, events, sent, split):
    got, out, m = run(data, *creds, split=split)
    assert got == events
    assert out == sent
    assert m.done
    if isinstance(events[0], (s.ConnectRequest, s.UdpAssociateRequest, s.UnsupportedCommand)):
        assert m.request == events[0]
        assert m.rest == b""


def test_incomplete_input_produces_nothing():
    for data in (b"", b"\x05", b"\x05\x02\x00", GREET_NONE + REQ_V4[:-1],
                 GREET_NONE + REQ_DOM[:6], GREET_NONE + REQ_V6[:20]):
        m = s.Socks5Server()
        if data:
            m.receive_data(data)
        assert m.next_event() is None
        assert not m.done


def test_bytes_after_the_request_are_kept_in_rest():
    payload = b"GET / HTTP/1.1\r\n\r\n"
    events, out, m = run(GREET_NONE + REQ_DOM + payload)
    assert events == [s.ConnectRequest("example.com", 53, 3)]
    assert m.rest == payload
    m.receive_data(b"more")            # fed after the event: appended, not parsed
    m.receive_data(b"")
    assert m.rest == payload + b"more"
    assert m.next_event() is None


def test_nothing_is_parsed_after_a_failure():
    m = s.Socks5Server("u", "p")
    m.receive_data(b"\x05\x01\x02\x01\x01x\x01y")
    assert m.data_to_send() == b"\x05\x02\x01\x01"
    assert m.next_event() == s.AuthFailed("x")
    m.receive_data(b"\x01\x01u\x01p" + REQ_V4)
    assert m.next_event() is None
    assert m.data_to_send() == b""
    assert m.request is None


@pytest.mark.parametrize("data,where", [(b"", "greeting"), (b"\x05\x01\x02", "authentication"),
                                        (GREET_NONE, "request")])
def test_eof_during_handshake(data, where):
    m = s.Socks5Server("u", "p") if where == "authentication" else s.Socks5Server()
    if data:
        m.receive_data(data)
    m.data_to_send()
    m.receive_data(b"")
    assert m.next_event() == s.ProtocolViolation(f"connection closed during the {where}")


def test_bytes_credentials_and_non_utf8_username():
    events, out, _ = run(b"\x05\x01\x02\x01\x01\xff\x01\xfe" + REQ_V4, b"\xff", b"\xfe")
    assert out == b"\x05\x02\x01\x00"
    assert events == [s.ConnectRequest("198.18.0.1", 80, 1)]
    events, out, _ = run(b"\x05\x01\x02\x01\x01\xfe\x01\xfe", b"\xff", b"\xfe")
    assert events == [s.AuthFailed("\ufffd")]


def test_non_utf8_domain_round_trips():
    raw = b"\xffexample\x80"
    events, _, _ = run(GREET_NONE + b"\x05\x01\x00\x03" + bytes((len(raw),)) + raw + b"\x00\x50")
    host = events[0].host
    assert isinstance(host, str)
    assert s.encode_address(host, 80) == b"\x03" + bytes((len(raw),)) + raw + b"\x00\x50"


# -- replies ----------------------------------------------------------------------------------

REPLIES = [
    (s.REP_SUCCEEDED, "127.0.0.1", 1080, b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"),
    (s.REP_GENERAL_FAILURE, "0.0.0.0", 0, FAIL_REPLY),
    (s.REP_SUCCEEDED, "2001:2::5", 1, b"\x05\x00\x00\x04" + bytes.fromhex("20010002" + "00" * 11
                                                                        + "05") + b"\x00\x01"),
    (s.REP_SUCCEEDED, "[2001:2::5]", 1, b"\x05\x00\x00\x04" + bytes.fromhex("20010002" + "00" * 11
                                                                          + "05") + b"\x00\x01"),
    (s.REP_SUCCEEDED, "fe80::1%lo", 2, b"\x05\x00\x00\x04" + bytes.fromhex("fe80" + "00" * 13
                                                                         + "01") + b"\x00\x02"),
    (s.REP_SUCCEEDED, "::ffff:198.18.0.1", 3, b"\x05\x00\x00\x01\xc6\x12\x00\x01\x00\x03"),
    (s.REP_CONNECTION_REFUSED, "example.com", 65535, b"\x05\x05\x00\x03\x0bexample.com\xff\xff"),
]


@pytest.mark.parametrize("rep,host,port,wire", REPLIES)
def test_reply_bytes(rep, host, port, wire):
    assert s.Socks5Server.reply(rep, host, port) == wire
    assert s.Socks5Server().reply(rep, host, port) == wire


def test_reply_defaults_and_constants():
    assert s.build_reply(s.REP_GENERAL_FAILURE) == FAIL_REPLY
    codes = [s.REP_SUCCEEDED, s.REP_GENERAL_FAILURE, s.REP_NOT_ALLOWED,
             s.REP_NETWORK_UNREACHABLE, s.REP_HOST_UNREACHABLE, s.REP_CONNECTION_REFUSED,
             s.REP_TTL_EXPIRED, s.REP_COMMAND_NOT_SUPPORTED, s.REP_ADDRESS_TYPE_NOT_SUPPORTED]
    assert codes == list(range(9))
    assert sorted(s.REPLY_NAMES) == codes


@pytest.mark.parametrize("host,port", [("198.18.0.1", 65536), ("198.18.0.1", -1),
                                       ("a" * 256, 1)])
def test_unencodable_addresses_raise_module_error(host, port):
    with pytest.raises(s.Socks5Error):
        s.encode_address(host, port)
    with pytest.raises(s.Socks5Error):
        s.build_udp_header(host, port)


# -- error mapping -----------------------------------------------------------------------------

ERRORS = [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), s.REP_CONNECTION_REFUSED),
    (OSError(errno.ENETUNREACH, "net"), s.REP_NETWORK_UNREACHABLE),
    (OSError(errno.ENETDOWN, "net down"), s.REP_NETWORK_UNREACHABLE),
    (OSError(errno.EHOSTUNREACH, "host"), s.REP_HOST_UNREACHABLE),
    (OSError(errno.EHOSTDOWN, "host down"), s.REP_HOST_UNREACHABLE),
    (OSError(errno.ETIMEDOUT, "timed out"), s.REP_TTL_EXPIRED),
    (TimeoutError(), s.REP_TTL_EXPIRED),
    (socket.timeout(), s.REP_TTL_EXPIRED),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), s.REP_HOST_UNREACHABLE),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), s.REP_HOST_UNREACHABLE),
    (socket.herror(1, "Unknown host"), s.REP_HOST_UNREACHABLE),
    (PermissionError(errno.EACCES, "denied"), s.REP_NOT_ALLOWED),
    (OSError(errno.EPERM, "firewall"), s.REP_NOT_ALLOWED),
    (OSError(errno.EAFNOSUPPORT, "family"), s.REP_ADDRESS_TYPE_NOT_SUPPORTED),
    (OSError(errno.ECONNRESET, "reset"), s.REP_GENERAL_FAILURE),
    (OSError("no errno at all"), s.REP_GENERAL_FAILURE),
    # asyncio's combined error when every address of a name failed
    (OSError("Multiple exceptions: [Errno 101] Network is unreachable, "
             "[Errno 111] Connect call failed ('198.18.0.1', 9)"), s.REP_CONNECTION_REFUSED),
    (OSError("Multiple exceptions: [Errno 113] No route, [Errno 101] Net"),
     s.REP_HOST_UNREACHABLE),
    (ValueError("not an OSError"), s.REP_GENERAL_FAILURE),
    (errno.ECONNREFUSED, s.REP_CONNECTION_REFUSED),
    (errno.EPIPE, s.REP_GENERAL_FAILURE),
]


@pytest.mark.parametrize("exc,rep", ERRORS, ids=[repr(e)[:40] for e, _ in ERRORS])
def test_reply_for_error(exc, rep):
    assert s.reply_for_error(exc) == rep


def test_real_refused_connection_maps_to_0x05():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()                                   # nothing listens there now
    c = socket.socket()
    try:
        with pytest.raises(OSError) as info:
            c.connect(("127.0.0.1", port))
    finally:
        c.close()
    assert s.reply_for_error(info.value) == s.REP_CONNECTION_REFUSED


# -- UDP request header -------------------------------------------------------------------------

UDP = [
    ("198.18.0.9", 53, 1, b"\x00\x00\x00\x01\xc6\x12\x00\x09\x00\x35"),
    ("2001:2::9", 5353, 4, b"\x00\x00\x00\x04" + bytes.fromhex("20010002" + "00" * 11 + "09")
     + b"\x14\xe9"),
    ("example.com", 0, 3, b"\x00\x00\x00\x03\x0bexample.com\x00\x00"),
    ("", 7, 3, b"\x00\x00\x00\x03\x00\x00\x07"),
]


@pytest.mark.parametrize("host,port,atyp,header", UDP)
def test_udp_header_both_ways(host, port, atyp, header):
    assert s.build_udp_header(host, port) == header
    for payload in (b"", b"payload", bytes(range(256)) * 16):
        for wrap in (bytes, bytearray, memoryview):
            got = s.parse_udp_header(wrap(header + payload))
            assert got == (host, port, atyp, header, payload)
            assert type(got[3]) is bytes and type(got[4]) is bytes


def test_udp_header_rsv_not_checked():
    assert s.parse_udp_header(b"\xab\xcd\x00\x01\xc6\x12\x00\x09\x00\x35x")[:2] == \
        ("198.18.0.9", 53)


@pytest.mark.parametrize("dgram,msg", [
    (b"", "too short"),
    (b"\x00\x00\x00", "too short"),
    (b"\x00\x00\x01\x01\xc6\x12\x00\x09\x00\x35x", "fragmented"),
    (b"\x00\x00\xff\x01\xc6\x12\x00\x09\x00\x35x", "fragmented"),
    (b"\x00\x00\x00\x05\xc6\x12\x00\x09\x00\x35x", "address type 5"),
    (b"\x00\x00\x00\x00\xc6\x12\x00\x09\x00\x35x", "address type 0"),
    (b"\x00\x00\x00\x01\xc6\x12\x00\x09\x00", "truncated"),
    (b"\x00\x00\x00\x04" + b"\x00" * 17, "truncated"),
    (b"\x00\x00\x00\x03\x05abcd\x00", "truncated"),
    (b"\x00\x00\x00\x03", "truncated"),
])
def test_malformed_udp_headers_raise_module_error(dgram, msg):
    with pytest.raises(s.Socks5Error, match=msg):
        s.parse_udp_header(dgram)


def test_udp_canonical_ipv6_text():
    raw = bytes.fromhex("20010002000000000000000000000000")
    assert s.parse_udp_header(b"\x00\x00\x00\x04" + raw + b"\x00\x01")[0] == "2001:2::"
    raw = bytes.fromhex("20010002000000010000000000000001")
    assert s.parse_udp_header(b"\x00\x00\x00\x04" + raw + b"\x00\x01")[0] == "2001:2:0:1::1"
