"""Parsers for the string values of the configuration: addresses, MACs, TCP flag sets.
Pure syntax checks: nothing is resolved or looked up on the machine."""

from __future__ import annotations

import ipaddress
import re

FLAG_BITS = {"F": 0x001, "S": 0x002, "R": 0x004, "P": 0x008, "A": 0x010, "U": 0x020,
             "E": 0x040, "C": 0x080, "N": 0x100}


class ValueProblem(ValueError):
    pass


def split_host_port(s: str) -> tuple[str, int]:
    """Go's net.SplitHostPort + a numeric port: "host:port", "[v6]:port", ":port"."""
    if not isinstance(s, str) or ":" not in s:
        raise ValueProblem(f"missing port in address '{s}'")
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":":
            raise ValueProblem(f"malformed address '{s}' (IPv6 goes in brackets: [::1]:80)")
        host, port = s[1:end], s[end + 2:]
    else:
        host, _, port = s.rpartition(":")
        if ":" in host:
            raise ValueProblem(f"too many colons in address '{s}' (IPv6 goes in brackets)")
    if not port.isdigit():
        raise ValueProblem(f"invalid port '{port}' in '{s}'")
    p = int(port)
    if p > 65535:
        raise ValueProblem(f"port {p} out of range 0-65535 in '{s}'")
    return host, p


def parse_addr(s: str, *, need_port: bool = True, need_ip: bool = False,
               empty_host: bool = False) -> tuple[str, int]:
    """(host, port) of "host:port"; need_ip: the host must be an IP address (or, with
    empty_host, nothing at all)."""
    host, port = split_host_port(s)
    if need_port and not 1 <= port <= 65535:
        raise ValueProblem(f"port must be between 1-65535 in '{s}'")
    if need_ip and not (empty_host and not host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueProblem(f"'{host}' in '{s}' is not an IP address") from None
    elif host and not re.fullmatch(r"[A-Za-z0-9._\-:%]+", host):
        raise ValueProblem(f"invalid host '{host}' in '{s}'")
    return host, port


_MAC_RES = (
    re.compile(r"^([0-9a-fA-F]{2})([:-][0-9a-fA-F]{2}){5}$"),
    re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$"),
)


def parse_mac(s: str) -> bytes:
    if not isinstance(s, str) or not any(r.match(s) for r in _MAC_RES):
        raise ValueProblem(f"invalid MAC address '{s}' (expected aa:bb:cc:dd:ee:ff)")
    return bytes.fromhex(re.sub(r"[:\-.]", "", s))


def parse_flags(s: str) -> int:
    v = 0
    for ch in s:
        bit = FLAG_BITS.get(ch)
        if bit is None:
            raise ValueProblem(f"invalid TCP flag '{ch}' in '{s}' (letters F S R P A U E C N)")
        v |= bit
    return v


def flags_text(v: int) -> str:
    return "".join(ch for ch, bit in FLAG_BITS.items() if v & bit)


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z/]*)\s*")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2,
               "g": 1000 ** 3, "gb": 1000 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4,
               "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_BIT_UNITS = {"bit": 1 / 8, "kbit": 1000 / 8, "mbit": 1000 ** 2 / 8, "gbit": 1000 ** 3 / 8}


def parse_size(v, *, rate: bool = False) -> int:
    """Bytes from an integer or a size with a unit: "500kB", "20GB" (powers of 1000),
    "1GiB" (powers of 1024); with rate=True (bytes per second) also bits: "50Mbit", and an
    optional "/s". Raises ValueProblem."""
    if isinstance(v, bool):
        raise ValueProblem(f"invalid size {v!r}")
    if isinstance(v, int):
        if v < 0:
            raise ValueProblem(f"invalid size {v} (must not be negative)")
        return v
    m = _SIZE_RE.fullmatch(v) if isinstance(v, str) else None
    unit = m.group(2).lower() if m else ""
    if rate and unit.endswith("/s"):
        unit = unit[:-2]
    scale = _SIZE_UNITS.get(unit) or (_BIT_UNITS.get(unit) if rate else None)
    if m is None or scale is None:
        units = "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB" + (", kbit, Mbit, Gbit" if rate else "")
        raise ValueProblem(f"invalid {'rate' if rate else 'size'} {v!r} (a number of bytes, or "
                           f"with a unit: {units})")
    return int(float(m.group(1)) * scale)
