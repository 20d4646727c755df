"""Datagrams over a plain UDP socket: tests without root, and interop with kcptun (kcp-go
over UDP)."""

from __future__ import annotations

import errno
import socket

from paqet.net.backend import Addr, PacketBackend, random_port

RECV_SIZE = 2048


class UdpBackend(PacketBackend):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, sockbuf: int = 4 << 20,
                 family: int | None = None) -> None:
        super().__init__()
        if family is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, sockbuf)
            except OSError:
                pass
        if port == 0:
            for _ in range(64):
                try:
                    self.sock.bind((host, random_port()))
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
            else:
                self.sock.bind((host, 0))
        else:
            self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.local_port = self.sock.getsockname()[1]
        self.local_addr = self.sock.getsockname()[:2]
        self._recv = self.sock.recvfrom
        self._sendto = self.sock.sendto

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, max_n: int = 256) -> list[tuple[bytes, Addr]]:
        out = []
        recv = self._recv
        for _ in range(max_n):
            try:
                data, addr = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            out.append((data, (addr[0], addr[1])))
        self.frames_in += len(out)
        return out

    def send(self, payload: bytes, addr: Addr) -> None:
        try:
            self._sendto(payload, addr)
            self.frames_out += 1
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError:
            self.send_errors += 1

    def close(self) -> None:
        self.sock.close()
