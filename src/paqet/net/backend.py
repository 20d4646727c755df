"""The one small interface every packet backend implements (AF_PACKET, libpcap, UDP)."""

from __future__ import annotations

import errno
import random
import socket

Addr = tuple[str, int]

CLIENT_PORT_RANGE = (32768, 65535)


def random_port() -> int:
    """Upstream's choice for port 0: 32768 + rand(32768)."""
    return random.randint(*CLIENT_PORT_RANGE)


def reserve_port(port: int = 0, tries: int = 64) -> tuple[int, socket.socket | None]:
    """A port for raw TCP frames, held by a TCP socket bound to it (never listening) so the
    kernel gives it to no one else: not to another paqet client choosing at random (two
    sessions on one port would tear each other down at the server), nor as the ephemeral
    port of some local connection. Port 0 picks a free random one (upstream's range); a
    given port is held if it can be, else used as it is (None: nothing held)."""
    def bind(p: int) -> socket.socket | None:
        for fam, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
            try:
                s = socket.socket(fam, socket.SOCK_STREAM)
            except OSError:
                continue
            try:
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.bind((host, p))
                return s
            except OSError as exc:
                s.close()
                if exc.errno == errno.EADDRINUSE:
                    return None
        return None
    if port:
        return port, bind(port)
    for _ in range(tries):
        p = random_port()
        s = bind(p)
        if s is not None:
            return p, s
    return random_port(), None


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
