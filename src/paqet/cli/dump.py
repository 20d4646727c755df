"""`paqet dump -c FILE`: live view of the paqet frames arriving at the server's port, in
upstream's format (time, source, length, hex dump); with --decode the datagrams are
decrypted with the configured key and their KCP segments shown (net.dump.run_dump)."""

from __future__ import annotations

import signal
import sys
import threading
import time

from paqet.cli.exits import EXIT_OK, EXIT_RUNTIME, load_or_exit


def run(args) -> int:
    cfg = load_or_exit(args.config, role="server")
    from paqet.net.dump import run_dump
    from paqet.runtime import Network, StartupError
    try:
        net = Network(cfg, None)
    except StartupError as exc:
        print(f"paqet: failed to create raw socket: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    port = cfg.local_port
    decode = {}
    if args.decode:
        k = cfg.transport.kcp
        # with users: and no transport.kcp.key, the first user's key
        key = k.key or (cfg.users[0].key if cfg.users else "")
        decode = dict(block=k.block, key=key, dshard=k.dshard, pshard=k.pshard)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())

    def listening() -> None:
        print(f"{time.strftime('%Y/%m/%d %H:%M:%S')} listening for packets on :{port}, "
              "(Press Ctrl+C to exit)", file=sys.stderr, flush=True)
    try:
        run_dump(net.interface, port, listen=cfg.listen.addr, decoded=args.decode,
                 count=args.count, stop=stop, on_open=listening, **decode)
    except OSError as exc:
        print(f"paqet: failed to create raw socket: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        pass
    print("shutdown signal received, exiting", file=sys.stderr)
    return EXIT_OK
