"""One tunnel connection: datagram codec + KCP + smux for a single peer, driven by asyncio.

The sans-I/O machines do all protocol work; this class only moves bytes between them at the
right moments and keeps the timers:

    wire datagram -> codec.decode -> kcp.input        (datagram_received, per datagram)
    kcp.recv -> smux.receive_data -> stream events    (pump, once per loop iteration)
    stream writes -> smux -> kcp.send -> kcp.flush -> codec.encode -> send(wire, peer)

All received datagrams of one wakeup are fed first, then one pump runs, so ACKs and data
produced in reaction to a batch leave together.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from paqet.kcp.engine import KCP
from paqet.kcp.rate import RateController, SharedPath
from paqet.kcp.window import ReceiveWindow
from paqet.smux import events as sev
from paqet.smux.session import SmuxSession
from paqet.tunnel.clock import now_ms
from paqet.tunnel.handoff import handoff
from paqet.tunnel.params import TunnelParams
from paqet.tunnel.stream import StreamClosed, TunnelStream
from paqet.wire.datagram import DatagramCodec
from paqet.wire.replay import _CMD_TS as _CMD_TS_STRUCT, IDENT_LEN, ReplayWindow, StaleFilter

log = logging.getLogger("paqet.tunnel")

SendFn = Callable[[bytes, tuple], None]
_CMD_TS = _CMD_TS_STRUCT.unpack_from
REPLAYS_AT = 256  # replayed datagrams that make the listener update its kernel block list
#: longest sleep of an idle session's timer (smux's keepalive usually wakes it sooner)
IDLE_TICK_MS = 1000
#: seconds ACKs that ack_nodelay would send alone wait for data to ride with (ACK clocking,
#: a full flush or the KCP tick send them sooner). kcp-go with acknodelay off holds them up
#: to a whole interval; this adds at most 2 ms to the peer's RTT samples.
ACK_HOLD = 0.002
#: congestion "bbr": the flight a new session may send before it has measured the path
#: (kcp-go sends a whole window at once: paqet's client advertises 512)
INIT_FLIGHT = 512
#: ... and how much it keeps in KCP's send queue beyond what is in flight: the pacing rate
#: times this many ms (at least QUEUE_MIN segments). The rest waits in smux's per-stream
#: queues, so a stream that writes during a bulk transfer gets its turn at once.
QUEUE_MS, QUEUE_MIN = 20, 64
#: ms between two resizings of the smux buffers to the receive window
SMUX_RESIZE_MS = 250
SMUX_TARGETS = 4


def lone_write(kcp: KCP) -> bool:
    """Write delay's rule here: a write to a session with nothing queued and at most one
    segment in flight (a keepalive, a FIN not yet acknowledged) is flushed at once (a lone
    request, the first bytes of a reply: ACKs pending ride along); while more is
    outstanding, writes wait for the interval's flush and join its batch, as kcp-go's write
    delay does for all (Nagle's rule turned around). Timing only: the wire is unchanged."""
    return not kcp.snd_queue and len(kcp.snd_buf) <= 1


class ConnectionClosed(ConnectionError):
    pass


class StreamLimit(ConnectionClosed):
    """The session already has its maximum number of open streams (limits.max_streams)."""


class TunnelConnection:
    def __init__(self, *, conv: int, peer: tuple, send: SendFn, params: TunnelParams,
                 client: bool, codec: DatagramCodec | None = None,
                 on_closed: Callable[["TunnelConnection", str], None] | None = None,
                 drops: dict | None = None, replayed: list | None = None,
                 path: SharedPath | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.conv = conv
        self._conv_le = conv.to_bytes(4, "little")
        self.foreign_conv_drops = 0
        self.peer = peer
        self.params = params
        self.client = client
        self._send = send
        self.on_closed = on_closed
        self.codec = codec or DatagramCodec(params.block, params.key, dshard=params.dshard,
                                            pshard=params.pshard)
        #: drop reason -> count, shared with the listener / client tunnel that owns us
        self.drops = drops if drops is not None else {}
        for reason in ("replay", "stale", "bad_crc", "conv_mismatch"):
            self.drops.setdefault(reason, 0)
        # Anti-replay (wire/replay.py): a window over the datagrams' nonces when the block
        # has one ("null" has none: then only the timestamp check), and the timestamp check
        # for datagrams older than the window reaches.
        now = now_ms()
        self.replay = (ReplayWindow(params.replay_window, params.replay_horizon_ms, now)
                       if params.replay_window and self.codec.crypt is not None else None)
        self.stale = StaleFilter() if params.replay_window else None
        self._stale_ms = max(1000, params.replay_horizon_ms // 12)  # no window: 5 s by default
        self._bad_seen = 0
        #: identities of replayed datagrams, for the listener's kernel block list, and
        #: what to call when REPLAYS_AT of them wait
        self.replayed = replayed
        self.on_replays: Callable[[], None] | None = None
        k = KCP(conv)
        k.set_nodelay(params.nodelay, params.interval, params.resend, params.nc)
        k.set_wndsize(params.sndwnd, params.rcvwnd)
        k.set_mtu(self.codec.kcp_mtu(params.mtu))
        k.stream = True
        k.ack_nodelay = params.acknodelay
        k.write_delay = params.wdelay
        k.defer_flush = True  # one flush per batch of received datagrams (see _pump_once)
        k.fast_limit = params.fast_limit
        self._paced = params.congestion == "bbr"
        if self._paced:
            mss = k.mss
            if params.auto_sndwnd:
                k.snd_wnd = max(params.sndwnd, params.send_buffer // mss)
            k.cc = RateController(init_cwnd=min(INIT_FLIGHT, k.snd_wnd), max_cwnd=k.snd_wnd)
            if path is not None:
                # the other sessions between the same two hosts (kcp/rate.py SharedPath)
                path.join(k.cc)
            if params.auto_rcvwnd:
                k.rcv_wnd = cap = max(params.rcvwnd, params.recv_buffer // mss)
                k.rw = ReceiveWindow(initial=params.rcvwnd, maximum=cap)
        self._smux_resize_at = 0
        self.kcp = k
        self.smux = SmuxSession(
            client=client, version=params.smux_version, max_frame_size=params.max_frame_size,
            max_receive_buffer=params.smuxbuf, max_stream_buffer=params.streambuf,
            keepalive_interval_ms=params.keepalive_ms,
            keepalive_timeout_ms=params.keepalive_timeout_ms, max_streams=params.max_streams)
        self.streams: dict[int, TunnelStream] = {}
        self._accept_q: asyncio.Queue[TunnelStream | None] = asyncio.Queue()
        self._on_stream: Callable[[TunnelStream], None] | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._xmit_handle: asyncio.Handle | None = None
        self._xmit_waited = False
        self._ack_timer: asyncio.TimerHandle | None = None
        self._in_events = False
        self._after_events: list = []
        self._delivered = False
        self._timer: asyncio.TimerHandle | None = None
        self._sleeping = False  # the timer waits for smux, not KCP's interval (_on_timer)
        self._send_room = asyncio.Event()
        self._send_room.set()
        self._room_waiters: list = []
        self.closed = False
        self.close_reason = ""
        self.created_ms = now_ms()
        self.last_rx_ms = self.created_ms
        self.bytes_in = 0
        self.bytes_out = 0
        self.streams_opened = 0  # both directions, for stats
        self._backlog_limit = max(2 * k.snd_wnd, 64)
        # Bytes read from local sockets/targets for this session and not yet acknowledged
        # by the peer (reserved by relays + smux queue + KCP queue and window) stay below
        # this; relays wait for room before they read (reserve_send).
        self.send_budget = params.send_buffer
        self._reserved = 0
        self.pending_out = 0  # bytes in the streams' pending queues (beyond smux windows)
        self._schedule_timer(0)

    now_ms = staticmethod(now_ms)

    def __repr__(self) -> str:
        return f"<TunnelConnection conv={self.conv:#010x} peer={self.peer}>"

    # -- input ---------------------------------------------------------------------------
    def datagram_received(self, wire: bytes) -> bool:
        """Feed one wire datagram. Returns False (and feeds nothing) when it carries another
        conversation starting at sn 0: a restarted peer, whose new session replaces this
        one (kcp-go's listener rule). Replays, stale and unauthenticated datagrams are
        dropped (counted in self.drops) before KCP sees them."""
        if self.closed:
            return True
        rw = self.replay
        if rw is not None:
            ident = wire[:IDENT_LEN]
            if ident in rw.cur or ident in rw.old:  # before any decryption: cheap
                self.drops["replay"] += 1
                rp = self.replayed
                if rp is not None and len(rp) < 65536:
                    rp.append(ident)
                    if len(rp) == REPLAYS_AT and self.on_replays is not None:
                        self.on_replays()
                return True
        now = now_ms()
        decoded = self.codec.decode(wire)
        if not decoded:
            st = self.codec.stats
            bad = st.crc_errors + st.auth_errors + st.short
            if bad != self._bad_seen:
                self.drops["bad_crc"] += bad - self._bad_seen
                self._bad_seen = bad
            return True
        conv_le = self._conv_le
        first, regular = decoded[0]
        sf = self.stale
        if sf is not None and regular and len(first) >= 24:
            # (StaleFilter.stale, with its common case - an ACK - inlined: the hot path)
            cmd, ts = _CMD_TS(first, 0)
            if cmd == 82 or (cmd == 81 and first[:4] == conv_le):
                limit = ((now - rw.since_ms) & 0xFFFFFFFF) if rw is not None else self._stale_ms
                if limit < sf.slack_ms:
                    limit = sf.slack_ms
                if (limit < ((now - ts) & 0xFFFFFFFF) < 0x80000000 if cmd == 82
                        else sf.stale(first, now, limit)):
                    self.drops["stale"] += 1
                    return True
        kcp_input = self.kcp.input
        got = False
        for payload, regular in decoded:
            if payload[:4] != conv_le:
                if (regular and not self.client and len(payload) >= 24
                        and payload[12:16] == b"\0\0\0\0"):
                    return False
                self.foreign_conv_drops += 1
                self.drops["conv_mismatch"] += 1
                continue
            kcp_input(payload, now, regular)
            got = True
        if rw is not None:
            cur = rw.cur
            if len(cur) < rw.max_gen and ((now - rw.cur_start) & 0xFFFFFFFF) < rw.gen_ms:
                cur.add(ident)
            else:
                rw.add(ident, now)  # starts a new generation
        if got:
            self.last_rx_ms = now
            self._schedule_pump()
        return True

    def first_datagram(self, wire: bytes, kcp_bytes) -> None:
        """The datagram that opened this session, already decrypted by the listener (its
        KCP bytes): remembered for anti-replay and fed to KCP without a second decryption."""
        now = now_ms()
        if self.replay is not None:
            self.replay.add(wire[:IDENT_LEN], now)
        if self.stale is not None:
            self.stale.stale(kcp_bytes, now, 1 << 30)  # learns the peer's clock
        self.codec.stats.datagrams_in += 1
        self.feed_kcp(kcp_bytes, True)

    def feed_kcp(self, payload: bytes, regular: bool = True) -> None:
        """Input already-decoded KCP bytes (the listener decoded the first datagram)."""
        if self.closed:
            return
        now = now_ms()
        self.kcp.input(payload, now, regular)
        self.last_rx_ms = now
        self._schedule_pump()

    # -- streams -------------------------------------------------------------------------
    def open_stream(self) -> TunnelStream:
        if self.closed:
            raise ConnectionClosed(self.close_reason or "connection closed")
        if len(self.streams) >= self.params.max_streams:
            raise StreamLimit(f"session to {self.peer[0]}:{self.peer[1]} has "
                              f"{len(self.streams)} streams open (limits.max_streams)")
        sid = self.smux.open_stream(self.announce_windows)
        st = TunnelStream(self, sid)
        self.streams[sid] = st
        self.streams_opened += 1
        self._schedule_pump()
        return st

    def set_stream_handler(self, handler: Callable[[TunnelStream], None]) -> None:
        """Hand each stream the peer opens to `handler` as it opens (streams already queued
        first), instead of through accept_stream(): one loop turn less per new stream."""
        self._on_stream = handler
        q = self._accept_q
        while not q.empty():
            st = q.get_nowait()
            if st is not None:
                handler(st)

    async def accept_stream(self) -> TunnelStream | None:
        """The next stream the peer opened; None once the connection is closed."""
        if self.closed and self._accept_q.empty():
            return None
        return await self._accept_q.get()

    def _close_stream(self, st: TunnelStream) -> None:
        if self.streams.pop(st.sid, None) is not None and not self.closed:
            try:
                self.smux.close_stream(st.sid)
            except Exception:  # the session may already consider it gone
                log.debug("close of stream %d on %s failed", st.sid, self.peer, exc_info=True)
            self._schedule_pump()

    def _stream_consumed(self, st: TunnelStream, n: int) -> None:
        """The application took n bytes of st. A pump runs when that queued a window
        update or lets smux take more from KCP again; not otherwise (a pump's send would
        carry only our pending ACK, and put it ahead of what the reader does next)."""
        if not n or self.closed:
            return
        smux = self.smux
        if st.sid not in self.streams:
            self._schedule_pump()
            return
        paused = smux.receive_paused
        if smux.stream_consumed(st.sid, n) or paused:
            self._schedule_pump()

    @property
    def queued_out(self) -> int:
        """Bytes charged to the send budget: reserved, in smux's queue, in KCP's."""
        k = self.kcp
        return self._reserved + self.pending_out + self.smux.queued_bytes + k.wait_snd * k.mss

    @property
    def send_backlogged(self) -> bool:
        return self.kcp.wait_snd >= self._backlog_limit or self.queued_out >= self.send_budget

    async def reserve_send(self, n: int) -> int:
        """Wait until the session's send budget has room, then reserve up to n bytes of it
        (at least 1) for data about to be read; give it back with release_send()."""
        while True:
            if self.closed:
                raise StreamClosed(self.close_reason or "connection closed")
            room = self.send_budget - self.queued_out
            if room > 0:
                got = n if n < room else room
                self._reserved += got
                return got
            self._send_room.clear()
            await self._send_room.wait()

    def release_send(self, n: int) -> None:
        self._reserved -= n
        if not self.send_backlogged:
            self._room()

    def _room(self) -> None:
        """The send budget may have room: wake waiting writers and relays."""
        self._send_room.set()
        waiters = self._room_waiters
        if waiters:
            self._room_waiters = []
            for cb in waiters:
                cb()

    def _room_if_free(self) -> None:
        """_room() when someone waits and the budget has room again."""
        if (self._room_waiters or not self._send_room.is_set()) and not self.send_backlogged:
            self._room()

    def on_send_room(self, cb) -> None:
        """Call cb (once) the next time the send budget may have room."""
        self._room_waiters.append(cb)

    async def wait_send_room(self) -> None:
        if self.closed:
            raise StreamClosed(self.close_reason or "connection closed")
        self._send_room.clear()
        if not self.send_backlogged:
            return
        await self._send_room.wait()
        if self.closed:
            raise StreamClosed(self.close_reason or "connection closed")

    # -- the pump --------------------------------------------------------------------------
    def _schedule_pump(self) -> None:
        if self._pump_handle is None and not self.closed:
            self._pump_handle = self.loop.call_soon(self._pump)

    def pump_now(self) -> None:
        """Run a scheduled pump at once instead of on the loop's next iteration: the reader
        calls this after a batch of datagrams, so what they carry (ACKs, data for streams,
        replies) moves on without waiting a loop turn (an epoll round trip per hop)."""
        h = self._pump_handle
        if h is not None:
            h.cancel()
            self._pump()

    def _pump(self) -> None:
        self._pump_handle = None
        if self.closed:
            return
        try:
            self._pump_once(now_ms())
        except Exception as exc:  # a bug must not leave a zombie connection behind
            log.exception("tunnel to %s failed", self.peer)
            self.close(f"internal error: {exc!r}")

    def _pump_once(self, now: int) -> None:
        kcp = self.kcp
        smux = self.smux
        # 1. KCP -> smux, unless the session's receive bucket is exhausted.
        while not smux.receive_paused:
            data = kcp.recv()
            if not data:
                break
            self.bytes_in += len(data)
            smux.receive_data(data, now)
        self._process_events()
        if self.closed:
            return
        # 2. streams -> smux (windows may have opened) -> KCP.
        for st in list(self.streams.values()):
            if st._pending:
                st._push_pending()
        if self._paced:
            out = smux.data_to_send(limit=self._queue_room())
            kcp.backlog = smux.queued_bytes + self.pending_out
        else:
            out = smux.data_to_send()
        if out:
            self.bytes_out += len(out)
            flush = not kcp.write_delay or lone_write(kcp)
            kcp.send(out)
            if flush:
                kcp.flush(now)
        # 3. the flush Input asked for (once for the whole batch), then KCP -> wire; after
        # the code that delivered data woke ran, when there was some (_transmit_late).
        if self._delivered:
            self._delivered = False
            if self._xmit_handle is None:
                self._xmit_handle = self.loop.call_soon(self._transmit_late)
        else:
            kcp.flush_pending(now)
            self._transmit(now)
        self._room_if_free()
        if self._sleeping and not self._kcp_idle():
            self._schedule_timer(self.params.interval)

    def _transmit_late(self) -> None:
        """The pump's deferred flush and send, two loop turns on. A pump the woken code
        scheduled (a handler that read its header queued a window update) runs first, so
        the update and the ACK share one datagram; and the I/O that code started is
        handled first (a dial to a target on this host has connected by then, so the
        request reaches it before we spend ~100 us sending the ACK)."""
        if not self._xmit_waited:
            self._xmit_waited = True
            self._xmit_handle = self.loop.call_soon(self._transmit_late)
            return
        self._xmit_waited = False
        self._xmit_handle = None
        if self.closed:
            return
        if self._pump_handle is not None:
            self.pump_now()
        elif self.kcp.ack_flush_can_wait:
            # Only ACKs to send: they ride with the reply the woken code is likely about to
            # write (a request's response, a FIN), or leave ACK_HOLD later. An ACK-only
            # datagram sent now costs ~80 us before that reply, and wakes the peer for it.
            if self._ack_timer is None:
                self._ack_timer = self.loop.call_later(ACK_HOLD, self._send_pending)
        else:
            self._send_pending()

    def _send_pending(self) -> None:
        """The flush Input asked for, and the send (now, or when an ACK hold ends)."""
        self._ack_timer = None
        if self.closed:
            return
        now = now_ms()
        self.kcp.flush_pending(now)
        self._transmit(now)

    @property
    def paced(self) -> bool:
        """Our KCP sender paces itself (congestion "bbr"): say so in the session's hello."""
        return self._paced

    #: the peer is one of ours (its hello said so): a new stream's smux window goes with
    #: its SYN (smux/session.py open_stream)
    announce_windows = False

    def peer_paces(self) -> None:
        """The peer said its sender paces itself: our receive window need not pace it."""
        if self.kcp.rw is not None:
            self.kcp.rw.peer_paces = True

    def _queue_room(self) -> int:
        """Bytes smux may hand to KCP now (congestion "bbr"): enough to keep the pacer busy
        for QUEUE_MS; -1 (control frames only) when KCP's queue holds that already."""
        k = self.kcp
        segs = int(k.cc.pacing_rate * QUEUE_MS)
        if segs < QUEUE_MIN:
            segs = QUEUE_MIN
        room = (segs - len(k.snd_queue)) * k.mss
        return room if room > 0 else -1

    def _pace(self, wait_ms: int) -> None:
        """The pacer holds segments for wait_ms: have the timer fire by then."""
        t = self._timer
        due = self.loop.time() + wait_ms / 1000.0
        if t is None or t.when() > due + 0.0005:
            self._schedule_timer(wait_ms)

    def _resize_smux(self, now: int) -> None:
        """Windows that follow the path: a stream's smux window holds SMUX_TARGETS
        receive-window targets (a loss holds bytes back from the application for a round
        trip or more, and the window reopens only by UPDs every half of it), the session's
        buffer two such windows, within limits.session_receive_buffer."""
        self._smux_resize_at = now + SMUX_RESIZE_MS
        p = self.params
        want = SMUX_TARGETS * self.kcp.rw.target * self.kcp.mss
        cap = p.recv_buffer
        stream = min(max(want, p.streambuf), cap)
        session = min(max(2 * stream, p.smuxbuf), max(cap, p.smuxbuf))
        if stream > session:
            stream = session
        s = self.smux
        old = s.max_stream_buffer
        if stream > old * 5 // 4 or stream < old * 3 // 4:
            s.set_buffers(session, stream)

    def _transmit(self, now: int) -> None:
        w = self.kcp.pace_wait
        if w:
            self._pace(w)
        dgrams = self.kcp.datagrams_to_send()
        if not dgrams:
            return
        send, peer, encode = self._send, self.peer, self.codec.encode
        for d in dgrams:
            for wire in encode(d, now):
                send(wire, peer)
        handoff()  # the peer's process, when on this host, may be queued behind us

    def after_events(self, cb) -> None:
        """Call cb (once) when the events being processed are done (a relay's gathered
        write, a handler that wants the bytes that came with a new stream); at once when
        none are."""
        if self._in_events:
            self._after_events.append(cb)
        else:
            cb()

    def _process_events(self) -> None:
        self._in_events = True
        try:
            self._process_events_once()
        finally:
            self._in_events = False
            if self._after_events:
                cbs = self._after_events
                self._after_events = []
                for cb in cbs:
                    cb()

    def _process_events_once(self) -> None:
        smux = self.smux
        streams = self.streams
        while True:
            ev = smux.next_event()
            if ev is None:
                return
            t = type(ev)
            if t is sev.DataReceived:
                st = streams.get(ev.sid)
                if st is not None:
                    st._feed(ev.data)
                    self._delivered = True
                else:
                    smux.stream_consumed(ev.sid, len(ev.data))
            elif t is sev.StreamWindowUpdated:
                st = streams.get(ev.sid)
                if st is not None:
                    st._push_pending()
                    st._wake_writer()
            elif t is sev.StreamOpened:
                st = TunnelStream(self, ev.sid)
                streams[ev.sid] = st
                self.streams_opened += 1
                self._delivered = True
                if self._on_stream is not None:
                    self._on_stream(st)
                else:
                    self._accept_q.put_nowait(st)
            elif t is sev.StreamEnded:
                st = streams.get(ev.sid)
                if st is not None:
                    st._feed_eof()
            elif t is sev.KeepaliveTimeout:
                self.close("keepalive timeout: nothing heard from the peer")
                return
            elif t is sev.ProtocolError:
                detail = getattr(ev, "detail", "")
                self.close(f"smux protocol error: {ev.reason}" + (f" ({detail})" if detail else ""))
                return

    # -- timers ------------------------------------------------------------------------------
    def _schedule_timer(self, delay_ms: int) -> None:
        self._sleeping = False
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay_ms / 1000.0, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = now_ms()
        try:
            self.smux.handle_timer(now)
            self._process_events()
            if self.closed:
                return
            if self._paced:
                if self.kcp.rw is not None and self.params.auto_smux \
                        and now >= self._smux_resize_at:
                    self._resize_smux(now)
                out = self.smux.data_to_send(lazy=True, limit=self._queue_room())
                self.kcp.backlog = self.smux.queued_bytes + self.pending_out
            else:
                out = self.smux.data_to_send(lazy=True)
            if out:
                self.bytes_out += len(out)
                self.kcp.send(out)
            nxt = self.kcp.flush(now)
            self._transmit(now)
        except Exception as exc:
            log.exception("tunnel to %s failed", self.peer)
            self.close(f"internal error: {exc!r}")
            return
        smux_t = self.smux.get_timer()
        idle = self._kcp_idle()
        if idle:
            # Nothing in flight, queued, to acknowledge or to probe: a tick would send
            # nothing, so sleep until smux's keepalive is due; the pump re-arms the tick as
            # soon as KCP has work again (an idle server with 64 sessions: 14 % -> ~1 % CPU).
            delay = IDLE_TICK_MS
        else:
            delay = nxt if nxt and nxt > 0 else self.params.interval
        if smux_t is not None:
            delay = max(0, min(delay, (smux_t - now) & 0xFFFFFFFF if smux_t >= now else 0))
        self._schedule_timer(max(1, delay))
        self._sleeping = idle
        self._room_if_free()
        if not idle:
            # Data may have been waiting on KCP's receive side while the bucket was paused.
            self._schedule_pump()

    def _kcp_idle(self) -> bool:
        k = self.kcp
        return not (k.snd_buf or k.snd_queue or k.acklist or k.probe or k.rcv_queue or k.rcv_buf
                    or k.rmt_wnd == 0)

    # -- closing -------------------------------------------------------------------------
    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        cc = self.kcp.cc
        if cc is not None and cc.path is not None:
            cc.path.leave(cc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        exc = StreamClosed(f"tunnel to {self.peer[0]}:{self.peer[1]} closed: {reason}")
        for st in list(self.streams.values()):
            st._abort(exc)
        self.streams.clear()
        self._accept_q.put_nowait(None)
        self._room()
        if self.on_closed is not None:
            try:
                self.on_closed(self, reason)
            except Exception:
                log.exception("on_closed callback failed")

    async def aclose(self, reason: str = "closed", linger_s: float = 0.2) -> None:
        """Close every stream (FIN), give the FINs a moment to leave, then close."""
        if self.closed:
            return
        for st in list(self.streams.values()):
            st.close()
        self._pump_once(now_ms())
        self.kcp.flush(now_ms())
        self._transmit(now_ms())
        deadline = self.loop.time() + linger_s
        while self.kcp.wait_snd and self.loop.time() < deadline and not self.closed:
            await asyncio.sleep(0.02)
        self.close(reason)

    def stats(self) -> dict:
        k = self.kcp
        out = {
            "peer": f"{self.peer[0]}:{self.peer[1]}", "conv": self.conv,
            "streams": len(self.streams), "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
        }
        for name in ("srtt", "rttvar", "rto", "retransmissions", "fast_retransmissions",
                     "lost_segments", "segments_in", "segments_out"):
            v = getattr(k, name, None)
            if v is not None:
                out[name] = v
        out.update(rmt_wnd=k.rmt_wnd, wait_snd=k.wait_snd, snd_buf=len(k.snd_buf),
                   rcv_queue=len(k.rcv_queue), rcv_buf=len(k.rcv_buf), rcv_nxt=k.rcv_nxt,
                   snd_una=k.snd_una, smux_bucket=self.smux.bucket,
                   smux_paused=self.smux.receive_paused,
                   pending=sum(st._pending_bytes for st in self.streams.values()),
                   buffered=sum(st._buffered for st in self.streams.values()))
        codec_stats = getattr(self.codec, "stats", None)
        if codec_stats is not None:
            out["codec"] = codec_stats.as_dict() if hasattr(codec_stats, "as_dict") else codec_stats
        return out
