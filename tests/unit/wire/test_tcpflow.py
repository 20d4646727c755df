"""wire.tcpflow (network.tcp.mode handshake): the SYN token, the handshake, sequence and
acknowledgement bookkeeping, timestamps, probes and recovery - sans I/O, in simulated time,
and against a model of a strict Linux conntrack (tests/conntrack.py)."""

import random

import pytest

from conntrack import Tracker
from paqet.wire import tcpflow as tf
from paqet.wire.frame import ACK, FIN, M32, PSH, SYN

T0 = 1_700_000_000.0  # wall clock of the tests (seconds)
CLIENT, SERVER = ("198.18.1.2", 40000), ("198.18.2.2", 9999)


def opened(keepalive_ms=0, now=0, iss_c=1000, iss_s=5000):
    """A client and a server flow after SYN -> SYN-ACK -> ACK, and the segments."""
    c = tf.TcpFlow(client=True, keepalive_ms=keepalive_ms)
    s = tf.TcpFlow(client=False, keepalive_ms=keepalive_ms)
    syn = c.connect(now, iss_c, 777)
    synack = s.accept(now, syn.seq, syn.tsval, iss_s, 9000)
    ack = c.receive(synack.flags, synack.seq, synack.ack, synack.tsval, synack.tsecr, 0, now)
    assert s.receive(ack.flags, ack.seq, ack.ack, ack.tsval, ack.tsecr, 0, now) is None
    return c, s, (syn, synack, ack)


# -- the token ---------------------------------------------------------------------------

def test_token_is_valid_within_two_minutes_of_clock_difference_only():
    g = tf.SynGate("key")
    isn = g.make(12345, T0)
    for skew in (-120, -60, 0, 60, 120):
        assert g.valid(isn, 12345, T0 + skew), skew
    for skew in (-180, 180, 3600):
        assert not g.valid(isn, 12345, T0 + skew), skew
    assert not g.valid(isn, 12346, T0)           # bound to the TSval (the nonce)
    assert not tf.SynGate("other key").valid(isn, 12345, T0)


def test_a_gate_with_several_keys_takes_a_token_of_any():
    """A server with a key per user: each user's client makes tokens with its own key."""
    g = tf.SynGate(["alice's key", "bob's key"])
    for key in ("alice's key", "bob's key"):
        isn = tf.SynGate(key).make(99, T0)
        assert g.valid(isn, 99, T0 + 90)
    assert not g.valid(tf.SynGate("mallory").make(99, T0), 99, T0)
    g.set_keys("bob's key")
    assert not g.valid(tf.SynGate("alice's key").make(99, T0), 99, T0)
    assert g.skew_minutes(tf.SynGate("bob's key").make(5, T0 + 600), 5, T0) == 10


def test_replayed_syn_from_another_address_is_refused():
    g = tf.SynGate("key")
    isn = g.make(42, T0)
    assert g.accept(isn, 42, CLIENT, T0) == "ok"
    assert g.accept(isn, 42, CLIENT, T0 + 1) == "ok"          # a retransmission
    assert g.accept(isn, 42, ("198.18.9.9", 40000), T0 + 2) == "replay"
    assert g.accept(isn ^ 1, 42, CLIENT, T0) == "bad"
    assert g.accept(isn, -1, CLIENT, T0) == "bad"              # no timestamp option


def test_token_memory_is_bounded_and_forgets_what_cannot_pass_any_more():
    g = tf.SynGate("key", memory=8)
    for i in range(20):
        assert g.accept(g.make(i, T0), i, CLIENT, T0) == "ok"
    assert len(g.seen) <= 8
    g.forget(T0 + 10 * tf.SLOT_S)
    assert g.seen == {}


def test_clock_skew_is_diagnosed():
    g = tf.SynGate("key")
    isn = g.make(7, T0 + 30 * 60)  # a client 30 minutes ahead
    assert not g.valid(isn, 7, T0)
    assert g.skew_minutes(isn, 7, T0) == 30
    assert g.skew_minutes(isn ^ 5, 7, T0) is None


# -- handshake, sequence numbers, acknowledgements, timestamps ---------------------------------

def test_handshake_segments():
    c, s, (syn, synack, ack) = opened()
    assert syn == tf.Segment(SYN, 1000, 0, 777, 0)
    assert synack.flags == SYN | ACK and synack.seq == 5000 and synack.ack == 1001
    assert synack.tsecr == 777
    assert ack.flags == ACK and (ack.seq, ack.ack) == (1001, 5001) and ack.tsecr == synack.tsval
    assert c.state == tf.OPENING and s.state == tf.ESTABLISHED
    assert c.room() == 65535  # until the tracker saw the server's scaled window
    seq, a, _, _ = s.data(100, 5)
    c.receive(PSH | ACK, seq, a, 9005, 777, 100, 5)
    assert c.state == tf.ESTABLISHED and c.room() == tf.WINDOW_BYTES


def test_sequence_numbers_advance_by_payload_and_wrap():
    c, s, _ = opened(iss_c=M32 - 50)
    seqs = [c.data(n, i)[0] for i, n in enumerate((30, 1350, 1, 500))]
    assert seqs == [(M32 - 49) & M32, (M32 - 19) & M32, (M32 - 19 + 1350) & M32,
                    (M32 - 19 + 1351) & M32]
    assert c.snd_nxt == (M32 - 19 + 1851) & M32


def test_ack_is_the_highest_end_received_and_ignores_what_a_tracker_would_not_pass():
    c, s, _ = opened()
    base = s.snd_nxt
    segs = [(s.data(n, 0), n) for n in (100, 200, 300)]
    (seq1, _, _, _), n1 = segs[0]
    (seq3, _, _, _), n3 = segs[2]
    c.receive(PSH | ACK, seq3, 0, 1, 0, n3, 1)   # the third first: a gap (lost before)
    assert c.rcv_max == (seq3 + n3) & M32 == base + 600
    c.receive(PSH | ACK, seq1, 0, 1, 0, n1, 1)   # an older one never moves it back
    assert c.rcv_max == base + 600
    c.receive(PSH | ACK, (base + 600 + tf.WINDOW_BYTES) & M32, 0, 1, 0, 10, 1)
    assert c.rcv_max == base + 600               # beyond the window: not believed
    c.receive(ACK, (base + 5000) & M32, 0, 1, 0, 0, 1)
    assert c.rcv_max == base + 600               # an empty segment carries no bytes
    _, ack, _, _ = c.data(10, 2)
    assert ack == base + 600


def test_timestamps_advance_in_milliseconds_and_echo_the_newest():
    c, s, (syn, synack, _) = opened()
    t1 = c.data(10, 1000)[2]
    t2 = c.data(10, 1250)[2]
    assert (t1 - syn.tsval) & M32 == 1000 and (t2 - t1) & M32 == 250
    s.receive(PSH | ACK, c.snd_nxt - 20, 0, t2, 0, 10, 1250)
    s.receive(PSH | ACK, c.snd_nxt - 10, 0, t1, 0, 10, 1251)  # reordered: older TSval
    assert s.data(5, 1300)[3] == t2


# -- liveness: probes, recovery, keep-alive, SYN retransmission ---------------------------

def test_unanswered_frames_lead_to_probes_then_a_new_handshake():
    c, s, _ = opened()
    c.data(100, 1000)
    assert c.poll(1000 + tf.PROBE_MIN_MS - 1) is None
    probes = []
    now = 1000 + tf.PROBE_MIN_MS
    for _ in range(tf.PROBES):
        assert c.next_due(now) == now
        p = c.poll(now)
        assert p.flags == ACK and p.seq == (c.snd_nxt - 1) & M32
        probes.append(p)
        now += tf.PROBE_MIN_MS
    assert c.poll(now) is None and c.state == tf.CLOSED and c.recoveries == 1


def test_a_probe_is_answered_and_the_answer_ends_the_wait():
    c, s, _ = opened()
    seq, ack, tsval, tsecr = c.data(100, 1000)
    s.receive(PSH | ACK, seq, ack, tsval, tsecr, 100, 1000)  # heard, but no reply yet
    p = c.poll(1000 + tf.PROBE_MIN_MS)
    answer = s.receive(p.flags, p.seq, p.ack, p.tsval, p.tsecr, 0, 1600)
    assert answer is not None and answer.flags == ACK and answer.ack == s.rcv_max
    assert c.wait_since >= 0
    c.receive(answer.flags, answer.seq, answer.ack, answer.tsval, answer.tsecr, 0, 1601)
    assert c.wait_since == -1 and c.probes == 0
    assert c.state == tf.ESTABLISHED  # the answer carried the server's scaled window


def test_a_reply_echoing_an_older_timestamp_does_not_count_as_heard():
    c, s, _ = opened()
    old = c.data(10, 100)
    s.receive(PSH | ACK, old[0], old[1], old[2], old[3], 10, 100)
    c.receive(PSH | ACK, *s.data(10, 101)[:2], s.tsval(101), old[2], 10, 101)
    assert c.wait_since == -1
    c.data(10, 5000)                       # a new frame; the server's reply still echoes t=100
    c.receive(PSH | ACK, *s.data(10, 5001)[:2], s.tsval(5001), old[2], 10, 5001)
    assert c.wait_since == 5000


def test_keepalive_probes_an_idle_flow():
    c, s, _ = opened(keepalive_ms=15000)
    c.data(10, 0)
    c.receive(ACK, s.snd_nxt, c.snd_nxt, 1, c.tsval(0), 0, 1)
    assert c.next_due(1) == 15000
    assert c.poll(14999) is None
    p = c.poll(15000)
    assert p is not None and p.seq == (c.snd_nxt - 1) & M32


def test_server_answers_probes_only():
    c, s, (syn, synack, ack) = opened()
    # the handshake's ACK again (seq == rcv_max): no answer; a probe: an answer
    assert s.receive(ACK, ack.seq, ack.ack, 1, 0, 0, 10) is None
    assert s.receive(ACK, (ack.seq - 1) & M32, ack.ack, 1, 0, 0, 10) is not None


def test_syn_retransmission_doubles_and_the_token_is_renewed():
    c = tf.TcpFlow(client=True)
    syn = c.connect(0, 1, 2)
    assert c.poll(999) is None
    times = []
    now = 0
    while c.state == tf.SYN_SENT and now < 120_000:
        now = c.next_due(now)
        seg = c.poll(now)
        if seg is not None:
            assert seg == syn  # the same ISN and TSval: the token binds them
            times.append(now)
    assert times[:4] == [1000, 3000, 7000, 15000]
    assert c.state == tf.CLOSED and now == tf.TOKEN_TTL_MS and c.recoveries == 0


def test_fin_both_ways():
    c, s, _ = opened()
    fin = c.close(10)
    assert fin.flags == FIN | ACK and c.state == tf.CLOSED
    reply = s.receive(fin.flags, fin.seq, fin.ack, fin.tsval, fin.tsecr, 0, 11)
    assert reply.flags == FIN | ACK and reply.ack == (fin.seq + 1) & M32 and s.state == tf.CLOSED
    c2, s2, _ = opened()
    fin = s2.close(5)
    reply = c2.receive(fin.flags, fin.seq, fin.ack, fin.tsval, fin.tsecr, 0, 6)
    assert reply.flags == ACK and reply.ack == (fin.seq + 1) & M32 and c2.state == tf.CLOSED


# -- against the tracker model --------------------------------------------------------------

def _through(tr: Tracker, orig: bool, seg_or_fields, plen=0, wscale=None) -> bool:
    f = seg_or_fields
    return tr.packet(orig, f[0], f[1], f[2], 65535, plen, wscale)


@pytest.mark.parametrize("where", ["before", "after"])
def test_loss_before_or_after_the_tracker_never_makes_a_frame_invalid(where):
    """A bulk transfer server -> client with 5 % loss either before the tracker (it never
    sees the frame) or after it (it saw it, the receiver did not), in both directions:
    every frame that reaches the tracker passes it."""
    rnd = random.Random(5)
    tr = Tracker()
    c = tf.TcpFlow(client=True, keepalive_ms=0)
    s = tf.TcpFlow(client=False, keepalive_ms=0)
    syn = c.connect(0, 123, 456)
    assert _through(tr, True, syn, wscale=8)
    sa = s.accept(0, syn.seq, syn.tsval, 99999, 1)
    assert _through(tr, False, sa, wscale=8)
    ack = c.receive(sa.flags, sa.seq, sa.ack, sa.tsval, sa.tsecr, 0, 1)
    assert _through(tr, True, ack)
    s.receive(ack.flags, ack.seq, ack.ack, ack.tsval, ack.tsecr, 0, 1)

    def xmit(sender, receiver, orig, plen, now):
        seq, a, tsval, tsecr = sender.data(plen, now)
        if where == "before" and rnd.random() < 0.05:
            return
        assert tr.packet(orig, PSH | ACK, seq, a, 65535, plen), (tr.invalid, now)
        if where == "after" and rnd.random() < 0.05:
            return
        receiver.receive(PSH | ACK, seq, a, tsval, tsecr, plen, now)

    now = 1
    for i in range(20000):
        now += 1
        for _ in range(rnd.randint(1, 6)):
            xmit(s, c, False, rnd.choice((1350, 1350, 1350, 700, 60)), now)
        if i % 2:
            xmit(c, s, True, rnd.choice((60, 80, 120)), now)
    assert tr.invalid == 0 and tr.new_dropped == 0 and tr.passed > 50000
    assert s.snd_nxt != 99999 + 1 and c.state == tf.ESTABLISHED


def test_what_a_stateless_flow_would_get():
    """The contrast: frames with upstream's synthetic numbers and no handshake never pass."""
    from paqet.wire.frame import FrameBuilder, parse_segment
    tr = Tracker()
    b = FrameBuilder(src_ip4="198.18.1.2", src_port=40000, start_ms=5)
    for _ in range(10):
        p = parse_segment(b.build(b"x" * 100, "198.18.2.2", 9999))
        assert not tr.packet(True, p[2], p[3], p[4], 65535, 100)
    assert tr.new_dropped == 10 and tr.passed == 0


def test_a_client_that_bursts_before_the_servers_first_segment_stays_in_the_syn_window():
    """Beyond the SYN-ACK's unscaled window the tracker would drop the client's frames:
    room() keeps the client within it until the server's first other segment."""
    tr = Tracker()
    c = tf.TcpFlow(client=True)
    s = tf.TcpFlow(client=False)
    syn = c.connect(0, 5, 6)
    _through(tr, True, syn, wscale=8)
    sa = s.accept(0, syn.seq, syn.tsval, 7, 8)
    _through(tr, False, sa, wscale=8)
    ack = c.receive(sa.flags, sa.seq, sa.ack, sa.tsval, sa.tsecr, 0, 1)
    assert _through(tr, True, ack)
    sent = 0
    while c.room() >= 1350:
        seq, a, _, _ = c.data(1350, 2)
        assert tr.packet(True, PSH | ACK, seq, a, 65535, 1350)
        sent += 1
    assert sent == 65535 // 1350
    for _ in range(3):  # without room(): the tracker drops what starts beyond the window
        seq, a, _, _ = c.data(1350, 2)
        if not tr.packet(True, PSH | ACK, seq, a, 65535, 1350):
            break
    assert tr.invalid == 1 and tf.seq_after(seq, 5 + 1 + 65535)
