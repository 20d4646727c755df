"""`paqet dump -c FILE`: live view of the paqet frames arriving at the server's port, in
upstream's format (time, source, length, hex dump); with --decode the datagrams are
decrypted with the configured key and their KCP segments shown."""

from __future__ import annotations

import select
import signal
import sys
import time

from paqet.cli.main import EXIT_OK, EXIT_RUNTIME, load_or_exit
from paqet.net.dump import hexdump


def run(args) -> int:
    cfg = load_or_exit(args.config, role="server")
    from paqet.runtime import Network, StartupError
    from paqet.wire.frame import parse_frame
    try:
        net = Network(cfg, None)
    except StartupError as exc:
        print(f"paqet: failed to create raw socket: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    import socket
    from paqet.net.afpacket import ETH_P_ALL, attach_filter, bpf_tcp_dst_port, link_type
    port = cfg.local_port
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        link = link_type(net.interface)
        attach_filter(sock, bpf_tcp_dst_port(port, link))
        sock.bind((net.interface, 0))
    except OSError as exc:
        print(f"paqet: failed to create raw socket: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    codec = None
    if args.decode:
        from paqet.wire.datagram import DatagramCodec
        k = cfg.transport.kcp
        codec = DatagramCodec(k.block, k.key, dshard=k.dshard, pshard=k.pshard)
    print(f"{time.strftime('%Y/%m/%d %H:%M:%S')} listening for packets on :{port}, "
          "(Press Ctrl+C to exit)", file=sys.stderr, flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    seen = 0
    try:
        while not stop:
            r, _, _ = select.select([sock], [], [], 0.1)
            if not r:
                continue
            raw, addr = sock.recvfrom(65536)
            if len(addr) > 2 and addr[2] == socket.PACKET_OUTGOING:
                continue
            p = parse_frame(raw, link, port)
            if p is None:
                continue
            t = time.time()
            src = f"[{p.src_ip}]:{p.src_port}" if ":" in p.src_ip else f"{p.src_ip}:{p.src_port}"
            print(f"[{time.strftime('%H:%M:%S', time.localtime(t))}.{int(t * 1000) % 1000:03d}] "
                  f"Packet: {src} -> {cfg.listen.addr} | Length: {len(p.payload)} bytes")
            if codec is not None:
                from paqet.kcp.engine import CMD_NAMES, parse_segments
                out = codec.decode(p.payload)
                if not out:
                    print("--- not a datagram for this key (CRC/tag check failed) ---")
                for kcp, regular in out:
                    try:
                        segs = parse_segments(kcp)
                    except ValueError as exc:
                        print(f"--- malformed KCP: {exc} ---")
                        continue
                    for conv, cmd, frg, wnd, ts, sn, una, data in segs:
                        print(f"  KCP conv={conv:#010x} {CMD_NAMES[cmd]} sn={sn} una={una} "
                              f"wnd={wnd} ts={ts} len={len(data)}{'' if regular else ' (FEC)'}")
            else:
                print("--- PAYLOAD (HEX DUMP) ---")
                print(hexdump(p.payload))
                print("--------------------------")
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("shutdown signal received, exiting", file=sys.stderr)
    return EXIT_OK
