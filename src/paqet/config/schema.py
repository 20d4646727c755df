"""The YAML schema: every key of upstream's configuration (../shared/spec/config.md) as
msgspec Structs, with upstream's types, defaults and ranges, plus our own keys (marked
"beyond upstream"). Role-dependent defaults are filled in by the loader."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

LEVELS = ("none", "debug", "info", "warn", "error", "fatal")
MODES = ("normal", "fast", "fast2", "fast3", "manual")
BLOCKS_UPSTREAM = ("aes", "aes-128", "aes-128-gcm", "aes-192", "salsa20", "blowfish", "twofish",
                   "cast5", "3des", "tea", "xtea", "xor", "sm4", "none", "null")
BLOCKS = BLOCKS_UPSTREAM + ("chacha20",)

# (nodelay, interval ms, resend, nocongestion, wdelay, acknodelay) per mode: kcp.md §12
MODE_PRESETS = {
    "normal": (0, 40, 2, 1, True, False),
    "fast": (0, 30, 2, 1, True, False),
    "fast2": (1, 20, 2, 1, False, True),
    "fast3": (1, 10, 2, 1, False, True),
}

ROLE_DEFAULTS = {
    "client": {"sockbuf": 4194304, "rcvwnd": 512, "sndwnd": 128},
    "server": {"sockbuf": 8388608, "rcvwnd": 1024, "sndwnd": 1024},
}
SMUXBUF_DEFAULT, STREAMBUF_DEFAULT = 4194304, 2097152


class _S(Struct, kw_only=True, omit_defaults=True):
    pass


class Log(_S, kw_only=True):
    level: Literal[LEVELS] = "none"  # type: ignore[valid-type]


class Addr(_S, kw_only=True):
    addr: str = ""


class Socks5(_S, kw_only=True):
    listen: str = ""
    username: str = ""
    password: str = ""
    # beyond upstream: answer CONNECT only after the server's dial (its exact reply code),
    # one tunnel round trip per connection; by default success goes at once (as upstream)
    wait_dial: bool = False


class HttpProxy(_S, kw_only=True):
    """Beyond upstream: an HTTP proxy listener (CONNECT and absolute-URI requests)."""
    listen: str = ""
    username: str = ""
    password: str = ""
    wait_dial: bool = False  # as socks5's: CONNECT's 200 (or 502/504) after the dial


class ServerAddr(Addr, kw_only=True):
    # beyond upstream: failover servers, tried in order when the current one fails, and
    # how often (seconds) the first server is probed while a backup is in use (0 = never)
    backup: Annotated[list[str], Meta(max_length=64)] = msgspec.field(default_factory=list)
    failback: Annotated[float, Meta(ge=0, le=86400)] = 30.0


class Forward(_S, kw_only=True):
    listen: str = ""
    target: str = ""
    protocol: str = ""


class Family(_S, kw_only=True):
    addr: str = ""
    router_mac: str = ""


class Pcap(_S, kw_only=True):
    sockbuf: Annotated[int, Meta(ge=1024, le=104857600)] | None = None


class Tcp(_S, kw_only=True):
    local_flag: Annotated[list[str], Meta(max_length=64)] = msgspec.field(default_factory=list)
    remote_flag: Annotated[list[str], Meta(max_length=64)] = msgspec.field(default_factory=list)
    # beyond upstream: "handshake" makes the frames to each peer one TCP-faithful flow
    # (SYN/SYN-ACK/ACK, consistent seq/ack, timestamps) for stateful firewalls; a server in
    # handshake mode serves stateless peers too (docs/network.md)
    mode: Literal["stateless", "handshake"] = "stateless"
    # seconds of silence after which a handshake client probes its flow (0 = never)
    keepalive: Annotated[float, Meta(ge=0, le=3600)] = 15.0


class Network(_S, kw_only=True):
    interface: Annotated[str, Meta(max_length=15)] = ""
    guid: str = ""
    ipv4: Family | None = None
    ipv6: Family | None = None
    pcap: Pcap = msgspec.field(default_factory=Pcap)
    tcp: Tcp = msgspec.field(default_factory=Tcp)
    # beyond upstream
    firewall: Literal["managed", "manual"] = "managed"
    driver: Literal["auto", "afpacket", "pcap", "udp"] = "auto"


class Kcp(_S, kw_only=True):
    mode: Literal[MODES] = "fast"  # type: ignore[valid-type]
    nodelay: Annotated[int, Meta(ge=0, le=1)] = 0
    interval: Annotated[int, Meta(ge=0, le=5000)] = 0
    resend: Annotated[int, Meta(ge=0, le=255)] = 0
    nocongestion: Annotated[int, Meta(ge=0, le=1)] = 0
    wdelay: bool = False
    acknodelay: bool = False
    mtu: Annotated[int, Meta(ge=50, le=1500)] = 1350
    rcvwnd: Annotated[int, Meta(ge=1, le=32768)] | None = None
    sndwnd: Annotated[int, Meta(ge=1, le=32768)] | None = None
    block: Literal[BLOCKS] = "aes"  # type: ignore[valid-type]
    key: str = ""
    dshard: Annotated[int, Meta(ge=0, le=255)] = 0
    pshard: Annotated[int, Meta(ge=0, le=255)] = 0
    # left out: 4 MiB / 2 MiB, and with congestion "bbr" grown with the path (docs/config.md)
    smuxbuf: Annotated[int, Meta(ge=1024, le=2147483647)] | None = None
    streambuf: Annotated[int, Meta(ge=1024, le=2147483647)] | None = None
    smuxkalive: Annotated[int, Meta(ge=1, le=3600)] = 2
    smuxktimeout: Annotated[int, Meta(ge=1, le=86400)] = 8
    # beyond upstream: "bbr" paces our sends from the measured path (kcp/rate.py) and sizes
    # windows left out of the file from it (kcp/window.py); "kcp" sends as kcp-go does
    congestion: Literal["bbr", "kcp"] = "bbr"

    def effective_mode(self) -> tuple[int, int, int, int, bool, bool]:
        """(nodelay, interval, resend, nc, wdelay, acknodelay) after the mode preset."""
        if self.mode == "manual":
            return (self.nodelay, self.interval, self.resend, self.nocongestion, self.wdelay,
                    self.acknodelay)
        return MODE_PRESETS[self.mode]


class Transport(_S, kw_only=True):
    protocol: Literal["kcp"]
    conn: Annotated[int, Meta(ge=1, le=256)] = 1
    kcp: Kcp
    # beyond upstream: the app-protocol dialect a client speaks
    dialect: Literal["alpha21", "alpha20", "gob", "auto"] = "auto"


class Limits(_S, kw_only=True):
    """Beyond upstream: resource bounds and flood resistance (issue 9). Safe defaults; every
    key optional."""
    # -- listener / session table (server side): flood resistance --
    max_sessions: Annotated[int, Meta(ge=1, le=1048576)] = 4096
    accept_backlog: Annotated[int, Meta(ge=1, le=65536)] = 128
    new_sessions_per_ip: Annotated[float, Meta(ge=0, le=1e6)] = 16.0  # per s, 0 = unlimited
    new_sessions_burst: Annotated[int, Meta(ge=1, le=1048576)] = 256
    unknown_datagrams_per_ip: Annotated[float, Meta(ge=0, le=1e9)] = 1000.0  # per s, 0 = off
    unknown_datagrams_burst: Annotated[int, Meta(ge=1, le=1 << 30)] = 2048
    handshake_timeout: Annotated[float, Meta(gt=0, le=3600)] = 5.0  # seconds
    # anti-replay (both sides): datagram identities remembered per session, and for how long
    replay_window: Annotated[int, Meta(ge=0, le=1 << 24)] = 65536  # 0 = off
    replay_horizon: Annotated[float, Meta(ge=1, le=3600)] = 60.0  # seconds

    # -- streams and buffers (both sides): resource bounds --
    max_streams: Annotated[int, Meta(ge=1, le=65536)] = 1024  # per session; more: refused
    # bytes read from local sockets / targets and queued for one session but not yet
    # acknowledged by the peer (smux + KCP queues); readers wait while it is reached
    session_send_buffer: Annotated[int, Meta(ge=65536, le=1 << 31)] = 8 << 20
    # bytes a session may hold for us on the receiving side when windows follow the path
    # (congestion "bbr" and windows left out): bounds the KCP receive window and the smux
    # buffers they grow to
    session_receive_buffer: Annotated[int, Meta(ge=65536, le=1 << 31)] = 16 << 20
    # seconds to finish a request: a SOCKS5 handshake or HTTP request head (client), the
    # app message at the start of a stream (server)
    request_timeout: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    # seconds without a byte either way before a TCP stream is closed (0 = never)
    idle_timeout: Annotated[float, Meta(ge=0, le=1 << 22)] = 7200.0
    # seconds without a datagram either way before a UDP flow / association stream closes
    udp_idle_timeout: Annotated[float, Meta(gt=0, le=86400)] = 60.0


class Stats(_S, kw_only=True):
    """Beyond upstream: live statistics (issue 10). Every key optional."""
    # control socket for `paqet stats`: "" (or true) = /run/paqet/paqet-<role>-<port>.sock,
    # "off" (or YAML off/false) = none
    socket: Annotated[str, Meta(max_length=107)] | bool = ""
    # Prometheus text endpoint, host:port ("" = off; a bare ":port" means 127.0.0.1)
    prometheus: str = ""
    # seconds between two one-line stats log lines at info (0 = off)
    log_interval: Annotated[float, Meta(ge=0, le=86400)] = 60.0


class User(_S, kw_only=True):
    """Beyond upstream (server): one user, their key and optional limits of their own. The
    loader reads key_file into key and turns the sizes into integers (bytes)."""
    name: Annotated[str, Meta(min_length=1, max_length=64)] = ""
    key: str = ""
    key_file: str = ""            # the key as the first line of a file (relative: to the config)
    max_sessions: Annotated[int, Meta(ge=0, le=1048576)] = 0   # 0 = limits.max_sessions only
    rate_limit: int | str = 0     # bytes per second each way ("10MB", "50Mbit"), 0 = none
    daily_quota: int | str = 0    # bytes a day both ways together ("20GB"), 0 = none


class Config(_S, kw_only=True):
    role: Literal["client", "server"]
    log: Log = msgspec.field(default_factory=Log)
    listen: Addr = msgspec.field(default_factory=Addr)
    server: ServerAddr = msgspec.field(default_factory=ServerAddr)
    socks5: list[Socks5] = msgspec.field(default_factory=list)
    forward: list[Forward] = msgspec.field(default_factory=list)
    network: Network = msgspec.field(default_factory=Network)
    transport: Transport
    # beyond upstream
    http: list[HttpProxy] = msgspec.field(default_factory=list)
    limits: Limits = msgspec.field(default_factory=Limits)
    stats: Stats = msgspec.field(default_factory=Stats)
    users: Annotated[list[User], Meta(max_length=65536)] = msgspec.field(default_factory=list)
    # filled by the loader, not read from YAML
    warnings: list[str] = msgspec.field(default_factory=list)
    source: str = ""
    # keys left out of the file and filled with their defaults ("transport.kcp.rcvwnd", ...):
    # windows that may follow the path
    defaulted: list[str] = msgspec.field(default_factory=list)

    @property
    def local_flags(self) -> list[int]:
        from paqet.config.values import parse_flags
        return [parse_flags(f) for f in self.network.tcp.local_flag]

    @property
    def remote_flags(self) -> list[int]:
        from paqet.config.values import parse_flags
        return [parse_flags(f) for f in self.network.tcp.remote_flag]

    @property
    def local_port(self) -> int:
        """The network port (0 = random per connection); IPv6's when both are set. A server
        without network addresses (auto-detected, beyond upstream) uses listen.addr's port."""
        from paqet.config.values import split_host_port
        fam = self.network.ipv6 if self.network.ipv6 and self.network.ipv6.addr else self.network.ipv4
        if fam is None or not fam.addr:
            if self.role == "server" and self.listen.addr:
                return split_host_port(self.listen.addr)[1]
            return 0
        return split_host_port(fam.addr)[1]


#: Keys for which upstream treats a zero value (0, "", null, []) as "use the default".
ZERO_MEANS_DEFAULT = {
    ("log", "level"), ("transport", "conn"), ("network", "pcap", "sockbuf"),
    ("network", "tcp", "local_flag"), ("network", "tcp", "remote_flag"),
    ("transport", "kcp", "mode"), ("transport", "kcp", "mtu"), ("transport", "kcp", "rcvwnd"),
    ("transport", "kcp", "sndwnd"), ("transport", "kcp", "block"), ("transport", "kcp", "smuxbuf"),
    ("transport", "kcp", "streambuf"), ("transport", "kcp", "smuxkalive"),
    ("transport", "kcp", "smuxktimeout"),
}

__all__ = ["Config", "msgspec"]
