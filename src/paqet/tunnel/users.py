"""The users of a server: whose key opens a new session, each user's sessions and figures,
and their optional limits (sessions, daily byte quota). Sans-I/O: times and days are
passed in.

A new session's user is found by trying each user's cipher on its first datagram: the CRC
(or, with an AEAD block, the tag) decides. What a datagram that fits no key may cost is
bounded whatever the number of users (docs/decisions.md, "Issue 19"):

* before any key is tried, the listener's cheap checks drop what they can (the kernel's
  port filter and per-source throttle, the size check, the per-source datagram bucket, a
  full session table or backlog);
* a trial of a CFB block first decrypts only a 40-byte prefix (whether a KCP header could
  follow: random bytes pass with a chance of about 1/64) before the whole datagram;
* the source IP's last user is tried first (a client reconnecting costs one trial);
* each datagram gets at most FREE_TRIALS trials; trials beyond those come from one token
  bucket (EXTRA_TRIALS_PER_S, EXTRA_TRIALS_BURST) shared by all datagrams, so a flood
  spends the bucket and then costs FREE_TRIALS trials a datagram while a quiet server still
  tries every key. Where to start among the users rotates, so under a flood every user's
  new sessions still get through after a few retransmissions of their first datagram.
"""

from __future__ import annotations

import dataclasses

from paqet.tunnel.guard import TokenBuckets
from paqet.tunnel.params import TunnelParams
from paqet.tunnel.shaper import Shaper
from paqet.wire.crypto import derive_key
from paqet.wire.datagram import MIN_PLAIN, DatagramCodec
from paqet.wire.fec import TYPE_DATA, TYPE_OOB, TYPE_PARITY

FREE_TRIALS = 4             # keys tried on any datagram
EXTRA_TRIALS_PER_S = 20000  # further trials, for all datagrams together
EXTRA_TRIALS_BURST = 4096
MAX_SOURCES = 16384         # source IPs whose last user is remembered

#: find() results other than a match (drop reasons of the listener)
BAD_CRC, NO_CONV, BAD_FRAME, TRIAL_LIMIT = "bad_crc", "no_conv", "bad_frame", "trial_limit"


@dataclasses.dataclass(frozen=True)
class UserSpec:
    """One entry of `users:` (or the unnamed user of transport.kcp.key)."""
    name: str
    key: str | bytes
    max_sessions: int = 0   # 0 = no limit of the user's own
    rate_limit: int = 0     # bytes per second each way, 0 = none
    daily_quota: int = 0    # bytes a day, both ways together, 0 = none

    @classmethod
    def from_config(cls, cfg) -> list["UserSpec"]:
        """The users of a loaded server config: `users:`, and transport.kcp.key as the
        unnamed user "" when it is set (or when there are no users: upstream's one key)."""
        out = [cls(u.name, u.key, u.max_sessions, u.rate_limit, u.daily_quota)
               for u in cfg.users]
        if cfg.transport.kcp.key or not out:
            out.insert(0, cls("", cfg.transport.kcp.key))
        return out


class User:
    """A user's live state: the key's cipher, sessions and figures. Survives a reload that
    keeps the user (by name); a new key replaces the cipher (and its sessions are closed
    by the listener)."""

    __slots__ = ("name", "spec", "params", "probe", "prefix", "sessions", "closed_in",
                 "closed_out", "sessions_total", "day", "day_base", "over_quota", "_key",
                 "shaper_out", "shaper_in")

    def __init__(self, spec: UserSpec, params: TunnelParams) -> None:
        self.name = spec.name
        self.sessions: set = set()          # TunnelConnections
        self.closed_in = 0                  # bytes of closed sessions
        self.closed_out = 0
        self.sessions_total = 0
        self.day = None                     # the day the quota counts (the shell's number)
        self.day_base = 0                   # bytes both ways when that day began
        self.over_quota = False
        self._key = None
        #: the rate limit, each way (tunnel.shaper); None: the user never had one
        self.shaper_out: Shaper | None = None
        self.shaper_in: Shaper | None = None
        self.set_spec(spec, params)

    def set_spec(self, spec: UserSpec, params: TunnelParams) -> bool:
        """Take new settings; True when the key changed (a new cipher). A new rate limit
        holds at once (0 lifts it)."""
        self.spec = spec
        if self.shaper_out is not None:
            self.shaper_out.set_rate(spec.rate_limit)
            self.shaper_in.set_rate(spec.rate_limit)
        elif spec.rate_limit:
            self.shaper_out, self.shaper_in = Shaper(spec.rate_limit), Shaper(spec.rate_limit)
        changed = spec.key != self._key
        if changed:
            self._key = spec.key
            derived = spec.key if isinstance(spec.key, bytes) else derive_key(spec.key)
            self.probe = DatagramCodec(params.block, derived)
            c = self.probe.crypt
            # non-AEAD blocks decrypt a prefix like the whole (CFB, stream ciphers, xor)
            self.prefix = c.decrypt if c is not None and not c.tag else None
            # the derived key goes into the session params: a session's codec takes it as
            # is, without PBKDF2 (derive_key's cache holds only the last 64 keys)
            self.params = dataclasses.replace(params, key=derived)
        else:
            self.params = dataclasses.replace(params, key=self.params.key)
        return changed

    def bytes_in(self) -> int:
        n = self.closed_in
        for c in self.sessions:
            n += c.bytes_in
        return n

    def bytes_out(self) -> int:
        n = self.closed_out
        for c in self.sessions:
            n += c.bytes_out
        return n

    def session_closed(self, conn) -> None:
        if conn in self.sessions:
            self.sessions.discard(conn)
            self.closed_in += conn.bytes_in
            self.closed_out += conn.bytes_out

    def quota_used(self, day) -> int:
        """Bytes both ways since `day` began (a new day starts the count afresh)."""
        total = self.bytes_in() + self.bytes_out()
        if day != self.day:
            self.day = day
            self.day_base = total
            self.over_quota = False
        return total - self.day_base

    def refuses(self) -> str | None:
        """Why this user may not open another session now, or None."""
        spec = self.spec
        if self.over_quota:
            return "user_quota"
        if spec.max_sessions and len(self.sessions) >= spec.max_sessions:
            return "user_sessions"
        return None

    def figures(self) -> dict:
        return {"bytes_in": self.bytes_in(), "bytes_out": self.bytes_out(),
                "sessions": len(self.sessions), "sessions_total": self.sessions_total}


class UserTable:
    """The users of a listener, in configuration order, and the key search."""

    def __init__(self, params: TunnelParams, specs: list[UserSpec], *,
                 free_trials: int = FREE_TRIALS, extra_per_s: float = EXTRA_TRIALS_PER_S,
                 extra_burst: int = EXTRA_TRIALS_BURST) -> None:
        self.users: list[User] = []
        self.by_name: dict[str, User] = {}
        self.free_trials = max(1, free_trials)
        self._extra = TokenBuckets(extra_per_s, extra_burst, max_keys=1)  # one bucket for all
        self._cursor = 0
        self._last_user: dict[str, User] = {}     # source IP -> the user it last opened with
        self.update(params, specs)

    # -- configuration -------------------------------------------------------------------
    def update(self, params: TunnelParams, specs: list[UserSpec]) -> tuple[list, list, list]:
        """Take a new list of users (a reload). Returns (added names, removed Users, Users
        whose key changed): the caller closes the sessions of the last two."""
        if not specs:
            raise ValueError("a server needs at least one user (key)")
        old = self.by_name
        users, added, rekeyed = [], [], []
        for spec in specs:
            u = old.get(spec.name)
            if u is None:
                u = User(spec, params)
                added.append(spec.name)
            elif u.set_spec(spec, params):
                rekeyed.append(u)
            users.append(u)
        keep = {u.name for u in users}
        removed = [u for name, u in old.items() if name not in keep]
        self.users = users
        self.by_name = {u.name: u for u in users}
        self._cursor %= len(users)
        if removed or rekeyed:
            gone = {id(u) for u in removed} | {id(u) for u in rekeyed}
            self._last_user = {ip: u for ip, u in self._last_user.items() if id(u) not in gone}
        return added, removed, rekeyed

    def new_keys(self, specs: list[UserSpec]) -> list[str]:
        """The key texts of `specs` that update() would derive (new users, new keys): a
        reload derives them in a thread first (PBKDF2, ~40 ms each), and update() then
        finds them in derive_key's cache."""
        old = self.by_name
        return [s.key for s in specs if isinstance(s.key, str)
                and (s.name not in old or old[s.name].spec.key != s.key)]

    @property
    def crypt(self):
        """The first user's block (header and tag sizes are the block's, whoever's key)."""
        return self.users[0].probe.crypt

    # -- the key search --------------------------------------------------------------------
    def find(self, payload: bytes, ip: str, now_ms: int):
        """(User, KCP bytes) of the first user whose key opens `payload` (a first datagram
        from an unknown peer), or the drop reason: bad_crc (no key opens it), no_conv
        (opened: FEC parity, OOB or too short to hold a conv), bad_frame (opened, shorter
        than a datagram can be), trial_limit (not every key was tried: the trial budget is
        spent)."""
        users = self.users
        n = len(users)
        first = self._last_user.get(ip)
        p40 = payload[:40] if users[0].prefix is not None else None
        tried = 0
        if first is not None:
            r = self._try(first, payload, p40)
            if r is not None:
                return r
            tried = 1
        free = self.free_trials
        start = self._cursor
        result = BAD_CRC
        k = 0
        while k < n:
            u = users[(start + k) % n]
            k += 1
            if u is first:
                continue
            if tried >= free and not self._extra.take(0, now_ms):
                k -= 1
                result = TRIAL_LIMIT
                break
            tried += 1
            r = self._try(u, payload, p40)
            if r is not None:
                result = r
                break
        # the next datagram starts where this one stopped: under a flood the few trials
        # each gets go round all the users
        self._cursor = (start + k) % n
        return result

    def _try(self, u: User, payload: bytes, p40):
        """One user's key on the datagram: (u, kcp), a drop reason when the key opened it
        but it carries no conv, or None (not this key)."""
        pre = u.prefix
        if pre is not None:
            p = pre(p40)
            flag = p[24] | (p[25] << 8)
            if flag == TYPE_PARITY or flag == TYPE_OOB:
                return NO_CONV
            if not 81 <= p[32 if flag == TYPE_DATA else 24] <= 84:  # KCP cmd PUSH..WINS
                return None
        plain = u.probe.open(payload)
        if plain is None:
            return None
        if len(plain) < MIN_PLAIN:
            return BAD_FRAME
        flag = plain[4] | (plain[5] << 8)
        kcp = (plain[8:] if flag == TYPE_DATA else None if flag in (TYPE_PARITY, TYPE_OOB)
               else plain)
        if kcp is None or len(kcp) < 24:  # parity, OOB, short FEC data: no conv (kcp-go)
            return NO_CONV
        return u, kcp

    def opened(self, u: User, conn, ip: str) -> None:
        """A session of `u` from `ip` was made."""
        u.sessions.add(conn)
        u.sessions_total += 1
        last = self._last_user
        if ip not in last and len(last) >= MAX_SOURCES:
            last.clear()
        last[ip] = u

    def figures(self) -> dict:
        """{name: {bytes_in, bytes_out, sessions, sessions_total}} of every user."""
        return {u.name: u.figures() for u in self.users}
