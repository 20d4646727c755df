"""paqet's KCP mode presets and the settings paqet applies to every session.

Values are upstream's (hanselime/paqet v1.0.0-alpha.21, internal/conf/kcp.go; see
/work/shared/spec/kcp.md §12). Where the written protocol spec disagrees, upstream wins: the
protocol spec lists fast3 with nc=0, but paqet's code sets nocongestion 1 for every preset,
so fast3 here is (1, 10, 2, 1, wdelay off, acknodelay on).
"""

from __future__ import annotations

from typing import NamedTuple

from paqet.kcp.engine import KCP


class Mode(NamedTuple):
    nodelay: int
    interval: int
    resend: int
    nc: int
    wdelay: bool
    acknodelay: bool


PRESETS: dict[str, Mode] = {
    "normal": Mode(0, 40, 2, 1, True, False),
    "fast": Mode(0, 30, 2, 1, True, False),
    "fast2": Mode(1, 20, 2, 1, False, True),
    "fast3": Mode(1, 10, 2, 1, False, True),
}
MODES = (*PRESETS, "manual")


def mode_values(mode: str, *, nodelay: int = 0, interval: int = 0, resend: int = 0,
                nc: int = 0, wdelay: bool = False, acknodelay: bool = False) -> Mode:
    """(nodelay, interval, resend, nc, wdelay, acknodelay) for a mode name. For "manual" the
    keyword values are used as given (their defaults are the Go zero values paqet gets from
    omitted YAML fields: interval 0 is later clamped to 10 by set_nodelay, and nc 0 means
    congestion control ON). The keywords are ignored for the named presets."""
    if mode == "manual":
        return Mode(int(nodelay), int(interval), int(resend), int(nc), bool(wdelay),
                    bool(acknodelay))
    try:
        return PRESETS[mode]
    except KeyError:
        raise ValueError(f"unknown KCP mode {mode!r} (one of {', '.join(MODES)})") from None


def configure(kcp: KCP, mode: str | Mode | tuple = "fast", mtu: int = 1330,
              sndwnd: int = 128, rcvwnd: int = 512, **manual) -> KCP:
    """Apply paqet's per-session settings in upstream's order: SetNoDelay, SetWindowSize,
    SetMtu (a rejected mtu leaves the previous one, as paqet ignores the error), write delay,
    ACK no-delay, stream mode on. `mode` is a name (manual values as keywords, see
    mode_values) or an already resolved 6-tuple. `mtu` is the KCP mtu, i.e. after the
    datagram codec's headroom (DatagramCodec.kcp_mtu)."""
    m = mode_values(mode, **manual) if isinstance(mode, str) else Mode(*mode)
    kcp.set_nodelay(m.nodelay, m.interval, m.resend, m.nc)
    kcp.set_wndsize(sndwnd, rcvwnd)
    kcp.set_mtu(mtu)
    kcp.write_delay = m.wdelay
    kcp.ack_nodelay = m.acknodelay
    kcp.stream = True
    return kcp
