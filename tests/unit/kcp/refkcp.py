"""A deliberately plain KCP written line by line from /work/shared/spec/kcp.md (kcp-go v5.6.72
rules): lists walked in full, no shortcuts. It exists only to check that the optimised
engine (paqet.kcp.engine) emits exactly the same datagrams at the same times."""

from __future__ import annotations

import struct

HDR = struct.Struct("<IBBHIIII")
PUSH, ACK, WASK, WINS = 81, 82, 83, 84
M32 = 0xFFFFFFFF
NOFA = 0xFFFFFFFF


def diff(a, b):
    d = (a - b) & M32
    return d - (1 << 32) if d & 0x80000000 else d


class Seg:
    def __init__(self, data, frg):
        self.data, self.frg = bytes(data), frg
        self.sn = self.ts = self.resendts = self.rto = self.fastack = self.xmit = 0
        self.acked = False


class RefKCP:
    def __init__(self, conv):
        self.conv = conv
        self.mtu, self.mss = 1400, 1376
        self.snd_una = self.snd_nxt = self.rcv_nxt = 0
        self.ssthresh = 2
        self.rx_srtt = self.rx_rttvar = 0
        self.rx_rto, self.rx_minrto = 200, 100
        self.snd_wnd = self.rcv_wnd = self.rmt_wnd = 32
        self.cwnd = self.incr = self.probe = 0
        self.interval = 100
        self.nodelay = self.ts_probe = self.probe_wait = 0
        self.fastresend = self.nocwnd = 0
        self.stream = False
        self.ack_nodelay = False
        self.snd_queue, self.snd_buf, self.rcv_queue, self.rcv_buf = [], [], [], {}
        self.acklist = []
        self.out = []

    def set_nodelay(self, nodelay, interval, resend, nc):
        if nodelay >= 0:
            self.nodelay = nodelay
            self.rx_minrto = 30 if nodelay else 100
        if interval >= 0:
            self.interval = min(5000, max(10, interval))
        if resend >= 0:
            self.fastresend = resend
        if nc >= 0:
            self.nocwnd = nc

    def set_wndsize(self, snd, rcv):
        if snd > 0:
            self.snd_wnd = snd
        if rcv > 0:
            self.rcv_wnd = rcv

    def set_mtu(self, mtu):
        if mtu <= 24:
            return -1
        self.mtu, self.mss = mtu, mtu - 24
        return 0

    @property
    def wait_snd(self):
        return len(self.snd_buf) + len(self.snd_queue)

    def send(self, data):
        if not data:
            return -1
        data = bytes(data)
        if self.stream and self.snd_queue:
            last = self.snd_queue[-1]
            if len(last.data) < self.mss:
                take = self.mss - len(last.data)
                last.data += data[:take]
                data = data[take:]
                if not data:
                    return 0
        count = max(1, (len(data) + self.mss - 1) // self.mss)
        if count > 255:
            return -2
        for i in range(count):
            self.snd_queue.append(Seg(data[i * self.mss:(i + 1) * self.mss],
                                      0 if self.stream else count - i - 1))
        return 0

    def _move(self):
        while self.rcv_nxt in self.rcv_buf and len(self.rcv_queue) < self.rcv_wnd:
            self.rcv_queue.append(self.rcv_buf.pop(self.rcv_nxt))
            self.rcv_nxt = (self.rcv_nxt + 1) & M32

    def recv(self):
        if not self.rcv_queue:
            return None
        fast_recover = len(self.rcv_queue) >= self.rcv_wnd
        if self.stream:
            parts = []
            while self.rcv_queue:
                if len(self.rcv_queue) >= self.rcv_wnd:
                    fast_recover = True
                parts += [d for _, d in self.rcv_queue]
                self.rcv_queue = []
                self._move()
            data = b"".join(parts)
        else:
            head = self.rcv_queue[0][0]
            if head and len(self.rcv_queue) < head + 1:
                return None
            parts = []
            while self.rcv_queue:
                frg, d = self.rcv_queue.pop(0)
                parts.append(d)
                if frg == 0:
                    break
            data = b"".join(parts)
        self._move()
        if fast_recover and len(self.rcv_queue) < self.rcv_wnd:
            self.probe |= 2
        return data or None

    def _update_ack(self, rtt):
        if self.rx_srtt == 0:
            self.rx_srtt, self.rx_rttvar = rtt, rtt >> 1
        else:
            delta = rtt - self.rx_srtt
            self.rx_srtt += delta >> 3
            delta = abs(delta)
            if rtt < self.rx_srtt - self.rx_rttvar:
                self.rx_rttvar += (delta - self.rx_rttvar) >> 5
            else:
                self.rx_rttvar += (delta - self.rx_rttvar) >> 2
        rto = (self.rx_srtt + max(self.interval, self.rx_rttvar << 2)) & M32
        self.rx_rto = min(max(rto, self.rx_minrto), 60000)

    def input(self, data, now, regular=True):
        data = bytes(data)
        if len(data) < 24:
            return -1
        old_una = self.snd_una
        flush_full = False
        ack_seen = False
        latest = 0
        off = 0
        while len(data) - off >= 24:
            conv, cmd, frg, wnd, ts, sn, una, ln = HDR.unpack_from(data, off)
            if conv != self.conv:
                return -1
            off += 24
            if len(data) - off < ln:
                return -2
            if cmd not in (PUSH, ACK, WASK, WINS):
                return -3
            if regular:
                self.rmt_wnd = wnd
            n = 0
            while self.snd_buf and diff(una, self.snd_buf[0].sn) > 0:
                self.snd_buf.pop(0)
                n += 1
            if n:
                flush_full = True
            self.snd_una = self.snd_buf[0].sn if self.snd_buf else self.snd_nxt
            if cmd == ACK:
                if diff(sn, self.snd_una) >= 0 and diff(sn, self.snd_nxt) < 0:
                    for seg in self.snd_buf:
                        if seg.sn == sn:
                            seg.acked = True
                            break
                        if diff(sn, seg.sn) < 0:
                            break
                    for seg in self.snd_buf:
                        if diff(sn, seg.sn) < 0:
                            break
                        if seg.sn != sn and diff(seg.ts, ts) <= 0 and seg.fastack != NOFA:
                            seg.fastack += 1
                            if seg.fastack >= self.fastresend:
                                flush_full = True
                ack_seen = True
                latest = ts
            elif cmd == PUSH:
                if diff(sn, (self.rcv_nxt + self.rcv_wnd) & M32) < 0:
                    self.acklist.append((sn, ts))
                    if diff(sn, self.rcv_nxt) >= 0 and sn not in self.rcv_buf:
                        self.rcv_buf[sn] = (frg, data[off:off + ln])
                        self._move()
            elif cmd == WASK:
                self.probe |= 2
            off += ln
        if ack_seen and regular:
            rtt = diff(now, latest)
            if rtt >= 0:
                self._update_ack(rtt)
        if self.nocwnd == 0 and diff(self.snd_una, old_una) > 0 and self.cwnd < self.rmt_wnd:
            mss = self.mss
            if self.cwnd < self.ssthresh:
                self.cwnd += 1
                self.incr += mss
            else:
                self.incr = max(self.incr, mss)
                self.incr += mss * mss // self.incr + mss // 16
                if (self.cwnd + 1) * mss <= self.incr:
                    self.cwnd = (self.incr + mss - 1) // mss
            if self.cwnd > self.rmt_wnd:
                self.cwnd = self.rmt_wnd
                self.incr = self.rmt_wnd * mss
        if flush_full:
            self._flush_or_defer(now, 2)
        elif len(self.acklist) >= self.mtu // 24:
            self._flush_or_defer(now, 1)
        elif self.ack_nodelay and self.acklist:
            self._flush_or_defer(now, 1)
        return 0

    # paqet's batching extension: the flush Input asks for is done once per batch
    defer_flush = False
    pending = 0

    def _flush_or_defer(self, now, kind):
        if self.defer_flush:
            self.pending = max(self.pending, kind)
        else:
            self.flush(now, kind == 1)

    def flush_pending(self, now):
        if self.pending:
            kind, self.pending = self.pending, 0
            self.flush(now, kind == 1)

    def datagrams_to_send(self):
        out, self.out = self.out, []
        return out

    def flush(self, now, ack_only=False):
        if not ack_only:
            self.pending = 0
        buf = bytearray()

        def space(n):
            nonlocal buf
            if len(buf) + n > self.mtu and buf:
                self.out.append(bytes(buf))
                buf = bytearray()

        wnd = max(0, self.rcv_wnd - len(self.rcv_queue))
        una = self.rcv_nxt
        last_sn = last_ts = 0
        for i, (sn, ts) in enumerate(self.acklist):
            space(24)
            if diff(sn, self.rcv_nxt) >= 0 or i == len(self.acklist) - 1:
                buf += HDR.pack(self.conv, ACK, 0, wnd, ts, sn, una, 0)
                last_sn, last_ts = sn, ts
        self.acklist = []
        if self.rmt_wnd == 0:
            if self.probe_wait == 0:
                self.probe_wait = 500
                self.ts_probe = (now + 500) & M32
            elif diff(now, self.ts_probe) >= 0:
                self.probe_wait = max(self.probe_wait, 500)
                self.probe_wait = min(self.probe_wait + self.probe_wait // 2, 120000)
                self.ts_probe = (now + self.probe_wait) & M32
                self.probe |= 1
        else:
            self.ts_probe = self.probe_wait = 0
        for flag, cmd in ((1, WASK), (2, WINS)):
            if self.probe & flag:
                space(24)
                buf += HDR.pack(self.conv, cmd, 0, wnd, last_ts, last_sn, una, 0)
        self.probe = 0
        cwnd = min(self.snd_wnd, self.rmt_wnd)
        if self.nocwnd == 0:
            cwnd = min(self.cwnd, cwnd)
        newsegs = 0
        while self.snd_queue and diff(self.snd_nxt, (self.snd_una + cwnd) & M32) < 0:
            seg = self.snd_queue.pop(0)
            seg.sn = self.snd_nxt
            self.snd_nxt = (self.snd_nxt + 1) & M32
            self.snd_buf.append(seg)
            newsegs += 1
        if ack_only:
            if buf:
                self.out.append(bytes(buf))
            return self.interval
        resent = self.fastresend if self.fastresend > 0 else NOFA
        change = lost = 0
        minrto = self.interval
        for seg in self.snd_buf:
            if seg.acked:
                continue
            send = False
            if seg.xmit == 0:
                send = True
                seg.rto = self.rx_rto
                seg.resendts = (now + seg.rto) & M32
            elif seg.fastack != NOFA and seg.fastack >= resent:
                send = True
                seg.rto = self.rx_rto
                seg.resendts = (now + seg.rto) & M32
                seg.fastack = NOFA
                change += 1
            elif 0 < seg.fastack < resent and newsegs == 0:
                send = True
                seg.rto = self.rx_rto
                seg.resendts = (now + seg.rto) & M32
                seg.fastack = NOFA
                change += 1
            elif diff(now, seg.resendts) >= 0:
                send = True
                seg.rto += self.rx_rto if self.nodelay == 0 else self.rx_rto // 2
                seg.fastack = 0
                seg.resendts = (now + seg.rto) & M32
                lost += 1
            if send:
                seg.xmit += 1
                seg.ts = now
                space(24 + len(seg.data))
                buf += HDR.pack(self.conv, PUSH, seg.frg, wnd, now, seg.sn, una, len(seg.data))
                buf += seg.data
            r = diff(seg.resendts, now)
            if 0 < r < minrto:
                minrto = r
        if buf:
            self.out.append(bytes(buf))
        if self.nocwnd == 0:
            if change:
                self.ssthresh = max(diff(self.snd_nxt, self.snd_una) // 2, 2)
                self.cwnd = (self.ssthresh + resent) & M32
                self.incr = (self.cwnd * self.mss) & M32
            if lost:
                self.ssthresh = max(cwnd // 2, 2)
                self.cwnd = 1
                self.incr = self.mss
            if self.cwnd < 1:
                self.cwnd = 1
                self.incr = self.mss
        return minrto
