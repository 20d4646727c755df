"""`paqet ping -c FILE`: PPING/PPONG round trips through a real tunnel session, reported
like ping(8). `--raw` keeps upstream's behaviour (one raw packet, nothing measured)."""

from __future__ import annotations

import asyncio
import math
import sys

from paqet import logs
from paqet.cli.exits import EXIT_OK, EXIT_RUNTIME, load_or_exit


async def open_session(cfg, server: tuple[str, int], net, tcp_mode: str | None = None):
    """A one-connection client pool to `server` (health checks off) and the dialect its
    PPINGs use; raises StartupError. Shared with `paqet check` (which sets `tcp_mode` to
    try the network.tcp.mode it was not given too)."""
    from paqet.client.pool import ClientPool
    from paqet.runtime import tunnel_params
    dialect = cfg.transport.dialect if cfg.transport.dialect != "auto" else "alpha21"
    pool = ClientPool(tunnel_params(cfg), server,
                      lambda: net.open_backend(cfg.local_port, tcp_mode),
                      conns=1, remote_flags=cfg.remote_flags, dialect=dialect,
                      health_interval=0)
    try:
        await pool.start()
    except BaseException:
        await pool.close()
        raise
    return pool, dialect


class Tally:
    """Round trips so far (kept when the run is interrupted): sent, RTTs in ms."""

    def __init__(self) -> None:
        self.sent = 0
        self.rtts: list[float] = []


async def round_trips(pool, dialect: str, count: int, interval: float, timeout: float,
                      report=None, tally: Tally | None = None) -> Tally:
    """`count` PPING/PPONG round trips on the pool's first session. `report(seq,
    rtt_seconds_or_None)` is called after each one."""
    tally = tally if tally is not None else Tally()
    for i in range(count):
        if i:
            await asyncio.sleep(interval)
        conn = pool.slots[0].conn
        if conn is None:
            break
        tally.sent += 1
        rtt = await pool.ping(conn, dialect, timeout)
        if rtt is not None:
            tally.rtts.append(rtt * 1000)
        if report is not None:
            report(i + 1, rtt)
    return tally


def rtt_summary(rtts: list[float]) -> str:
    avg = sum(rtts) / len(rtts)
    mdev = math.sqrt(sum((r - avg) ** 2 for r in rtts) / len(rtts))
    return f"{min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f}/{mdev:.3f} ms"


async def _ping(cfg, count: int, interval: float, timeout: float) -> int:
    from paqet.config.values import split_host_port
    from paqet.runtime import Network, StartupError, resolve
    host, port = split_host_port(cfg.server.addr)
    try:
        server = resolve(host, port)
        net = await asyncio.to_thread(Network, cfg, server[0])
        pool, dialect = await open_session(cfg, server, net)
    except StartupError as exc:
        print(f"paqet: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"PING {server[0]}:{server[1]} through the tunnel ({dialect} PPING/PPONG)")

    def report(seq: int, rtt: float | None) -> None:
        if rtt is None:
            print(f"no reply for seq={seq} within {timeout:g}s")
        else:
            print(f"PPONG from {server[0]}:{server[1]}: seq={seq} time={rtt * 1000:.2f} ms")

    tally = Tally()
    conn = pool.slots[0].conn
    kcp = getattr(conn, "kcp", None)
    base = (kcp.segments_out, kcp.retransmissions) if kcp is not None else None
    try:
        await round_trips(pool, dialect, count, interval, timeout, report, tally)
    except asyncio.CancelledError:
        pass
    finally:
        if base is not None:  # what the reliable transport hid: our side's retransmissions
            base = (kcp.segments_out - base[0], kcp.retransmissions - base[1])
        await pool.close()
    sent, rtts = tally.sent, tally.rtts
    loss = 100.0 * (sent - len(rtts)) / sent if sent else 100.0
    print(f"--- {server[0]}:{server[1]} paqet ping statistics ---")
    print(f"{sent} packets transmitted, {len(rtts)} received, {loss:.0f}% packet loss")
    if rtts:
        print(f"rtt min/avg/max/mdev = {rtt_summary(rtts)}")
    if base is not None and base[0]:
        print(f"kcp: {base[0]} segments sent by this end, {base[1]} retransmitted "
              f"({100.0 * base[1] / base[0]:.0f}%)")
    return EXIT_OK if rtts else EXIT_RUNTIME


def _raw(cfg, payload: str) -> int:
    from paqet.config.values import split_host_port
    from paqet.runtime import Network, StartupError, resolve
    host, port = split_host_port(cfg.server.addr)
    try:
        server = resolve(host, port)
        net = Network(cfg, server[0])
        backend = net.open_backend(cfg.local_port, "stateless")  # one raw frame, as upstream
    except StartupError as exc:
        print(f"paqet: failed to create raw socket: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        print(f"sending packet from {net.ip4 or net.ip6}:{backend.local_port} to "
              f"{server[0]}:{server[1]} via {net.interface}", file=sys.stderr)
        print(f'payload: "{payload}" ({len(payload.encode())} bytes)', file=sys.stderr)
        backend.send(payload.encode(), server)
        if getattr(backend, "send_errors", 0):
            print("paqet: failed to send packet", file=sys.stderr)
            return EXIT_RUNTIME
        print("packet sent successfully", file=sys.stderr)
        return EXIT_OK
    finally:
        backend.close()


def run(args) -> int:
    cfg = load_or_exit(args.config, role="client")
    logs.setup(cfg.log.level if cfg.log.level != "info" else "warn")
    if args.raw:
        return _raw(cfg, args.payload)
    if args.count < 1:
        print("paqet: --count must be at least 1", file=sys.stderr)
        return 2
    from paqet.runtime import StartupError  # noqa: F401
    try:
        import uvloop
        return uvloop.run(_ping(cfg, args.count, args.interval, args.timeout))
    except ImportError:
        return asyncio.run(_ping(cfg, args.count, args.interval, args.timeout))
