"""`paqet ping -c FILE`: PPING/PPONG round trips through a real tunnel session, reported
like ping(8). `--raw` keeps upstream's behaviour (one raw packet, nothing measured)."""

from __future__ import annotations

import asyncio
import math
import sys

from paqet import logs
from paqet.cli.main import EXIT_OK, EXIT_RUNTIME, load_or_exit


async def _ping(cfg, count: int, interval: float, timeout: float) -> int:
    from paqet.client.pool import ClientPool
    from paqet.config.values import split_host_port
    from paqet.runtime import Network, StartupError, resolve, tunnel_params
    host, port = split_host_port(cfg.server.addr)
    try:
        server = resolve(host, port)
        net = await asyncio.to_thread(Network, cfg, server[0])
    except StartupError as exc:
        print(f"paqet: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    dialect = cfg.transport.dialect if cfg.transport.dialect != "auto" else "alpha21"
    pool = ClientPool(tunnel_params(cfg), server, lambda: net.open_backend(cfg.local_port),
                      conns=1, remote_flags=cfg.remote_flags, dialect=dialect,
                      health_interval=0)
    try:
        await pool.start()
    except StartupError as exc:
        print(f"paqet: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"PING {server[0]}:{server[1]} through the tunnel ({dialect} PPING/PPONG)")
    rtts = []
    sent = 0
    try:
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            conn = pool.slots[0].conn
            if conn is None:
                break
            sent += 1
            rtt = await pool.ping(conn, dialect, timeout)
            if rtt is None:
                print(f"no reply for seq={i + 1} within {timeout:g}s")
            else:
                rtts.append(rtt * 1000)
                print(f"PPONG from {server[0]}:{server[1]}: seq={i + 1} time={rtt * 1000:.2f} ms")
    except asyncio.CancelledError:
        pass
    finally:
        await pool.close()
    loss = 100.0 * (sent - len(rtts)) / sent if sent else 100.0
    print(f"--- {server[0]}:{server[1]} paqet ping statistics ---")
    print(f"{sent} packets transmitted, {len(rtts)} received, {loss:.0f}% packet loss")
    if rtts:
        avg = sum(rtts) / len(rtts)
        mdev = math.sqrt(sum((r - avg) ** 2 for r in rtts) / len(rtts))
        print(f"rtt min/avg/max/mdev = {min(rtts):.3f}/{avg:.3f}/{max(rtts):.3f}/{mdev:.3f} ms")
    return EXIT_OK if rtts else EXIT_RUNTIME


def _raw(cfg, payload: str) -> int:
    from paqet.config.values import split_host_port
    from paqet.runtime import Network, StartupError, resolve
    host, port = split_host_port(cfg.server.addr)
    try:
        server = resolve(host, port)
        net = Network(cfg, server[0])
        backend = net.open_backend(cfg.local_port)
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
