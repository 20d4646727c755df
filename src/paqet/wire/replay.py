"""Anti-replay for one session (sans-I/O: the caller supplies the time).

kcp-go puts 16 fresh random bytes in front of every datagram it sends - retransmissions and
FEC parity packets included - so a datagram whose nonce was already seen is a replay (or a
network duplicate, equally useless). The nonce travels encrypted, but the first bytes of the
wire datagram are a fixed function of it under one key (CFB with a fixed IV, stream ciphers,
xor; GCM sends its 12-byte nonce in clear), so the window is keyed on the wire bytes and the
check runs before any decryption. Identities are entered only once the datagram has
authenticated (CRC or tag), so garbage cannot fill the window.

ReplayWindow keeps the identities seen in two generations; a generation ends after
`horizon_ms / 2` or `max_entries / 2` identities, and the older one is then forgotten, so
memory is bounded by `max_entries`. `since_ms` is the time from which the window is complete:
a datagram sent before it could be a replay the window no longer remembers, which
StaleFilter recognises from the KCP timestamps inside it (ACKs echo our own clock; PUSH
segments carry the peer's, compared with the newest the peer has shown).

Block "null" has no nonce: only the timestamp check protects it. Block "none" has a nonce
but no key, so anyone can forge datagrams there: the window only stops naive replays.
"""

from __future__ import annotations

import struct

IDENT_LEN = 12  # bytes of the wire datagram used as its identity (GCM nonce length)

CMD_PUSH, CMD_ACK = 81, 82
_CMD_TS = struct.Struct("<4xB3xI")  # cmd and ts of a KCP segment header (used inline by
#                                     tunnel.connection on its hot path)


class ReplayWindow:
    __slots__ = ("max_gen", "gen_ms", "cur", "old", "cur_start", "since_ms")

    def __init__(self, max_entries: int = 65536, horizon_ms: int = 60000,
                 now_ms: int = 0) -> None:
        self.max_gen = max(1, max_entries // 2)
        self.gen_ms = max(1, horizon_ms // 2)
        self.cur: set = set()
        self.old: set = set()
        self.cur_start = now_ms
        #: every identity added since this time (ms) is remembered
        self.since_ms = now_ms

    def __len__(self) -> int:
        return len(self.cur) + len(self.old)

    def seen(self, ident) -> bool:
        return ident in self.cur or ident in self.old

    def add(self, ident, now_ms: int) -> None:
        cur = self.cur
        if len(cur) >= self.max_gen or ((now_ms - self.cur_start) & 0xFFFFFFFF) >= self.gen_ms:
            self.old = cur
            self.cur = cur = set()
            self.since_ms = self.cur_start
            self.cur_start = now_ms
        cur.add(ident)

    def check_and_add(self, ident, now_ms: int) -> bool:
        """True (and remembered) when new; False for a replay."""
        if ident in self.cur or ident in self.old:
            return False
        self.add(ident, now_ms)
        return True

    def covered_ms(self, now_ms: int) -> int:
        """How far back (ms) the window is complete."""
        return (now_ms - self.since_ms) & 0xFFFFFFFF


def _age(a: int, b: int) -> int:
    """a - b on the 32-bit KCP clock, signed."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


class StaleFilter:
    """Recognises datagrams sent longer ago than the replay window reaches, from the KCP
    timestamp of their first segment (all segments of a datagram leave in one flush): an
    ACK echoes the ts of our segment (our clock), a PUSH carries the peer's clock at its
    (re)transmission, compared with the newest the peer has shown. Legitimate datagrams are
    about a round trip old; `slack_ms` is the least age ever called stale. Window probes
    (WASK/WINS) carry no usable time and pass."""

    __slots__ = ("peer_ts", "slack_ms")

    def __init__(self, slack_ms: int = 3000) -> None:
        self.peer_ts: int | None = None
        self.slack_ms = slack_ms

    def stale(self, kcp, now_ms: int, limit_ms: int) -> bool:
        """kcp: the KCP bytes of one regular datagram (after crypto and FEC headers)."""
        if len(kcp) < 24:
            return False
        cmd, ts = _CMD_TS.unpack_from(kcp, 0)
        if cmd == CMD_ACK:  # (tunnel.connection inlines this case)
            return _age(now_ms, ts) > max(limit_ms, self.slack_ms)
        if cmd == CMD_PUSH:
            peer = self.peer_ts
            if peer is None:
                self.peer_ts = ts
                return False
            age = _age(peer, ts)
            if age > max(limit_ms, self.slack_ms):
                return True
            if age < 0:
                self.peer_ts = ts
        return False
