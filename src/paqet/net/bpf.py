"""Classic BPF for the capture filter `tcp and dst port P` (what upstream hands libpcap),
assembled here so the AF_PACKET backend needs no libpcap; a libpcap-compiled equivalent for
cross-checks; a small interpreter for tests; and attaching a program to a socket.

Programs are lists of (code, jt, jf, k) as in `struct sock_filter`."""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_FILTER = 26
Insn = tuple[int, int, int, int]

# opcodes used (BPF_CLASS | BPF_SIZE | BPF_MODE / BPF_OP | BPF_SRC)
LD_H_ABS, LD_B_ABS, LD_H_IND = 0x28, 0x30, 0x48
LD_W_IND, LD_B_IND = 0x40, 0x50
LDX_B_MSH = 0xB1
ALU_AND_K, ALU_ADD_K, ALU_ADD_X, ALU_LSH_K, ALU_RSH_K = 0x54, 0x04, 0x0C, 0x64, 0x74
TAX = 0x07
JA, JEQ_K, JGT_K, JSET_K = 0x05, 0x15, 0x25, 0x45
RET_K = 0x06
ACCEPT = 0x40000  # bytes to keep: the whole frame
MAX_BLOCKED = 2560  # words in a block list (about 1.25 instructions each; the kernel allows 4096)
MAX_THROTTLED, MAX_PORTS = 8, 16  # throttled IPv4 sources, ports allowed per source
LD_W_ABS = 0x20
SKF_AD_RANDOM = 0xFFFFF000 + 56  # ancillary load: a random 32-bit number


def tcp_dst_port(port: int, link: str = "ether", block=(), throttle=None,
                 sample_mask: int = 63) -> list[Insn]:
    """`tcp and dst port P` for IPv4 (unfragmented or first fragment, any IHL) and IPv6
    (TCP as the first next header), as tcpdump compiles it. link="ip": frames start at the
    IP header (tun, WireGuard, PPP via SOCK_DGRAM) and the version nibble picks the family.

    block: 32-bit words (big-endian) that the first four payload bytes must not equal - the
    server's kernel-side replay block list (the nonce prefixes of datagrams being replayed;
    at most MAX_BLOCKED, searched as a binary tree).

    throttle: {IPv4 source: [source ports]} - sources flooding the port: only frames from
    the listed ports (their established sessions) pass, and of the others one in
    sample_mask + 1 (a random draw: 1/64 by default), so new sessions can still start."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    if link == "ether":
        e = 14
        head = [(LD_H_ABS, 0, 0, 12)]            # EtherType
        v6, v4 = 0x86DD, 0x0800
    elif link == "ip":
        e = 0
        head = [(LD_B_ABS, 0, 0, 0), (ALU_AND_K, 0, 0, 0xF0)]  # version nibble
        v6, v4 = 0x60, 0x40
    else:
        raise ValueError(f"unknown link type {link!r}")
    # Jump offsets are relative to the next instruction; the body is the same for both
    # link types, only the offsets of the loads move.
    body = [
        (JEQ_K, 0, 4, v6),
        (LD_B_ABS, 0, 0, e + 6),                  # IPv6 next header
        (JEQ_K, 0, 11, 6),
        (LD_H_ABS, 0, 0, e + 42),                 # TCP dst port after the fixed IPv6 header
        (JEQ_K, 8, 9, port),
        (JEQ_K, 0, 8, v4),
        (LD_B_ABS, 0, 0, e + 9),                  # IPv4 protocol
        (JEQ_K, 0, 6, 6),
        (LD_H_ABS, 0, 0, e + 6),                  # fragment offset
        (JSET_K, 4, 0, 0x1FFF),
        (LDX_B_MSH, 0, 0, e),                     # X = 4 * IHL
        (LD_H_IND, 0, 0, e + 2),                  # TCP dst port
        (JEQ_K, 0, 1, port),
        (RET_K, 0, 0, ACCEPT),
        (RET_K, 0, 0, 0),
    ]
    words = sorted({w & 0xFFFFFFFF for w in block})
    if not words and not throttle:
        return head + body
    if len(words) > MAX_BLOCKED:
        raise ValueError(f"at most {MAX_BLOCKED} blocked words")
    # The accepting return becomes a jump past the reject to the guard.
    body[-2] = (JA, 0, 0, 1)
    v4 = _throttle(throttle or {}, e, sample_mask)
    return head + body + _payload_word(link, e, v6, v4) + _tree(words)


def _throttle(throttle: dict, e: int, mask: int) -> list[Insn]:
    """Per throttled source IP: its listed ports pass, others one time in mask + 1; every
    passing jump lands at the end of the section, where the payload check starts."""
    if len(throttle) > MAX_THROTTLED:
        raise ValueError(f"at most {MAX_THROTTLED} throttled sources")
    blocks = [(int.from_bytes(socket.inet_aton(ip), "big"), sorted(set(ports))[:MAX_PORTS])
              for ip, ports in throttle.items()]
    if not blocks:
        return []
    total = 1 + sum(1 + 2 + len(ports) + 4 for _, ports in blocks)
    out: list[Insn] = [(LD_W_ABS, 0, 0, e + 12)]  # IPv4 source address
    for ipw, ports in blocks:
        out.append((JEQ_K, 0, 2 + len(ports) + 4, ipw))
        out += [(LDX_B_MSH, 0, 0, e), (LD_H_IND, 0, 0, e)]  # source port
        for p in ports:
            out.append((JEQ_K, total - len(out) - 1, 0, p))
        out += [(LD_W_ABS, 0, 0, SKF_AD_RANDOM), (ALU_AND_K, 0, 0, mask)]
        out.append((JEQ_K, total - len(out) - 1, 0, 0))
        out.append((RET_K, 0, 0, 0))
    assert len(out) == total and all(0 <= i[1] <= 255 and 0 <= i[2] <= 255 for i in out)
    return out


def _payload_word(link: str, e: int, v6: int, v4: list[Insn] = ()) -> list[Insn]:
    """A = the first 4 payload bytes of an IPv4/IPv6 TCP frame (the filter above already
    checked it is one); a frame too short to hold them is rejected by the load itself.
    `v4` runs first for IPv4 frames (the throttle section)."""
    fam = ([(LD_H_ABS, 0, 0, 12)] if link == "ether"
           else [(LD_B_ABS, 0, 0, 0), (ALU_AND_K, 0, 0, 0xF0)])
    v4 = list(v4)
    return fam + [
        (JEQ_K, 0, 6, v6),
        (LD_B_ABS, 0, 0, e + 40 + 12),            # IPv6: TCP data offset
        (ALU_RSH_K, 0, 0, 4),
        (ALU_LSH_K, 0, 0, 2),
        (ALU_ADD_K, 0, 0, 40),
        (TAX, 0, 0, 0),
        (JA, 0, 0, 6 + len(v4)),
    ] + v4 + [
        (LDX_B_MSH, 0, 0, e),                     # IPv4: X = IHL * 4
        (LD_B_IND, 0, 0, e + 12),                 # TCP data offset
        (ALU_RSH_K, 0, 0, 4),
        (ALU_LSH_K, 0, 0, 2),
        (ALU_ADD_X, 0, 0, 0),
        (TAX, 0, 0, 0),
        (LD_W_IND, 0, 0, e),                      # A = payload[0:4]
    ]


def _tree(words: list[int]) -> list[Insn]:
    """Reject when A is one of the sorted `words`, else accept: a binary search down to
    leaves of up to 16 words; every subtree ends in returns, so only the unconditional ja
    needs a long offset."""
    if len(words) <= 16:
        n = len(words)
        # jeq w_i: on a match jump over the rest and the accept to the reject
        return ([(JEQ_K, n - i, 0, w) for i, w in enumerate(words)]
                + [(RET_K, 0, 0, ACCEPT), (RET_K, 0, 0, 0)])
    mid = len(words) // 2
    left, right = _tree(words[:mid]), _tree(words[mid:])
    return [(JGT_K, 0, 1, words[mid - 1]), (JA, 0, 0, len(left))] + left + right


def pack(prog: list[Insn]) -> bytes:
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, prog: list[Insn]) -> None:
    """SO_ATTACH_FILTER (the kernel copies the program; our buffer may go afterwards)."""
    buf = ctypes.create_string_buffer(pack(prog))
    fprog = _SockFprog(len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def run(prog: list[Insn], pkt: bytes, random_value=0) -> int:
    """Interpret a classic BPF program (the subset tcpdump emits for port filters) on one
    packet: bytes to keep, 0 = rejected. Loads beyond the packet reject, as in the kernel.
    random_value: what the random ancillary load returns (a number or a function)."""
    a = x = 0
    pc = 0
    n = len(pkt)
    mem = [0] * 16
    for _ in range(4 * len(prog) + 4):
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls in (0x00, 0x01):  # LD / LDX
            size, mode = code & 0x18, code & 0xE0
            if cls == 0x01 and mode == 0xA0:  # ldxb 4*([k]&0xf)
                if k >= n:
                    return 0
                x = 4 * (pkt[k] & 0x0F)
                continue
            if mode == 0x00:  # imm
                v = k
            elif mode == 0x60:  # mem
                v = mem[k]
            elif mode == 0x80:  # len
                v = n
            elif mode == 0x20 and k >= 0xFFFFF000:  # ancillary data
                if k != SKF_AD_RANDOM:
                    raise ValueError(f"unsupported ancillary load {k:#x}")
                v = random_value() if callable(random_value) else random_value
            else:
                off = k + (x if mode == 0x40 else 0)
                w = {0x00: 4, 0x08: 2, 0x10: 1}[size]
                if off + w > n:
                    return 0
                v = int.from_bytes(pkt[off:off + w], "big")
            if cls == 0x00:
                a = v
            else:
                x = v
        elif cls == 0x02:  # ST
            mem[k] = a
        elif cls == 0x03:  # STX
            mem[k] = x
        elif cls == 0x04:  # ALU
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x50:
                a &= src
            elif op == 0x40:
                a |= src
            elif op == 0x00:
                a = (a + src) & 0xFFFFFFFF
            elif op == 0x10:
                a = (a - src) & 0xFFFFFFFF
            elif op == 0x60:
                a = (a << src) & 0xFFFFFFFF
            elif op == 0x70:
                a >>= src
            else:
                raise ValueError(f"unsupported ALU op {code:#x}")
        elif cls == 0x05:  # JMP
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # MISC: tax / txa
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise ValueError("BPF program did not return")


def compile_pcap(expr: str, link: str = "ether", snaplen: int = 65536) -> list[Insn]:
    """libpcap's own compilation of `expr` (pcap_open_dead + pcap_compile), for cross-checks
    and for platforms where we let libpcap filter."""
    from paqet.net.pcap import _BpfProgram, libpcap
    L = libpcap()
    dlt = 1 if link == "ether" else 12  # DLT_EN10MB, DLT_RAW
    h = L.pcap_open_dead(dlt, snaplen)
    if not h:
        raise OSError("pcap_open_dead failed")
    try:
        prog = _BpfProgram()
        if L.pcap_compile(h, ctypes.byref(prog), expr.encode(), 1, 0xFFFFFFFF) < 0:
            raise ValueError(f"pcap_compile({expr!r}): {L.pcap_geterr(h).decode(errors='replace')}")
        try:
            raw = ctypes.string_at(prog.bf_insns, prog.bf_len * 8)
        finally:
            L.pcap_freecode(ctypes.byref(prog))
    finally:
        L.pcap_close(h)
    return [struct.unpack_from("HBBI", raw, i * 8) for i in range(len(raw) // 8)]
