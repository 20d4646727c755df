"""`network.tcp.mode: handshake` (beyond upstream): a packet backend whose frames to each
peer form one TCP-faithful flow, for paths through stateful firewalls.

`HandshakeBackend` wraps a raw backend (AF_PACKET or libpcap) and keeps one
wire.tcpflow.TcpFlow per peer: a client opens its flow to the server with a handshake
(datagrams the tunnel sends meanwhile wait, at most HOLD_MAX of them), every datagram goes
out with the flow's sequence/acknowledgement numbers and timestamps, empty segments (SYN,
SYN-ACK, ACK, probes, FIN) are handled here and never reach the tunnel. Its timer retransmits
SYNs, probes while frames go unanswered or the flow idles, and opens the flow again when the
probes go unanswered (the tracker forgot the flow). A server accepts both kinds of peers at
once: one that opened a flow with a valid SYN gets flow frames, any other (a Go peer, our
stateless client) gets the default frames, exactly as without this wrapper. SYNs without a
valid token, and empty segments of unknown flows, get no answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time

from paqet.net.backend import Addr
from paqet.wire.frame import ACK, SYN
from paqet.wire.tcpflow import (CLOSED, DATA_FLAGS, ESTABLISHED, KEEPALIVE_MS, OPENING, SLOT_S,
                                SYN_RCVD, SynGate, TcpFlow, seq_after)

log = logging.getLogger("paqet.tcp")

HOLD_MAX = 256            # datagrams a client holds while its flow handshakes (oldest dropped)
SWEEP_S = 10.0            # server: how often idle flows are forgotten
FLOW_IDLE_MS = 180_000    # server: a flow nothing arrived on for this long (at least) is forgotten
MAX_FLOWS = 65536         # server: flows kept at once (the longest idle goes first)
SKEW_EVERY_S = 10.0       # server: at most one clock-skew diagnosis of a refused SYN this often
SYN_WARN_AFTER = 3        # client: SYNs without an answer before a warning


def _rand32() -> int:
    return int.from_bytes(os.urandom(4), "big")


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class HandshakeBackend:
    """A PacketBackend (net/backend.py) over `raw`, which must offer `segments` and
    send(payload, addr, flags, tcp) (AfPacketBackend, PcapBackend). Counters: counters()
    adds tcp_*."""

    def __init__(self, raw, *, client: bool, key, keepalive_ms: int = KEEPALIVE_MS,
                 wall=time.time) -> None:
        raw.segments = True
        self.raw = raw
        self.client = client
        self.local_port = raw.local_port
        self.gate = SynGate(key)
        self.keepalive_ms = keepalive_ms
        self.flow_idle_ms = max(FLOW_IDLE_MS, 4 * keepalive_ms)
        self._wall = wall
        self.flows: dict[Addr, TcpFlow] = {}
        self._held: dict[Addr, collections.deque] = {}
        self._raw_send = raw.send
        self._timer: asyncio.TimerHandle | None = None
        self._due = 1 << 62
        self._closed = False
        self._skew_next = 0.0
        self.tcp = {"tcp_handshakes": 0, "tcp_recoveries": 0, "tcp_syn_refused": 0,
                    "tcp_syn_replayed": 0, "tcp_probes": 0, "tcp_held_dropped": 0}

    def __getattr__(self, name):  # builder, set_guard, kernel counters ... of the raw backend
        if name == "raw":
            raise AttributeError(name)
        return getattr(self.raw, name)

    @property
    def on_stash(self):
        return getattr(self.raw, "on_stash", None)

    @on_stash.setter
    def on_stash(self, cb) -> None:
        self.raw.on_stash = cb

    def fileno(self) -> int:
        return self.raw.fileno()

    def set_keys(self, key) -> None:
        """The key(s) SYN tokens are checked with (a server with a key per user; reload)."""
        self.gate.set_keys(key)

    def set_peer_flags(self, addr: Addr, flags) -> None:
        self.raw.set_peer_flags(addr, flags)  # stateless peers only: flows use their own

    # -- receive ------------------------------------------------------------------------
    def recv_batch(self, max_n: int = 256) -> list[tuple[bytes, Addr]]:
        items = self.raw.recv_batch(max_n)
        if not items:
            return items
        flows = self.flows
        now = _now_ms()
        out = []
        for item in items:
            payload, addr = item[0], item[1]
            f = flows.get(addr)
            if payload:
                out.append((payload, addr))
                if f is not None:
                    seg = f.receive(item[2], item[3], item[4], item[5], item[6], len(payload), now)
                    if seg is not None:
                        self._send(addr, seg)
                    if self._held:
                        self._release(addr, f, now)
            else:
                self._control(item, f, now)
        return out

    def _control(self, item, f: TcpFlow | None, now: int) -> None:
        _, addr, flags, seq, ack, tsval, tsecr = item
        if not self.client and flags & SYN and not flags & ACK:
            self._syn(addr, f, seq, tsval, now)
            return
        if f is None:
            return
        was = f.state
        seg = f.receive(flags, seq, ack, tsval, tsecr, 0, now)
        if seg is not None:
            self._send(addr, seg)
        st = f.state
        if st == was:
            return
        if st == OPENING:
            self.tcp["tcp_handshakes"] += 1
            log.info("tcp: flow to %s:%s open (handshake rtt %d ms)", addr[0], addr[1], f.srtt)
        if self.client and (st == OPENING or st == ESTABLISHED):
            self._release(addr, f, now)
            self._arm(now)
        elif st == CLOSED:
            if self.client:
                log.info("tcp: %s:%s closed the flow (FIN)", addr[0], addr[1])
            else:
                del self.flows[addr]

    def _syn(self, addr: Addr, f: TcpFlow | None, irs: int, tsval: int, now: int) -> None:
        if f is not None and f.irs == irs and f.state in (SYN_RCVD, ESTABLISHED):
            # a retransmitted SYN (our SYN-ACK was lost) or a late duplicate: the same
            # SYN-ACK again, the flow stays as it is
            self._send(addr, f.syn_ack(now))
            return
        unix = self._wall()
        verdict = self.gate.accept(irs, tsval, addr, unix)
        if verdict != "ok":
            self.tcp["tcp_syn_replayed" if verdict == "replay" else "tcp_syn_refused"] += 1
            if verdict == "bad" and unix >= self._skew_next:
                self._skew_next = unix + SKEW_EVERY_S
                skew = self.gate.skew_minutes(irs, tsval, unix)
                if skew is not None:
                    log.warning("tcp: a SYN from %s carries a valid token from a clock %d "
                                "minutes %s ours: not answered (client and server clocks "
                                "must agree within %d minutes: use NTP)", addr[0], abs(skew),
                                "ahead of" if skew > 0 else "behind",
                                self.gate.slots * SLOT_S // 60)
            return
        flows = self.flows
        if f is None:
            if len(flows) >= MAX_FLOWS:
                oldest = min(flows, key=lambda a: flows[a].last_rx)
                del flows[oldest]
            f = flows[addr] = TcpFlow(client=False, keepalive_ms=self.keepalive_ms)
        self._send(addr, f.accept(now, irs, tsval, _rand32(), _rand32()))
        self.tcp["tcp_handshakes"] += 1
        if self._timer is None:
            self._arm(now)

    # -- send ---------------------------------------------------------------------------
    def send(self, payload: bytes, addr: Addr) -> None:
        f = self.flows.get(addr)
        if f is not None:
            st = f.state
            if st == ESTABLISHED or st == SYN_RCVD:
                now = _now_ms()
                self._raw_send(payload, addr, DATA_FLAGS, f.data(len(payload), now))
                if f.wait_since == now and self._due > now + f.probe_gap():
                    self._arm(now)
                return
        if not self.client:
            self.raw.send(payload, addr)  # a peer without a flow: the default frames
            return
        if f is not None and f.state == OPENING and addr not in self._held and \
                f.room() >= len(payload):
            self._raw_send(payload, addr, DATA_FLAGS, f.data(len(payload), _now_ms()))
            return
        q = self._held.get(addr)
        if q is None:
            q = self._held[addr] = collections.deque()
        if len(q) >= HOLD_MAX:
            q.popleft()
            self.tcp["tcp_held_dropped"] += 1
        q.append(payload)
        if f is None or f.state == CLOSED:
            self._connect(addr, f, _now_ms())

    def _connect(self, addr: Addr, f: TcpFlow | None, now: int) -> None:
        """SYN with a fresh token, its ISN after the previous one (a tracker may still hold
        the flow in SYN_SENT, and takes a new SYN only with a later sequence number)."""
        if f is None:
            f = self.flows[addr] = TcpFlow(client=True, keepalive_ms=self.keepalive_ms)
            prev = None
        else:
            prev = f.iss
        unix = self._wall()
        for _ in range(64):
            tsval = _rand32()
            iss = self.gate.make(tsval, unix)
            if prev is None or seq_after(iss, prev):
                break
        self._send(addr, f.connect(now, iss, tsval))
        self._arm(now)

    def _release(self, addr: Addr, f: TcpFlow, now: int) -> None:
        """The flow is open: the datagrams held meanwhile go out, oldest first (in OPENING
        as many as fit the SYN-ACK's window)."""
        q = self._held.get(addr)
        if not q or f.state not in (OPENING, ESTABLISHED):
            return
        send = self._raw_send
        while q and f.room() >= len(q[0]):
            payload = q.popleft()
            send(payload, addr, DATA_FLAGS, f.data(len(payload), now))
        if not q:
            del self._held[addr]

    def _send(self, addr: Addr, seg) -> None:
        self._raw_send(b"", addr, seg.flags, seg[1:])

    # -- timers -------------------------------------------------------------------------
    def _arm(self, now: int) -> None:
        """(Re)schedule the timer for the earliest thing due."""
        if self._closed:
            return
        if self.client:
            due = min((d for d in (f.next_due(now) for f in self.flows.values()) if d is not None),
                      default=None)
        else:
            due = now + int(SWEEP_S * 1000) if self.flows else None
        if due is None or (self._timer is not None and self._due <= due):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # driven by hand (tests): call tick()
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = loop.call_later(max(0, due - now) / 1000, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._due = 1 << 62
        if not self._closed:
            self.tick(_now_ms())

    def tick(self, now: int) -> None:
        """What the timer does: the client's SYN retransmissions, probes and recoveries;
        the server's sweep of idle flows and old SYN tokens."""
        if self.client:
            for addr, f in list(self.flows.items()):
                was = f.state
                seg = f.poll(now)
                if seg is not None:
                    self._send(addr, seg)
                    if not seg.flags & SYN:
                        self.tcp["tcp_probes"] += 1
                    elif f.syn_tries == SYN_WARN_AFTER:
                        log.warning("tcp: no SYN-ACK from %s:%s after %d SYNs: does the server "
                                    "run network.tcp.mode handshake with the same key, and do "
                                    "the clocks agree (NTP)?", addr[0], addr[1], f.syn_tries)
                if f.state == CLOSED and was != CLOSED:
                    if was == ESTABLISHED:
                        self.tcp["tcp_recoveries"] += 1
                        log.warning("tcp: frames to %s:%s stopped getting through (%d probes "
                                    "unanswered): opening the flow again", addr[0], addr[1],
                                    f.probes)
                    self._connect(addr, f, now)
        else:
            idle = self.flow_idle_ms
            for addr in [a for a, f in self.flows.items() if now - f.last_rx >= idle]:
                del self.flows[addr]
            self.gate.forget(self._wall())
        self._arm(now)

    # -- the rest of PacketBackend -------------------------------------------------------
    def counters(self) -> dict:
        c = self.raw.counters()
        c.update(self.tcp)
        c["tcp_flows"] = sum(f.state == ESTABLISHED for f in self.flows.values())
        return c

    def close(self) -> None:
        """FIN on every open flow, then the raw backend closes."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = _now_ms()
        for addr, f in self.flows.items():
            seg = f.close(now)
            if seg is not None:
                try:
                    self._send(addr, seg)
                except OSError:
                    pass
        self.flows.clear()
        self._held.clear()
        self.raw.close()
