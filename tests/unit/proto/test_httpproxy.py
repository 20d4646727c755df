"""paqet.proto.httpproxy: proxy targets, header filtering, Basic auth, body framing, error
statuses, a bounded head; property tests: arbitrary or mutated input, split anywhere, only
ever raises HttpProxyError, and the outcome does not depend on the split."""

import base64

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from paqet.proto import httpproxy as hp

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def parse(data: bytes, cuts=(), max_head=hp.MAX_HEAD):
    """All events until the parser wants more; (events, error status or None)."""
    p = hp.RequestParser(max_head=max_head)
    events, last = [], 0
    try:
        for c in sorted(set(x % (len(data) + 1) for x in cuts)) + [len(data)]:
            piece = data[last:c]
            last = c
            if not piece:
                continue
            p.receive_data(piece)
            for _ in range(10000):
                ev = p.next_event()
                if ev is None:
                    break
                events.append(ev)
    except hp.HttpProxyError as exc:
        return events, exc.status
    return events, None


def body_of(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, hp.Body))


@pytest.mark.parametrize("target,host,port,path", [
    ("http://example.org/a/b?c=d", "example.org", 80, "/a/b?c=d"),
    ("HTTP://example.org:8080", "example.org", 8080, "/"),
    ("http://198.18.0.1:81?x", "198.18.0.1", 81, "/?x"),
    ("http://[2001:2::1]:8080/p#frag", "2001:2::1", 8080, "/p"),
    ("http://[2001:2::1]/", "2001:2::1", 80, "/"),
])
def test_absolute_targets(target, host, port, path):
    assert hp.parse_target("GET", target) == (host, port, path)


@pytest.mark.parametrize("target,host,port", [
    ("example.org:443", "example.org", 443), ("[2001:2::5]:8443", "2001:2::5", 8443),
    ("198.18.0.9:1", "198.18.0.9", 1)])
def test_connect_targets(target, host, port):
    assert hp.parse_target("CONNECT", target) == (host, port, "")


@pytest.mark.parametrize("method,target", [
    ("GET", "/origin"), ("GET", "https://example.org/"), ("GET", "http://user@host/"),
    ("GET", "http://host:0/"), ("GET", "http://host:65536/"), ("GET", "http://host:8x/"),
    ("GET", "http:///path"), ("CONNECT", "example.org"), ("CONNECT", "2001:2::1:443"),
    ("CONNECT", "[2001:2::1"), ("CONNECT", "[host]:80"), ("GET", "http://" + "a" * 254 + "/"),
])
def test_bad_targets(method, target):
    with pytest.raises(hp.HttpProxyError) as e:
        hp.parse_target(method, target)
    assert e.value.status == 400


def test_forward_head_filters_hop_by_hop():
    data = (b"GET http://example.org:8080/x HTTP/1.1\r\nHost: other\r\nAccept: */*\r\n"
            b"Proxy-Authorization: Basic YTpi\r\nProxy-Connection: keep-alive\r\n"
            b"Connection: Keep-Alive, X-Private\r\nX-Private: 1\r\nTE: trailers\r\n"
            b"Upgrade: h2c\r\nCookie: a=b\r\n\r\n")
    events, err = parse(data)
    assert err is None and isinstance(events[0], hp.Request) and isinstance(events[-1], hp.End)
    head = hp.forward_head(events[0])
    assert head == (b"GET /x HTTP/1.1\r\nHost: example.org:8080\r\nAccept: */*\r\n"
                    b"Cookie: a=b\r\nConnection: close\r\n\r\n")


def test_chunked_body_is_rechunked():
    data = (b"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    events, err = parse(data)
    assert err is None
    req = events[0]
    assert req.chunked and body_of(events) == b"abcde"
    assert b"Transfer-Encoding: chunked\r\n" in hp.forward_head(req)
    assert hp.encode_body(req, b"abc") == b"3\r\nabc\r\n"
    assert hp.encode_end(req) == b"0\r\n\r\n"


def test_content_length_body_and_connect_trailing():
    events, err = parse(b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody")
    assert err is None and body_of(events) == b"body" and isinstance(events[-1], hp.End)
    p = hp.RequestParser()
    p.receive_data(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01")
    req = p.next_event()
    assert req.is_connect and (req.host, req.port) == ("h", 443)
    assert isinstance(p.next_event(), hp.End)
    assert p.trailing == b"\x16\x03\x01"


@pytest.mark.parametrize("size,status", [(100, None), (3000, 431)])
def test_head_size_bound(size, status):
    data = b"GET http://h/ HTTP/1.1\r\nHost: h\r\nX: " + b"a" * size + b"\r\n\r\n"
    assert parse(data, max_head=2048)[1] == status
    # also when it arrives a byte at a time (h11's own bound on an incomplete head)
    assert parse(data, cuts=range(len(data)), max_head=2048)[1] == status


def test_eof_mid_head_and_bad_syntax():
    p = hp.RequestParser()
    p.receive_data(b"GET http://h/ HTTP/1.1\r\nHo")
    assert p.next_event() is None
    p.receive_data(b"")
    with pytest.raises(hp.HttpProxyError):
        p.next_event()
    assert parse(b"GET http://h/ HTTP/1.1\r\nbad header line\r\n\r\n")[1] == 400
    assert parse(b"GET http://h/ HTTP/1.1\r\n\r\n")[1] == 400  # HTTP/1.1 needs Host
    # ambiguous body framing (request smuggling) is refused, whichever way it is set
    assert parse(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[1] == 400
    assert parse(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                 b"Content-Length: 4\r\n\r\nabcd")[1] == 400


def _auth(value: bytes | None):
    h = b"" if value is None else b"Proxy-Authorization: " + value + b"\r\n"
    events, err = parse(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + h + b"\r\n")
    assert err is None
    return events[0]


def test_basic_auth():
    good = b"Basic " + base64.b64encode(b"alice:pa:ss")
    assert hp.check_auth(_auth(good), "alice", "pa:ss")
    assert hp.check_auth(_auth(None), "", "")
    for bad in (None, b"Basic " + base64.b64encode(b"alice:nope"), b"Bearer abc",
                b"Basic !!!", b"Basic " + base64.b64encode(b"nocolon")):
        assert not hp.check_auth(_auth(bad), "alice", "pa:ss")


def test_responses_and_status_mapping():
    r = hp.response(407, "auth\r\nInjected: x", [("Proxy-Authenticate", 'Basic realm="paqet"')])
    head, _, body = r.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b"\r\nInjected" not in r and body == b"auth  Injected: x\n"
    assert b"Content-Length: %d" % len(body) in head
    assert hp.status_for_dial(0x05) == 502 and hp.status_for_dial(0x04) == 502
    assert hp.status_for_dial(0x06) == 504 and hp.status_for_dial(0x77) == 502


VALID = [
    b"GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"CONNECT [2001:2::1]:443 HTTP/1.1\r\nHost: x\r\n\r\nrest",
    b"POST http://h:8080/u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    b"PUT http://h/ HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
]


@given(st.binary(max_size=600), st.lists(st.integers(0, 1000), max_size=8))
@SETTINGS
def test_random_bytes_only_raise_own_error(data, cuts):
    parse(data, cuts)


@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                         max_size=4),
       st.lists(st.integers(0, 400), max_size=6))
@SETTINGS
def test_mutations_only_raise_own_error_and_split_does_not_matter(base, muts, cuts):
    data = bytearray(base)
    for pos, val in muts:
        if data:
            data[pos % len(data)] = val
    data = bytes(data)
    whole = parse(data)
    split = parse(data, cuts)
    assert [type(e) for e in whole[0] if not isinstance(e, hp.Body)] == \
        [type(e) for e in split[0] if not isinstance(e, hp.Body)]
    assert body_of(whole[0]) == body_of(split[0])
    assert whole[1] == split[1]
    if whole[0] and isinstance(whole[0][0], hp.Request):
        hp.forward_head(whole[0][0])  # never fails on what the parser accepted
        assert len(hp.forward_head(whole[0][0])) < 2 * len(data) + 100


@given(st.sampled_from(VALID), st.lists(st.integers(0, 400), max_size=6))
@SETTINGS
def test_valid_requests_parse_the_same_however_split(base, cuts):
    whole, split = parse(base), parse(base, cuts)
    assert whole[1] is None and split[1] is None
    assert whole[0][0] == split[0][0]
    assert body_of(whole[0]) == body_of(split[0])


def _req(data: bytes) -> hp.Request:
    events, err = parse(data)
    assert err is None
    return events[0]


def test_keep_alive_wish_and_forwarded_connection_header():
    assert hp.wants_keep_alive(_req(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert not hp.wants_keep_alive(_req(b"GET http://h/ HTTP/1.0\r\n\r\n"))
    for hdr in (b"Connection: Close", b"Proxy-Connection: close", b"Connection: te, close"):
        req = _req(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + hdr + b"\r\n\r\n")
        assert not hp.wants_keep_alive(req)
    req = _req(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"Connection:" not in hp.forward_head(req, keep_alive=True)
    assert hp.forward_head(req).endswith(b"Connection: close\r\n\r\n")


@pytest.mark.parametrize("method,resp,done,reusable", [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True, True),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True, True),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", True, True),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", True, True),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", True, False),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", True, False),
    ("GET", b"HTTP/1.0 200 OK\r\n\r\nuntil close", False, False),   # ends with the origin
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", False, False),
    ("GET", b"garbage\r\n\r\n", False, False),
])
def test_response_tracker(method, resp, done, reusable):
    for cuts in ((), range(len(resp))):
        t = hp.ResponseTracker(method)
        last = 0
        for c in list(cuts) + [len(resp)]:
            if resp[last:c]:
                t.feed(resp[last:c])
            last = c
        assert (t.done, t.reusable) == (done, reusable)
    t = hp.ResponseTracker("GET")
    t.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    assert t.feed(b"") and not t.reusable  # a close-delimited body ends at EOF


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6),
       st.sampled_from(["GET", "HEAD", "POST"]))
@SETTINGS
def test_response_tracker_never_raises(data, cuts, method):
    t = hp.ResponseTracker(method)
    last = 0
    for c in sorted(set(x % (len(data) + 1) for x in cuts)) + [len(data)]:
        t.feed(data[last:c] or b"x")
        last = c
    t.feed(b"")
    assert not (t.reusable and not t.done)
