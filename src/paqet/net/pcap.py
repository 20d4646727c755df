"""libpcap backend (ctypes on the system's libpcap): for platforms without AF_PACKET, and
as upstream does it. Capture with immediate mode, direction "in", a BPF filter for our TCP
port compiled by libpcap itself, non-blocking reads drained per wakeup; send with
pcap_inject. Same interface as the AF_PACKET backend."""

from __future__ import annotations

import ctypes
import ctypes.util
import time

from paqet.net.backend import Addr, PacketBackend, random_port
from paqet.net.interface import interface_mac, link_type
from paqet.wire.frame import FrameBuilder, FrameError, parse_payload, parse_segment

PCAP_D_IN = 1
PCAP_ERRBUF_SIZE = 256
DLT_EN10MB = 1
DLT_IP = (12, 14, 101)  # DLT_RAW as BSDs, OpenBSD and Linux number it


class PcapError(OSError):
    pass


class _PktHdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


_lib = None


def libpcap():
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("pcap")
        for candidate in filter(None, (name, "libpcap.so.0.8", "libpcap.so.1", "libpcap.so")):
            try:
                _lib = ctypes.CDLL(candidate)
                break
            except OSError:
                continue
        else:
            raise PcapError("libpcap is not installed (apt-get install libpcap0.8)")
        L = _lib
        L.pcap_create.restype = ctypes.c_void_p
        L.pcap_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        for fn in ("pcap_activate", "pcap_get_selectable_fd", "pcap_datalink"):
            getattr(L, fn).argtypes = [ctypes.c_void_p]
        for fn, args in (("pcap_set_snaplen", [ctypes.c_void_p, ctypes.c_int]),
                         ("pcap_set_promisc", [ctypes.c_void_p, ctypes.c_int]),
                         ("pcap_set_timeout", [ctypes.c_void_p, ctypes.c_int]),
                         ("pcap_set_immediate_mode", [ctypes.c_void_p, ctypes.c_int]),
                         ("pcap_set_buffer_size", [ctypes.c_void_p, ctypes.c_int]),
                         ("pcap_setdirection", [ctypes.c_void_p, ctypes.c_int])):
            getattr(L, fn).argtypes = args
        L.pcap_setnonblock.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
        L.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                   ctypes.c_int, ctypes.c_uint32]
        L.pcap_setfilter.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram)]
        L.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        L.pcap_next_ex.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(_PktHdr)),
                                   ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))]
        L.pcap_inject.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        L.pcap_open_dead.restype = ctypes.c_void_p
        L.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        L.pcap_geterr.restype = ctypes.c_char_p
        L.pcap_geterr.argtypes = [ctypes.c_void_p]
        L.pcap_close.argtypes = [ctypes.c_void_p]
    return _lib


def _snaplen(interface: str) -> int:
    try:
        with open(f"/sys/class/net/{interface}/mtu") as f:
            mtu = int(f.read())
    except (OSError, ValueError):
        return 65536
    return min(4096, max(2048, mtu + 64))  # our frames: <= 1500-byte datagram + headers


class PcapBackend(PacketBackend):
    def __init__(self, interface: str, *, port: int = 0, src_ip4: str | None = None,
                 src_ip6: str | None = None, router_mac4: bytes | None = None,
                 router_mac6: bytes | None = None, local_flags: list[int] | None = None,
                 sockbuf: int = 4 << 20, start_ms: int | None = None,
                 learn_macs: bool = False) -> None:
        super().__init__()
        L = libpcap()
        self.interface = interface
        self.link = link_type(interface)
        self.local_port = port or random_port()
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        h = L.pcap_create(interface.encode(), err)
        if not h:
            raise PcapError(f"pcap_create({interface}): {err.value.decode(errors='replace')}")
        self._h = h
        try:
            # Upstream asks for 65536; libpcap then reserves a 64 KiB ring slot per frame, so a
            # 4 MiB buffer queues only ~60 frames and bursts are lost. Our frames never exceed
            # the MTU (a longer one would be a GRO'd kernel flow, not ours): slots of MTU size.
            L.pcap_set_snaplen(h, _snaplen(interface))
            L.pcap_set_promisc(h, 0)
            L.pcap_set_timeout(h, 100)
            L.pcap_set_immediate_mode(h, 1)
            L.pcap_set_buffer_size(h, sockbuf)
            if L.pcap_activate(h) < 0:
                raise PcapError(f"pcap_activate({interface}): {self._err()}")
            L.pcap_setdirection(h, PCAP_D_IN)
            dlt = L.pcap_datalink(h)
            if dlt == DLT_EN10MB:
                self.link = "ether"
            elif dlt in DLT_IP:
                self.link = "ip"
            prog = _BpfProgram()
            expr = f"tcp and dst port {self.local_port}".encode()
            if L.pcap_compile(h, ctypes.byref(prog), expr, 1, 0xFFFFFFFF) < 0:
                raise PcapError(f"pcap_compile: {self._err()}")
            try:
                if L.pcap_setfilter(h, ctypes.byref(prog)) < 0:
                    raise PcapError(f"pcap_setfilter: {self._err()}")
            finally:
                L.pcap_freecode(ctypes.byref(prog))
            if L.pcap_setnonblock(h, 1, err) < 0:
                raise PcapError(f"pcap_setnonblock: {err.value.decode(errors='replace')}")
            self._fd = L.pcap_get_selectable_fd(h)
        except BaseException:
            L.pcap_close(h)
            self._h = None
            raise
        self.builder = FrameBuilder(
            link=self.link, src_mac=interface_mac(interface), dst_mac=router_mac4 or b"\xff" * 6,
            src_ip4=src_ip4, src_ip6=src_ip6, src_port=self.local_port, local_flags=local_flags,
            start_ms=int(time.time() * 1000) if start_ms is None else start_ms,
            dst_mac6=router_mac6 or router_mac4 or b"\xff" * 6)
        self.learn_macs = learn_macs and self.link == "ether"
        #: network.tcp.mode handshake (net/handshake.py): parse_segment's items, empty too
        self.segments = False
        self._hdr = ctypes.POINTER(_PktHdr)()
        self._data = ctypes.POINTER(ctypes.c_ubyte)()
        self._L = L

    def _err(self) -> str:
        return (self._L if hasattr(self, "_L") else libpcap()).pcap_geterr(self._h).decode(errors="replace")

    def fileno(self) -> int:
        return self._fd

    def recv_batch(self, max_n: int = 256) -> list[tuple[bytes, Addr]]:
        out = []
        L, h = self._L, self._h
        hdr, data = self._hdr, self._data
        port, link = self.local_port, self.link
        parse = parse_segment if self.segments else parse_payload
        for _ in range(max_n):
            r = L.pcap_next_ex(h, ctypes.byref(hdr), ctypes.byref(data))
            if r != 1:
                break
            raw = ctypes.string_at(data, hdr.contents.caplen)
            item = parse(raw, link, port)
            if item is None:
                self.dropped += 1
                continue
            out.append(item)
            if self.learn_macs:
                self.builder.set_dst_mac(item[1][0], raw[6:12])
        self.frames_in += len(out)
        return out

    def send(self, payload: bytes, addr: Addr, flags: int | None = None,
             tcp: tuple[int, int, int, int] | None = None) -> None:
        """One frame; `flags` and `tcp` as AfPacketBackend.send (handshake mode)."""
        try:
            frame = self.builder.build(payload, addr[0], addr[1], flags, tcp)
        except (FrameError, OSError, ValueError):
            self.send_errors += 1
            return
        if self._L.pcap_inject(self._h, frame, len(frame)) < 0:
            self.send_errors += 1
        else:
            self.frames_out += 1

    def set_peer_flags(self, addr: Addr, flags: list[int] | None) -> None:
        self.builder.set_peer_flags((addr[0], addr[1]), flags)

    def close(self) -> None:
        if self._h:
            self._L.pcap_close(self._h)
            self._h = None
