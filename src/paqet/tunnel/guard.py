"""Flood resistance policy for the server's listener (sans-I/O: times are passed in).

ListenerLimits holds the `limits:` keys of the listener / session table; TokenBuckets is a
bounded table of per-source token buckets (new sessions per source IP, datagrams per source
IP without an established session); DropLog turns a drop-reason dict into at most one
warning line per interval.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ListenerLimits:
    max_sessions: int = 4096
    backlog: int = 128
    new_sessions_per_ip: float = 16.0     # per second, 0 = unlimited
    new_sessions_burst: int = 256
    unknown_datagrams_per_ip: float = 1000.0  # per second, 0 = unlimited
    unknown_datagrams_burst: int = 2048
    handshake_timeout_ms: int = 5000
    max_sources: int = 16384              # per-IP bucket entries kept

    @classmethod
    def from_config(cls, limits) -> "ListenerLimits":
        """From config.schema.Limits (missing keys keep these defaults)."""
        kw = {}
        for f in ("max_sessions", "new_sessions_per_ip", "new_sessions_burst",
                  "unknown_datagrams_per_ip", "unknown_datagrams_burst"):
            v = getattr(limits, f, None)
            if v is not None:
                kw[f] = v
        if getattr(limits, "accept_backlog", None) is not None:
            kw["backlog"] = limits.accept_backlog
        if getattr(limits, "handshake_timeout", None) is not None:
            kw["handshake_timeout_ms"] = int(limits.handshake_timeout * 1000)
        return cls(**kw)


class TokenBuckets:
    """One token bucket per key (source IP): `rate` tokens per second up to `burst`. At most
    `max_keys` keys are kept; when full the table starts afresh (memory stays bounded even
    under spoofed sources; the cost is that known sources get a full bucket again)."""

    __slots__ = ("rate", "burst", "max_keys", "buckets")

    def __init__(self, rate: float, burst: int, max_keys: int = 16384) -> None:
        self.rate = rate / 1000.0  # per ms
        self.burst = float(max(1, burst))
        self.max_keys = max_keys
        self.buckets: dict = {}

    def take(self, key, now_ms: int) -> bool:
        """Take one token for `key`; False when its bucket is empty (or rate is 0 =
        unlimited: always True)."""
        if not self.rate:
            return True
        b = self.buckets.get(key)
        if b is None:
            if len(self.buckets) >= self.max_keys:
                self.buckets.clear()
            self.buckets[key] = [self.burst - 1.0, now_ms]
            return True
        tokens = b[0] + ((now_ms - b[1]) & 0xFFFFFFFF) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now_ms
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return True
        b[0] = tokens
        return False

    def __len__(self) -> int:
        return len(self.buckets)


class DropLog:
    """At most one line per `interval_s` naming what was dropped since the last line."""

    __slots__ = ("drops", "interval_s", "last_s", "last")

    def __init__(self, drops: dict, interval_s: float = 10.0) -> None:
        self.drops = drops
        self.interval_s = interval_s
        self.last_s: float | None = None
        self.last: dict = {}

    def line(self, now_s: float) -> str | None:
        """The text to log now, or None (nothing new, or too soon after the last line)."""
        if self.last_s is not None and now_s - self.last_s < self.interval_s:
            return None
        new = {k: v - self.last.get(k, 0) for k, v in self.drops.items()
               if v != self.last.get(k, 0)}
        if not new:
            return None
        self.last = dict(self.drops)
        span = "" if self.last_s is None else f" in the last {now_s - self.last_s:.0f}s"
        self.last_s = now_s
        return f"dropped datagrams{span}: " + ", ".join(f"{k} {v}" for k, v in sorted(new.items()))
