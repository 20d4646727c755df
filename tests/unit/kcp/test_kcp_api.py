"""KCP engine API details: presets, configuration, send/recv rules, output, probes, stats."""

import pytest

from paqet.kcp import presets
from paqet.kcp.engine import ACK, PUSH, WASK, WINS, KCP, encode_segment, parse_segments


def test_presets_are_upstreams():
    assert presets.mode_values("normal") == (0, 40, 2, 1, True, False)
    assert presets.mode_values("fast") == (0, 30, 2, 1, True, False)
    assert presets.mode_values("fast2") == (1, 20, 2, 1, False, True)
    # the protocol spec says nc=0 for fast3; paqet's code (which wins) sets 1
    assert presets.mode_values("fast3") == (1, 10, 2, 1, False, True)
    assert presets.mode_values("manual") == (0, 0, 0, 0, False, False)
    assert presets.mode_values("manual", nodelay=1, interval=15, resend=3, nc=1, wdelay=True,
                               acknodelay=True) == (1, 15, 3, 1, True, True)
    with pytest.raises(ValueError):
        presets.mode_values("turbo")


def test_presets_agree_with_config_schema():
    from paqet.config.schema import MODE_PRESETS
    assert {k: tuple(v) for k, v in presets.PRESETS.items()} == dict(MODE_PRESETS)


def test_configure_applies_paqet_settings():
    k = presets.configure(KCP(1), "fast3", mtu=1322, sndwnd=1024, rcvwnd=512)
    assert (k.nodelay, k.interval, k.fastresend, k.nocwnd) == (1, 10, 2, 1)
    assert (k.snd_wnd, k.rcv_wnd, k.mtu, k.mss) == (1024, 512, 1322, 1298)
    assert k.stream and k.ack_nodelay and not k.write_delay and k.rx_minrto == 30
    m = presets.configure(KCP(1), "manual", mtu=20)   # interval 0 clamps to 10, nc 0: cwnd on
    assert (m.interval, m.nocwnd, m.rx_minrto, m.mtu) == (10, 0, 100, 1400)
    n = presets.configure(KCP(1), (0, 6000, 1, 1, True, False))
    assert n.interval == 5000 and n.write_delay


def test_set_mtu_bounds():
    k = KCP(1)
    assert k.set_mtu(24) == -1 and k.mtu == 1400
    assert k.set_mtu(25) == 0 and k.mss == 1


def test_send_rules():
    k = KCP(1)
    assert k.send(b"") == -1
    assert k.send(b"x" * (1376 * 255)) == 0
    assert k.send(b"x" * (1376 * 255 + 1)) == -2          # message mode: > 255 fragments
    s = KCP(1)
    s.stream = True
    s.send(b"ab")
    s.send(bytearray(b"cd"))
    s.send(memoryview(b"e" * 3000))
    assert [len(g.data) for g in s.snd_queue] == [1376, 1376, 252]   # topped up first
    assert b"".join(bytes(g.data) for g in s.snd_queue) == b"abcd" + b"e" * 3000


def test_back_pressure_helpers():
    k = KCP(1)
    k.stream = True
    k.set_wndsize(4, 32)
    assert k.can_send and k.send_room == 4
    k.send(b"x" * (k.mss * 3 + 1))
    assert not k.can_send and k.send_room == 0 and k.wait_snd == 4


def pump(a, b, now):
    for d in a.datagrams_to_send():
        b.input(d, now)


def test_message_mode_recv_and_output_callback():
    sent = []
    a = KCP(9, output=sent.append)
    b = KCP(9)
    a.set_nodelay(0, 10, 2, 1)   # no congestion window (kcp-go's first flush with one: cwnd 0)
    a.set_mtu(100)
    b.set_mtu(100)
    a.send(b"A" * 200)
    a.send(b"B" * 10)
    a.flush(0)
    assert sent and all(len(d) <= 100 for d in sent)
    assert a.datagrams_to_send() == []
    for d in sent:
        assert b.input(d, 1) == 0
    assert b.recv() == b"A" * 200
    assert b.recv() == b"B" * 10
    assert b.recv() is None


def test_stream_recv_returns_everything_in_order():
    a, b = KCP(3), KCP(3)
    a.stream = b.stream = True
    a.set_nodelay(0, 10, 2, 1)
    a.set_mtu(60)
    a.send(bytes(range(200)))
    a.flush(0)
    dgs = a.datagrams_to_send()
    for d in reversed(dgs):            # reordered: nothing readable until the first arrives
        b.input(d, 1)
    assert b.recv() == bytes(range(200))
    b.flush(2)
    acks = parse_segments(b"".join(b.datagrams_to_send()))
    # every ACK is for sn < rcv_nxt by now: kcp-go's jitter filter keeps only the last one
    # (sn 0, which arrived last), and its una tells the sender everything arrived
    assert [(s[1], s[5], s[6]) for s in acks] == [(ACK, 0, len(dgs))]


def test_congestion_window_starts_closed():
    k = KCP(1)                       # kcp-go defaults: nc 0, cwnd 0
    k.send(b"x")
    k.flush(0)
    assert k.datagrams_to_send() == [] and k.cwnd == 1
    k.flush(100)
    assert [s[1] for d in k.datagrams_to_send() for s in parse_segments(d)] == [PUSH]


def test_zero_window_probe_and_tell():
    a = KCP(5)
    a.stream = True
    # the peer says its window is full
    a.input(encode_segment(5, WINS, 0, 0, 0, 0, 0), 0)
    assert a.rmt_wnd == 0
    a.send(b"data")
    a.flush(0)
    assert not any(s[1] == PUSH for d in a.datagrams_to_send() for s in parse_segments(d))
    a.flush(499)
    assert a.datagrams_to_send() == []
    a.flush(500)                                        # PROBE_INIT 500 ms (ikcp: 7000)
    cmds = [s[1] for d in a.datagrams_to_send() for s in parse_segments(d)]
    assert cmds == [WASK]
    b = KCP(5)
    b.input(encode_segment(5, WASK, 0, 32, 0, 0, 0), 0)
    b.flush(1)
    assert [s[1] for d in b.datagrams_to_send() for s in parse_segments(d)] == [WINS]


def test_fec_recovered_input_updates_neither_window_nor_rtt():
    a = KCP(2)
    a.set_nodelay(0, 10, 2, 1)
    a.send(b"x")
    a.flush(100)
    a.datagrams_to_send()
    ack = encode_segment(2, ACK, 0, 7, 100, 0, 1)
    assert a.input(ack, 150, regular=False) == 0
    assert a.rmt_wnd == 32 and a.rx_srtt == 0 and a.wait_snd == 0
    st = a.stats()
    assert st["segments_in"] == 1 and st["segments_out"] == 1 and st["srtt"] == 0


def test_rtt_estimator_is_kcp_gos():
    k = KCP(1)
    k.set_nodelay(1, 10, 2, 1)
    k._update_ack(100)
    assert (k.rx_srtt, k.rx_rttvar, k.rx_rto) == (100, 50, 300)
    k._update_ack(20)   # below srtt - rttvar: the 1/32 rule
    assert (k.rx_srtt, k.rx_rttvar) == (90, 50 + (80 - 50 >> 5))


def test_old_duplicate_is_acked_and_beyond_window_is_not():
    b = KCP(4)
    b.set_wndsize(32, 2)
    seg = lambda sn: encode_segment(4, PUSH, 0, 32, 7, sn, 0, b"z")
    b.input(seg(0), 0)
    b.input(seg(0), 0)      # duplicate: ACKed again
    b.input(seg(5), 0)      # sn >= rcv_nxt + rcv_wnd: dropped without ACK
    b.flush(1, ack_only=True)
    acks = [s for d in b.datagrams_to_send() for s in parse_segments(d)]
    # jitter filter: the first ACK (sn 0 < rcv_nxt 1) is dropped, the last kept
    assert [(s[1], s[5]) for s in acks] == [(ACK, 0)]
    assert b.recv() == b"z" and b.recv() is None


def test_stream_recv_drains_what_moves_in_while_reading():
    b = KCP(4)
    b.stream = True
    b.set_wndsize(32, 2)
    seg = lambda sn: encode_segment(4, PUSH, 0, 32, 0, sn, 0, bytes([65 + sn]))
    for sn in (1, 0, 2, 3):      # 0 and 1 fill the queue (window 2); 2 and 3 wait in rcv_buf
        b.input(seg(sn), 0)
    assert len(b.rcv_queue) == 2 and len(b.rcv_buf) == 2
    assert b.recv() == b"ABCD"
    assert b.probe  # the queue was full: a WINS tells the peer the window opened
