"""`paqet dump`: a live view of the paqet frames on an interface.

Default view = upstream's (cmd/dump): for every inbound TCP frame with a payload at the port,
`[HH:MM:SS.mmm] Packet: <src> -> <listen> | Length: N bytes`, then the payload in Go's
`hex.Dump` layout between two marker lines. The decoded view (`decoded=True`, beyond
upstream) prints one line per frame with direction, addresses, ports, TCP flags, seq/ack,
window, TTL and sizes; given the datagram settings (block + key, and FEC shards) it decrypts
each payload with the datagram codec and prints the KCP segments' headers (conv, cmd, sn,
una, frg, wnd, ts, len). `direction="both"` also shows the frames leaving by our port.

Capture is a plain AF_PACKET socket with a kernel BPF filter (the dump needs whole frames,
which the packet backends do not hand out), so the view runs beside a live `paqet run`.
"""

from __future__ import annotations

import dataclasses
import errno
import select
import socket
import sys
import threading
import time
from typing import TextIO

from paqet.config.values import flags_text
from paqet.net import bpf
from paqet.net.interface import link_type
from paqet.wire.frame import parse_frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
MARK_BEGIN = "--- PAYLOAD (HEX DUMP) ---"
MARK_END = "-" * 26


_PRINTABLE = bytes(b if 32 <= b < 127 else 0x2E for b in range(256))


def hexdump(data) -> str:
    """Go's encoding/hex.Dump layout (hexdump -C), without the final newline. Whole-buffer
    hex() and translate() with per-line slices: no Python loop over bytes."""
    data = bytes(data)
    hx = data.hex(" ")
    asc = data.translate(_PRINTABLE).decode("ascii")
    lines = []
    for off in range(0, len(data), 16):
        h = off * 3
        n = min(16, len(data) - off)
        left = hx[h:h + min(n, 8) * 3 - 1]
        if n > 8:
            left += "  " + hx[h + 24:h + n * 3 - 1]
        lines.append(f"{off:08x}  {left:<49} |{asc[off:off + 16]}|")
    return "\n".join(lines)


def clock_text(t: float) -> str:
    """Local wall time as Go's "15:04:05.000"."""
    return f"{time.strftime('%H:%M:%S', time.localtime(t))}.{int(t * 1000) % 1000:03d}"


def host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclasses.dataclass
class DumpStats:
    frames: int = 0          # frames shown
    datagrams: int = 0       # payloads that decrypted
    undecodable: int = 0     # payloads that did not (wrong key, not paqet, short)
    segments: int = 0        # KCP segments shown


class FrameFormatter:
    """Turns captured frames into text; no I/O (the tests feed it frames directly)."""

    def __init__(self, port: int, *, listen: str | None = None, decoded: bool = False,
                 block: str | None = None, key: str | bytes | None = None, dshard: int = 0,
                 pshard: int = 0) -> None:
        self.port = port
        self.listen = listen if listen is not None else f":{port}"
        self.decoded = decoded
        self.codec = None
        if block is not None:
            from paqet.wire.datagram import DatagramCodec
            self.codec = DatagramCodec(block, key or "", dshard=dshard, pshard=pshard)
            self.decoded = True
        self.stats = DumpStats()

    def format(self, frame, now: float, outgoing: bool = False) -> str:
        """`frame`: a wire.frame.ParsedFrame."""
        self.stats.frames += 1
        if not self.decoded:
            return (f"[{clock_text(now)}] Packet: {host_port(frame.src_ip, frame.src_port)} -> "
                    f"{self.listen} | Length: {len(frame.payload)} bytes\n{MARK_BEGIN}\n"
                    f"{hexdump(frame.payload)}\n{MARK_END}")
        head = (f"[{clock_text(now)}] {'OUT' if outgoing else 'IN '} "
                f"{host_port(frame.src_ip, frame.src_port)} > {host_port(frame.dst_ip, frame.dst_port)} "
                f"[{flags_text(frame.flags) or '-'}] seq {frame.seq} ack {frame.ack} win {frame.window} "
                f"ttl {frame.ttl} | {len(frame.payload)} bytes")
        if self.codec is None:
            return head
        return head + "\n" + self._kcp_lines(frame.payload)

    def _kcp_lines(self, payload) -> str:
        from paqet.kcp.engine import CMD_NAMES, parse_segments
        st = self.codec.stats
        before = (st.short, st.crc_errors, st.auth_errors, st.fec_parity, st.oob)
        out = self.codec.decode(payload)
        after = (st.short, st.crc_errors, st.auth_errors, st.fec_parity, st.oob)
        lines = []
        if after[:3] != before[:3]:
            self.stats.undecodable += 1
            why = "too short" if after[0] != before[0] else "CRC/tag check failed"
            return f"  not a datagram for this block/key ({why})"
        self.stats.datagrams += 1
        if after[3] != before[3]:
            lines.append("  FEC parity shard")
        elif after[4] != before[4]:
            lines.append("  out-of-band datagram")
        for kcp, regular in out:
            try:
                segs = parse_segments(kcp)
            except ValueError as exc:
                lines.append(f"  malformed KCP datagram ({len(kcp)} bytes): {exc}")
                continue
            note = "" if regular else " (recovered by FEC)"
            for conv, cmd, frg, wnd, ts, sn, una, data in segs:
                self.stats.segments += 1
                lines.append(f"  kcp conv={conv:#010x} {CMD_NAMES[cmd]:<4} sn={sn} una={una} "
                             f"frg={frg} wnd={wnd} ts={ts} len={len(data)}{note}")
        return "\n".join(lines) if lines else "  (no KCP segments)"


def open_capture(interface: str, port: int, *, direction: str = "in",
                 link: str | None = None) -> tuple[socket.socket, str]:
    """A non-blocking AF_PACKET socket receiving TCP frames to (and, with "both", from) `port`
    on `interface`; raises OSError (PermissionError without CAP_NET_RAW)."""
    link = link or link_type(interface)
    kind = socket.SOCK_RAW if link == "ether" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_PACKET, kind, 0)  # receives nothing until filtered + bound
    try:
        if direction == "in":
            prog = bpf.tcp_dst_port(port, link)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # kernels < 4.20: outgoing frames are dropped below by pkttype
        else:
            try:
                prog = bpf.compile_pcap(f"tcp port {port}", link)
            except (OSError, ValueError, AttributeError):
                prog = None  # no libpcap: parse and filter every TCP frame in Python
        if prog is not None:
            bpf.attach(sock, prog)
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, link


def run_dump(interface: str, port: int, *, listen: str | None = None, decoded: bool = False,
             block: str | None = None, key: str | bytes | None = None, dshard: int = 0,
             pshard: int = 0, direction: str = "in", link: str | None = None,
             out: TextIO | None = None, err: TextIO | None = None,
             stop: threading.Event | None = None, deadline: float | None = None,
             count: int = 0, on_open=None) -> int:
    """Print the frames at `port` on `interface` until `stop` is set, time.monotonic() passes
    `deadline`, or `count` frames (0 = no limit) were shown; returns the number shown.
    `block`/`key` (+ shards): decrypt and show KCP headers (implies `decoded`). Opening the
    capture raises OSError; read errors are reported on `err` and the loop goes on.
    `on_open()` is called once the capture is open (for upstream's "listening" line)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if direction not in ("in", "both"):
        raise ValueError(f"direction must be 'in' or 'both', not {direction!r}")
    sock, link = open_capture(interface, port, direction=direction, link=link)
    fmt = FrameFormatter(port, listen=listen, decoded=decoded, block=block, key=key,
                         dshard=dshard, pshard=pshard)
    buf = bytearray(65536)
    view = memoryview(buf)
    shown = 0
    try:
        if on_open is not None:
            on_open()
        while not (stop is not None and stop.is_set()):
            wait = 0.1
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            try:
                ready, _, _ = select.select([sock], [], [], wait)
            except InterruptedError:
                continue
            if not ready:
                continue
            for _ in range(1024):  # drain, bounded so stop/deadline are seen
                try:
                    n, addr = sock.recvfrom_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno == errno.ENETDOWN:
                        raise
                    print(f"failed to read from socket: {exc}", file=err, flush=True)
                    break
                outgoing = addr[2] == socket.PACKET_OUTGOING
                if outgoing and direction == "in":
                    continue
                frame = parse_frame(view[:n], link)
                if frame is None:
                    continue
                if (frame.src_port if outgoing else frame.dst_port) != port:
                    continue
                print(fmt.format(frame, time.time(), outgoing), file=out, flush=True)
                shown += 1
                if count and shown >= count:
                    return shown
    finally:
        sock.close()
    return shown
