"""Anti-replay window and timestamp check (wire/replay.py), and the listener's token buckets
and drop log (tunnel/guard.py): pure state machines driven with explicit times."""

import os
import struct

from paqet.kcp.engine import encode_segment
from paqet.tunnel.guard import DropLog, ListenerLimits, TokenBuckets
from paqet.wire.datagram import DatagramCodec
from paqet.wire.replay import IDENT_LEN, ReplayWindow, StaleFilter


def test_fresh_accepted_replay_dropped():
    w = ReplayWindow(max_entries=1000, horizon_ms=10000)
    ids = [os.urandom(IDENT_LEN) for _ in range(300)]
    assert all(w.check_and_add(i, 5) for i in ids)
    assert not any(w.check_and_add(i, 6) for i in ids)
    assert w.check_and_add(os.urandom(IDENT_LEN), 7)


def test_memory_bounded_by_entries():
    w = ReplayWindow(max_entries=1000, horizon_ms=10 ** 9)
    for n in range(20000):
        w.add(n.to_bytes(12, "little"), 0)
        assert len(w) <= 1000
    # the newest half is still remembered, the oldest entries are gone
    assert w.seen((19999).to_bytes(12, "little"))
    assert w.seen((19600).to_bytes(12, "little"))
    assert not w.seen((0).to_bytes(12, "little"))


def test_old_entries_expire_with_time():
    w = ReplayWindow(max_entries=10 ** 6, horizon_ms=1000)  # generations of 500 ms
    w.add(b"a" * 12, 0)
    w.add(b"b" * 12, 400)
    assert w.seen(b"a" * 12)
    w.add(b"c" * 12, 600)   # new generation: a and b move to the old one
    assert w.seen(b"a" * 12) and w.seen(b"c" * 12)
    assert w.covered_ms(600) == 600
    w.add(b"d" * 12, 1200)  # and again: a and b are forgotten
    assert not w.seen(b"a" * 12) and not w.seen(b"b" * 12)
    assert w.seen(b"c" * 12) and w.seen(b"d" * 12)
    # complete since the start of the generation holding c
    assert w.covered_ms(1200) == 600


def test_clock_wrap():
    w = ReplayWindow(max_entries=100, horizon_ms=1000, now_ms=0xFFFFFF00)
    w.add(b"x" * 12, 0xFFFFFF80)
    w.add(b"y" * 12, 0x10)        # 0x90 ms later across the wrap: same generation
    assert w.seen(b"x" * 12) and len(w.old) == 0
    assert w.covered_ms(0x10) == 0x110


def test_identity_is_a_function_of_the_nonce_for_every_block():
    """The window keys on the first IDENT_LEN wire bytes: with kcp-go's fresh random nonce
    per datagram these differ between datagrams carrying identical KCP bytes (a
    retransmission), and are equal only for the same datagram sent again."""
    kcp = encode_segment(1, 81, 0, 32, 0, 0, 0, b"x" * 100)
    for block in ("aes", "aes-128-gcm", "salsa20", "blowfish", "xor", "none", "chacha20"):
        c = DatagramCodec(block, "k")
        a, b = c.encode(kcp)[0], c.encode(kcp)[0]
        assert a[:IDENT_LEN] != b[:IDENT_LEN], block


def _ack(ts):
    return encode_segment(7, 82, 0, 32, ts, 5, 5, b"")


def _push(ts, sn=1):
    return encode_segment(7, 81, 0, 32, ts, sn, 0, b"data")


def test_stale_ack_echoing_an_old_clock():
    f = StaleFilter(slack_ms=1000)
    assert not f.stale(_ack(50_000), 50_100, 5000)
    assert not f.stale(_ack(45_500), 50_000, 5000)
    assert f.stale(_ack(40_000), 50_000, 5000)
    # the limit never goes below the slack
    assert not f.stale(_ack(49_500), 50_000, 10)
    assert f.stale(_ack(48_000), 50_000, 10)


def test_stale_push_against_the_peers_newest_clock():
    f = StaleFilter(slack_ms=1000)
    assert not f.stale(_push(7_000_000), 0, 5000)   # the peer's clock is its own
    assert f.peer_ts == 7_000_000
    assert not f.stale(_push(7_004_000), 0, 5000)
    assert not f.stale(_push(7_000_500), 0, 5000)   # reordered a little: fine
    assert f.stale(_push(6_990_000), 0, 5000)      # 14 s behind the newest
    assert f.peer_ts == 7_004_000                   # stale datagrams teach nothing
    # across the 32-bit wrap
    g = StaleFilter()
    assert not g.stale(_push(0xFFFFFF00), 0, 5000)
    assert not g.stale(_push(0x100), 0, 5000)
    assert g.peer_ts == 0x100
    assert g.stale(_push(0xFFFF0000), 0, 5000)


def test_stale_judges_a_datagram_by_its_first_segment():
    f = StaleFilter()
    assert f.stale(_ack(0) + _ack(60_000), 60_000, 5000)
    assert not f.stale(_ack(60_000) + _ack(0), 60_000, 5000)


def test_stale_ignores_window_segments_and_short_input():
    f = StaleFilter()
    wask = encode_segment(7, 83, 0, 32, 0, 0, 0, b"")
    assert not f.stale(wask, 10 ** 9, 1000)
    assert not f.stale(b"\0" * 10, 10 ** 9, 1000)


def test_token_bucket_rate_and_burst():
    b = TokenBuckets(rate=100, burst=10)   # 100 per s = 1 per 10 ms
    assert sum(b.take("a", 0) for _ in range(50)) == 10
    assert not b.take("a", 5)
    assert b.take("a", 15)                 # 1.5 tokens after 15 ms
    assert b.take("b", 15)                 # another key has its own bucket
    assert sum(b.take("a", 10_000) for _ in range(50)) == 10  # refills only up to the burst


def test_token_bucket_unlimited_and_bounded():
    assert all(TokenBuckets(0, 1).take("a", 0) for _ in range(1000))
    b = TokenBuckets(rate=1, burst=1, max_keys=100)
    for i in range(10_000):
        b.take(i, 0)
        assert len(b) <= 100


def test_drop_log_at_most_one_line_per_interval():
    drops = {"replay": 0, "bad_crc": 0}
    d = DropLog(drops, interval_s=10)
    assert d.line(0.0) is None                 # nothing dropped
    drops["replay"] += 5
    line = d.line(1.0)
    assert line == "dropped datagrams: replay 5"
    drops["replay"] += 7
    drops["bad_crc"] += 1
    assert d.line(5.0) is None                 # too soon
    assert d.line(11.5) == "dropped datagrams in the last 10s: bad_crc 1, replay 7"
    assert d.line(30.0) is None                # nothing new


def test_listener_limits_from_config():
    from paqet.config import load_config_text
    cfg = load_config_text("""
role: server
listen: {addr: ":9999"}
network: {interface: eth0, ipv4: {addr: "198.18.0.2:9999"}}
transport: {protocol: kcp, kcp: {key: k}}
limits: {max_sessions: 10, new_sessions_per_ip: 2.5, handshake_timeout: 1.5, replay_window: 0}
""")
    lim = ListenerLimits.from_config(cfg.limits)
    assert lim.max_sessions == 10 and lim.new_sessions_per_ip == 2.5
    assert lim.handshake_timeout_ms == 1500 and lim.backlog == 128
    from paqet.tunnel.params import TunnelParams
    p = TunnelParams.from_config(cfg)
    assert p.replay_window == 0 and p.replay_horizon_ms == 60000
    d = ListenerLimits.from_config(load_config_text(
        "role: server\nlisten: {addr: ':1'}\ntransport: {protocol: kcp, kcp: {key: k}}\n").limits)
    assert d == ListenerLimits()


def test_segment_layout_matches_kcp():
    seg = _push(0x01020304, sn=9)
    conv, cmd, _frg, _wnd, ts, sn = struct.unpack_from("<IBBHII", seg)
    assert (conv, cmd, ts, sn) == (7, 81, 0x01020304, 9)


def test_limits_errors_name_the_allowed_range():
    import pytest
    from paqet.config import ConfigError, load_config_text
    with pytest.raises(ConfigError) as e:
        load_config_text("role: server\nlisten: {addr: ':1'}\n"
                         "transport: {protocol: kcp, kcp: {key: k}}\n"
                         "limits: {handshake_timeout: 0}\n")
    assert str(e.value).endswith(
        "limits.handshake_timeout: invalid value 0: expected `float` > 0.0 "
        "(allowed: a number > 0 and <= 3600)")
