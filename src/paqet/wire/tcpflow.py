"""TCP flow bookkeeping for `network.tcp.mode: handshake` (beyond upstream; sans-I/O).

In the default (stateless) mode every frame is a TCP segment of no connection: a firewall
that tracks TCP state (Linux conntrack without loose pickup, hosting providers' filters)
drops them all. In handshake mode a client opens its flow to the server with SYN -> SYN-ACK
-> ACK and from then on the frames of that flow look like one TCP connection to a tracker
with window checking:

* sequence numbers start at the handshake's and advance by each frame's payload length; a
  datagram KCP sends again is new bytes (sequence numbers never go back);
* the acknowledgement number is the highest end (seq + length) received from the peer -
  not a cumulative one, because frames lost before the tracker leave a gap it never saw
  (acknowledging beyond them is fine: the tracker's upper bound is what it saw, and we saw
  less), and frames lost after it were seen (acknowledging less is fine within the
  acknowledgement window, which the large advertised window makes 16 MiB);
* timestamps advance in milliseconds from a random base; TSecr echoes the peer's newest;
* the window is 65535 scaled by 8 (the SYN's window-scale option): 16 MiB, so neither
  side's sequence numbers can run beyond what the tracker lets the other side accept.

Liveness: a frame from the peer whose TSecr echoes a timestamp we sent after we last heard
from it proves that our frames get through. The client keeps probing (an empty ACK one below
its next sequence number, which the server answers at once, as a TCP keep-alive) while its
frames go unanswered, and when PROBES probes in a row get no answer - the tracker forgot
the flow (its timeout passed during silence, a reboot) and drops everything - it opens the
flow again with a new handshake; the KCP session above never notices beyond a pause. While
idle, a probe every `keepalive_ms` keeps the tracker's entry alive.

Probing resistance: the client's initial sequence number is a 32-bit MAC (keyed BLAKE2s of
a secret derived from transport.kcp.key) over the SYN's TSval (a random nonce) and the
minute (wall clock); the server answers only SYNs whose MAC matches within +-SLOTS minutes
and whose (ISN, TSval) it has not accepted from another address (a replayed SYN). Every
other SYN, and every segment of a flow it does not know, gets no answer at all (the managed
firewall keeps the kernel from answering too): to a scanner the port looks filtered, as in
stateless mode. The cost: client and server clocks must agree within about two minutes.

Times are milliseconds (`now`, monotonic) and seconds of wall clock (`unix_s`), both
supplied by the caller, as are the random numbers (ISNs, timestamp bases, token nonces).
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from paqet.wire.frame import ACK, FIN, M32, PSH, RST, SYN

#: what every frame of a flow advertises: window 65535 with the SYN's window scale 8
WINDOW_BYTES = 65535 << 8
DATA_FLAGS = PSH | ACK

CLOSED, SYN_SENT, SYN_RCVD, OPENING, ESTABLISHED = ("closed", "syn-sent", "syn-rcvd", "opening",
                                                   "established")
#: what a client may send after the handshake until the tracker has seen a scaled window
#: from the server: a SYN-ACK's window is not scaled (RFC 7323), so the tracker lets the
#: client's sequence numbers run only 65535 beyond its ISN until the server's first
#: other segment (state OPENING)
SYN_WINDOW = 65535

SYN_RTO_MS = 1000          # first SYN retransmission (as Linux), doubling ...
SYN_RTO_MAX_MS = 8000      # ... up to this
PROBE_MIN_MS = 500         # unanswered frames are suspect after max(this, 3 x RTT)
PROBES = 3                 # unanswered probes before a new handshake
KEEPALIVE_MS = 15000       # default probe interval while idle
SLOT_S = 60                # SYN token time slot
SLOTS = 2                  # slots either side of the current one that are accepted
TOKEN_MEMORY = 65536       # accepted SYN tokens remembered (replays from other addresses)
SKEW_SLOTS = 24 * 60       # how far (slots) the clock-skew diagnosis looks
TOKEN_TTL_MS = SLOT_S * 1000  # a SYN retried this long gets a new token


def seq_after(a: int, b: int) -> bool:
    """a is later than b in 32-bit sequence space."""
    return 0 < ((a - b) & M32) < 0x80000000


class Segment(NamedTuple):
    """A segment without payload for the shell to send (SYN, SYN-ACK, ACK, FIN, probe)."""
    flags: int
    seq: int
    ack: int
    tsval: int
    tsecr: int


class SynGate:
    """SYN tokens: the client's ISN = MAC(secret, TSval, slot) (make); the server's check
    (accept: "ok" | "bad" | "replay") remembers accepted tokens with the address that
    sent them, so a retransmitted SYN passes and the same SYN from elsewhere does not.
    `key` may be a list (a server with a key per user): a token made with any of them
    passes; make() uses the first."""

    def __init__(self, key, *, slots: int = SLOTS, memory: int = TOKEN_MEMORY) -> None:
        self.slots = slots
        self.memory = memory
        self.seen: dict[tuple[int, int], tuple[tuple, int]] = {}  # (isn, tsval) -> (addr, slot)
        self.set_keys(key)

    def set_keys(self, key) -> None:
        """The key(s) tokens are made and checked with (a reload may change them)."""
        keys = [key] if isinstance(key, (str, bytes)) else list(key)
        self.secrets = [hashlib.blake2s(k.encode() if isinstance(k, str) else bytes(k),
                                        person=b"paqetSYN").digest() for k in keys or [""]]

    def mac(self, tsval: int, slot: int, secret: bytes | None = None) -> int:
        d = hashlib.blake2s(struct.pack("!Iq", tsval & M32, slot),
                            key=self.secrets[0] if secret is None else secret,
                            digest_size=4).digest()
        return int.from_bytes(d, "big")

    def make(self, tsval: int, unix_s: float) -> int:
        return self.mac(tsval, int(unix_s) // SLOT_S)

    def valid(self, isn: int, tsval: int, unix_s: float) -> bool:
        """The current slot first (for every key), then the neighbours."""
        slot = int(unix_s) // SLOT_S
        mac = self.mac
        for d in range(self.slots + 1):
            for secret in self.secrets:
                if mac(tsval, slot - d, secret) == isn or (d and mac(tsval, slot + d, secret) == isn):
                    return True
        return False

    def accept(self, isn: int, tsval: int, addr: tuple, unix_s: float) -> str:
        if tsval < 0 or not self.valid(isn, tsval, unix_s):
            return "bad"
        slot = int(unix_s) // SLOT_S
        seen = self.seen
        prev = seen.get((isn, tsval))
        if prev is not None and prev[0] != addr and slot - prev[1] <= 2 * self.slots + 1:
            return "replay"
        if prev is None and len(seen) >= self.memory:
            self.forget(unix_s)
            while len(seen) >= self.memory:
                del seen[next(iter(seen))]
        seen[(isn, tsval)] = (addr, slot)
        return "ok"

    def forget(self, unix_s: float) -> None:
        """Drop remembered tokens too old to pass `valid` any more."""
        oldest = int(unix_s) // SLOT_S - 2 * self.slots - 1
        for k in [k for k, (_, s) in self.seen.items() if s < oldest]:
            del self.seen[k]

    def skew_minutes(self, isn: int, tsval: int, unix_s: float) -> int | None:
        """For a SYN that failed `valid`: the clock difference (minutes, the client's minus
        ours) at which its token would be valid, within a day (less with many keys); None
        when none (a SYN of a stranger or another key). Costs up to 2 x SKEW_SLOTS MACs: the
        shell rate-limits it."""
        if tsval < 0:
            return None
        slot = int(unix_s) // SLOT_S
        reach = max(2 * self.slots + 1, SKEW_SLOTS // len(self.secrets))  # bounded work
        for d in range(self.slots + 1, reach + 1):
            for secret in self.secrets:
                if self.mac(tsval, slot + d, secret) == isn:
                    return d * SLOT_S // 60
                if self.mac(tsval, slot - d, secret) == isn:
                    return -d * SLOT_S // 60
        return None


class TcpFlow:
    """One flow's sequence/acknowledgement/timestamp state and handshake.

    Client: `connect()` -> SYN; `receive()` of the SYN-ACK -> ACK and OPENING (`room()`
    bytes may be sent), then ESTABLISHED with the server's first other segment; `poll()`
    for SYN retransmissions, probes and recovery. Server: `accept()` of a SYN (checked by a
    SynGate) -> SYN-ACK; ESTABLISHED on the first segment acknowledging it. Both: `data()`
    for each frame with a payload, `receive()` for each frame from the peer, `close()` ->
    FIN. Every method that answers returns a Segment for the shell to send (or None)."""

    __slots__ = ("client", "state", "iss", "snd_nxt", "irs", "rcv_max", "ts_base", "t0",
                 "ts_recent", "last_rx", "last_tx", "wait_since", "wait_ts", "probes",
                 "next_probe", "syn_first", "syn_at", "syn_rto", "syn_tries", "srtt",
                 "keepalive_ms",
                 "handshakes", "recoveries", "probes_sent")

    def __init__(self, *, client: bool, keepalive_ms: int = KEEPALIVE_MS) -> None:
        self.client = client
        self.state = CLOSED
        self.iss = self.snd_nxt = self.irs = self.rcv_max = 0
        self.ts_base = self.t0 = 0
        self.ts_recent = -1          # the peer's newest TSval (-1: none yet)
        self.last_rx = self.last_tx = 0
        self.wait_since = -1         # first frame sent since the peer last showed it heard us
        self.wait_ts = 0             # ... its TSval
        self.probes = 0              # probes sent in the current wait
        self.next_probe = 0
        self.syn_first = self.syn_at = self.syn_rto = self.syn_tries = 0
        self.srtt = 0                # ms; 0 = not measured yet
        self.keepalive_ms = keepalive_ms
        self.handshakes = 0          # completed
        self.recoveries = 0          # new handshakes because frames stopped getting through
        self.probes_sent = 0

    def __repr__(self) -> str:
        return (f"<TcpFlow {self.state} snd_nxt={self.snd_nxt} rcv_max={self.rcv_max} "
                f"wait={self.wait_since}>")

    # -- timestamps and the segments we make ----------------------------------------------
    def tsval(self, now: int) -> int:
        return (self.ts_base + now - self.t0) & M32

    def _seg(self, flags: int, seq: int, now: int) -> Segment:
        return Segment(flags, seq, self.rcv_max if flags & ACK else 0, self.tsval(now),
                       self.ts_recent if self.ts_recent >= 0 else 0)

    def _sent(self, now: int, tsval: int) -> None:
        self.last_tx = now
        if self.wait_since < 0:
            self.wait_since = now
            self.wait_ts = tsval

    # -- client ---------------------------------------------------------------------------
    def connect(self, now: int, iss: int, tsval: int) -> Segment:
        """Open (or open again): SYN with ISN `iss` (a SynGate token) and TSval `tsval`. A
        retransmitted SYN repeats both (the token binds them)."""
        self.state = SYN_SENT
        self.iss = iss & M32
        self.snd_nxt = (iss + 1) & M32
        self.irs = self.rcv_max = 0
        self.ts_base, self.t0 = tsval & M32, now
        self.ts_recent = -1
        self.syn_first = self.syn_at = now
        self.syn_rto = SYN_RTO_MS
        self.syn_tries = 1
        self.wait_since = -1
        self.probes = 0
        self.last_tx = now
        return Segment(SYN, self.iss, 0, self.ts_base, 0)

    def _syn(self) -> Segment:
        return Segment(SYN, self.iss, 0, self.ts_base, 0)

    # -- server ---------------------------------------------------------------------------
    def accept(self, now: int, irs: int, peer_tsval: int, iss: int, tsval: int) -> Segment:
        """A SYN (already checked) opens the flow, or opens it again: SYN-ACK."""
        self.state = SYN_RCVD
        self.irs = irs & M32
        self.rcv_max = (irs + 1) & M32
        self.ts_recent = peer_tsval
        self.iss = iss & M32
        self.snd_nxt = (iss + 1) & M32
        self.ts_base, self.t0 = tsval & M32, now
        self.last_rx = now
        self.wait_since = -1
        return self.syn_ack(now)

    def syn_ack(self, now: int) -> Segment:
        """The SYN-ACK (again, for a retransmitted SYN)."""
        return Segment(SYN | ACK, self.iss, (self.irs + 1) & M32, self.tsval(now),
                       self.ts_recent if self.ts_recent >= 0 else 0)

    def room(self) -> int:
        """Payload bytes the tracker takes now in OPENING (beyond: wait for ESTABLISHED)."""
        if self.state != OPENING:
            return WINDOW_BYTES
        d = (self.iss + 1 + SYN_WINDOW - self.snd_nxt) & M32
        return d if d < 0x80000000 else 0

    # -- both -----------------------------------------------------------------------------
    def data(self, plen: int, now: int) -> tuple[int, int, int, int]:
        """(seq, ack, tsval, tsecr) for a frame carrying `plen` payload bytes."""
        seq = self.snd_nxt
        self.snd_nxt = (seq + plen) & M32
        tsval = (self.ts_base + now - self.t0) & M32
        self.last_tx = now
        if self.wait_since < 0:
            self.wait_since = now
            self.wait_ts = tsval
        tr = self.ts_recent
        return seq, self.rcv_max, tsval, tr if tr >= 0 else 0

    def receive(self, flags: int, seq: int, ack: int, tsval: int, tsecr: int, plen: int,
                now: int) -> Segment | None:
        """A frame from the peer (its payload, if any, goes up whatever this says). Returns
        the segment to answer with, if any."""
        self.last_rx = now
        ws = self.wait_since
        if ws >= 0 and (tsecr < 0 or not seq_after(self.wait_ts, tsecr)):
            self.wait_since = -1  # the peer heard a frame we sent since we started waiting
            self.probes = 0
        if tsval >= 0 and (self.ts_recent < 0 or seq_after(tsval, self.ts_recent)):
            self.ts_recent = tsval
        state = self.state
        if plen and state == ESTABLISHED and not flags & (SYN | FIN | RST):  # the common case
            end = (seq + plen) & M32
            if 0 < ((end - self.rcv_max) & M32) <= WINDOW_BYTES:
                self.rcv_max = end
            return None
        if flags & SYN:
            if plen or not self.client or not flags & ACK:
                return None
            if state == SYN_SENT and ack == (self.iss + 1) & M32:
                if self.syn_tries == 1:
                    self._rtt(now - self.syn_at)
                self.irs = seq
                self.rcv_max = (seq + 1) & M32
                self.ts_recent = tsval
                self.state = OPENING
                self.handshakes += 1
                self.wait_since = -1
                self.probes = 0
                return self._seg(ACK, self.snd_nxt, now)
            if state in (OPENING, ESTABLISHED) and seq == self.irs:  # our ACK was lost: again
                return self._seg(ACK, self.snd_nxt, now)
            return None
        if flags & RST or state == CLOSED or state == SYN_SENT:
            return None
        if plen or flags & FIN:
            # Only what the tracker counts (payload, FIN) moves our acknowledgement: an
            # empty segment beyond rcv_max (a probe after lost data) was not seen as bytes.
            end = (seq + plen + (1 if flags & FIN else 0)) & M32
            d = (end - self.rcv_max) & M32
            if 0 < d <= WINDOW_BYTES:
                self.rcv_max = end
        if state == OPENING:
            self.state = ESTABLISHED  # the tracker has seen the server's scaled window
        elif state == SYN_RCVD and flags & ACK and ack == (self.iss + 1) & M32:
            self.state = ESTABLISHED
            self.handshakes += 1
        if flags & FIN:
            seg = self._seg((ACK | FIN) if not self.client else ACK, self.snd_nxt, now)
            self.state = CLOSED
            return seg
        if plen == 0 and not self.client and flags & ACK and seq != self.rcv_max and \
                self.state == ESTABLISHED:
            # a probe (sent one below the client's next sequence number; the handshake's
            # ACK is at rcv_max): answer at once
            return self._seg(ACK, self.snd_nxt, now)
        return None

    def poll(self, now: int) -> Segment | None:
        """The client's timers (call at `next_due()`): SYN retransmission, probes while
        frames go unanswered or the flow is idle. When PROBES probes went unanswered the
        state becomes CLOSED and `recoveries` counts one: the shell calls connect() with a
        new token."""
        st = self.state
        if st == SYN_SENT:
            if now - self.syn_first >= TOKEN_TTL_MS:
                self.state = CLOSED  # the token is getting old: the shell makes a new one
                return None
            if now - self.syn_at >= self.syn_rto:
                self.syn_at = now
                self.syn_rto = min(SYN_RTO_MAX_MS, self.syn_rto * 2)
                self.syn_tries += 1
                self.last_tx = now
                return self._syn()
            return None
        if (st != ESTABLISHED and st != OPENING) or not self.client:
            return None
        gap = self.probe_gap()
        if self.wait_since >= 0:
            if self.probes == 0:
                if now - self.wait_since < gap:
                    return None
            elif now < self.next_probe:
                return None
            if self.probes >= PROBES:
                self.state = CLOSED
                self.recoveries += 1
                return None
            return self._probe(now, gap)
        if self.keepalive_ms and now - self.last_tx >= self.keepalive_ms:
            return self._probe(now, gap)
        return None

    def _probe(self, now: int, gap: int) -> Segment:
        seg = self._seg(ACK, (self.snd_nxt - 1) & M32, now)
        self._sent(now, seg.tsval)
        self.probes += 1
        self.probes_sent += 1
        self.next_probe = now + gap
        return seg

    def probe_gap(self) -> int:
        return max(PROBE_MIN_MS, 3 * self.srtt)

    def _rtt(self, sample: int) -> None:
        self.srtt = sample if not self.srtt else (7 * self.srtt + sample) // 8

    def next_due(self, now: int) -> int | None:
        """When poll() has something to do next (ms, absolute), None for nothing."""
        st = self.state
        if st == SYN_SENT:
            return min(self.syn_at + self.syn_rto, self.syn_first + TOKEN_TTL_MS)
        if (st != ESTABLISHED and st != OPENING) or not self.client:
            return None
        if self.wait_since >= 0:
            return self.wait_since + self.probe_gap() if self.probes == 0 else self.next_probe
        if self.keepalive_ms:
            return self.last_tx + self.keepalive_ms
        return None

    def close(self, now: int) -> Segment | None:
        """FIN (once the flow is up); the flow is CLOSED afterwards."""
        if self.state not in (ESTABLISHED, OPENING, SYN_RCVD):
            self.state = CLOSED
            return None
        seg = self._seg(FIN | ACK, self.snd_nxt, now)
        self.snd_nxt = (self.snd_nxt + 1) & M32
        self.state = CLOSED
        return seg


__all__ = ["TcpFlow", "SynGate", "Segment", "seq_after", "WINDOW_BYTES", "DATA_FLAGS",
           "CLOSED", "SYN_SENT", "SYN_RCVD", "OPENING", "ESTABLISHED"]
