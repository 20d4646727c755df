"""Debian's kcptun (Go kcp-go + smux over UDP) as a real peer for interop tests and as the
speed yardstick. kcptun derives its key as PBKDF2-HMAC-SHA1(key, "kcp-go", 4096, 32) and
cuts it per cipher exactly as paqet does."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time

CIPHERS = ("aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5", "3des",
           "tea", "xtea", "xor", "sm4", "none")


def available() -> str | None:
    for exe in ("kcptun-server", "kcptun-client"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install kcptun)"
    return None


def kcptun_key(passphrase: str) -> bytes:
    """The 32 bytes kcptun hands to kcp-go (our DatagramCodec cuts them per cipher)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), b"kcp-go", 4096, 32)


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _common(crypt, key, mode, mtu, sndwnd, rcvwnd, fec, smuxver, extra):
    return ["--key", key, "--crypt", crypt, "--mode", mode, "--mtu", str(mtu),
            "--sndwnd", str(sndwnd), "--rcvwnd", str(rcvwnd), "--datashard", str(fec[0]),
            "--parityshard", str(fec[1]), "--nocomp", "--smuxver", str(smuxver), "--quiet",
            *extra]


class Kcptun:
    def __init__(self, argv: list[str], ns_prefix: list[str] | None = None) -> None:
        self.argv = (ns_prefix or []) + argv
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: {self.proc.stderr.read().decode()[-500:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server(listen: str, target: str, *, crypt="aes", key="interop", mode="fast3", mtu=1350,
           sndwnd=1024, rcvwnd=1024, fec=(0, 0), smuxver=2, extra=(), ns_prefix=None) -> Kcptun:
    return Kcptun(["kcptun-server", "-l", listen, "-t", target,
                   *_common(crypt, key, mode, mtu, sndwnd, rcvwnd, fec, smuxver, list(extra))],
                  ns_prefix)


def client(listen: str, remote: str, *, crypt="aes", key="interop", mode="fast3", mtu=1350,
           sndwnd=1024, rcvwnd=1024, fec=(0, 0), smuxver=2, conn=1, extra=(), ns_prefix=None) -> Kcptun:
    return Kcptun(["kcptun-client", "-l", listen, "-r", remote, "--conn", str(conn),
                   *_common(crypt, key, mode, mtu, sndwnd, rcvwnd, fec, smuxver, list(extra))],
                  ns_prefix)
