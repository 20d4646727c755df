"""Linux AF_PACKET backend: frames written straight onto the interface, captured with a
kernel BPF filter for our TCP port; our own outgoing frames are not delivered back
(PACKET_IGNORE_OUTGOING), and every ready frame is drained per wakeup.

Two sockets, like upstream's two pcap handles: the receive socket (protocol 0 until the
filter is attached, then bound to ETH_P_ALL) and a send-only socket (protocol 0: it never
queues anything). With checksum offload (default) the send socket has PACKET_VNET_HDR and
each frame carries a virtio-net header asking for CHECKSUM_PARTIAL: the NIC, or the kernel
in C when the device cannot, fills the TCP checksum, so Python never sums the payload."""

from __future__ import annotations

import mmap
import os
import platform
import socket
import struct
import time

from paqet.net import bpf
from paqet.net.backend import Addr, PacketBackend, random_port
from paqet.net.interface import interface_mac, link_type
from paqet.wire import frame as _frame
from paqet.wire.frame import (FrameBuilder, FrameError, parse_frame, parse_payload,  # noqa: F401
                              parse_segment)

RING_API = 2  # read(fd?, ..., segments): the _ring.c this module calls
try:  # the ring drained in one C call (setup.py builds it when a compiler is there)
    from paqet.net import _ring
except ImportError:
    _ring = None
if os.environ.get("PAQET_NO_RING_EXT") or getattr(_ring, "API", 0) != RING_API:
    _ring = None  # off, or a stale build of another call shape (the Python loop instead)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
TPACKET_V2 = 1
TP_STATUS_USER = 1
RING_FRAME = 2048
_T2 = struct.Struct("=4xIIHH")  # tpacket2_hdr: [status] len snaplen mac net
#: The ring is read without a memory barrier between a frame's status word and its data,
#: which is safe on x86's total store order only.
RING_ARCHES = ("x86_64", "AMD64", "i686", "i386")
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = bpf.SO_ATTACH_FILTER
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
RECV_SIZE = 2048
#: while a long burst of sends holds the loop, every STASH_EVERY-th send moves the frames
#: waiting in the RX ring to a userspace list (payloads of at most the ring's size in bytes:
#: a ring slot holds one frame of any size, the list only the payload), so the ring does
#: not overflow with the peers' ACKs before the reader runs again
STASH_EVERY = 32

def _bufsize(sock: socket.socket, size: int) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


class AfPacketBackend(PacketBackend):
    def __init__(self, interface: str, *, port: int = 0, src_ip4: str | None = None,
                 src_ip6: str | None = None, router_mac4: bytes | None = None,
                 router_mac6: bytes | None = None, local_flags: list[int] | None = None,
                 sockbuf: int = 4 << 20, start_ms: int | None = None,
                 learn_macs: bool = False, link: str | None = None,
                 csum_offload: bool = True, rx_ring: bool | None = None) -> None:
        super().__init__()
        self.interface = interface
        self.link = link or link_type(interface)
        self.local_port = port or random_port()
        kind = socket.SOCK_RAW if self.link == "ether" else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_PACKET, kind, 0)  # receives nothing yet
        self.tx = None
        try:
            bpf.attach(self.sock, bpf.tcp_dst_port(self.local_port, self.link))
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                self.ignores_outgoing = True
            except OSError:  # Linux < 4.20: recv_batch drops them by address instead
                self.ignores_outgoing = False
            _bufsize(self.sock, sockbuf)
            self._ring = None
            if rx_ring is None:
                rx_ring = platform.machine() in RING_ARCHES
            if rx_ring:
                self._setup_ring(sockbuf)
            self.sock.bind((interface, ETH_P_ALL))  # Python applies htons here
            self.sock.setblocking(False)
            self.tx = socket.socket(socket.AF_PACKET, kind, 0)
            _bufsize(self.tx, sockbuf)
            self.csum_offload = False
            if csum_offload:
                try:
                    self.tx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                    self.csum_offload = True
                except OSError:
                    pass
            self.tx.bind((interface, 0))
            self.tx.setblocking(False)
        except BaseException:
            self.sock.close()
            if self.tx is not None:
                self.tx.close()
            raise
        self.builder = FrameBuilder(
            link=self.link, src_mac=interface_mac(interface), dst_mac=router_mac4 or b"\xff" * 6,
            dst_mac6=router_mac6 or router_mac4 or b"\xff" * 6,
            src_ip4=src_ip4, src_ip6=src_ip6, src_port=self.local_port, local_flags=local_flags,
            start_ms=int(time.time() * 1000) if start_ms is None else start_ms,
            vnet=self.csum_offload)
        self._own = {a for a in (src_ip4, src_ip6) if a}
        self._stash: list = []
        self._stash_bytes = 0
        self._sends = 0
        #: called when frames were stashed during sends: the fd may no longer be readable,
        #: so the reader must be scheduled (set by the reader)
        self.on_stash = None
        self.kernel_frames = self.kernel_drops = 0
        self._recv = self.sock.recv
        self._send = self.tx.send
        self._sendto = self.tx.sendto
        self._proto = {4: (interface, 0x0800), 6: (interface, 0x86DD)}  # host order: Python converts
        # Without a configured router MAC, reply to whichever MAC a peer's frames came from.
        self.learn_macs = learn_macs and self.link == "ether"
        #: network.tcp.mode handshake (net/handshake.py sets it): recv_batch returns
        #: wire.frame.parse_segment's tuples (empty segments too)
        self.segments = False

    def _setup_ring(self, size: int) -> None:
        """PACKET_RX_RING (TPACKET_V2): the kernel copies captured frames into a ring shared
        with us, so draining costs no system call per frame (measured in bench/raw.py)."""
        # Our frames are at most a 1500-byte KCP datagram + headers (~1600 bytes) whatever
        # the interface MTU (lo: 65536); a slot of 2048 holds one with the tpacket header.
        fsize = RING_FRAME
        block = max(fsize, mmap.PAGESIZE, 1 << 16)
        nblocks = max(4, min(size, 256 << 20) // block)
        per_block = block // fsize
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING,
                                 struct.pack("IIII", block, nblocks, fsize, nblocks * per_block))
            self._ring = mmap.mmap(self.sock.fileno(), block * nblocks,
                                   mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            self._ring = None
            return
        self._fsize, self._fnum, self._ri = fsize, nblocks * per_block, 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _recv_ring(self, max_n: int) -> list[tuple[bytes, Addr]]:
        if _ring is not None and self.ignores_outgoing:
            b = self.builder
            out, self._ri, dropped, changed = _ring.read(
                self._ring, self._ri, self._fsize, self._fnum, max_n, self.link == "ether",
                -1 if self.local_port is None else self.local_port, _frame._src_names,
                b.dst_macs if self.learn_macs else None, self.segments)
            if dropped:
                self.dropped += dropped
            if changed:
                for ip, mac in changed:
                    b.set_dst_mac(ip, mac)
            self.frames_in += len(out)
            return out
        mm = self._ring
        fs, nfr, i = self._fsize, self._fnum, self._ri
        unpack = _T2.unpack_from
        port, link = self.local_port, self.link
        learn = self.learn_macs
        own = None if self.ignores_outgoing else self._own
        zero = b"\0\0\0\0"
        parse = parse_segment if self.segments else parse_payload
        out = []
        for _ in range(max_n):
            off = i * fs
            if not mm[off] & TP_STATUS_USER:
                break
            _len, snap, mac, net = unpack(mm, off)
            start = off + (mac if link == "ether" else net)
            raw = mm[start:start + snap]
            mm[off:off + 4] = zero  # hand the slot back to the kernel
            i = i + 1 if i + 1 < nfr else 0
            item = parse(raw, link, port)
            if item is None:
                self.dropped += 1
                continue
            if own is not None and item[1][0] in own:
                continue
            out.append(item)
            if learn:
                self.builder.set_dst_mac(item[1][0], raw[6:12])
        self._ri = i
        self.frames_in += len(out)
        return out

    def _stash_ring(self) -> None:
        """Move the frames waiting in the RX ring to the stash (during a burst of sends)."""
        mm = self._ring
        if not mm[self._ri * self._fsize] & TP_STATUS_USER:
            return
        if self._stash_bytes >= self._fsize * self._fnum:
            return
        st = self._stash
        was_empty = not st
        got = self._recv_ring(self._fnum)
        st.extend(got)
        self._stash_bytes += sum([len(item[0]) for item in got])
        if was_empty and st and self.on_stash is not None:
            self.on_stash()

    def recv_batch(self, max_n: int = 256) -> list[tuple[bytes, Addr]]:
        if self._ring is not None:
            st = self._stash
            if st:
                if len(st) <= max_n:
                    self._stash, self._stash_bytes = [], 0
                    return st
                out, self._stash = st[:max_n], st[max_n:]
                self._stash_bytes -= sum([len(item[0]) for item in out])
                return out
            return self._recv_ring(max_n)
        out = []
        recv = self._recv
        port = self.local_port
        link = self.link
        learn = self.learn_macs
        own = None if self.ignores_outgoing else self._own
        parse = parse_segment if self.segments else parse_payload
        for _ in range(max_n):
            try:
                raw = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ENETDOWN: the caller sees it as "nothing now"
                self.recv_errors += 1
                break
            item = parse(raw, link, port)
            if item is None:
                self.dropped += 1
                continue
            if own is not None and item[1][0] in own:
                continue
            out.append(item)
            if learn:
                self.builder.set_dst_mac(item[1][0], raw[6:12])
        self.frames_in += len(out)
        return out

    def send(self, payload: bytes, addr: Addr, flags: int | None = None,
             tcp: tuple[int, int, int, int] | None = None) -> None:
        """One frame; `flags` and `tcp` = (seq, ack, tsval, tsecr) are the handshake mode's
        (net/handshake.py; `payload` may then be empty), else upstream's values."""
        if self._ring is not None:
            self._sends += 1
            if self._sends >= STASH_EVERY:
                self._sends = 0
                self._stash_ring()
        try:
            frame = self.builder.header(payload, addr[0], addr[1], flags, self.csum_offload, tcp)
        except (FrameError, OSError, ValueError):  # no source for that family / bad address
            self.send_errors += 1
            return
        frame += payload
        try:
            if self.link == "ether":
                self._send(frame)
            else:
                off = 10 if self.csum_offload else 0
                self._sendto(frame, self._proto[6 if frame[off] >> 4 == 6 else 4])
            self.frames_out += 1
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError:
            self.send_errors += 1

    def set_peer_flags(self, addr: Addr, flags: list[int] | None) -> None:
        self.builder.set_peer_flags((addr[0], addr[1]), flags)

    def set_guard(self, block=(), throttle=None) -> None:
        """Tighten the kernel filter (the listener's flood guard; bpf.tcp_dst_port): drop
        frames whose payload starts with a `block` word (replays), and from each `throttle`
        source IPv4 address pass only its listed ports plus a random 1/64. The new
        program replaces the old one atomically; empty arguments restore the plain filter."""
        bpf.attach(self.sock, bpf.tcp_dst_port(self.local_port, self.link, block, throttle))

    def counters(self) -> dict:
        """Our counters plus the kernel's: frames that passed the filter and frames it
        dropped because the ring / socket buffer was full (read-and-reset in the kernel,
        accumulated here)."""
        try:
            packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self.kernel_frames += packets
            self.kernel_drops += drops
        except OSError:
            pass
        c = super().counters()
        c["kernel_frames"], c["kernel_drops"] = self.kernel_frames, self.kernel_drops
        return c

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self.sock.close()
        if self.tx is not None:
            self.tx.close()
