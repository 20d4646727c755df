"""Everything one tunnel connection needs to know, independent of the YAML layout."""

from __future__ import annotations

import dataclasses

from paqet.kcp.presets import PRESETS

# (nodelay, interval ms, resend, nocongestion, write delay, ack nodelay) per mode: the one
# table in paqet.kcp.presets (config/schema.py keeps a copy, being below kcp; a test
# checks they agree).
MODE_PRESETS = PRESETS


@dataclasses.dataclass(frozen=True)
class TunnelParams:
    block: str = "aes"
    key: str | bytes = ""           # text: paqet's PBKDF2; bytes: the cipher's key as is
    dshard: int = 0
    pshard: int = 0
    mtu: int = 1350
    sndwnd: int = 128
    rcvwnd: int = 512
    nodelay: int = 0
    interval: int = 30
    resend: int = 2
    nc: int = 1
    wdelay: bool = True
    acknodelay: bool = False
    # fast/early retransmissions of a segment between RTOs (KCP.fast_limit; 0 = kcp-go
    # v5.6.64's one): a sender-side choice the peer cannot see, docs/decisions.md
    fast_limit: int = 5
    smux_version: int = 2
    smuxbuf: int = 4 << 20
    streambuf: int = 2 << 20
    keepalive_ms: int = 2000
    keepalive_timeout_ms: int = 8000
    max_frame_size: int = 65535
    replay_window: int = 65536      # datagram identities remembered per session (0 = off)
    replay_horizon_ms: int = 60000  # how long the window aims to remember them
    max_streams: int = 1024         # open streams per session; SYNs beyond it get a FIN
    send_buffer: int = 8 << 20      # bytes queued for the peer per session (limits: docs)
    # "bbr": our sender paces from the measured path (kcp/rate.py); "kcp": as kcp-go
    congestion: str = "kcp"
    # windows left out of the config follow the path under "bbr" (kcp/window.py, smux
    # buffers), up to recv_buffer bytes held for the peer; explicit ones stay fixed
    auto_sndwnd: bool = False
    auto_rcvwnd: bool = False
    auto_smux: bool = False
    recv_buffer: int = 16 << 20
    # per-stream policy, read by the client and server shells (config: limits)
    request_timeout: float = 10.0   # s: SOCKS5 handshake / a stream's first app message
    idle_timeout: float = 7200.0    # s without a byte either way: TCP relay closed (0 = off)
    udp_idle_timeout: float = 60.0  # s without a datagram: UDP flow / stream closed

    @classmethod
    def for_mode(cls, mode: str = "fast", **kw) -> "TunnelParams":
        nd, iv, rs, nc, wd, an = MODE_PRESETS[mode]
        base = dict(nodelay=nd, interval=iv, resend=rs, nc=nc, wdelay=wd, acknodelay=an)
        base.update(kw)
        return cls(**base)

    @classmethod
    def from_config(cls, cfg) -> "TunnelParams":
        """From a loaded paqet config (paqet.config)."""
        k = cfg.transport.kcp
        nd, iv, rs, nc, wd, an = k.effective_mode()
        bbr = k.congestion == "bbr"
        auto = set(cfg.defaulted) if bbr else set()
        return cls(
            congestion=k.congestion, recv_buffer=cfg.limits.session_receive_buffer,
            auto_sndwnd="transport.kcp.sndwnd" in auto, auto_rcvwnd="transport.kcp.rcvwnd" in auto,
            auto_smux={"transport.kcp.smuxbuf", "transport.kcp.streambuf"} <= auto,
            block=k.block, key=k.key or "", dshard=k.dshard or 0, pshard=k.pshard or 0,
            mtu=k.mtu, sndwnd=k.sndwnd, rcvwnd=k.rcvwnd,
            nodelay=nd, interval=iv, resend=rs, nc=nc, wdelay=wd, acknodelay=an,
            smux_version=getattr(k, "smuxver", 2) or 2,
            smuxbuf=k.smuxbuf, streambuf=k.streambuf,
            keepalive_ms=k.smuxkalive * 1000, keepalive_timeout_ms=k.smuxktimeout * 1000,
            replay_window=cfg.limits.replay_window,
            replay_horizon_ms=int(cfg.limits.replay_horizon * 1000),
            max_streams=cfg.limits.max_streams, send_buffer=cfg.limits.session_send_buffer,
            request_timeout=cfg.limits.request_timeout, idle_timeout=cfg.limits.idle_timeout,
            udp_idle_timeout=cfg.limits.udp_idle_timeout,
        )
