"""A model of a strict stateful firewall for the unit tests of network.tcp.mode handshake:
Linux conntrack's TCP tracking as a router configures it with nf_conntrack_tcp_loose=0 and
nf_conntrack_tcp_be_liberal=0, behind the forward rules `ct state invalid drop` and
`tcp flags & (syn|ack) != syn ct state new drop` (the e2e tests use the real kernel; this
model lets the unit tests show the same failures without root, in simulated time).

Per connection and direction it keeps what the kernel keeps: the highest sequence end seen
(td_end), how far the other side allows it to send (td_maxend = their ack + window), the
largest window it advertised (td_maxwin) and its window scale. A segment passes when its
sequence number lies within what the receiver allowed, it is not older than a receiver's
window before td_end, and its acknowledgement is neither beyond what the other side sent
(as seen here) nor more than max(66000, the acker's largest window) behind it. Segments
without payload are checked for their acknowledgement only. Handshake: SYN (creates the
entry), SYN-ACK acknowledging it, then anything. A SYN on an established entry passes
without changing it, and a SYN-ACK that answers it re-synchronises the entry, as the kernel
does for a peer that opened the connection again.
"""

from __future__ import annotations

import dataclasses

SYN, ACK, FIN, RST = 2, 16, 1, 4
M32 = 0xFFFFFFFF


def after(a: int, b: int) -> bool:
    return 0 < ((a - b) & M32) < 0x80000000


def before(a: int, b: int) -> bool:
    return after(b, a)


@dataclasses.dataclass
class Side:
    td_end: int = 0
    td_maxend: int = 0
    td_maxwin: int = 0
    scale: int = 0
    wscale_opt: bool = False


class Tracker:
    def __init__(self) -> None:
        self.state = None            # None: no entry
        self.sides = [Side(), Side()]
        self.invalid = 0             # `ct state invalid drop`
        self.new_dropped = 0         # `tcp flags & (syn|ack) != syn ct state new drop`
        self.passed = 0
        self._ignored_syn = None     # (seq end, window, wscale) of a SYN seen while established

    def forget(self) -> None:
        """The entry's timeout passed (or the router rebooted)."""
        self.state = None
        self._ignored_syn = None

    def packet(self, orig: bool, flags: int, seq: int, ack: int, window: int, plen: int,
               wscale: int | None = None) -> bool:
        ok = self._packet(orig, flags, seq, ack, window, plen, wscale)
        if ok:
            self.passed += 1
        return ok

    def _init(self, s: Side, seq: int, plen: int, window: int, wscale) -> None:
        s.td_end = s.td_maxend = (seq + 1 + plen) & M32
        s.td_maxwin = max(window, 1)
        s.wscale_opt = wscale is not None
        s.scale = wscale or 0

    def _packet(self, orig, flags, seq, ack, window, plen, wscale) -> bool:
        syn_ack = flags & (SYN | ACK)
        if self.state is None:
            if syn_ack != SYN or not orig:
                self.new_dropped += 1
                return False
            self.sides = [Side(), Side()]
            self._init(self.sides[0], seq, plen, window, wscale)
            self.state = "SYN_SENT"
            return True
        c, s = self.sides
        sender, receiver = (c, s) if orig else (s, c)
        if syn_ack == SYN:
            if not orig:
                self.invalid += 1
                return False
            if self.state == "SYN_SENT":
                end = (seq + 1 + plen) & M32
                if after(end, c.td_end) or end == c.td_end:  # a retransmitted SYN
                    self._init(c, seq, plen, window, wscale)
                    return True
                self.invalid += 1
                return False
            # established (or closing): the kernel lets it through and remembers it
            self._ignored_syn = ((seq + 1 + plen) & M32, seq, window, wscale)
            return True
        if syn_ack == SYN | ACK:
            if orig:
                self.invalid += 1
                return False
            if self.state == "SYN_SENT" and ack == c.td_end:
                pass
            elif self._ignored_syn is not None and ack == self._ignored_syn[0]:
                end, cseq, cwin, cws = self._ignored_syn  # both ends opened again: resync
                self._init(c, cseq, 0, cwin, cws)
                self._ignored_syn = None
            elif self.state == "SYN_RECV" and ack == c.td_end:
                return True  # a retransmitted SYN-ACK
            else:
                self.invalid += 1
                return False
            self._init(s, seq, plen, window, wscale)
            if not (c.wscale_opt and s.wscale_opt):
                c.scale = s.scale = 0
            # the SYN-ACK's window is not scaled
            if after((ack + window) & M32, c.td_maxend):
                c.td_maxend = (ack + window) & M32
            self.state = "SYN_RECV"
            return True
        end = (seq + plen + (1 if flags & FIN else 0)) & M32
        if not flags & ACK:
            ack = receiver.td_end
        if plen == 0 and not flags & FIN:
            seq = end = sender.td_end
        win = window << sender.scale
        maxack = max(66000, sender.td_maxwin)
        if (after(seq, sender.td_maxend)
                or before(end, (sender.td_end - receiver.td_maxwin) & M32)
                or after(ack, receiver.td_end)
                or before(ack, (receiver.td_end - maxack) & M32)):
            self.invalid += 1
            return False
        if sender.td_maxwin < win:
            sender.td_maxwin = win
        if after(end, sender.td_end):
            sender.td_end = end
        if flags & ACK and after((ack + win) & M32, receiver.td_maxend):
            receiver.td_maxend = (ack + win) & M32
        if self.state == "SYN_RECV" and orig and flags & ACK:
            self.state = "ESTABLISHED"
        return True
