"""Raw frames as the Go paqet writes them: Ethernet II + IPv4/IPv6 + TCP carrying one
kcp-go datagram (../shared/spec/raw-packets.md), and a parser that extracts (source address,
ports, flags, payload) from captured frames and rejects everything else cheaply.

Field values follow upstream: IPv4 TOS / IPv6 traffic class 0xB8, TTL 64, DF, id 0, window
65535, NOP NOP TS options (SYN: MSS 1460, SACK-permitted, TS, NOP, WS 8), and seq/ack/TS
synthesised from the handle's start time and per-handle packet counter. Links without an
Ethernet header (tun, WireGuard, PPP) use IP-only frames (link="ip").
"""

from __future__ import annotations

import dataclasses
import socket
import struct

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PROTO_TCP = 6
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 1, 2, 4, 8, 16, 32, 64, 128, 256
M32 = 0xFFFFFFFF

_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_TS_OPT = struct.Struct("!BBBBII")          # NOP NOP kind len tsval tsecr
_SYN_OPT = struct.Struct("!BBHBBBBIIBBBB")  # MSS(4) SACKOK(2) TS(10) NOP WS(3)


class FrameError(ValueError):
    pass


def checksum(data: bytes, initial: int = 0) -> int:
    """Internet checksum. The sum of 16-bit words is the value mod 0xFFFF, so one big-int
    conversion does what a loop over words would."""
    if len(data) & 1:
        data += b"\0"
    s = (int.from_bytes(data, "big") + initial) % 0xFFFF
    return (~s) & 0xFFFF if s else 0


def _sum16(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


@dataclasses.dataclass
class ParsedFrame:
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    flags: int
    payload: bytes
    seq: int = 0
    ack: int = 0
    window: int = 0
    ttl: int = 0
    tos: int = 0


class FlagCycle:
    """Upstream's iterator: items[i mod n], i advancing on every packet."""

    __slots__ = ("items", "i")

    def __init__(self, items: list[int]) -> None:
        self.items = list(items) or [PSH | ACK]
        self.i = 0

    def next(self) -> int:
        v = self.items[self.i % len(self.items)]
        self.i += 1
        return v


class FrameBuilder:
    def __init__(self, *, link: str = "ether", src_mac: bytes = b"\0" * 6,
                 dst_mac: bytes = b"\0" * 6, src_ip4: str | None = None,
                 src_ip6: str | None = None, src_port: int = 0, local_flags: list[int] | None = None,
                 start_ms: int = 0) -> None:
        self.link = link
        self.src_mac, self.dst_mac = src_mac, dst_mac
        self.dst_mac6 = dst_mac
        self.src_ip4 = socket.inet_pton(socket.AF_INET, src_ip4) if src_ip4 else None
        self.src_ip6 = socket.inet_pton(socket.AF_INET6, src_ip6) if src_ip6 else None
        self.src_port = src_port
        self.flags = FlagCycle(local_flags or [PSH | ACK])
        self.peer_flags: dict[tuple[str, int], FlagCycle] = {}
        self.base = start_ms & M32
        self.counter = 0
        self._dst_cache: dict[str, tuple[int, bytes]] = {}
        #: per-destination next-hop MACs (learned from received frames); else dst_mac
        self.dst_macs: dict[str, bytes] = {}

    def set_peer_flags(self, addr: tuple[str, int], flags: list[int] | None) -> None:
        if flags:
            self.peer_flags[addr] = FlagCycle(flags)
        else:
            self.peer_flags.pop(addr, None)

    def _dst(self, ip: str) -> tuple[int, bytes]:
        c = self._dst_cache.get(ip)
        if c is None:
            if ":" in ip:
                a = socket.inet_pton(socket.AF_INET6, ip)
                if a[:12] == b"\0" * 10 + b"\xff\xff":
                    c = (4, a[12:])
                else:
                    c = (6, a)
            else:
                c = (4, socket.inet_pton(socket.AF_INET, ip))
            if len(self._dst_cache) > 4096:
                self._dst_cache.clear()
            self._dst_cache[ip] = c
        return c

    def build(self, payload: bytes, dst_ip: str, dst_port: int, flags: int | None = None) -> bytes:
        if flags is None:
            cyc = self.peer_flags.get((dst_ip, dst_port)) if self.peer_flags else None
            flags = (cyc or self.flags).next()
        self.counter = c = (self.counter + 1) & M32
        base = self.base
        tsval = (base + (c >> 3)) & M32
        if flags & SYN:
            seq = 1 + (c & 7)
            ackn = (seq + 1) if flags & ACK else 0
            opts = _SYN_OPT.pack(2, 4, 1460, 4, 2, 8, 10, tsval, 0, 1, 3, 3, 8)
            doff = 10
        else:
            seq = (base + (c << 7)) & M32
            ackn = (seq - (c & 0x3FF) + 1400) & M32
            opts = _TS_OPT.pack(1, 1, 8, 10, tsval, (tsval - (c % 200 + 50)) & M32)
            doff = 8
        ver, dst = self._dst(dst_ip)
        tcp_len = doff * 4 + len(payload)
        offbyte = (doff << 4) | ((flags >> 8) & 1)
        hdr = _TCP.pack(self.src_port, dst_port, seq, ackn, offbyte, flags & 0xFF, 65535, 0, 0) + opts
        if ver == 4:
            src = self.src_ip4
            if src is None:
                raise FrameError("no local IPv4 address configured")
            pseudo = src + dst + bytes((0, PROTO_TCP)) + tcp_len.to_bytes(2, "big")
        else:
            src = self.src_ip6
            if src is None:
                raise FrameError("no local IPv6 address configured")
            pseudo = src + dst + tcp_len.to_bytes(4, "big") + b"\0\0\0" + bytes((PROTO_TCP,))
        s = (_sum16(pseudo) + _sum16(hdr) + _sum16(payload)) % 0xFFFF
        csum = (~s) & 0xFFFF if s else 0
        hdr = hdr[:16] + csum.to_bytes(2, "big") + hdr[18:]
        if ver == 4:
            total = 20 + tcp_len
            iph = _IP4.pack(0x45, 0xB8, total, 0, 0x4000, 64, PROTO_TCP, 0, src, dst)
            iph = iph[:10] + checksum(iph).to_bytes(2, "big") + iph[12:]
            eth = (self.dst_macs.get(dst_ip) or self.dst_mac) + self.src_mac + b"\x08\x00"
        else:
            iph = _IP6.pack((6 << 28) | (0xB8 << 20), tcp_len, PROTO_TCP, 64, src, dst)
            eth = (self.dst_macs.get(dst_ip) or self.dst_mac6) + self.src_mac + b"\x86\xdd"
        if self.link == "ip":
            return b"".join((iph, hdr, payload))
        return b"".join((eth, iph, hdr, payload))


_ntop4 = socket.inet_ntop
AF4, AF6 = socket.AF_INET, socket.AF_INET6


def parse_frame(buf, link: str = "ether", want_port: int | None = None) -> ParsedFrame | None:
    """The TCP segment in a captured frame, or None for anything that is not an IPv4/IPv6
    TCP segment with a payload (and, if given, destination port `want_port`)."""
    n = len(buf)
    off = 0
    if link == "ether":
        if n < 14:
            return None
        et = (buf[12] << 8) | buf[13]
        off = 14
        if et == 0x8100 and n >= 18:  # one VLAN tag
            et = (buf[16] << 8) | buf[17]
            off = 18
    else:
        et = ETH_P_IP if n and buf[0] >> 4 == 4 else ETH_P_IPV6
    if et == ETH_P_IP:
        if n < off + 20 or buf[off] >> 4 != 4:
            return None
        ihl = (buf[off] & 0x0F) * 4
        if ihl < 20 or buf[off + 9] != PROTO_TCP:
            return None
        if ((buf[off + 6] << 8) | buf[off + 7]) & 0x3FFF:  # fragment (MF or offset)
            return None
        total = (buf[off + 2] << 8) | buf[off + 3]
        end = off + total if total else n
        if end > n or total and total < ihl:
            return None
        src = _ntop4(AF4, bytes(buf[off + 12:off + 16]))
        dst = _ntop4(AF4, bytes(buf[off + 16:off + 20]))
        ttl, tos = buf[off + 8], buf[off + 1]
        t = off + ihl
    elif et == ETH_P_IPV6:
        if n < off + 40 or buf[off] >> 4 != 6:
            return None
        nh = buf[off + 6]
        plen = (buf[off + 4] << 8) | buf[off + 5]
        end = off + 40 + plen
        if end > n:
            return None
        t = off + 40
        if nh == 0:  # hop-by-hop options
            if n < t + 8:
                return None
            nh = buf[t]
            t += (buf[t + 1] + 1) * 8
        if nh != PROTO_TCP:
            return None
        src = _ntop4(AF6, bytes(buf[off + 8:off + 24]))
        dst = _ntop4(AF6, bytes(buf[off + 24:off + 40]))
        ttl = buf[off + 7]
        tos = ((buf[off] & 0x0F) << 4) | (buf[off + 1] >> 4)
    else:
        return None
    if end - t < 20:
        return None
    sport, dport, seq, ackn, offb, fl, win, _cs, _urg = _TCP.unpack_from(buf, t)
    if want_port is not None and dport != want_port:
        return None
    doff = (offb >> 4) * 4
    if doff < 20 or t + doff > end:
        return None
    if end - t - doff <= 0:
        return None
    return ParsedFrame(src, sport, dst, dport, fl | ((offb & 1) << 8), bytes(buf[t + doff:end]),
                       seq, ackn, win, ttl, tos)
