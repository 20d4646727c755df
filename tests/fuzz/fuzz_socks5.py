"""Fuzz target: paqet.proto.socks5, the server handshake state machine and the UDP header
parser.

Input: a selector byte (credentials, how the bytes are split, UDP mode) then the bytes.
Property: the machine never raises, gives at most one final event, writes at most the
replies it may write, keeps what follows the request untouched, and does not depend on how
the input is split; parse_udp_header raises only Socks5Error and splits the datagram into
header + payload exactly."""

from _common import chunks, instrumented, main

with instrumented(__name__):
    from paqet.proto import socks5 as s

CREDS = ((None, None), ("user", "pass"), (None, "pw"), ("\u00fc", ""))
FINAL = (s.ConnectRequest, s.UdpAssociateRequest, s.UnsupportedCommand, s.ProtocolViolation,
         s.AuthFailed)


def _drive(pieces, creds):
    m = s.Socks5Server(*creds)
    events, out = [], b""
    for p in pieces:
        if p:
            m.receive_data(p)
        out += m.data_to_send()
        while (ev := m.next_event()) is not None:
            events.append(ev)
    return events, out, m


def one_input(data: bytes) -> None:
    if not data:
        return
    sel, body = data[0], data[1:]
    if sel & 0x80:
        try:
            host, port, atyp, header, payload = s.parse_udp_header(body)
        except s.Socks5Error:
            return
        assert header + payload == body
        assert atyp in (1, 3, 4) and 0 <= port <= 65535 and isinstance(host, str)
        return
    creds = CREDS[sel & 3]
    events, out, m = _drive(chunks(body, sel >> 2), creds)
    w_events, w_out, whole = _drive([body], creds)
    assert (events, out, m.rest) == (w_events, w_out, whole.rest)
    assert len(events) <= 1
    assert len(out) <= 2 + 2 + 10
    if events:
        assert isinstance(events[0], FINAL) and m.done
        if m.request is not None:
            assert body.endswith(m.rest)
            assert 0 <= m.request.port <= 65535
    else:
        assert not m.done


def seeds() -> list[bytes]:
    req = b"\x05\x01\x00\x03\x04host\x00\x50"
    out = [bytes((0,)) + b"\x05\x01\x00" + req + b"tail",
           bytes((0x20 | 4,)) + b"\x05\x01\x00\x05\x03\x00\x01\xc6\x12\x00\x01\x00\x35",
           bytes((1,)) + b"\x05\x01\x02\x01\x04user\x04pass" + req,
           bytes((2,)) + b"\x05\x02\x00\x02\x01\x00\x02pw\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x50",
           bytes((0x80,)) + b"\x00\x00\x00\x01\xc6\x12\x00\x01\x00\x35payload",
           bytes((0x80,)) + b"\x00\x00\x00\x03\x04host\x00\x35payload",
           bytes((0x80,)) + b"\x00\x00\x00\x04" + bytes(15) + b"\x01\x00\x35"]
    return out


if __name__ == "__main__":
    main(one_input, seeds)
