"""Tunnel endpoints over a packet backend: a client's dialled connection, and the server's
listener that demultiplexes peers by address (kcp-go's rules, kcp-go-framing.md §5)."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from typing import Callable

from paqet.kcp.rate import SharedPath
from paqet.tunnel.clock import now_ms
from paqet.tunnel.connection import TunnelConnection
from paqet.tunnel.guard import DropLog, ListenerLimits, TokenBuckets
from paqet.tunnel.params import TunnelParams
from paqet.tunnel.shaper import DROP, PASS
from paqet.tunnel.users import User, UserSpec, UserTable

log = logging.getLogger("paqet.tunnel")

_conv_sn = struct.Struct("<I8xI")  # conv at 0, sn at 12 of a KCP segment header
MAX_DATAGRAM = 1500  # kcp-go reads into 1500-byte buffers: anything longer fails its CRC
#: batches a reader drains per wakeup before it ends the batch (the ring holds 2048-4096)
MAX_BATCHES = 16
DROP_LOG_INTERVAL = 10.0  # seconds between two "dropped datagrams" warnings
THROTTLE_AT = 1000        # rate-limited datagrams a second that throttle a source in the kernel
THROTTLE_QUIET_AT = 50    # ... and fewer than this for THROTTLE_QUIET seconds release it
THROTTLE_QUIET = 10


def _addr_key(addr: tuple) -> tuple:
    """Peers are keyed by (ip, port); an IPv4-mapped IPv6 address equals its IPv4 form."""
    ip, port = addr[0], addr[1]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, port


class _Reader:
    """Registers a backend's fd with the loop and drains every ready datagram per wakeup."""

    def __init__(self, backend, on_datagram: Callable[[bytes, tuple], None],
                 on_batch_end: Callable[[], None] | None = None, batch: int = 256) -> None:
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.on_datagram = on_datagram
        self.on_batch_end = on_batch_end
        self.batch = batch
        self.fd = backend.fileno()
        # bound once: a wrapped backend (runtime._FirewalledBackend) would otherwise answer
        # through __getattr__ on every wakeup, after a failed lookup (an AttributeError
        # made and dropped)
        self._recv = backend.recv_batch
        self.loop.add_reader(self.fd, self._readable)
        self._again = None
        if hasattr(backend, "on_stash"):
            backend.on_stash = self._stashed

    def _stashed(self) -> None:
        """The backend moved waiting frames out of its ring while sending: read them on
        the next loop turn (the fd may not signal them)."""
        if self._again is None and self.fd is not None:
            self._again = self.loop.call_soon(self._readable)

    def _readable(self) -> None:
        """Drain what is ready, up to MAX_BATCHES batches, then end the batch (one pump per
        session for all of it)."""
        if self._again is not None:
            self._again.cancel()
            self._again = None
        recv, cb, size = self._recv, self.on_datagram, self.batch
        for _ in range(MAX_BATCHES):
            try:
                items = recv(size)
            except OSError as exc:
                log.error("reading from the packet socket failed: %s", exc)
                break
            for payload, addr in items:
                cb(payload, addr)
            if len(items) < size:
                break
        if self.on_batch_end is not None:
            self.on_batch_end()

    def close(self) -> None:
        if self._again is not None:
            self._again.cancel()
            self._again = None
        if hasattr(self.backend, "on_stash"):
            self.backend.on_stash = None
        if self.fd is not None:
            try:
                self.loop.remove_reader(self.fd)
            except (ValueError, OSError):
                pass
            self.fd = None


class ClientTunnel:
    """One client connection: its own backend (own local port), one KCP conv, one smux
    client session, talking only to `server`."""

    def __init__(self, backend, server: tuple, params: TunnelParams,
                 on_closed: Callable[[TunnelConnection, str], None] | None = None,
                 conv: int | None = None, path: SharedPath | None = None) -> None:
        self.backend = backend
        self.server = _addr_key(server)
        self.params = params
        self.conv = conv if conv is not None else int.from_bytes(os.urandom(4), "little")
        #: drop reason -> count (the connection adds replay, stale, bad_crc, conv_mismatch)
        self.drops: dict[str, int] = {"foreign_source": 0}
        self.conn = TunnelConnection(conv=self.conv, peer=server, send=backend.send,
                                     params=params, client=True, on_closed=on_closed,
                                     drops=self.drops, path=path)
        self._drop_log = DropLog(self.drops, DROP_LOG_INTERVAL)
        self._next_log = 0.0
        self._reader = _Reader(backend, self._on_datagram, self._on_batch_end)
        # paqet servers never open streams; one that does would hold the session's receive
        # bucket with data nobody reads, so such streams are closed at once (FIN)
        self.conn.set_stream_handler(self._refuse_stream)

    @staticmethod
    def _refuse_stream(st) -> None:
        log.debug("stream %d opened by the server: closed", st.sid)
        st.close()

    def _on_datagram(self, payload: bytes, addr: tuple) -> None:
        if _addr_key(addr) == self.server:
            self.conn.datagram_received(payload)
        else:
            self.drops["foreign_source"] += 1

    def _on_batch_end(self) -> None:
        self.conn.pump_now()
        t = time.monotonic()
        if t >= self._next_log:
            self._next_log = t + 1.0
            line = self._drop_log.line(t)
            if line:
                log.warning("tunnel to %s:%s: %s", self.server[0], self.server[1], line)

    def close(self, reason: str = "closed") -> None:
        self.conn.close(reason)
        self._reader.close()
        self.backend.close()

    async def aclose(self, reason: str = "closed") -> None:
        await self.conn.aclose(reason)
        self._reader.close()
        self.backend.close()


DROP_REASONS = ("bad_frame", "bad_crc", "no_conv", "no_session", "replay", "stale", "rate_limited",
                "session_rate", "table_full", "backlog_full", "conv_mismatch", "expired",
                "trial_limit", "user_sessions", "user_quota", "user_rate")


class TunnelListener:
    """The server side: one backend, a session per peer address, accept() for new ones.

    A datagram goes through, cheapest first (docs/reliability.md, "Flood and replay"):
    the kernel's BPF port filter and the backend's frame parser; the session table (an
    established session - one whose peer has delivered smux data - takes it straight, never
    rate limited); the per-source-IP datagram bucket for everything else; for unknown peers
    a size check and the backlog and table bounds, then the users' keys (tunnel.users:
    decryption and CRC, no FEC decoding, a bounded number of trials), the conv, the user's
    own limits and the per-IP new-session bucket; inside a session the replay window (before
    decryption), decryption, the timestamp check, KCP. Sessions that deliver no smux data
    within the handshake timeout are closed. Every drop is counted in self.drops.

    `users`: who may connect, each with their key (tunnel.users.UserSpec); None: one
    unnamed user with params.key. A session uses its user's key (self.user_of)."""

    def __init__(self, backend, params: TunnelParams, *, backlog: int | None = None,
                 max_sessions: int | None = None, limits: ListenerLimits | None = None,
                 on_session_closed: Callable[[TunnelConnection, str], None] | None = None,
                 users: list[UserSpec] | None = None) -> None:
        lim = limits or ListenerLimits()
        if backlog is not None or max_sessions is not None:
            lim = ListenerLimits(**{**lim.__dict__,
                                    **({"backlog": backlog} if backlog is not None else {}),
                                    **({"max_sessions": max_sessions}
                                       if max_sessions is not None else {})})
        self.limits = lim
        self.backend = backend
        self.params = params
        self.sessions: dict[tuple, TunnelConnection] = {}
        #: client address -> the rate controllers of its sessions (kcp/rate.py SharedPath)
        self._paths: dict[str, SharedPath] = {}
        self._accept_q: asyncio.Queue[TunnelConnection] = asyncio.Queue()
        self.backlog = lim.backlog
        self.max_sessions = lim.max_sessions
        self.on_session_closed = on_session_closed
        # The users' keys open first datagrams of unknown peers (crypto layer only: no FEC).
        self.users = UserTable(params, users or [UserSpec("", params.key)])
        self.user_of: dict[TunnelConnection, User] = {}
        c = self.users.crypt
        #: the shortest datagram that can carry a readable conv (24-byte KCP header)
        self._min_first = (c.header + c.tag if c is not None else 0) + 24
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._dgram_buckets = TokenBuckets(lim.unknown_datagrams_per_ip,
                                           lim.unknown_datagrams_burst, lim.max_sources)
        self._session_buckets = TokenBuckets(lim.new_sessions_per_ip, lim.new_sessions_burst,
                                             lim.max_sources)
        self._drop_log = DropLog(self.drops, DROP_LOG_INTERVAL)
        # The kernel guard (AF_PACKET's BPF filter, updated once a second): the first 4
        # bytes (nonce prefix) of datagrams the sessions dropped as replays are blocked, so
        # a replay flood stops costing Python anything (bounded by bpf.MAX_BLOCKED); a
        # source IP that keeps hitting its datagram bucket is throttled: only the ports of
        # its established sessions and a random 1/64 of the rest reach us.
        self._replayed: list = []
        self.blocklist: dict[int, None] = {}
        self._limited: dict[str, int] = {}     # rate-limited datagrams per IP, this second
        self.throttled: dict[str, int] = {}    # IP -> quiet seconds
        self._guard_state: tuple = ((), ())
        self._set_guard = getattr(backend, "set_guard", None)
        self._dirty: set[TunnelConnection] = set()  # sessions fed in the current batch
        # users' rate limits (tunnel.shaper): the sessions of named users (their incoming
        # datagrams pass the user's shaper), the shapers holding datagrams back, and the
        # one timer that hands them out
        self._named: dict[TunnelConnection, User] = {}
        self._waiting: dict = {}   # Shaper -> deliver(items)
        self._shape_timer: asyncio.TimerHandle | None = None
        self._shape_at = 0.0
        self._reader = _Reader(backend, self._on_datagram, self._batch_end)
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.call_later(1.0, self._sweep)

    def _on_datagram(self, payload: bytes, addr: tuple) -> None:
        ip, port = addr[0], addr[1]
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
        key = (ip, port)
        conn = self.sessions.get(key)
        if conn is not None and conn.bytes_in:  # established: never rate limited
            named = self._named
            if named and conn in named and named[conn].shaper_in is not None:
                self._shape_in(named[conn], conn, payload)
                return
            if conn.datagram_received(payload):
                self._dirty.add(conn)
                return
            conn.close("the peer restarted with a new conversation")
            conn = None
        now = now_ms()
        if not self._dgram_buckets.take(ip, now):
            self.drops["rate_limited"] += 1
            lim = self._limited
            n = lim.get(ip, 0) + 1
            if n == 1 and len(lim) >= 16384:  # spoofed sources: count the known ones only
                return
            lim[ip] = n
            if n == THROTTLE_AT and self._set_guard is not None and ip not in self.throttled:
                self._loop.call_soon(self._update_guard, False)  # now, not at the next sweep
            return
        if conn is not None:
            if conn.datagram_received(payload):
                self._dirty.add(conn)
                return
            conn.close("the peer restarted with a new conversation")
        self._new_peer(payload, key, addr, now)

    def _new_peer(self, payload: bytes, key: tuple, addr: tuple, now: int) -> None:
        drops = self.drops
        if not self._min_first <= len(payload) <= MAX_DATAGRAM:
            drops["bad_frame"] += 1
            return
        if self._accept_q.qsize() >= self.backlog:
            drops["backlog_full"] += 1
            return
        if len(self.sessions) >= self.max_sessions:
            drops["table_full"] += 1
            return
        found = self.users.find(payload, key[0], now)
        if type(found) is str:
            drops[found] += 1
            return
        user, kcp = found
        why = user.refuses()
        if why is not None:
            drops[why] += 1
            return
        if not self._session_buckets.take(key[0], now):
            drops["session_rate"] += 1
            return
        conv, sn = _conv_sn.unpack_from(kcp, 0)
        if sn or kcp[4] != 81:
            # A conversation starts with PUSH sn 0 (kcp-go sends nothing before its first
            # segment). Anything else is a peer of a previous server instance (or a replayed
            # mid-session datagram): a session made from it could never deliver (sn 0.. are
            # gone), but its keepalives, counted from sn 0, would land in the peer's old
            # receive sequence and keep the peer's dead session looking alive.
            drops["no_session"] += 1
            return
        # a named user's datagrams pass their rate limit, when they have one (or get one)
        send = self._sender(user) if user.name else self.backend.send
        path = self._paths.get(key[0])
        if path is None:
            path = self._paths[key[0]] = SharedPath()
        conn = TunnelConnection(conv=conv, peer=addr, send=send, params=user.params,
                                client=False, on_closed=self._closed_cb, drops=drops,
                                replayed=self._replayed if self._set_guard else None, path=path)
        if self._set_guard is not None:
            conn.on_replays = self._replays_waiting
        self.sessions[key] = conn
        self.user_of[conn] = user
        if user.name:
            self._named[conn] = user
        self.users.opened(user, conn, key[0])
        conn.first_datagram(payload, kcp)
        self._dirty.add(conn)
        self._accept_q.put_nowait(conn)

    # -- users' rate limits --------------------------------------------------------------
    def _sender(self, user: User):
        """The send function of a named user's sessions: through the user's shaper."""
        out = self.backend.send
        drops = self.drops

        def send(payload, addr) -> None:
            sh = user.shaper_out
            if sh is None:
                out(payload, addr)
                return
            r = sh.offer((payload, addr), len(payload), now_ms())
            if r == PASS:
                out(payload, addr)
            elif r == DROP:
                drops["user_rate"] += 1
            else:
                self._held(sh, self._send_held)
        return send

    def _send_held(self, items) -> None:
        out = self.backend.send
        for payload, addr in items:
            out(payload, addr)

    def _shape_in(self, user: User, conn: TunnelConnection, payload) -> None:
        sh = user.shaper_in
        r = sh.offer((conn, payload), len(payload), now_ms())
        if r == PASS:
            if conn.datagram_received(payload):
                self._dirty.add(conn)
        elif r == DROP:
            self.drops["user_rate"] += 1
        else:
            self._held(sh, self._feed_held)

    def _feed_held(self, items) -> None:
        for conn, payload in items:
            if not conn.closed and conn.datagram_received(payload):
                self._dirty.add(conn)

    def _held(self, sh, deliver) -> None:
        """`sh` holds a datagram back: wake up when its first one is due."""
        self._waiting[sh] = deliver
        when = self._loop.time() + max(1, sh.next_ms() or 1) / 1000.0
        if self._shape_timer is None or when < self._shape_at - 0.0005:
            if self._shape_timer is not None:
                self._shape_timer.cancel()
            self._shape_at = when
            self._shape_timer = self._loop.call_at(when, self._release)

    def _release(self) -> None:
        """Hand out what the shapers hold that is due, then sleep until the next is."""
        self._shape_timer = None
        if self.closed:
            return
        now = now_ms()
        nxt = None
        for sh, deliver in list(self._waiting.items()):
            items = sh.due(now)
            if items:
                deliver(items)
            n = sh.next_ms()
            if n is None:
                del self._waiting[sh]
            elif nxt is None or n < nxt:
                nxt = n
        self._batch_end()
        if nxt is not None:
            self._shape_at = self._loop.time() + max(1, nxt) / 1000.0
            self._shape_timer = self._loop.call_at(self._shape_at, self._release)

    def user_name(self, conn: TunnelConnection) -> str | None:
        """The name of the user whose key opened `conn` (None: not one of ours)."""
        u = self.user_of.get(conn)
        return u.name if u is not None else None

    # -- reload ------------------------------------------------------------------------
    def set_users(self, params: TunnelParams, users: list[UserSpec]) -> tuple[list, list, list]:
        """A new list of users (SIGHUP): the sessions of removed users, and of users whose
        key changed, close at once; the others keep running. `params` (new limits) apply
        to sessions made from now on. Returns (added, removed, rekeyed) user names."""
        self.params = params
        added, removed, rekeyed = self.users.update(params, users)
        for u, why in [(u, "removed") for u in removed] + [(u, "given a new key")
                                                          for u in rekeyed]:
            for conn in list(u.sessions):
                conn.close(f"user {u.name or '(unnamed)'} {why}")
        return added, [u.name for u in removed], [u.name for u in rekeyed]

    def set_limits(self, limits: ListenerLimits) -> None:
        """New listener limits (SIGHUP), in force at once; the rate buckets start full."""
        self.limits = limits
        self.backlog = limits.backlog
        self.max_sessions = limits.max_sessions
        self._dgram_buckets = TokenBuckets(limits.unknown_datagrams_per_ip,
                                           limits.unknown_datagrams_burst, limits.max_sources)
        self._session_buckets = TokenBuckets(limits.new_sessions_per_ip,
                                             limits.new_sessions_burst, limits.max_sources)

    def _batch_end(self) -> None:
        dirty = self._dirty
        while dirty:
            dirty.pop().pump_now()

    def _sweep(self) -> None:
        """Once a second: close sessions that delivered no smux data within the handshake
        timeout (replayed or forged first datagrams, half-open peers), and log drops."""
        if self.closed:
            return
        now = now_ms()
        limit = self.limits.handshake_timeout_ms
        for conn in [c for c in self.sessions.values()
                     if not c.bytes_in and ((now - c.created_ms) & 0xFFFFFFFF) >= limit]:
            self.drops["expired"] += 1
            conn.close("no smux data from the peer within the handshake timeout")
        if self._set_guard is not None:
            self._update_guard(True)
        self._check_quotas(time.localtime()[:3])
        line = self._drop_log.line(time.monotonic())
        if line:
            log.warning("server: %s", line)
        self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def _check_quotas(self, day) -> None:
        """Users over their daily byte quota: their sessions close, new ones are refused
        (user_quota) until `day` (local date) changes. Checked once a second, so a user may
        pass the quota by what one second carries."""
        for u in self.users.users:
            quota = u.spec.daily_quota
            if not quota or u.quota_used(day) < quota or u.over_quota:
                continue
            u.over_quota = True
            log.warning("server: user %s reached the daily quota (%d bytes): sessions closed, "
                        "new ones refused until midnight", u.name or "(unnamed)", quota)
            for conn in list(u.sessions):
                conn.close("the user's daily quota is reached")

    def _replays_waiting(self) -> None:
        self._loop.call_soon(self._update_guard, False)

    def _update_guard(self, tick: bool) -> None:
        """Recompute the kernel filter's block list and throttled sources and install it if
        it changed; `tick` (once a second) also counts down quiet throttled sources. Runs
        early too, as soon as a source crosses THROTTLE_AT or REPLAYS_AT replays wait."""
        if self.closed or self._set_guard is None:
            return
        from paqet.net.bpf import MAX_BLOCKED, MAX_PORTS, MAX_THROTTLED
        bl = self.blocklist
        for ident in self._replayed:
            bl[int.from_bytes(ident[:4], "big")] = None
        self._replayed.clear()
        while len(bl) > MAX_BLOCKED:  # the oldest go first
            del bl[next(iter(bl))]
        # throttle IPv4 sources over THROTTLE_AT rate-limited datagrams a second; release
        # them after THROTTLE_QUIET seconds under THROTTLE_QUIET_AT (what still reaches us
        # of their flood is the random sample)
        thr = self.throttled
        for ip, n in self._limited.items():
            if n >= THROTTLE_AT and ":" not in ip:
                thr[ip] = 0
        if tick:
            for ip in list(thr):
                if self._limited.get(ip, 0) >= THROTTLE_QUIET_AT:
                    thr[ip] = 0
                else:
                    thr[ip] += 1
                    if thr[ip] >= THROTTLE_QUIET:
                        del thr[ip]
            self._limited.clear()
        while len(thr) > MAX_THROTTLED:
            del thr[next(iter(thr))]
        throttle = {ip: [] for ip in thr}
        for (ip, port), conn in self.sessions.items():
            if ip in throttle and conn.bytes_in and len(throttle[ip]) < MAX_PORTS:
                throttle[ip].append(port)
        state = (tuple(bl), tuple((ip, tuple(sorted(p))) for ip, p in sorted(throttle.items())))
        if state == self._guard_state:
            return
        try:
            self._set_guard(list(bl), throttle)
        except (OSError, ValueError) as exc:
            log.warning("server: cannot update the kernel filter: %s", exc)
            self._set_guard = None
            return
        old_bl, old_thr = self._guard_state
        self._guard_state = state
        if bl and not old_bl:
            log.warning("server: replayed datagrams: the kernel filter drops them from now on")
        new = set(thr) - {ip for ip, _ in old_thr}
        if new:
            log.warning("server: datagram flood from %s: the kernel filter passes only their "
                        "sessions' ports and a random 1/64 of the rest", ", ".join(sorted(new)))

    def _closed_cb(self, conn: TunnelConnection, reason: str) -> None:
        key = _addr_key(conn.peer)
        if self.sessions.get(key) is conn:
            del self.sessions[key]
        path = self._paths.get(key[0])
        if path is not None and not path.members:
            del self._paths[key[0]]
        user = self.user_of.pop(conn, None)
        if user is not None:
            user.session_closed(conn)
        self._named.pop(conn, None)
        if self.on_session_closed is not None:
            self.on_session_closed(conn, reason)

    async def accept(self) -> TunnelConnection | None:
        if self.closed:
            return None
        conn = await self._accept_q.get()
        return conn

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sweeper.cancel()
        if self._shape_timer is not None:
            self._shape_timer.cancel()
            self._shape_timer = None
        self._reader.close()
        for conn in list(self.sessions.values()):
            conn.close("server shutting down")
        self.sessions.clear()
        self.backend.close()
        self._accept_q.put_nowait(None)  # type: ignore[arg-type]
