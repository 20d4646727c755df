"""Property tests for paqet.proto.socks5: random or corrupted input never raises anything
but the module's own error (UDP header) and never escapes the state machine (handshakes);
the outcome does not depend on how the bytes are split; encode/parse round-trip."""

import ipaddress

from hypothesis import HealthCheck, given, settings, strategies as st

from paqet.proto import socks5 as s

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FINAL = (s.ConnectRequest, s.UdpAssociateRequest, s.UnsupportedCommand, s.ProtocolViolation,
         s.AuthFailed)


def drive(data: bytes, cuts: list[int], creds):
    m = s.Socks5Server(*creds)
    events, out = [], b""
    pieces, last = [], 0
    for c in sorted(set(x % (len(data) + 1) for x in cuts)) + [len(data)]:
        pieces.append(data[last:c])
        last = c
    for p in pieces:
        if p:
            m.receive_data(p)
        out += m.data_to_send()
        while (ev := m.next_event()) is not None:
            events.append(ev)
    return events, out, m


creds_st = st.sampled_from([(None, None), ("user", "pass"), (None, "pw"), ("ü", "")])


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 700), max_size=8), creds_st)
def test_random_input_never_raises_and_split_does_not_matter(data, cuts, creds):
    events, out, m = drive(data, cuts, creds)
    whole_events, whole_out, whole = drive(data, [], creds)
    assert events == whole_events
    assert out == whole_out
    assert m.rest == whole.rest
    assert len(events) <= 1
    if events:
        assert isinstance(events[0], FINAL)
        assert m.done
    else:
        assert not m.done
    # the machine only ever writes the replies it is allowed to
    assert len(out) <= 2 + 2 + 10


def _handshake_prefix(creds):
    if creds[0] is None and creds[1] is None:
        return b"\x05\x01\x00"
    u = (creds[0] or "").encode()
    p = (creds[1] or "").encode()
    return b"\x05\x01\x02\x01" + bytes((len(u),)) + u + bytes((len(p),)) + p


@SETTINGS
@given(creds_st, st.binary(min_size=0, max_size=300), st.integers(0, 40), st.integers(0, 255))
def test_corrupted_valid_handshake(creds, tail, pos, value):
    data = bytearray(_handshake_prefix(creds) + b"\x05\x01\x00\x03\x04host\x00\x50" + tail)
    data[pos % len(data)] = value
    events, out, m = drive(bytes(data), [pos], creds)
    assert len(events) <= 1
    if events and isinstance(events[0], (s.ConnectRequest, s.UdpAssociateRequest,
                                         s.UnsupportedCommand)):
        assert m.request == events[0]
        assert 0 <= events[0].port <= 65535
        # whatever followed the request is handed over untouched
        assert bytes(data).endswith(m.rest)


host_st = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str),
    # names (a ':' would make some texts IPv6 literals, covered above)
    st.text(min_size=0, max_size=60).filter(lambda h: ":" not in h and len(h.encode()) <= 255),
)


@SETTINGS
@given(host_st, st.integers(0, 65535), st.binary(max_size=64))
def test_udp_header_round_trip(host, port, payload):
    try:
        header = s.build_udp_header(host, port)
    except s.Socks5Error:
        return            # e.g. a surrogate that UTF-8 cannot encode
    got_host, got_port, atyp, got_header, got_payload = s.parse_udp_header(header + payload)
    assert (got_port, got_header, got_payload) == (port, header, payload)
    assert s.build_udp_header(got_host, got_port) == header
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        assert atyp == s.ATYP_DOMAIN and got_host == host
    else:
        assert atyp == (s.ATYP_IPV4 if ip.version == 4 else s.ATYP_IPV6)
        assert ipaddress.ip_address(got_host) == ip


@SETTINGS
@given(st.binary(max_size=300))
def test_udp_random_datagrams_raise_only_module_error(data):
    try:
        host, port, atyp, header, payload = s.parse_udp_header(data)
    except s.Socks5Error:
        return
    assert header + payload == data
    assert data[2] == 0 and atyp in (1, 3, 4) and 0 <= port <= 65535
