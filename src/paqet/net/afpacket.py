"""Linux AF_PACKET backend: frames written straight onto the interface, captured with a
kernel BPF filter for our TCP port; our own outgoing frames are not delivered back
(PACKET_IGNORE_OUTGOING), and every ready frame is drained per wakeup."""

from __future__ import annotations

import ctypes
import socket
import struct

from paqet.net.backend import Addr, PacketBackend, random_port
from paqet.wire.frame import FrameBuilder, FrameError, parse_frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
RECV_SIZE = 2048


def bpf_tcp_dst_port(port: int, link: str = "ether") -> list[tuple[int, int, int, int]]:
    """Classic BPF for `tcp dst port P` over IPv4 (unfragmented) and IPv6 (no extension
    header), as tcpdump compiles it; offsets shift by 14 for IP-only links."""
    e = 14 if link == "ether" else 0
    LDH, LDB, JEQ, JSET, LDXB, LDHX, RET = 0x28, 0x30, 0x15, 0x45, 0xB1, 0x48, 0x06
    if link == "ether":
        return [
            (LDH, 0, 0, 12),
            (JEQ, 0, 4, 0x86DD),
            (LDB, 0, 0, e + 6),
            (JEQ, 0, 11, 6),
            (LDH, 0, 0, e + 42),
            (JEQ, 8, 9, port),
            (JEQ, 0, 8, 0x0800),
            (LDB, 0, 0, e + 9),
            (JEQ, 0, 6, 6),
            (LDH, 0, 0, e + 6),
            (JSET, 4, 0, 0x1FFF),
            (LDXB, 0, 0, e),
            (LDHX, 0, 0, e + 2),
            (JEQ, 0, 1, port),
            (RET, 0, 0, 0x40000),
            (RET, 0, 0, 0),
        ]
    # IP-only: the version nibble tells the family
    return [
        (LDB, 0, 0, 0),
        (0x54, 0, 0, 0xF0),          # and #0xf0
        (JEQ, 0, 4, 0x60),
        (LDB, 0, 0, 6),
        (JEQ, 0, 11, 6),
        (LDH, 0, 0, 42),
        (JEQ, 8, 9, port),
        (JEQ, 0, 8, 0x40),
        (LDB, 0, 0, 9),
        (JEQ, 0, 6, 6),
        (LDH, 0, 0, 6),
        (JSET, 4, 0, 0x1FFF),
        (LDXB, 0, 0, 0),
        (LDHX, 0, 0, 2),
        (JEQ, 0, 1, port),
        (RET, 0, 0, 0x40000),
        (RET, 0, 0, 0),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = _SockFprog(len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def link_type(interface: str) -> str:
    """ether for ARPHRD_ETHER (1), ip for tun/WireGuard/PPP and the like."""
    try:
        with open(f"/sys/class/net/{interface}/type") as f:
            t = int(f.read().strip())
    except OSError:
        return "ether"
    return "ether" if t in (1, 772) else "ip"


def interface_mac(interface: str) -> bytes:
    try:
        with open(f"/sys/class/net/{interface}/address") as f:
            s = f.read().strip()
        return bytes.fromhex(s.replace(":", "")) if s else b"\0" * 6
    except (OSError, ValueError):
        return b"\0" * 6


class AfPacketBackend(PacketBackend):
    def __init__(self, interface: str, *, port: int = 0, src_ip4: str | None = None,
                 src_ip6: str | None = None, router_mac4: bytes | None = None,
                 router_mac6: bytes | None = None, local_flags: list[int] | None = None,
                 sockbuf: int = 4 << 20, start_ms: int | None = None,
                 learn_macs: bool = False) -> None:
        super().__init__()
        import time
        self.interface = interface
        self.link = link_type(interface)
        self.local_port = port or random_port()
        proto = socket.htons(ETH_P_ALL)
        kind = socket.SOCK_RAW if self.link == "ether" else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_PACKET, kind, proto)
        try:
            attach_filter(self.sock, bpf_tcp_dst_port(self.local_port, self.link))
            self.sock.bind((interface, 0))
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                self.ignores_outgoing = True
            except OSError:
                self.ignores_outgoing = False
            for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                                 (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, force, sockbuf)
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, plain, sockbuf)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        # Drain whatever slipped in before the filter was attached.
        self._drain_stale()
        self.builder = FrameBuilder(
            link=self.link, src_mac=interface_mac(interface), dst_mac=router_mac4 or b"\xff" * 6,
            src_ip4=src_ip4, src_ip6=src_ip6, src_port=self.local_port,
            local_flags=local_flags, start_ms=int(time.time() * 1000) if start_ms is None else start_ms)
        self.builder.dst_mac6 = router_mac6 or router_mac4 or b"\xff" * 6
        self._dgram_proto = {4: socket.htons(0x0800), 6: socket.htons(0x86DD)}
        self._recv = self.sock.recv
        self._send = self.sock.send
        self.parse_errors = 0
        # Without a configured router MAC, reply to whichever MAC a peer's frames came from.
        self.learn_macs = learn_macs and self.link == "ether"

    def _drain_stale(self) -> None:
        for _ in range(10000):
            try:
                self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, max_n: int = 256) -> list[tuple[bytes, Addr]]:
        out = []
        recv = self._recv
        port = self.local_port
        link = self.link
        for _ in range(max_n):
            try:
                raw = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            p = parse_frame(raw, link, port)
            if p is None:
                self.dropped += 1
                continue
            out.append((p.payload, (p.src_ip, p.src_port)))
            if self.learn_macs:
                macs = self.builder.dst_macs
                if len(macs) > 65536:
                    macs.clear()
                macs[p.src_ip] = raw[6:12]
        self.frames_in += len(out)
        return out

    def send(self, payload: bytes, addr: Addr) -> None:
        try:
            frame = self.builder.build(payload, addr[0], addr[1])
        except FrameError:
            self.send_errors += 1
            return
        try:
            if self.link == "ether":
                self._send(frame)
            else:
                fam = 6 if frame[0] >> 4 == 6 else 4
                self.sock.sendto(frame, (self.interface, self._dgram_proto[fam]))
            self.frames_out += 1
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError:
            self.send_errors += 1

    def set_peer_flags(self, addr: Addr, flags: list[int] | None) -> None:
        self.builder.set_peer_flags((addr[0], addr[1]), flags)

    def close(self) -> None:
        self.sock.close()
