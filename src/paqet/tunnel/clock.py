"""The one clock the sans-I/O layers are driven with: milliseconds since this process
started (as kcp-go's currentMs), truncated to uint32 like the KCP timestamps it feeds."""

import time

_monotonic_ns = time.monotonic_ns
_T0 = _monotonic_ns()


def now_ms() -> int:
    return ((_monotonic_ns() - _T0) // 1_000_000) & 0xFFFFFFFF
