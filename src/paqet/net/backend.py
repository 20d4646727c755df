"""The one small interface every packet backend implements (AF_PACKET, libpcap, UDP)."""

from __future__ import annotations

import random

Addr = tuple[str, int]

CLIENT_PORT_RANGE = (32768, 65535)


def random_port() -> int:
    """Upstream's choice for port 0: 32768 + rand(32768)."""
    return random.randint(*CLIENT_PORT_RANGE)


class PacketBackend:
    """Datagrams in and out, addressed by (ip, port). Non-blocking: the asyncio layer
    watches fileno() and calls recv_batch() when it is readable."""

    local_port: int = 0

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.send_errors = 0
        self.recv_errors = 0

    def fileno(self) -> int:
        raise NotImplementedError

    def recv_batch(self, max_n: int = 256) -> list[tuple[bytes, Addr]]:
        raise NotImplementedError

    def send(self, payload: bytes, addr: Addr) -> None:
        raise NotImplementedError

    def set_peer_flags(self, addr: Addr, flags: list[int] | None) -> None:
        """Per-peer TCP flag list (PTCPF); meaningless for UDP."""

    def close(self) -> None:
        raise NotImplementedError

    def counters(self) -> dict:
        return {"frames_in": self.frames_in, "frames_out": self.frames_out,
                "dropped": self.dropped, "send_errors": self.send_errors,
                "recv_errors": self.recv_errors}
