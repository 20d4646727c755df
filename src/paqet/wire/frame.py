"""Raw frames as the Go paqet writes them: Ethernet II + IPv4/IPv6 + TCP carrying one
kcp-go datagram (../shared/spec/raw-packets.md), and a parser that extracts (source address,
ports, flags, payload) from captured frames and rejects everything else cheaply.

Field values follow upstream: IPv4 TOS / IPv6 traffic class 0xB8, TTL 64, DF, id 0, window
65535, NOP NOP TS options (SYN: MSS 1460, SACK-permitted, TS, NOP, WS 8), and seq/ack/TS
synthesised from the handle's start time and per-handle packet counter. Links without an
Ethernet header (tun, WireGuard, PPP) use IP-only frames (link="ip").

Speed: everything that is constant per destination (Ethernet + IP header with addresses, the
TCP ports/window/option kinds, and the ones'-complement sums of those) is computed once and
cached; a frame is one copy of a header template, two `pack_into` calls and integer
arithmetic. The payload's checksum contribution is `int.from_bytes(payload) % 0xFFFF`
(2**16 = 1 mod 0xFFFF, so a big-integer remainder is the folded sum of 16-bit words). A
backend may skip even that: `header(..., partial=True)` leaves the pseudo-header sum in the
TCP checksum field for the kernel to complete (CHECKSUM_PARTIAL via a virtio-net header).
"""

from __future__ import annotations

import dataclasses
import socket
import struct

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PROTO_TCP = 6
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 1, 2, 4, 8, 16, 32, 64, 128, 256
M32 = 0xFFFFFFFF
TOS, TTL, WINDOW = 0xB8, 64, 65535

_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
# Variable parts, written into a copy of the per-destination template:
# (pad bytes would be written as zeros, so constants are packed again rather than skipped)
_IP4_VAR = struct.Struct("!HHHBBH")               # total length, id, DF, TTL, proto, checksum
_IP6_VAR = struct.Struct("!H")                    # payload length
_TCP_DATA = struct.Struct("!IIBBHHHBBBBII")       # seq ack off flags win csum urg NOP NOP 8 10 tsval tsecr
_TCP_SYN = struct.Struct("!IIBBHHH4s4sII4s")      # seq ack off flags win csum urg MSS SACKOK+TS tsval 0 NOP+WS
_MSS, _SACK_TS, _NOP_WS = bytes((2, 4, 0x05, 0xB4)), bytes((4, 2, 8, 10)), bytes((1, 3, 3, 8))
_SYN_OPTS = _MSS + _SACK_TS + bytes(8) + _NOP_WS
_DATA_OPTS = bytes((1, 1, 8, 10)) + bytes(8)
# Constant option words summed once (ones'-complement, before the timestamps).
_SUM_DATA_OPTS = 0x0101 + 0x080A
_SUM_SYN_OPTS = 0x0204 + 0x05B4 + 0x0402 + 0x080A + 0x0103 + 0x0308

#: virtio_net_hdr (little-endian on every Linux that runs this): flags, gso_type, hdr_len,
#: gso_size, csum_start, csum_offset. VIRTIO_NET_HDR_F_NEEDS_CSUM = 1.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size


class FrameError(ValueError):
    pass


def checksum(data, initial: int = 0) -> int:
    """Internet checksum of `data` (+ `initial`, an already-summed part). The sum of 16-bit
    words is the value mod 0xFFFF, so one big-int conversion does what a loop over words
    would (an odd length is padded: times 256)."""
    s = int.from_bytes(data, "big")
    if len(data) & 1:
        s <<= 8
    s = (s + initial) % 0xFFFF
    return (~s) & 0xFFFF if s else 0


def _sum16(data) -> int:
    s = int.from_bytes(data, "big")
    if len(data) & 1:
        s <<= 8
    return s % 0xFFFF


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

    __slots__ = ("items", "i", "n")

    def __init__(self, items: list[int]) -> None:
        self.items = list(items) or [PSH | ACK]
        self.n = len(self.items)
        self.i = 0

    def next(self) -> int:
        i = self.i
        self.i = i + 1
        return self.items[i % self.n]


class _Dest:
    """Everything about one destination (address, port) that does not change per packet:
    header templates and the ones'-complement sums of their constant words."""

    __slots__ = ("v6", "ip_len_off", "tcp_off", "data_tpl", "syn_tpl", "data_sum", "syn_sum",
                 "ip4_sum", "pseudo")

    def __init__(self, b: "FrameBuilder", ip: str, port: int) -> None:
        if not 0 <= port <= 0xFFFF:
            raise FrameError(f"port {port} out of range")
        v6, dst = _addr(ip)
        self.v6 = v6
        src = b.src_ip6 if v6 else b.src_ip4
        if src is None:
            raise FrameError(f"no local IPv{6 if v6 else 4} address configured")
        if b.link == "ether":
            mac = b.dst_macs.get(ip) or (b.dst_mac6 if v6 else b.dst_mac)
            eth = _ETH.pack(mac, b.src_mac, ETH_P_IPV6 if v6 else ETH_P_IP)
        else:
            eth = b""
        pre = (VNET_HDR_LEN if b.vnet else 0) + len(eth)
        if v6:
            iph = _IP6.pack((6 << 28) | (TOS << 20), 0, PROTO_TCP, TTL, src, dst)
            self.ip_len_off = pre + 4
            self.ip4_sum = 0
        else:
            iph = _IP4.pack(0x45, TOS, 0, 0, 0x4000, TTL, PROTO_TCP, 0, src, dst)
            self.ip_len_off = pre + 2
            self.ip4_sum = _sum16(iph)
        self.pseudo = _sum16(src + dst) + PROTO_TCP
        self.tcp_off = t = pre + len(iph)
        # virtio-net header: csum_start counts from the frame start, after this header
        lead = VNET_HDR.pack(1, 0, 0, 0, t - VNET_HDR_LEN, 16) if b.vnet else b""
        ports = struct.pack("!HH", b.src_port, port)
        # seq..checksum are written per frame; the rest of the template is final
        self.data_tpl = lead + eth + iph + ports + bytes(16) + _DATA_OPTS
        self.syn_tpl = lead + eth + iph + ports + bytes(16) + _SYN_OPTS
        const = self.pseudo + b.src_port + port + WINDOW
        self.data_sum = const + _SUM_DATA_OPTS + (8 << 12)
        self.syn_sum = const + _SUM_SYN_OPTS + (10 << 12)


def _addr(ip: str) -> tuple[bool, bytes]:
    if ":" in ip:
        a = socket.inet_pton(socket.AF_INET6, ip)
        if a[:12] == b"\0" * 10 + b"\xff\xff":
            return False, a[12:]
        return True, a
    return False, socket.inet_pton(socket.AF_INET, ip)


class FrameBuilder:
    """Builds upstream's frames for one handle (one local port): `build()` returns a whole
    frame; `header()` only the bytes before the payload (for scatter/gather sends)."""

    def __init__(self, *, link: str = "ether", src_mac: bytes = b"\0" * 6,
                 dst_mac: bytes = b"\0" * 6, src_ip4: str | None = None,
                 src_ip6: str | None = None, src_port: int = 0, local_flags: list[int] | None = None,
                 start_ms: int = 0, dst_mac6: bytes | None = None, vnet: bool = False) -> None:
        if link not in ("ether", "ip"):
            raise FrameError(f"unknown link type {link!r}")
        self.link = link
        self.src_mac, self.dst_mac = bytes(src_mac), bytes(dst_mac)
        self.dst_mac6 = bytes(dst_mac6) if dst_mac6 else self.dst_mac
        self.src_ip4 = socket.inet_pton(socket.AF_INET, src_ip4) if src_ip4 else None
        self.src_ip6 = socket.inet_pton(socket.AF_INET6, src_ip6) if src_ip6 else None
        self.src_port = src_port
        #: prefix every header with a virtio_net_hdr asking the kernel for the TCP checksum
        #: (header(partial=True) with a PACKET_VNET_HDR socket)
        self.vnet = vnet
        self.flags = FlagCycle(local_flags or [PSH | ACK])
        self.peer_flags: dict[tuple[str, int], FlagCycle] = {}
        self.base = start_ms & M32
        self.counter = 0
        self._dests: dict[tuple[str, int], _Dest] = {}
        #: per-destination next-hop MACs (learned from received frames); else dst_mac(6)
        self.dst_macs: dict[str, bytes] = {}

    def set_peer_flags(self, addr: tuple[str, int], flags: list[int] | None) -> None:
        if flags:
            self.peer_flags[addr] = FlagCycle(flags)
        else:
            self.peer_flags.pop(addr, None)

    def set_dst_mac(self, ip: str, mac: bytes) -> None:
        """Send frames for `ip` to `mac` from now on (a learned next hop)."""
        if self.dst_macs.get(ip) != mac:
            if len(self.dst_macs) >= 65536:
                self.dst_macs.clear()
                self._dests.clear()
            self.dst_macs[ip] = bytes(mac)
            for key in [k for k in self._dests if k[0] == ip]:
                del self._dests[key]

    def _dest(self, ip: str, port: int) -> _Dest:
        if len(self._dests) >= 4096:
            self._dests.clear()
        d = self._dests[(ip, port)] = _Dest(self, ip, port)
        return d

    def header(self, payload, dst_ip: str, dst_port: int, flags: int | None = None,
               partial: bool = False, tcp: tuple[int, int, int, int] | None = None) -> bytearray:
        """Everything before the payload. partial=True: the TCP checksum field holds only the
        pseudo-header sum, for the kernel (or NIC) to complete over header and payload.
        tcp=(seq, ack, tsval, tsecr): those values instead of upstream's synthetic ones
        (`network.tcp.mode: handshake`, wire/tcpflow.py keeps them; `payload` may then be
        empty). SYN frames carry the SYN options, the others NOP NOP timestamps."""
        if flags is None:
            cyc = self.peer_flags.get((dst_ip, dst_port)) if self.peer_flags else None
            flags = (cyc or self.flags).next()
        d = self._dests.get((dst_ip, dst_port)) or self._dest(dst_ip, dst_port)
        if tcp is None:
            self.counter = c = (self.counter + 1) & M32
            tsval = (self.base + (c >> 3)) & M32
            if flags & SYN:
                seq = 1 + (c & 7)
                ackn = (seq + 1) if flags & ACK else 0
                tsecr = 0
            else:
                seq = (self.base + (c << 7)) & M32
                ackn = (seq - (c & 0x3FF) + 1400) & M32
                tsecr = (tsval - (c % 200 + 50)) & M32
        else:
            seq, ackn, tsval, tsecr = tcp
        plen = len(payload)
        offb = (flags >> 8) & 1
        fl = flags & 0xFF
        # A 32-bit value adds to the ones'-complement sum as itself mod 0xFFFF (2**16 = 1).
        if flags & SYN:
            tcp_len = 40 + plen
            tpl, st = d.syn_tpl, _TCP_SYN
            if not partial:
                s = d.syn_sum + tcp_len + seq + ackn + (offb << 8) + fl + tsval + tsecr
        else:
            tcp_len = 32 + plen
            tpl, st = d.data_tpl, _TCP_DATA
            if not partial:
                s = d.data_sum + tcp_len + seq + ackn + (offb << 8) + fl + tsval + tsecr
        if partial:  # the kernel sums header and payload itself
            csum = (d.pseudo + tcp_len) % 0xFFFF
        else:
            s = (s + _sum16(payload)) % 0xFFFF
            csum = (~s) & 0xFFFF if s else 0
        h = bytearray(tpl)
        t = d.tcp_off
        if st is _TCP_DATA:
            st.pack_into(h, t + 4, seq, ackn, (8 << 4) | offb, fl, WINDOW, csum, 0, 1, 1, 8, 10,
                         tsval, tsecr)
        else:
            st.pack_into(h, t + 4, seq, ackn, (10 << 4) | offb, fl, WINDOW, csum, 0, _MSS,
                         _SACK_TS, tsval, tsecr, _NOP_WS)
        if d.v6:
            _IP6_VAR.pack_into(h, d.ip_len_off, tcp_len)
        else:
            total = 20 + tcp_len
            s4 = (d.ip4_sum + total) % 0xFFFF
            _IP4_VAR.pack_into(h, d.ip_len_off, total, 0, 0x4000, TTL, PROTO_TCP,
                               (~s4) & 0xFFFF if s4 else 0)
        return h

    def build(self, payload, dst_ip: str, dst_port: int, flags: int | None = None,
              tcp: tuple[int, int, int, int] | None = None) -> bytes:
        h = self.header(payload, dst_ip, dst_port, flags, False, tcp)
        h += payload
        return bytes(h)


_ntop = socket.inet_ntop
AF4, AF6 = socket.AF_INET, socket.AF_INET6
_TCPH = struct.Struct("!HHIIBBH")
_PORTS = struct.Struct("!HH")
_IP4H = struct.Struct("!BxHxxHxB")       # ver/ihl, total length, flags+fragment, protocol
_IP6H = struct.Struct("!B3xHB")           # version.., payload length, next header
_src_names: dict[bytes, str] = {}


def _name(raw: bytes) -> str:
    s = _src_names.get(raw)
    if s is None:
        if len(_src_names) >= 65536:
            _src_names.clear()
        s = _src_names[raw] = _ntop(AF4 if len(raw) == 4 else AF6, raw)
    return s


def _locate(buf, link: str, want_port: int | None):
    """(ip header offset, family 4|6, tcp offset, end, source port) of a TCP segment (to
    `want_port` unless None), or None. No VLAN tags, IPv4 fragments or IPv6 extension
    headers other than hop-by-hop, as upstream's decoder. The data offset is the caller's
    to check (whether an empty payload is accepted)."""
    n = len(buf)
    if link == "ether":
        if n < 54:  # 14 + 20 + 20
            return None
        et = (buf[12] << 8) | buf[13]
        off = 14
    else:
        if n < 40:
            return None
        v = buf[0] >> 4
        et = ETH_P_IP if v == 4 else ETH_P_IPV6 if v == 6 else 0
        off = 0
    if et == ETH_P_IP:
        vihl, total, frag, proto = _IP4H.unpack_from(buf, off)
        if vihl >> 4 != 4 or proto != PROTO_TCP or frag & 0x3FFF:
            return None
        ihl = (vihl & 0x0F) << 2
        if ihl < 20:
            return None
        end = off + total if total else n  # total length 0: TSO, use what was captured
        if end > n or (total and total < ihl):
            return None
        fam, t = 4, off + ihl
    elif et == ETH_P_IPV6:
        if n < off + 60:
            return None
        v, plen, nh = _IP6H.unpack_from(buf, off)
        if v >> 4 != 6:
            return None
        end = off + 40 + plen
        if end > n:
            return None
        t = off + 40
        if nh == 0:  # hop-by-hop options
            if end < t + 8:
                return None
            nh = buf[t]
            t += (buf[t + 1] + 1) * 8
        if nh != PROTO_TCP:
            return None
        fam = 6
    else:
        return None
    if end - t < 20:
        return None
    sport, dport = _PORTS.unpack_from(buf, t)
    if want_port is not None and dport != want_port:
        return None
    return off, fam, t, end, sport


def parse_frame(buf, link: str = "ether", want_port: int | None = None) -> ParsedFrame | None:
    """The TCP segment in a captured frame, or None for anything that is not an IPv4/IPv6
    TCP segment with a payload (and, if given, destination port `want_port`). Never raises
    for malformed input."""
    loc = _locate(buf, link, want_port)
    if loc is None:
        return None
    off, fam, t, end, sport = loc
    _, dport, seq, ackn, offb, fl, win = _TCPH.unpack_from(buf, t)
    doff = (offb >> 4) << 2
    if doff < 20 or t + doff >= end:
        return None
    if fam == 4:
        src = _ntop(AF4, bytes(buf[off + 12:off + 16]))
        dst = _ntop(AF4, bytes(buf[off + 16:off + 20]))
        ttl, tos = buf[off + 8], buf[off + 1]
    else:
        src = _ntop(AF6, bytes(buf[off + 8:off + 24]))
        dst = _ntop(AF6, bytes(buf[off + 24:off + 40]))
        ttl = buf[off + 7]
        tos = ((buf[off] & 0x0F) << 4) | (buf[off + 1] >> 4)
    return ParsedFrame(src, sport, dst, dport, fl | ((offb & 1) << 8), bytes(buf[t + doff:end]),
                       seq, ackn, win, ttl, tos)


def parse_payload(buf: bytes, link: str = "ether", want_port: int | None = None):
    """The backends' fast path: (payload, (src_ip, src_port)) of one of our frames, or None.
    Same acceptance rules as parse_frame; `buf` must be bytes (or bytes-like with slicing
    that returns bytes)."""
    loc = _locate(buf, link, want_port)
    if loc is None:
        return None
    off, fam, t, end, sport = loc
    doff = (buf[t + 12] >> 4) << 2
    if doff < 20 or t + doff >= end:
        return None
    if fam == 4:
        src = _name(buf[off + 12:off + 16])
    else:
        src = _name(buf[off + 8:off + 24])
    return buf[t + doff:end], (src, sport)


_SEQ_ACK_FL = struct.Struct("!IIBB")       # seq, ack, data offset, flags
_TS_OPT = struct.Struct("!II")
_NOP_NOP_TS = b"\x01\x01\x08\x0a"


def tcp_timestamps(buf, t: int, doff: int) -> tuple[int, int] | None:
    """(TSval, TSecr) of the TCP header at `t` with `doff` header bytes, or None. Our data
    frames carry NOP NOP TS first (one comparison); anything else walks the options."""
    if doff < 32:
        return None
    if buf[t + 20:t + 24] == _NOP_NOP_TS:
        return _TS_OPT.unpack_from(buf, t + 24)
    i, end = t + 20, t + doff
    while i < end:
        kind = buf[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            return None
        n = buf[i + 1]
        if n < 2 or i + n > end:
            return None
        if kind == 8 and n == 10:
            return _TS_OPT.unpack_from(buf, i + 2)
        i += n
    return None


def parse_segment(buf, link: str = "ether", want_port: int | None = None):
    """The handshake mode's receive path: (payload, (src_ip, src_port), flags, seq, ack,
    tsval, tsecr) of a TCP segment, or None. The acceptance rules of parse_payload except
    that an empty payload is accepted (SYN, ACK, FIN segments carry none); tsval and tsecr
    are -1 without a timestamp option."""
    loc = _locate(buf, link, want_port)
    if loc is None:
        return None
    off, fam, t, end, sport = loc
    seq, ackn, offb, fl = _SEQ_ACK_FL.unpack_from(buf, t + 4)
    doff = (offb >> 4) << 2
    if doff < 20 or t + doff > end:
        return None
    ts = tcp_timestamps(buf, t, doff)
    tsval, tsecr = ts if ts is not None else (-1, -1)
    src = _name(buf[off + 12:off + 16]) if fam == 4 else _name(buf[off + 8:off + 24])
    return (buf[t + doff:end], (src, sport), fl | ((offb & 1) << 8), seq, ackn, tsval, tsecr)
