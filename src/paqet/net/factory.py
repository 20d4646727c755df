"""One entry point for every packet backend, taking plain parameters (no config objects)."""

from __future__ import annotations

import sys

from paqet.net.backend import PacketBackend, random_port

KINDS = ("auto", "afpacket", "pcap", "udp")


def open_backend(kind: str = "auto", *, interface: str | None = None, port: int = 0,
                 src_ip4: str | None = None, src_ip6: str | None = None,
                 router_mac4: bytes | None = None, router_mac6: bytes | None = None,
                 local_flags: list[int] | None = None, sockbuf: int = 4 << 20,
                 learn_macs: bool = False, link: str | None = None, csum_offload: bool = True,
                 host: str | None = None) -> PacketBackend:
    """kind: "afpacket" (Linux), "pcap" (libpcap, any platform), "udp" (plain UDP socket on
    `host`, default src_ip4 or src_ip6 or 127.0.0.1), or "auto" (AF_PACKET on Linux, else
    libpcap). port 0 = a random port in [32768, 65535], as upstream."""
    if kind not in KINDS:
        raise ValueError(f"unknown packet backend {kind!r} (one of {', '.join(KINDS)})")
    if kind == "auto":
        kind = "afpacket" if sys.platform.startswith("linux") else "pcap"
    if kind == "udp":
        from paqet.net.udp import UdpBackend
        return UdpBackend(host or src_ip4 or src_ip6 or "127.0.0.1", port, sockbuf=sockbuf)
    if not interface:
        raise ValueError(f"the {kind} backend needs an interface")
    port = port or random_port()
    common = dict(port=port, src_ip4=src_ip4, src_ip6=src_ip6, router_mac4=router_mac4,
                  router_mac6=router_mac6, local_flags=local_flags, sockbuf=sockbuf,
                  learn_macs=learn_macs)
    if kind == "pcap":
        from paqet.net.pcap import PcapBackend
        return PcapBackend(interface, **common)
    from paqet.net.afpacket import AfPacketBackend
    return AfPacketBackend(interface, link=link, csum_offload=csum_offload, **common)
