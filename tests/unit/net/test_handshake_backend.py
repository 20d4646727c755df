"""net.handshake.HandshakeBackend (network.tcp.mode handshake): a client and a server
backend over fake raw backends joined by a simulated path through a model of a strict
stateful firewall (tests/conntrack.py), in simulated time: the handshake, held datagrams,
loss before and after the firewall, the firewall forgetting the flow, keep-alive, probing
resistance, FIN, and a server serving flow and stateless peers at once."""

import random

import pytest

from conntrack import Tracker
from paqet.net import handshake as hs
from paqet.wire import tcpflow as tf
from paqet.wire.frame import ACK, FIN, SYN

CLIENT, SERVER = ("198.18.1.2", 40000), ("198.18.2.2", 9999)
WALL = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


class FakeRaw:
    def __init__(self, path, addr) -> None:
        self.path, self.addr = path, addr
        self.local_port = addr[1]
        self.segments = False
        self.inbox = []
        self.stateless_sent = []
        self.closed = False

    def send(self, payload, addr, flags=None, tcp=None) -> None:
        if tcp is None:
            self.stateless_sent.append((payload, addr))
        else:
            self.path.carry(self, addr, (bytes(payload), self.addr, flags) + tuple(tcp))

    def set_peer_flags(self, addr, flags) -> None:
        pass

    def recv_batch(self, max_n=256):
        out, self.inbox = self.inbox[:max_n], self.inbox[max_n:]
        return out

    def counters(self) -> dict:
        return {"frames_in": 0}

    def close(self) -> None:
        self.closed = True


class Path:
    """client raw <-> [loss before] tracker [loss after] <-> server raw. The tracker forgets
    an entry that saw nothing for `timeout_ms` (its established timeout)."""

    def __init__(self, clock, before=0.0, after=0.0, seed=1, timeout_ms=None) -> None:
        self.clock = clock
        self.tracker = Tracker()
        self.before, self.after = before, after
        self.rnd = random.Random(seed)
        self.timeout_ms = timeout_ms
        self.last = None
        self.client_raw = FakeRaw(self, CLIENT)
        self.server_raw = FakeRaw(self, SERVER)
        self.log = []

    def carry(self, raw, dst, item) -> None:
        orig = raw is self.client_raw
        now = self.clock()
        if self.timeout_ms is not None and self.last is not None and \
                now - self.last >= self.timeout_ms:
            self.tracker.forget()
        self.log.append((orig, item))
        if self.rnd.random() < self.before:
            return
        payload, _, flags, seq, ack, _, _ = item
        if not self.tracker.packet(orig, flags, seq, ack, 65535, len(payload),
                                   8 if flags & SYN else None):
            return
        self.last = now
        if self.rnd.random() < self.after:
            return
        (self.server_raw if orig else self.client_raw).inbox.append(item)


@pytest.fixture
def net(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(hs, "_now_ms", clock)

    def make(key_c="k", key_s="k", keepalive_ms=0, **kw):
        path = Path(clock, **kw)
        c = hs.HandshakeBackend(path.client_raw, client=True, key=key_c, keepalive_ms=keepalive_ms,
                                wall=lambda: WALL)
        s = hs.HandshakeBackend(path.server_raw, client=False, key=key_s,
                                keepalive_ms=keepalive_ms, wall=lambda: WALL)
        return clock, path, c, s
    return make


def pump(clock, c, s, ms=1, rounds=20):
    """Move frames both ways for a while, `ms` simulated ms per round, timers included."""
    got = {"c": [], "s": []}
    for _ in range(rounds):
        clock.ms += ms
        got["s"] += s.recv_batch()
        got["c"] += c.recv_batch()
        for b in (c, s):
            b.tick(clock.ms)
    return got


def test_handshake_holds_datagrams_until_the_flow_is_open(net):
    clock, path, c, s = net()
    for i in range(3):
        c.send(b"dgram%d" % i, SERVER)
    assert [it[2] for _, it in path.log] == [SYN]  # only the SYN left so far
    got = pump(clock, c, s)
    assert got["s"] == [(b"dgram%d" % i, CLIENT) for i in range(3)]
    assert [it[2] for _, it in path.log[:3]] == [SYN, SYN | ACK, ACK]
    s.send(b"reply", CLIENT)
    got = pump(clock, c, s)
    assert got["c"] == [(b"reply", SERVER)]
    assert path.tracker.invalid == 0 and path.tracker.state == "ESTABLISHED"
    assert c.flows[SERVER].state == s.flows[CLIENT].state == tf.ESTABLISHED
    assert c.counters()["tcp_handshakes"] == s.counters()["tcp_handshakes"] == 1
    assert path.server_raw.stateless_sent == []


def test_server_serves_stateless_peers_as_before(net):
    clock, path, c, s = net()
    go = ("198.18.3.3", 41000)
    path.server_raw.inbox.append((b"from a go client", go, 0x18, 1, 2, 3, 4))
    assert s.recv_batch() == [(b"from a go client", go)]
    s.send(b"answer", go)
    assert path.server_raw.stateless_sent == [(b"answer", go)] and go not in s.flows
    # an empty segment of no flow gets nothing at all
    path.server_raw.inbox.append((b"", go, ACK, 1, 2, 3, 4))
    assert s.recv_batch() == [] and path.log == []


def test_syn_without_a_valid_token_gets_no_answer(net):
    clock, path, c, s = net(key_c="another key")
    c.send(b"x", SERVER)
    pump(clock, c, s, ms=500, rounds=10)
    assert all(orig for orig, _ in path.log)  # the server sent nothing
    assert s.counters()["tcp_syn_refused"] >= 2 and s.flows == {}
    # a replay of a good SYN from another address: no answer either
    clock2, path2, c2, s2 = net()
    c2.send(b"x", SERVER)
    syn = path2.log[0][1]
    path2.server_raw.inbox.append((b"",) + (("198.18.6.6", 5555),) + syn[2:])
    pump(clock2, c2, s2)
    assert s2.counters()["tcp_syn_replayed"] == 1 and ("198.18.6.6", 5555) not in s2.flows


@pytest.mark.parametrize("before,after", [(0.02, 0.0), (0.0, 0.02), (0.02, 0.02)])
def test_bulk_transfer_with_loss_before_and_after_the_firewall(net, before, after):
    clock, path, c, s = net(before=before, after=after, seed=3)
    c.send(b"hello", SERVER)
    for _ in range(100):  # the handshake itself may need a retransmitted SYN
        pump(clock, c, s, ms=100, rounds=1)
        if c.flows[SERVER].state == tf.ESTABLISHED or s.flows.get(CLIENT):
            break
    pump(clock, c, s, ms=100, rounds=20)
    invalid0 = path.tracker.invalid
    sent = received = 0
    rnd = random.Random(7)
    for i in range(3000):
        for _ in range(4):
            s.send(bytes(rnd.randint(60, 1350)), CLIENT)
            sent += 1
        if i % 3 == 0:
            c.send(bytes(60), SERVER)
        received += len(pump(clock, c, s, rounds=1)["c"])
    assert path.tracker.invalid == invalid0 == 0
    assert received >= sent * (1 - 2.5 * (before + after)) - 50
    assert c.counters()["tcp_recoveries"] == 0


def test_recovery_when_the_firewall_forgets_the_flow(net):
    clock, path, c, s = net()
    c.send(b"a", SERVER)
    pump(clock, c, s)
    s.send(b"b", CLIENT)
    pump(clock, c, s)
    path.tracker.forget()
    lost_at = clock.ms
    back = None
    for i in range(100):  # the tunnel keeps sending (KCP retransmissions) every 100 ms
        c.send(b"retry%d" % i, SERVER)
        got = pump(clock, c, s, ms=10, rounds=10)
        if any(p.startswith(b"retry") for p, _ in got["s"]) and back is None:
            back = clock.ms
            break
    assert back is not None and back - lost_at < 5000
    assert c.counters()["tcp_recoveries"] == 1
    assert path.tracker.new_dropped > 0 and path.tracker.invalid == 0
    assert path.tracker.state == "ESTABLISHED"


def test_keepalive_keeps_a_tracker_with_a_short_timeout_from_forgetting(net):
    clock, path, c, s = net(keepalive_ms=5000, timeout_ms=10000)
    c.send(b"a", SERVER)
    pump(clock, c, s)
    pump(clock, c, s, ms=100, rounds=300)  # 30 s of silence from the tunnel
    c.send(b"after the idle", SERVER)
    got = pump(clock, c, s)
    assert got["s"] == [(b"after the idle", CLIENT)]
    assert c.counters()["tcp_recoveries"] == 0 and c.counters()["tcp_probes"] >= 5
    # without keep-alive the tracker forgets; the next frames then bring a new handshake
    clock, path, c, s = net(keepalive_ms=0, timeout_ms=10000)
    c.send(b"a", SERVER)
    pump(clock, c, s)
    pump(clock, c, s, ms=100, rounds=300)
    c.send(b"after the idle", SERVER)
    got = pump(clock, c, s, ms=100, rounds=50)
    assert c.counters()["tcp_recoveries"] == 1 and path.tracker.invalid == 0


def test_held_datagrams_are_bounded(net):
    clock, path, c, s = net(before=1.0)  # nothing gets through
    for i in range(hs.HOLD_MAX + 10):
        c.send(b"%d" % i, SERVER)
    assert len(c._held[SERVER]) == hs.HOLD_MAX
    assert c.counters()["tcp_held_dropped"] == 10


def test_close_sends_fin_and_the_server_forgets_the_flow(net):
    clock, path, c, s = net()
    c.send(b"a", SERVER)
    pump(clock, c, s)
    c.close()
    assert path.client_raw.closed and path.log[-1][1][2] == FIN | ACK
    pump(clock, c, s)
    assert CLIENT not in s.flows and path.log[-1][1][2] == FIN | ACK and not path.log[-1][0]


def test_server_restart_brings_a_new_handshake(net):
    clock, path, c, s = net()
    c.send(b"a", SERVER)
    pump(clock, c, s)
    s.flows.clear()  # the server restarted: it knows no flow
    for i in range(60):
        c.send(b"again%d" % i, SERVER)
        got = pump(clock, c, s, ms=10, rounds=10)
        if any(p.startswith(b"again") for p, _ in got["s"]) and CLIENT in s.flows:
            break
    assert CLIENT in s.flows and c.counters()["tcp_handshakes"] == 2
