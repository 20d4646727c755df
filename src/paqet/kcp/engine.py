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
"""

from __future__ import annotations

import collections
import itertools
import struct

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

_HDR = struct.Struct("<IBBHIIII")
_pack_into = _HDR.pack_into
_unpack_from = _HDR.unpack_from
M32 = 0xFFFFFFFF


def _diff(a: int, b: int) -> int:
    """int32(uint32(a) - uint32(b))"""
    d = (a - b) & M32
    return d - 0x100000000 if d & 0x80000000 else d


class Segment:
    __slots__ = ("sn", "ts", "resendts", "rto", "fastack", "xmit", "acked", "data", "frg")

    def __init__(self, data, frg: int = 0) -> None:
        self.data = data
        self.frg = frg
        self.sn = 0
        self.ts = 0
        self.resendts = 0
        self.rto = 0
        self.fastack = 0
        self.xmit = 0
        self.acked = False


class KCP:
    def __init__(self, conv: int) -> None:
        self.conv = conv & M32
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
        self.nocwnd = 0
        self.stream = False
        self.ack_nodelay = False
        self.write_delay = False
        self.defer_flush = False
        self._pending_flush = 0  # 0 none, 1 ack-only, 2 full
        self.snd_queue: collections.deque[Segment] = collections.deque()
        self.snd_buf: collections.deque[Segment] = collections.deque()
        # the segments of snd_buf not yet acknowledged, in sn order: ACK processing and the
        # retransmission pass only ever need these
        self._unacked: dict[int, Segment] = {}
        self.rcv_queue: collections.deque = collections.deque()
        self.rcv_buf: dict[int, tuple] = {}
        self.acklist: list[int] = []  # flat: sn, ts, sn, ts, ...
        self._out: list[bytes] = []
        self._buf = bytearray(MTU_DEF)
        self._recv_fast_recover = False
        self._unsent = 0          # segments at the tail of snd_buf never transmitted
        self._next_due = 0        # earliest resendts in snd_buf (a lower bound)
        self._fa_segs: dict[int, Segment] = {}  # segments with 0 < fastack (sn -> segment)
        # statistics
        self.retransmissions = 0
        self.fast_retransmissions = 0
        self.early_retransmissions = 0
        self.lost_segments = 0
        self.segments_in = 0
        self.segments_out = 0
        self.bad_input = 0

    # -- configuration ---------------------------------------------------------------------
    def set_mtu(self, mtu: int) -> int:
        if mtu < 50 or mtu < OVERHEAD + 1:
            return -1
        self.mtu = mtu
        self.mss = mtu - OVERHEAD
        self._buf = bytearray(mtu)
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
        """Segments that may still be queued before kcp-go's Write would block."""
        return self.snd_wnd - self.wait_snd

    def send(self, data) -> int:
        n = len(data)
        if n == 0:
            return -1
        mss = self.mss
        q = self.snd_queue
        off = 0
        if self.stream and q:
            last = q[-1]
            room = mss - len(last.data)
            if room > 0:
                take = min(room, n)
                d = last.data
                if not isinstance(d, bytearray):
                    d = bytearray(d)
                    last.data = d
                d += data[:take]
                off = take
                if off >= n:
                    return 0
        rest = n - off
        count = (rest + mss - 1) // mss
        if count > 255 and not self.stream:
            return -2
        if count == 0:
            count = 1
        mv = memoryview(data) if not isinstance(data, memoryview) else data
        for i in range(count):
            chunk = bytes(mv[off:off + mss])
            off += mss
            q.append(Segment(chunk, 0 if self.stream else count - i - 1))
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
            parts = [d for _, d in q]
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

    def _parse_una(self, una: int) -> int:
        buf = self.snd_buf
        unacked = self._unacked
        n = 0
        while buf and 0 < ((una - buf[0].sn) & M32) < 0x80000000:  # sn < una
            unacked.pop(buf.popleft().sn, None)
            n += 1
        return n

    def _shrink_buf(self) -> None:
        self.snd_una = self.snd_buf[0].sn if self.snd_buf else self.snd_nxt

    def _parse_ack(self, sn: int) -> None:
        seg = self._unacked.pop(sn, None)
        if seg is not None:
            seg.acked = True

    def _parse_fastack(self, sn: int, ts: int) -> bool:
        if ((sn - self.snd_una) & M32) >= 0x80000000 or ((sn - self.snd_nxt) & M32) < 0x80000000:
            return False
        hit = False
        resend = self.fastresend
        for s, seg in self._unacked.items():
            if not 0 < ((sn - s) & M32) < 0x80000000:  # s >= sn: the rest are later
                break
            if ((ts - seg.ts) & M32) < 0x80000000 and seg.fastack != NO_FASTACK:
                seg.fastack += 1
                self._fa_segs[s] = seg
                if seg.fastack >= resend:
                    hit = True
        return hit

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
        self.rx_rto = min(max(rto, self.rx_minrto), RTO_MAX)

    def input(self, data, now: int, regular: bool = True) -> int:
        n = len(data)
        if n < OVERHEAD:
            self.bad_input += 1
            return -1
        conv = self.conv
        snd_una_old = self.snd_una
        flush_full = False
        ack_seen = False
        latest = 0
        off = 0
        ret = 0
        rcv_buf = self.rcv_buf
        acklist = self.acklist
        while n - off >= OVERHEAD:
            c, cmd, frg, wnd, ts, sn, una, length = _unpack_from(data, off)
            if c != conv:
                self.bad_input += 1
                ret = -1
                break
            off += OVERHEAD
            if n - off < length:
                self.bad_input += 1
                ret = -2
                break
            if cmd < PUSH or cmd > WINS:
                self.bad_input += 1
                ret = -3
                break
            self.segments_in += 1
            if regular:
                self.rmt_wnd = wnd
            if self.snd_buf and self._parse_una(una):
                flush_full = True
            self._shrink_buf()
            if cmd == ACK:
                self._parse_ack(sn)
                if self._parse_fastack(sn, ts):
                    flush_full = True
                ack_seen = True
                latest = ts
            elif cmd == PUSH:
                rcv_nxt = self.rcv_nxt
                if _diff(sn, (rcv_nxt + self.rcv_wnd) & M32) < 0:
                    acklist.append(sn)
                    acklist.append(ts)
                    if _diff(sn, rcv_nxt) >= 0 and sn not in rcv_buf:
                        rcv_buf[sn] = (frg, bytes(data[off:off + length]))
                        if sn == rcv_nxt:
                            self._move_rcv_buf()
            elif cmd == WASK:
                self.probe |= ASK_TELL
            off += length
        if ret:
            return ret
        if ack_seen and regular:
            rtt = _diff(now, latest)
            if rtt >= 0:
                self._update_ack(rtt)
        if self.nocwnd == 0 and _diff(self.snd_una, snd_una_old) > 0 and self.cwnd < self.rmt_wnd:
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
        elif acklist and (len(acklist) // 2 >= self.mtu // OVERHEAD or self.ack_nodelay):
            if self.defer_flush:
                if self._pending_flush < 1:
                    self._pending_flush = 1
            else:
                self.flush(now, True)
        return 0

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
        buf = self._buf
        mtu = self.mtu
        out = self._out
        pos = 0
        conv = self.conv
        wnd = self.rcv_wnd - len(self.rcv_queue)
        if wnd < 0:
            wnd = 0
        una = self.rcv_nxt
        pack = _pack_into
        if not ack_only and self._pending_flush:
            self._pending_flush = 0

        # 1. ACKs
        acks = self.acklist
        if acks:
            rcv_nxt = una
            last = len(acks) - 2
            last_ts = last_sn = 0
            for i in range(0, len(acks), 2):
                if pos + OVERHEAD > mtu:
                    out.append(bytes(buf[:pos]))
                    pos = 0
                sn = acks[i]
                if _diff(sn, rcv_nxt) >= 0 or i == last:
                    last_sn, last_ts = sn, acks[i + 1]
                    pack(buf, pos, conv, ACK, 0, wnd, last_ts, sn, una, 0)
                    pos += OVERHEAD
            self.acklist = []
        else:
            last_ts = last_sn = 0

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
        else:
            self.ts_probe = 0
            self.probe_wait = 0

        # 3. probe commands
        if self.probe:
            for flag, cmd in ((ASK_SEND, WASK), (ASK_TELL, WINS)):
                if self.probe & flag:
                    if pos + OVERHEAD > mtu:
                        out.append(bytes(buf[:pos]))
                        pos = 0
                    pack(buf, pos, conv, cmd, 0, wnd, last_ts, last_sn, una, 0)
                    pos += OVERHEAD
            self.probe = 0

        # 4. move segments into the window
        cwnd = min(self.snd_wnd, self.rmt_wnd)
        if self.nocwnd == 0:
            cwnd = min(self.cwnd, cwnd)
        snd_queue = self.snd_queue
        snd_buf = self.snd_buf
        new_segs = 0
        if snd_queue:
            limit = (self.snd_una + cwnd) & M32
            nxt = self.snd_nxt
            unacked = self._unacked
            while snd_queue and ((nxt - limit) & M32) >= 0x80000000:
                seg = snd_queue.popleft()
                seg.sn = nxt
                unacked[nxt] = seg
                nxt = (nxt + 1) & M32
                snd_buf.append(seg)
                new_segs += 1
            self.snd_nxt = nxt

        if ack_only:
            self._unsent += new_segs
            if pos:
                out.append(bytes(buf[:pos]))
            return self.interval

        # 5. (re)transmission. kcp-go visits every segment of snd_buf; a segment can need
        # sending only if it was never sent, its RTO passed, or its fast-ack count is > 0.
        # So unless an RTO may be due (`_next_due`), we visit only the never-sent tail and
        # the segments with fast-ack counts, in sn order: the same result, far less work.
        resent = self.fastresend if self.fastresend > 0 else NO_FASTACK
        rx_rto = self.rx_rto
        nodelay = self.nodelay
        change = lost = 0
        min_rto = self.interval
        mss_out = 0
        unsent = self._unsent + new_segs
        full = ((now - self._next_due) & M32) < 0x80000000
        if full:
            segs = list(self._unacked.values())
            next_due = (now + 0x7FFFFFFF) & M32
        else:
            if unsent > len(snd_buf):
                unsent = len(snd_buf)
            segs = list(itertools.islice(reversed(snd_buf), unsent))
            segs.reverse()
            if self._fa_segs:
                base = self.snd_una
                fa = [g for g in self._fa_segs.values() if not g.acked and g.xmit]
                fa.sort(key=lambda g: (g.sn - base) & M32)
                segs = fa + segs
            next_due = self._next_due
        fa_segs: dict[int, Segment] = {}
        for seg in segs:
            if seg.acked:
                continue
            xmit = seg.xmit
            fa = seg.fastack
            if xmit == 0:
                seg.rto = rx_rto
                seg.resendts = (now + rx_rto) & M32
                need = True
            elif fa != NO_FASTACK and fa >= resent:
                seg.rto = rx_rto
                seg.resendts = (now + rx_rto) & M32
                seg.fastack = NO_FASTACK
                change += 1
                self.fast_retransmissions += 1
                need = True
            elif 0 < fa < resent and new_segs == 0:
                seg.rto = rx_rto
                seg.resendts = (now + rx_rto) & M32
                seg.fastack = NO_FASTACK
                change += 1
                self.early_retransmissions += 1
                need = True
            elif ((now - seg.resendts) & M32) < 0x80000000:
                if nodelay == 0:
                    seg.rto += rx_rto
                else:
                    seg.rto += rx_rto // 2
                seg.fastack = 0
                seg.resendts = (now + seg.rto) & M32
                lost += 1
                self.lost_segments += 1
                need = True
            else:
                need = False
                if 0 < fa < NO_FASTACK:
                    fa_segs[seg.sn] = seg
            if need:
                if xmit:
                    self.retransmissions += 1
                seg.xmit = xmit = xmit + 1
                seg.ts = now
                data = seg.data
                ln = len(data)
                if pos + OVERHEAD + ln > mtu:
                    out.append(bytes(buf[:pos]))
                    pos = 0
                pack(buf, pos, conv, PUSH, seg.frg, wnd, now, seg.sn, una, ln)
                pos += OVERHEAD
                if ln:
                    buf[pos:pos + ln] = data
                    pos += ln
                mss_out += 1
                if xmit >= self.dead_link:
                    self.state = M32
            rs = seg.resendts
            r = (rs - now) & M32
            if r < 0x80000000:
                if 0 < r < min_rto:
                    min_rto = r
                if ((rs - next_due) & M32) >= 0x80000000:
                    next_due = rs
        self._fa_segs = fa_segs
        self._next_due = next_due
        self._unsent = 0
        if pos:
            out.append(bytes(buf[:pos]))
        self.segments_out += mss_out

        # 6. congestion bookkeeping
        if self.nocwnd == 0:
            if change:
                inflight = _diff(self.snd_nxt, self.snd_una)
                self.ssthresh = max(inflight // 2, THRESH_MIN)
                self.cwnd = self.ssthresh + resent
                self.incr = self.cwnd * self.mss
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
