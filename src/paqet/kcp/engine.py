"""KCP as kcp-go v5 implements it, as a sans-I/O state machine.

Bytes and the caller's millisecond clock go in (`input`, `send`, `flush`); datagrams come out
(`datagrams_to_send`) and in-order bytes are read with `recv`. The rules follow kcp-go v5.6.72
(see docs and ../shared/spec/kcp.md), including where it differs from the C ikcp:
immediate flush from input, ACKed segments kept until una passes them, RTT sampled once per
datagram, the kcp-go RTO estimator and backoff, conservative fast-ack counting with early
retransmit, the ACK jitter filter, and a 500 ms first window probe.

One deliberate extension for batching: with `defer_flush = True`, the flush that kcp-go
performs inside Input is remembered instead and done by `flush_pending(now)`, so a shell
that feeds a whole batch of datagrams flushes once. The wire format is unchanged.

Speed without changing behaviour (tests/unit/kcp/test_kcp_reference.py compares every
datagram with a plain transcription of kcp-go's rules): flushes visit only segments that
can need sending (never sent, counted by fast acks, or due in the RTO heap) instead of the
whole window, and the per-ACK fast-ack walk skips segments whose count no longer matters.
Peer-supplied numbers never size an allocation: payloads are sliced from the datagram,
out-of-window segments are dropped, and every structure is bounded by the windows (the ACK
list: by the datagrams fed between flushes).
"""

from __future__ import annotations

import collections
import itertools
import struct
from heapq import heappop, heappush

PUSH, ACK, WASK, WINS = 81, 82, 83, 84
OVERHEAD = 24
RTO_NDL, RTO_MIN, RTO_DEF, RTO_MAX = 30, 100, 200, 60000
WND_SND, WND_RCV = 32, 32
MTU_DEF = 1400
INTERVAL = 100
DEADLINK = 20
THRESH_INIT, THRESH_MIN = 2, 2
PROBE_INIT, PROBE_LIMIT = 500, 120000
ASK_SEND, ASK_TELL = 1, 2
NO_FASTACK = 0xFFFFFFFF
MIN_RTO_BURST = 4  # RTO resends a paced flush may send whatever the tokens say

_HDR = struct.Struct("<IBBHIIII")
_unpack_from = _HDR.unpack_from
M32 = 0xFFFFFFFF


def _diff(a: int, b: int) -> int:
    """int32(uint32(a) - uint32(b))"""
    d = (a - b) & M32
    return d - 0x100000000 if d & 0x80000000 else d


class Segment:
    # rkey: kcp-go's resendts on the engine's unwrapped clock (KCP._now_u)
    # dlv, dlv_t, fst, alim: the rate controller's stamps at the last transmission (the
    # delivered count and its time, the first send time of that flight, app-limited)
    __slots__ = ("sn", "ts", "rto", "fastack", "xmit", "acked", "data", "frg", "rkey",
                 "dlv", "dlv_t", "fst", "alim")

    def __init__(self, data, frg: int = 0) -> None:
        self.data = data
        self.frg = frg
        self.sn = 0
        self.ts = 0
        self.rto = 0
        self.fastack = 0
        self.xmit = 0
        self.acked = False
        self.rkey = 0
        self.dlv = self.dlv_t = self.fst = 0
        self.alim = False


class KCP:
    """One KCP conversation (kcp-go defaults until configured; see presets.configure).

    `output`, if given, is called with each datagram as soon as a flush emits it; otherwise
    datagrams wait for `datagrams_to_send()`."""

    def __init__(self, conv: int, output=None) -> None:
        self.conv = conv & M32
        self.output = output
        self.mtu = MTU_DEF
        self.mss = MTU_DEF - OVERHEAD
        self.state = 0
        self.snd_una = 0
        self.snd_nxt = 0
        self.rcv_nxt = 0
        self.ssthresh = THRESH_INIT
        self.rx_rttvar = 0
        self.rx_srtt = 0
        self.rx_rto = RTO_DEF
        self.rx_minrto = RTO_MIN
        self.snd_wnd = WND_SND
        self.rcv_wnd = WND_RCV
        self.rmt_wnd = WND_RCV
        self.cwnd = 0
        self.incr = 0
        self.probe = 0
        self.interval = INTERVAL
        self.nodelay = 0
        self.ts_probe = 0
        self.probe_wait = 0
        self.dead_link = DEADLINK
        self.fastresend = 0
        # 0: one fast/early retransmission per segment until an RTO fires (kcp-go since
        # v5.6.50, paqet's v5.6.64: a lost fast retransmission waits for the RTO). n > 0:
        # a segment sent fewer than n times counts fast ACKs again after a fast/early
        # retransmission (like ikcp's fastlimit; kcp-go <= v5.6.20 had no limit). A
        # sender-side policy only: the receiver cannot tell.
        self.fast_limit = 0
        self.nocwnd = 0
        self.stream = False
        self.ack_nodelay = False
        self.write_delay = False
        self.defer_flush = False
        self._pending_flush = 0  # 0 none, 1 ack-only, 2 full
        # Beyond kcp-go: a rate controller (kcp.rate.RateController) paces new segments
        # and caps the flight; None sends as kcp-go does. The wire format is the same.
        self.cc = None
        self.delivered = 0        # segments acknowledged (ACK or una), for rate samples
        self.delivered_t = 0
        self.first_sent_t = 0
        self.app_limited_until = 0  # delivered count until which samples are app-limited
        self.pace_wait = 0        # ms until pacing lets the next queued segment go (0: not held)
        # bytes the shell holds back above KCP (smux's queues): not app-limited while > 0
        self.backlog = 0
        # Beyond kcp-go: the advertised window from kcp.window.ReceiveWindow (rcv_wnd is
        # then the memory bound on what we accept); None advertises as kcp-go
        self.rw = None
        self._rcv_hi = 0          # 1 + the highest sn received (for rw: the span of holes)
        self.snd_queue: collections.deque[Segment] = collections.deque()
        self.snd_buf: collections.deque[Segment] = collections.deque()
        # the segments of snd_buf not yet acknowledged, in sn order: ACK processing and the
        # retransmission pass only ever need these
        self._unacked: dict[int, Segment] = {}
        self.rcv_queue: collections.deque = collections.deque()
        self.rcv_buf: dict[int, tuple] = {}
        self.acklist: list[int] = []  # flat: sn, ts, sn, ts, ...
        self._out: list[bytes] = []
        self._unsent = 0          # segments at the tail of snd_buf never transmitted
        # [rkey, n, segments, first maybe-live index] per flush and rto: rkey is resendts on
        # a clock that does not wrap (`_now_u`); a segment acked, gone or re-sent since
        # (its rkey differs) is stale in an entry
        self._rto_heap: list = []
        self._heap_n = 0
        self._now_u = 0
        self._last_now = 0
        self._fa_segs: dict[int, Segment] = {}  # segments with 0 < fastack (sn -> segment)
        # unacknowledged segments whose fast-ack count can still grow (not fast-retransmitted
        # since their last RTO): in sn order, and the few an RTO reset, in any order
        self._fa_walk: dict[int, Segment] = {}
        self._fa_extra: dict[int, Segment] = {}
        self._fa_dels = 0
        # segments whose next fast-ack count asks kcp-go for a full flush whatever its value
        # (armed): ACKed ones still in snd_buf at threshold - 1 or more, and unacked ones
        # that reached the threshold (the next flush resends them); ACKed ones below it just
        # count (pending)
        self._ack_armed: dict[int, Segment] = {}
        self._ack_pend: dict[int, Segment] = {}
        # statistics
        self.retransmissions = 0
        self.fast_retransmissions = 0
        self.early_retransmissions = 0
        self.lost_segments = 0
        self.repeat_segments = 0  # PUSH segments received twice (kcp-go's RepeatSegs)
        self.segments_in = 0
        self.segments_out = 0
        self.bad_input = 0

    # -- configuration ---------------------------------------------------------------------
    def set_mtu(self, mtu: int) -> int:
        """kcp-go v5.6.72: any mtu > 24 (the header) is accepted; -1 leaves the old one."""
        if mtu <= OVERHEAD:
            return -1
        self.mtu = mtu
        self.mss = mtu - OVERHEAD
        return 0

    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        if nodelay >= 0:
            self.nodelay = nodelay
            self.rx_minrto = RTO_NDL if nodelay else RTO_MIN
        if interval >= 0:
            self.interval = min(5000, max(10, interval))
        if resend >= 0:
            self.fastresend = resend
        if nc >= 0:
            self.nocwnd = nc

    def set_wndsize(self, sndwnd: int, rcvwnd: int) -> None:
        if sndwnd > 0:
            self.snd_wnd = sndwnd
        if rcvwnd > 0:
            self.rcv_wnd = rcvwnd

    @property
    def srtt(self) -> int:
        return self.rx_srtt

    @property
    def rttvar(self) -> int:
        return self.rx_rttvar

    @property
    def rto(self) -> int:
        return self.rx_rto

    # -- user side ---------------------------------------------------------------------------
    @property
    def wait_snd(self) -> int:
        return len(self.snd_buf) + len(self.snd_queue)

    @property
    def send_room(self) -> int:
        """Segments that may still be queued before kcp-go's Write would block (it blocks
        while wait_snd >= snd_wnd, checked before queueing, so one write may overshoot)."""
        return self.snd_wnd - len(self.snd_buf) - len(self.snd_queue)

    @property
    def can_send(self) -> bool:
        """kcp-go's Write would accept data now."""
        return len(self.snd_buf) + len(self.snd_queue) < self.snd_wnd

    def stats(self) -> dict:
        """Counters and RTT state for a stats display."""
        return {
            "srtt": self.rx_srtt, "rttvar": self.rx_rttvar, "rto": self.rx_rto,
            "snd_wnd": self.snd_wnd, "rcv_wnd": self.rcv_wnd, "rmt_wnd": self.rmt_wnd,
            "cwnd": self.cwnd, "wait_snd": self.wait_snd,
            "segments_out": self.segments_out,    # PUSH segments sent, retransmissions too
            "segments_in": self.segments_in,      # valid segments received, any command
            "retransmissions": self.retransmissions,
            "fast_retransmissions": self.fast_retransmissions,
            "early_retransmissions": self.early_retransmissions,
            "lost_segments": self.lost_segments,  # RTO expiries
            "repeat_segments": self.repeat_segments,  # duplicates received: the peer's
                                                      # retransmissions that were not needed
            "bad_input": self.bad_input,          # datagrams with a malformed segment
        }

    def send(self, data) -> int:
        """Queue bytes (kcp-go's Send: 0, or -1 for empty data, -2 for a message of more
        than 255 segments). Stream mode first tops up the last queued segment, and accepts
        any length (kcp-go's session splits writes into mss-sized Sends, same wire)."""
        n = len(data)
        if n == 0:
            return -1
        mss = self.mss
        q = self.snd_queue
        stream = self.stream
        off = 0
        if stream and q:
            last = q[-1]
            room = mss - len(last.data)
            if room > 0:
                d = last.data
                if type(d) is not bytearray:
                    d = last.data = bytearray(d)
                d += data[:room]
                if room >= n:
                    return 0
                off = room
        count = (n - off + mss - 1) // mss
        if not stream and count > 255:
            return -2
        if type(data) is not bytes:
            data = bytes(data[off:]) if off else bytes(data)
            n -= off
            off = 0
        if stream:
            if count == 1:
                q.append(Segment(data[off:] if off else data, 0))
            else:
                q.extend([Segment(data[o:o + mss], 0) for o in range(off, n, mss)])
        else:
            frg = count
            for o in range(off, n, mss):
                frg -= 1
                q.append(Segment(data[o:o + mss], frg))
        return 0

    def peek_size(self) -> int:
        q = self.rcv_queue
        if not q:
            return -1
        frg, data = q[0]
        if frg == 0:
            return len(data)
        if len(q) < frg + 1:
            return -1
        total = 0
        for f, d in q:
            total += len(d)
            if f == 0:
                break
        return total

    def recv(self) -> bytes | None:
        """Stream mode: every in-order byte available (None if none). Message mode: one
        message."""
        q = self.rcv_queue
        if not q:
            return None
        fast_recover = len(q) >= self.rcv_wnd
        if self.stream:
            # as a kcp-go reader looping on Read until nothing is left: segments that move
            # in from rcv_buf as the queue empties are read too
            parts = [d for _, d in q]
            q.clear()
            while self.rcv_buf:
                self._move_rcv_buf()
                if not q:
                    break
                if len(q) >= self.rcv_wnd:
                    fast_recover = True
                parts.extend([d for _, d in q])
                q.clear()
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if not data:
                data = None
        else:
            if self.peek_size() < 0:
                return None
            parts = []
            while q:
                frg, d = q.popleft()
                parts.append(d)
                if frg == 0:
                    break
            data = b"".join(parts)
        self._move_rcv_buf()
        if fast_recover and len(q) < self.rcv_wnd:
            self.probe |= ASK_TELL
        return data

    # -- input -------------------------------------------------------------------------------
    def _move_rcv_buf(self) -> None:
        buf = self.rcv_buf
        if not buf:
            return
        q = self.rcv_queue
        nxt = self.rcv_nxt
        wnd = self.rcv_wnd
        while len(q) < wnd:
            item = buf.pop(nxt, None)
            if item is None:
                break
            q.append(item)
            nxt = (nxt + 1) & M32
        self.rcv_nxt = nxt

    def _update_ack(self, rtt: int) -> None:
        if self.rx_srtt == 0:
            self.rx_srtt = rtt
            self.rx_rttvar = rtt >> 1
        else:
            delta = rtt - self.rx_srtt
            self.rx_srtt += delta >> 3
            if delta < 0:
                delta = -delta
            if rtt < self.rx_srtt - self.rx_rttvar:
                self.rx_rttvar += (delta - self.rx_rttvar) >> 5
            else:
                self.rx_rttvar += (delta - self.rx_rttvar) >> 2
        rto = (self.rx_srtt + max(self.interval, self.rx_rttvar << 2)) & M32
        if self.cc is not None:
            # paced sends keep the RTT steady, so rttvar shrinks to nothing and a queue of
            # a few ms (a bandwidth probe) would fire the RTO for segments that are only
            # late: with the controller, an RTO waits at least half an RTT more
            floor = self.rx_srtt + (self.rx_srtt >> 1) + self.interval
            if rto < floor:
                rto = floor
        self.rx_rto = min(max(rto, self.rx_minrto), RTO_MAX)

    def _compact_fa(self) -> None:
        # a dict iterates over the holes its deletions leave at the front; rebuild it
        self._fa_walk = dict(self._fa_walk)
        self._fa_dels = 0

    def input(self, data, now: int, regular: bool = True) -> int:
        """One datagram from the peer (`regular` False for a payload FEC recovered: it then
        updates neither the remote window nor the RTT, as kcp-go). kcp-go's return codes:
        0, -1 short or foreign conv, -2 a length beyond the datagram, -3 an unknown command
        (segments before the bad one stay applied, as in kcp-go)."""
        n = len(data)
        if n < OVERHEAD:
            self.bad_input += 1
            return -1
        conv = self.conv
        if not self.snd_buf:
            # fast path: a datagram holding one PUSH, nothing of ours in flight (so una
            # changes nothing): the receiving side of a bulk transfer
            c, cmd, frg, wnd, ts, sn, una, length = _unpack_from(data, 0)
            if cmd == PUSH and n - OVERHEAD == length and c == conv:
                if regular:
                    self.rmt_wnd = wnd
                self.segments_in += 1
                rcv_nxt = self.rcv_nxt
                d = (sn - rcv_nxt) & M32
                rcv_wnd = self.rcv_wnd
                acklist = self.acklist
                if d < rcv_wnd:
                    acklist.append(sn)
                    acklist.append(ts)
                    rcv_buf = self.rcv_buf
                    if d == 0 and not rcv_buf and len(self.rcv_queue) < rcv_wnd:
                        self.rcv_queue.append((frg, data[OVERHEAD:] if type(data) is bytes
                                               else bytes(data[OVERHEAD:])))
                        self.rcv_nxt = (rcv_nxt + 1) & M32
                    elif sn not in rcv_buf:
                        rcv_buf[sn] = (frg, bytes(data[OVERHEAD:]))
                        if d == 0:
                            self._move_rcv_buf()
                    else:
                        self.repeat_segments += 1
                        d = -1
                    if d >= 0 and self.rw is not None:
                        self.rw.on_data(now, ts, 1)
                        if ((sn + 1 - self._rcv_hi) & M32) - 1 < 0x7FFFFFFF:
                            self._rcv_hi = (sn + 1) & M32
                elif d >= 0x80000000 + rcv_wnd:
                    acklist.append(sn)
                    acklist.append(ts)
                    self.repeat_segments += 1
                if acklist and (len(acklist) >> 1 >= self.mtu // OVERHEAD or self.ack_nodelay):
                    if self.defer_flush:
                        if self._pending_flush < 1:
                            self._pending_flush = 1
                    else:
                        self.flush(now, True)
                return 0
        snd_una_old = snd_una = self.snd_una
        snd_buf = self.snd_buf
        snd = rcv = False  # sending/receiving side state loaded into locals
        isb = type(data) is bytes  # slices are copies (a memoryview's are not)
        rmt_wnd = -1
        unpack = _unpack_from
        flush_full = False
        ack_seen = False
        latest = 0
        off = 0
        ret = 0
        nseg = 0
        dels = 0
        track = self.cc is not None
        ndel = 0
        newest = None
        rw = self.rw
        rw_n = rw_ts = 0
        while n - off >= OVERHEAD:
            c, cmd, frg, wnd, ts, sn, una, length = unpack(data, off)
            if c != conv:
                ret = -1
                break
            off += OVERHEAD
            if n - off < length:
                ret = -2
                break
            if cmd < PUSH or cmd > WINS:
                ret = -3
                break
            nseg += 1
            rmt_wnd = wnd
            # parse_una + shrink_buf: drop every segment below the peer's una
            if snd_buf and 0 < ((una - snd_una) & M32) < 0x80000000:
                if not snd:
                    snd = True
                    snd_nxt = self.snd_nxt
                    unacked = self._unacked
                    fa_walk = self._fa_walk
                    fa_extra = self._fa_extra
                    fa_segs = self._fa_segs
                    ack_armed = self._ack_armed
                    ack_pend = self._ack_pend
                    resend = self.fastresend
                    sat = resend if resend > 0 else 1
                while snd_buf:
                    s0 = snd_buf[0].sn
                    if not 0 < ((una - s0) & M32) < 0x80000000:
                        break
                    snd_buf.popleft().acked = True  # gone: its heap entry is stale
                    g = unacked.pop(s0, None)
                    if g is not None:
                        if track:
                            ndel += 1
                            if newest is None or ((g.ts - newest.ts) & M32) < 0x80000000:
                                newest = g
                        if fa_walk.pop(s0, None) is not None:
                            dels += 1
                        else:
                            if fa_extra:
                                fa_extra.pop(s0, None)
                            if ack_armed:
                                ack_armed.pop(s0, None)
                    elif ack_armed.pop(s0, None) is None and ack_pend:
                        ack_pend.pop(s0, None)
                flush_full = True
                snd_una = snd_buf[0].sn if snd_buf else snd_nxt
            if cmd == ACK:
                if not snd:
                    snd = True
                    snd_nxt = self.snd_nxt
                    unacked = self._unacked
                    fa_walk = self._fa_walk
                    fa_extra = self._fa_extra
                    fa_segs = self._fa_segs
                    ack_armed = self._ack_armed
                    ack_pend = self._ack_pend
                    resend = self.fastresend
                    sat = resend if resend > 0 else 1
                seg = unacked.pop(sn, None)
                if seg is not None:
                    seg.acked = True
                    if track:
                        ndel += 1
                        if newest is None or ((seg.ts - newest.ts) & M32) < 0x80000000:
                            newest = seg
                    if fa_walk.pop(sn, None) is not None:
                        dels += 1
                    elif fa_extra:
                        fa_extra.pop(sn, None)
                    fa = seg.fastack
                    if fa != NO_FASTACK:
                        if fa + 1 >= resend:
                            ack_armed[sn] = seg
                        else:
                            ack_pend[sn] = seg
                # parse_fastack: every unacked segment before sn sent no later than the
                # acked one counts one more ACK past it (segments already fast-retransmitted
                # are not in fa_walk/fa_extra: kcp-go skips them too)
                if ((sn - snd_una) & M32) < ((snd_nxt - snd_una) & M32):
                    if ack_armed and not flush_full:
                        # kcp-go counts acknowledged segments (still in snd_buf) too, and
                        # one reaching the threshold also asks for a full flush
                        for s, g in ack_armed.items():
                            if 0 < ((sn - s) & M32) < 0x80000000 and \
                                    ((ts - g.ts) & M32) < 0x80000000:
                                flush_full = True
                                break
                    if ack_pend:
                        for s, g in list(ack_pend.items()):
                            if 0 < ((sn - s) & M32) < 0x80000000 and \
                                    ((ts - g.ts) & M32) < 0x80000000:
                                fa = g.fastack = g.fastack + 1
                                if fa >= resend:
                                    flush_full = True
                                if fa + 1 >= resend:
                                    del ack_pend[s]
                                    ack_armed[s] = g
                    # a segment whose count reached the threshold will be resent by the
                    # next flush whatever more it counts: it moves to ack_armed, where it
                    # only keeps asking for full flushes (so a batch of ACKs costs O(1) per
                    # lost segment, not O(ACKs))
                    satd = None
                    for s, g in fa_walk.items():
                        if ((s - sn) & M32) < 0x80000000:  # s >= sn: the rest are later
                            break
                        if ((ts - g.ts) & M32) < 0x80000000:
                            fa = g.fastack = g.fastack + 1
                            fa_segs[s] = g
                            if fa >= resend:
                                flush_full = True
                            if fa >= sat:
                                if satd is None:
                                    satd = [s]
                                else:
                                    satd.append(s)
                    if satd is not None:
                        for s in satd:
                            ack_armed[s] = fa_walk.pop(s)
                        dels += len(satd)
                    if fa_extra:
                        satd = None
                        for s, g in fa_extra.items():
                            if 0 < ((sn - s) & M32) < 0x80000000 and \
                                    ((ts - g.ts) & M32) < 0x80000000:
                                fa = g.fastack = g.fastack + 1
                                fa_segs[s] = g
                                if fa >= resend:
                                    flush_full = True
                                if fa >= sat:
                                    if satd is None:
                                        satd = [s]
                                    else:
                                        satd.append(s)
                        if satd is not None:
                            for s in satd:
                                ack_armed[s] = fa_extra.pop(s)
                ack_seen = True
                latest = ts
            elif cmd == PUSH:
                if not rcv:
                    rcv = True
                    rcv_buf = self.rcv_buf
                    rcv_queue = self.rcv_queue
                    rcv_wnd = self.rcv_wnd
                    acklist = self.acklist
                rcv_nxt = self.rcv_nxt
                d = (sn - rcv_nxt) & M32
                if d < rcv_wnd:
                    acklist.append(sn)
                    acklist.append(ts)
                    if d == 0 and not rcv_buf and len(rcv_queue) < rcv_wnd:
                        rcv_queue.append((frg, data[off:off + length] if isb
                                          else bytes(data[off:off + length])))
                        self.rcv_nxt = (rcv_nxt + 1) & M32
                    elif sn not in rcv_buf:
                        rcv_buf[sn] = (frg, bytes(data[off:off + length]))
                        if d == 0:
                            self._move_rcv_buf()
                    else:
                        self.repeat_segments += 1
                        d = -1
                    if d >= 0 and rw is not None:
                        rw_n += 1
                        rw_ts = ts
                        if ((sn + 1 - self._rcv_hi) & M32) - 1 < 0x7FFFFFFF:
                            self._rcv_hi = (sn + 1) & M32
                elif d >= 0x80000000 + rcv_wnd:  # an old duplicate (sn < rcv_nxt): ACK only
                    acklist.append(sn)
                    acklist.append(ts)
                    self.repeat_segments += 1
            elif cmd == WASK:
                self.probe |= ASK_TELL
            off += length
        if snd:
            self.snd_una = snd_una
        if regular and rmt_wnd >= 0:
            self.rmt_wnd = rmt_wnd  # the last valid segment's (FEC-recovered ones: none)
        self.segments_in += nseg
        if dels:
            self._fa_dels += dels
            if self._fa_dels > 64 + 2 * len(fa_walk):
                self._compact_fa()
        if ret:
            self.bad_input += 1
            return ret
        rtt = -1
        if ack_seen and regular:
            rtt = _diff(now, latest)
            if rtt >= 0:
                self._update_ack(rtt)
                if rw is not None:
                    rw.on_rtt(now, rtt)
        if rw_n:
            rw.on_data(now, rw_ts, rw_n)
        if ndel:
            self._rate_sample(now, ndel, newest, rtt)
        if snd_una != snd_una_old and self.nocwnd == 0 and self.cwnd < self.rmt_wnd:
            mss = self.mss
            if self.cwnd < self.ssthresh:
                self.cwnd += 1
                self.incr += mss
            else:
                if self.incr < mss:
                    self.incr = mss
                self.incr += (mss * mss) // self.incr + mss // 16
                if (self.cwnd + 1) * mss <= self.incr:
                    self.cwnd = (self.incr + mss - 1) // (mss if mss > 0 else 1)
            if self.cwnd > self.rmt_wnd:
                self.cwnd = self.rmt_wnd
                self.incr = self.rmt_wnd * mss
        if flush_full:
            if self.defer_flush:
                self._pending_flush = 2
            else:
                self.flush(now, False)
        elif self.acklist and (len(self.acklist) >> 1 >= self.mtu // OVERHEAD
                               or self.ack_nodelay):
            if self.defer_flush:
                if self._pending_flush < 1:
                    self._pending_flush = 1
            else:
                self.flush(now, True)
        return 0

    def _rate_sample(self, now: int, ndel: int, p: Segment, rtt: int) -> None:
        """Segments were acknowledged: advance the delivered count and give the controller
        one sample, from the most recently sent of them (BBR's rate sampling)."""
        self.delivered = delivered = self.delivered + ndel
        self.delivered_t = now
        self.first_sent_t = p.ts
        send_el = _diff(p.ts, p.fst)
        ack_el = _diff(now, p.dlv_t)
        iv = send_el if send_el > ack_el else ack_el
        if self.app_limited_until and delivered > self.app_limited_until:
            self.app_limited_until = 0
        self.cc.on_ack(now, p.dlv, delivered, iv, p.alim, rtt, len(self._unacked))

    @property
    def ack_flush_can_wait(self) -> bool:
        """The flush Input asked for is ACK-only and asked by ack_nodelay alone (fewer
        ACKs pending than ACK clocking sends at once): a shell may let them ride with the
        data it is about to send instead."""
        return self._pending_flush == 1 and len(self.acklist) >> 1 < self.mtu // OVERHEAD

    def flush_pending(self, now: int) -> None:
        """Do the flush that Input asked for while `defer_flush` was set."""
        p = self._pending_flush
        if p:
            self._pending_flush = 0
            self.flush(now, p == 1)

    # -- output ----------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[bytes]:
        out = self._out
        if out:
            self._out = []
        return out

    def flush(self, now: int, ack_only: bool = False) -> int:
        """kcp-go's flush: see _flush. Hands the datagrams to `output` when one is set."""
        r = self._flush(now, ack_only)
        if self.output is not None and self._out:
            out, self._out = self._out, []
            for d in out:
                self.output(d)
        return r

    def _flush(self, now: int, ack_only: bool = False) -> int:
        """kcp-go's flush: ACKs, window probes, then (unless `ack_only`) new segments and
        retransmissions, packed into datagrams of at most `mtu` bytes. Returns the ms until
        the next flush is due (kcp-go's update() result)."""
        mtu = self.mtu
        out = self._out
        parts: list = []   # the datagram being built
        size = 0
        conv = self.conv
        wnd = self.rcv_wnd - len(self.rcv_queue)
        rw = self.rw
        if rw is not None:
            rw.update(now)
            span = (self._rcv_hi - self.rcv_nxt) & M32
            adv = rw.advertise(span if span < 0x80000000 else 0, len(self.rcv_queue))
            if adv < wnd:
                wnd = adv
        if wnd < 0:
            wnd = 0
        una = self.rcv_nxt
        pack = _HDR.pack
        if not ack_only and self._pending_flush:
            self._pending_flush = 0

        # 1. ACKs (kcp-go drops ACKs for sn < rcv_nxt, except the last one: never changes
        # where datagrams are cut, see below)
        acks = self.acklist
        last_ts = last_sn = 0
        if acks:
            last = len(acks) - 2
            for i in range(0, len(acks), 2):
                sn = acks[i]
                if ((sn - una) & M32) < 0x80000000 or i == last:
                    if size + OVERHEAD > mtu:
                        out.append(b"".join(parts))
                        parts = []
                        size = 0
                    last_sn, last_ts = sn, acks[i + 1]
                    parts.append(pack(conv, ACK, 0, wnd, last_ts, sn, una, 0))
                    size += OVERHEAD
            self.acklist = []
            # kcp-go cuts the datagram before a skipped ACK too if 24 more bytes would not
            # fit; any item written after it is >= 24 bytes and cuts there anyway, so the
            # datagrams are the same

        # 2. window probe timer
        if self.rmt_wnd == 0:
            if self.probe_wait == 0:
                self.probe_wait = PROBE_INIT
                self.ts_probe = (now + self.probe_wait) & M32
            elif _diff(now, self.ts_probe) >= 0:
                if self.probe_wait < PROBE_INIT:
                    self.probe_wait = PROBE_INIT
                self.probe_wait += self.probe_wait // 2
                if self.probe_wait > PROBE_LIMIT:
                    self.probe_wait = PROBE_LIMIT
                self.ts_probe = (now + self.probe_wait) & M32
                self.probe |= ASK_SEND
        elif self.probe_wait:
            self.ts_probe = 0
            self.probe_wait = 0

        # 3. probe commands
        if self.probe:
            for flag, cmd in ((ASK_SEND, WASK), (ASK_TELL, WINS)):
                if self.probe & flag:
                    if size + OVERHEAD > mtu:
                        out.append(b"".join(parts))
                        parts = []
                        size = 0
                    parts.append(pack(conv, cmd, 0, wnd, last_ts, last_sn, una, 0))
                    size += OVERHEAD
            self.probe = 0

        # 4. move segments into the window
        cwnd = self.snd_wnd
        if self.rmt_wnd < cwnd:
            cwnd = self.rmt_wnd
        if self.nocwnd == 0 and self.cwnd < cwnd:
            cwnd = self.cwnd
        snd_queue = self.snd_queue
        snd_buf = self.snd_buf
        new_segs = 0
        cc = self.cc
        paced = False
        if cc is not None:
            self.pace_wait = 0
            if ack_only:
                snd_queue = ()  # the controller's sends go with full flushes only
        if snd_queue:
            limit = (self.snd_una + cwnd) & M32
            nxt = self.snd_nxt
            room = (limit - nxt) & M32
            if room < 0x80000000 and room:
                unacked = self._unacked
                fa_walk = self._fa_walk
                popleft = snd_queue.popleft
                append = snd_buf.append
                n = min(room, len(snd_queue))
                if cc is not None:
                    allow = cc.allowance(now, len(unacked))
                    if allow < n:
                        n = allow
                        paced = allow < len(snd_queue)

                for _ in range(n):
                    seg = popleft()
                    seg.sn = nxt
                    unacked[nxt] = seg
                    fa_walk[nxt] = seg
                    nxt = (nxt + 1) & M32
                    append(seg)
                    new_segs += 1
                self.snd_nxt = nxt

        if ack_only:
            self._unsent += new_segs
            if parts:
                out.append(b"".join(parts))
            return self.interval

        # 5. (re)transmission. kcp-go visits every segment of snd_buf; one needs sending only
        # if it was never sent, has a fast-ack count > 0, or its RTO passed. Those are the
        # never-sent tail, `_fa_segs` and the RTO heap's due entries: we visit just these, in
        # sn order, and get the same datagrams. The heap also gives kcp-go's return value
        # (the earliest resendts) without a pass over the window.
        alim = False
        if cc is not None:
            if self.snd_queue and not paced and self.rmt_wnd < self.snd_wnd:
                cc.window_limited()
            if not self._unacked or len(self._unacked) == new_segs:
                # a new flight after an idle moment: its rate samples start now
                self.first_sent_t = self.delivered_t = now
            if not self.snd_queue and not self.backlog and len(self._unacked) < cc.cwnd:
                # nothing more to send: samples from these segments show the application's
                # rate, not the path's
                self.app_limited_until = self.delivered + len(self._unacked) or 1
            alim = self.app_limited_until > 0
            dlv, dlv_t, fst = self.delivered, self.delivered_t, self.first_sent_t
        d = (now - self._last_now) & M32
        self._now_u += d - 0x100000000 if d & 0x80000000 else d
        self._last_now = now
        now_u = self._now_u
        heap = self._rto_heap
        unacked = self._unacked
        # due: segments whose RTO passed (stale heap entries: acked, gone or rescheduled)
        due = None
        while heap and heap[0][0] <= now_u:
            key, _, group, i = heappop(heap)
            for seg in itertools.islice(group, i, None):
                if seg.rkey == key and not seg.acked:
                    if due is None:
                        due = [seg]
                    else:
                        due.append(seg)
        unsent = self._unsent + new_segs
        if unsent > len(snd_buf):
            unsent = len(snd_buf)
        if unsent == len(snd_buf):
            segs = snd_buf
        elif unsent:
            segs = list(itertools.islice(reversed(snd_buf), unsent))
            segs.reverse()
        else:
            segs = ()
        fa_old = self._fa_segs
        only_new = True
        if fa_old or due:
            extra = {}
            if fa_old:
                for g in fa_old.values():
                    if g.xmit and not g.acked:
                        extra[g.sn] = g
            if due:
                for g in due:
                    extra[g.sn] = g
            if extra:
                base = self.snd_una
                ex = sorted(extra.values(), key=lambda g: (g.sn - base) & M32)
                segs = ex + list(segs) if segs else ex
                only_new = False
        resent = self.fastresend if self.fastresend > 0 else NO_FASTACK
        fast_limit = self.fast_limit
        rx_rto = self.rx_rto
        nodelay = self.nodelay
        change = lost = 0
        nout = 0
        fa_segs: dict[int, Segment] = {}
        fa_walk = self._fa_walk
        fa_extra = self._fa_extra
        armed = self._ack_armed
        dels = 0
        dead_link = self.dead_link
        counter = self._heap_n
        key0 = now_u + rx_rto
        sent0 = []       # sent with rto = rx_rto: one heap entry for them all
        others = None    # other rtos (backed off): key -> segments
        held = None      # RTO resends the pacer holds to the next ms
        # with a controller, RTO resends take pacing tokens (at least MIN_RTO_BURST a flush)
        rto_budget = None
        if cc is not None and cc.paces:
            rto_budget = int(cc.tokens) - new_segs
            if rto_budget < MIN_RTO_BURST:
                rto_budget = MIN_RTO_BURST
        if only_new:
            full = mtu - OVERHEAD
            # only never-sent segments: kcp-go's first-transmission branch for each
            sent0 = list(segs)   # any acked one among them is a stale heap member
            for seg in sent0:
                if seg.acked:
                    continue
                seg.rto = rx_rto
                seg.rkey = key0
                seg.xmit = 1
                seg.ts = now
                nout += 1
                if cc is not None:
                    seg.dlv = dlv
                    seg.dlv_t = dlv_t
                    seg.fst = fst
                    seg.alim = alim
                data = seg.data
                ln = len(data)
                if size + OVERHEAD + ln > mtu and parts:
                    out.append(b"".join(parts))
                    parts = []
                    size = 0
                if ln == full and not parts:
                    # fills a datagram by itself: the next item starts another anyway
                    out.append(pack(conv, PUSH, seg.frg, wnd, now, seg.sn, una, ln) + data)
                    continue
                parts.append(pack(conv, PUSH, seg.frg, wnd, now, seg.sn, una, ln))
                parts.append(data)
                size += OVERHEAD + ln
            if nout and dead_link <= 1:
                self.state = M32
            segs = ()
        for seg in segs:
            if seg.acked:
                continue
            xmit = seg.xmit
            fa = seg.fastack
            if xmit == 0:
                rto = seg.rto = rx_rto
            elif fa != NO_FASTACK and fa >= resent:
                rto = seg.rto = rx_rto
                if fa_walk.pop(seg.sn, None) is not None:
                    dels += 1
                elif armed.pop(seg.sn, None) is None:
                    fa_extra.pop(seg.sn, None)
                if xmit < fast_limit:  # may be fast-retransmitted again (fast_limit)
                    seg.fastack = 0
                    fa_extra[seg.sn] = seg
                else:
                    seg.fastack = NO_FASTACK
                change += 1
                self.fast_retransmissions += 1
            elif 0 < fa < resent and new_segs == 0:
                rto = seg.rto = rx_rto
                if fa_walk.pop(seg.sn, None) is not None:
                    dels += 1
                elif armed.pop(seg.sn, None) is None:
                    fa_extra.pop(seg.sn, None)
                if xmit < fast_limit:
                    seg.fastack = 0
                    fa_extra[seg.sn] = seg
                else:
                    seg.fastack = NO_FASTACK
                change += 1
                self.early_retransmissions += 1
            elif seg.rkey <= now_u:   # kcp-go: _itimediff(current, resendts) >= 0
                if rto_budget is not None:
                    if rto_budget <= 0:
                        # paced: this RTO resend waits for tokens (a timeout of a whole
                        # flight would otherwise go out as one burst into the bottleneck)
                        seg.rkey = now_u + 1
                        if held is None:
                            held = [seg]
                        else:
                            held.append(seg)
                        if 0 < fa < NO_FASTACK:
                            fa_segs[seg.sn] = seg
                        continue
                    rto_budget -= 1
                if nodelay == 0:
                    rto = seg.rto = seg.rto + rx_rto
                else:
                    rto = seg.rto = seg.rto + rx_rto // 2
                if fa == NO_FASTACK or armed.pop(seg.sn, None) is not None:
                    fa_extra[seg.sn] = seg
                seg.fastack = 0
                lost += 1
                self.lost_segments += 1
            else:
                if 0 < fa < NO_FASTACK:
                    fa_segs[seg.sn] = seg
                continue
            # send it
            if rto == rx_rto:
                seg.rkey = key0
                sent0.append(seg)
            else:
                seg.rkey = key = now_u + rto
                if others is None:
                    others = {}
                lst = others.get(key)
                if lst is None:
                    others[key] = [seg]
                else:
                    lst.append(seg)
            seg.xmit = xmit = xmit + 1
            seg.ts = now
            if cc is not None and xmit == 1:
                # the delivery state of a segment's first transmission only: kcp-go's fast
                # retransmission sends a segment again while the ACK of its last copy is on
                # its way (fastack counts again past it), and that ACK, a round trip old,
                # would look like one of a segment sent after every other: at 5 % loss and
                # RTT 200 ms, 130 "round trips" a second, each cutting the estimate
                seg.dlv = dlv
                seg.dlv_t = dlv_t
                seg.fst = fst
                seg.alim = alim
            data = seg.data
            ln = len(data)
            if size + OVERHEAD + ln > mtu and parts:
                out.append(b"".join(parts))
                parts = []
                size = 0
            parts.append(pack(conv, PUSH, seg.frg, wnd, now, seg.sn, una, ln))
            parts.append(data)
            size += OVERHEAD + ln
            nout += 1
            if xmit >= dead_link:
                self.state = M32
        if sent0:
            counter += 1
            heappush(heap, [key0, counter, sent0, 0])
        if others:
            for key, lst in others.items():
                counter += 1
                heappush(heap, [key, counter, lst, 0])
        if held is not None:
            counter += 1
            heappush(heap, [now_u + 1, counter, held, 0])
            paced = True
        self._heap_n = counter
        self.retransmissions += change + lost
        self._fa_segs = fa_segs
        self._unsent = 0
        if parts:
            out.append(b"".join(parts) if len(parts) > 1 else parts[0])
        self.segments_out += nout
        if dels:
            self._fa_dels += dels
            if self._fa_dels > 64 + 2 * len(fa_walk):
                self._compact_fa()
        # kcp-go returns min(interval, the smallest positive resendts - now)
        min_rto = self.interval
        if cc is not None:
            if nout:
                cc.spend(nout, change + lost)
            if paced:
                self.pace_wait = w = cc.next_send_in()
                if w < min_rto:
                    min_rto = w
        while heap:
            e = heap[0]
            key, _, group, i = e
            n = len(group)
            while i < n:
                g = group[i]
                if g.rkey == key and not g.acked:
                    break
                i += 1
            if i < n:
                e[3] = i
                r = key - now_u
                if 0 < r < min_rto:
                    min_rto = r
                break
            heappop(heap)

        # 6. congestion bookkeeping
        if self.nocwnd == 0:
            if change:
                inflight = _diff(self.snd_nxt, self.snd_una)
                self.ssthresh = max(inflight // 2, THRESH_MIN)
                self.cwnd = (self.ssthresh + resent) & M32  # uint32 in kcp-go
                self.incr = (self.cwnd * self.mss) & M32
            if lost:
                self.ssthresh = max(cwnd // 2, THRESH_MIN)
                self.cwnd = 1
                self.incr = self.mss
            if self.cwnd < 1:
                self.cwnd = 1
                self.incr = self.mss
        return min_rto

    def update(self, now: int) -> int:
        return self.flush(now, False)


CMD_NAMES = {PUSH: "PUSH", ACK: "ACK", WASK: "WASK", WINS: "WINS"}


def parse_segments(data) -> list[tuple]:
    """Every segment of a KCP datagram as (conv, cmd, frg, wnd, ts, sn, una, payload).
    Raises ValueError for a truncated segment or an unknown command."""
    out = []
    n = len(data)
    off = 0
    while n - off >= OVERHEAD:
        conv, cmd, frg, wnd, ts, sn, una, length = _unpack_from(data, off)
        off += OVERHEAD
        if cmd not in CMD_NAMES:
            raise ValueError(f"unknown KCP command {cmd}")
        if n - off < length:
            raise ValueError(f"segment length {length} exceeds the {n - off} bytes left")
        out.append((conv, cmd, frg, wnd, ts, sn, una, bytes(data[off:off + length])))
        off += length
    return out


def encode_segment(conv: int, cmd: int, frg: int, wnd: int, ts: int, sn: int, una: int,
                   payload: bytes = b"") -> bytes:
    return _HDR.pack(conv, cmd, frg, wnd, ts, sn, una, len(payload)) + payload
