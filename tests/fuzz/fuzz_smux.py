"""Fuzz target: paqet.smux SmuxSession.receive_data (v1 and v2, client and server side).

Input: a selector byte (version, side, split, whether the shell consumes data) then the
byte stream from KCP. Property: never raises; the events are the same whatever the split;
payload bytes delivered never exceed the input; the stream table stays within max_streams;
the partial-frame buffer stays below one frame; nothing is reported after a protocol error;
the session still produces its own frames (data_to_send, timers) afterwards."""

from _common import chunks, instrumented, main

with instrumented(__name__):
    from paqet.smux import events as ev
    from paqet.smux.session import FIN, NOP, PSH, SYN, UPD, SmuxSession, encode_frame, encode_upd

MAX_STREAMS = 8


def _run(pieces, version, client, consume):
    s = SmuxSession(client=client, version=version, max_streams=MAX_STREAMS, now_ms=0)
    events = []
    now = 0
    for p in pieces:
        now += 10
        s.receive_data(p, now)
        assert len(s._rx) < 8 + 0x10000 + 16
        assert len(s.streams) <= MAX_STREAMS
        while (e := s.next_event()) is not None:
            events.append(e)
            if consume and isinstance(e, ev.DataReceived):
                s.stream_consumed(e.sid, len(e.data))
    s.handle_timer(now + 10)
    s.data_to_send()
    return s, events


def _merge(events):
    """Events with data merged per stream (the split decides only how PSH frames that
    arrive whole are grouped: they are not, a frame is one event either way)."""
    return [(type(e).__name__, getattr(e, "sid", None), getattr(e, "data", None)) for e in events]


def one_input(data: bytes) -> None:
    if not data:
        return
    sel, body = data[0], data[1:]
    version = 1 + (sel & 1)
    client = bool(sel & 2)
    consume = bool(sel & 4)
    s, events = _run(chunks(body, sel >> 3), version, client, consume)
    whole, w_events = _run([body], version, client, consume)
    assert _merge(events) == _merge(w_events)
    assert s.broken == whole.broken
    total = sum(len(e.data) for e in events if isinstance(e, ev.DataReceived))
    assert total <= len(body)
    if not consume:
        assert s.bucket == s.max_receive_buffer - total
    errors = [i for i, e in enumerate(events) if isinstance(e, ev.ProtocolError)]
    assert len(errors) <= 1 and (not errors or errors[0] == len(events) - 1)
    if s.broken is None:
        sid = s.open_stream()
        s.send_data(sid, b"x")
        assert s.data_to_send()


def seeds() -> list[bytes]:
    out = []
    for v in (1, 2):
        frames = [encode_frame(v, SYN, 1), encode_frame(v, PSH, 1, b"hello"),
                  encode_frame(v, NOP, 0), encode_frame(v, FIN, 1)]
        if v == 2:
            frames.insert(2, encode_upd(2, 1, 5, 262144))
        out.append(bytes((v - 1,)) + b"".join(frames))
        out.append(bytes((v - 1 | 4 | (3 << 3) | 0x80,)) + b"".join(frames))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
