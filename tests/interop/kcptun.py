"""Debian's kcptun (Go kcp-go v5 + smux over plain UDP) as a real peer for interop tests and
as the speed yardstick: start kcptun-server / kcptun-client on loopback with chosen
parameters, wait (bounded) until they have bound their sockets, stop them by PID; loopback
TCP echo/sink targets; and kcptun's key derivation, so our DatagramCodec can talk to it.

kcptun derives PBKDF2-HMAC-SHA1(key, salt "kcp-go", 4096 iterations, 32 bytes) and cuts it per
cipher exactly as paqet cuts its PBKDF2-HMAC-SHA256("paqet", 100000) key (docs/interop.md)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

#: the --crypt values this kcptun accepts (its help text), each with the paqet block name
#: that produces the same datagrams and the bytes of the 32-byte derived key it uses.
#: Any other value (also "null" and "aes-128-gcm", which newer kcptun versions know) makes
#: this version fall back to "aes" silently.
CRYPT_TO_BLOCK = {
    "aes": ("aes", 32), "aes-128": ("aes-128", 16), "aes-192": ("aes-192", 24),
    "salsa20": ("salsa20", 32), "blowfish": ("blowfish", 32), "twofish": ("twofish", 32),
    "cast5": ("cast5", 16), "3des": ("3des", 24), "tea": ("tea", 16), "xtea": ("xtea", 16),
    "xor": ("xor", 32), "sm4": ("sm4", 16), "none": ("none", 32),
}
CIPHERS = tuple(CRYPT_TO_BLOCK)
SALT = b"kcp-go"
ITERATIONS = 4096
#: kcptun's --mode presets: (nodelay, interval, resend, nc); "manual" uses hidden flags
MODES = {"normal": (0, 40, 2, 1), "fast": (0, 30, 2, 1), "fast2": (1, 20, 2, 1),
         "fast3": (1, 10, 2, 1)}
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def available() -> str | None:
    """None when both binaries are installed, else why not (for pytest.skip)."""
    for exe in ("kcptun-server", "kcptun-client"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install kcptun)"
    return None


def paqet_block(crypt: str) -> str:
    """The paqet block name whose datagrams match kcptun's --crypt `crypt`."""
    return CRYPT_TO_BLOCK.get(crypt, CRYPT_TO_BLOCK["aes"])[0]


def kcptun_key(passphrase: str, block: str | None = None) -> bytes:
    """The key bytes kcptun hands to kcp-go for --key `passphrase` and --crypt `block`
    (all 32 derived bytes when `block` is None). DatagramCodec(paqet_block(crypt), key)
    accepts either: it cuts raw key bytes per cipher the same way."""
    derived = hashlib.pbkdf2_hmac("sha1", passphrase.encode("utf-8"), SALT, ITERATIONS, 32)
    if block is None:
        return derived
    return derived[:CRYPT_TO_BLOCK.get(block, CRYPT_TO_BLOCK["aes"])[1]]


def free_port(kind=socket.SOCK_DGRAM) -> int:
    """A port that was free on 127.0.0.1 a moment ago (UDP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- readiness: has this PID bound the port? ---------------------------------------------------

def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def bound(pid: int, proto: str, port: int) -> bool:
    """Whether process `pid` owns a `proto` ("udp" or "tcp") socket on local `port` (TCP:
    listening), read from /proc in the process's own network namespace."""
    inodes = _socket_inodes(pid)
    if not inodes:
        return False
    for table in (proto, proto + "6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or int(cols[1].rsplit(":", 1)[1], 16) != port:
                continue
            if proto == "tcp" and cols[3] != "0A":      # TCP_LISTEN
                continue
            if cols[9] in inodes:
                return True
    return False


class Kcptun:
    """One kcptun process; `ready` waits until it has bound (proto, port)."""

    def __init__(self, argv: list[str], ready: tuple[str, int] | None = None,
                 ns_prefix: list[str] | None = None, timeout: float = READY_TIMEOUT) -> None:
        self.argv = (ns_prefix or []) + argv
        self.log = tempfile.TemporaryFile()     # a file, not a pipe: kcptun never blocks on it
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.pid = self.proc.pid
        self.ready = ready
        self.port = ready[1] if ready else None
        try:
            self._wait_ready(ready, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}: "
                                   f"{self.stderr()[-800:]}")
            if ready is None or bound(self.pid, *ready):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.argv[0]} did not bind {ready} within {timeout} s: "
                           f"{self.stderr()[-800:]}")

    def stderr(self) -> str:
        """kcptun's log so far (its startup lines list every parameter in effect)."""
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        """SIGTERM by PID, bounded wait, then SIGKILL."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        if not self.log.closed:
            self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _common(crypt, key, mode, mtu, sndwnd, rcvwnd, fec, smuxver, smuxbuf, streambuf,
            keepalive, dscp, manual, extra) -> list[str]:
    args = ["--key", key, "--crypt", crypt, "--mode", mode, "--mtu", str(mtu),
            "--sndwnd", str(sndwnd), "--rcvwnd", str(rcvwnd),
            "--datashard", str(fec[0]), "--parityshard", str(fec[1]),
            "--nocomp", "--smuxver", str(smuxver), "--smuxbuf", str(smuxbuf),
            "--streambuf", str(streambuf), "--keepalive", str(keepalive),
            "--dscp", str(dscp), "--quiet"]
    if manual is not None:      # --mode manual: (nodelay, interval, resend, nc)
        args += ["--nodelay", str(manual[0]), "--interval", str(manual[1]),
                 "--resend", str(manual[2]), "--nc", str(manual[3])]
    return args + list(extra)


# Defaults: paqet's (1350 mtu, 1024/1024 windows, fast mode, FEC off, smux v2 with 4 MiB /
# 2 MiB buffers) rather than kcptun's (FEC 10/3, smux v1, client windows 128/512), and a
# 2 s keepalive: kcptun's NOP interval must stay below our 8 s keepalive timeout (its own
# timeout is smux's fixed 30 s, far above our 2 s NOPs).
def server(listen: str, target: str, *, crypt="aes", key="interop", mode="fast", mtu=1350,
           sndwnd=1024, rcvwnd=1024, fec=(0, 0), smuxver=2, smuxbuf=4 << 20,
           streambuf=2 << 20, keepalive=2, dscp=0, manual=None, extra=(), ns_prefix=None,
           wait=True) -> Kcptun:
    """kcptun-server on UDP `listen` ("ip:port") relaying each smux stream to TCP `target`."""
    return Kcptun(["kcptun-server", "-l", listen, "-t", target,
                   *_common(crypt, key, mode, mtu, sndwnd, rcvwnd, fec, smuxver, smuxbuf,
                            streambuf, keepalive, dscp, manual, extra)],
                  ("udp", _host_port(listen)[1]) if wait else None, ns_prefix)


def client(listen: str, remote: str, *, crypt="aes", key="interop", mode="fast", mtu=1350,
           sndwnd=1024, rcvwnd=1024, fec=(0, 0), smuxver=2, smuxbuf=4 << 20,
           streambuf=2 << 20, keepalive=2, dscp=0, manual=None, conn=1, extra=(),
           ns_prefix=None, wait=True) -> Kcptun:
    """kcptun-client listening on TCP `listen`, each connection one smux stream over KCP/UDP
    to `remote`."""
    return Kcptun(["kcptun-client", "-l", listen, "-r", remote, "--conn", str(conn),
                   "--autoexpire", "0",
                   *_common(crypt, key, mode, mtu, sndwnd, rcvwnd, fec, smuxver, smuxbuf,
                            streambuf, keepalive, dscp, manual, extra)],
                  ("tcp", _host_port(listen)[1]) if wait else None, ns_prefix)


# -- loopback TCP targets ------------------------------------------------------------------------

class TcpTarget:
    """A TCP server on 127.0.0.1 (port 0 = any): "echo" sends every byte back, "sink" only
    counts bytes and hashes them per connection (`.received`: list of (count, sha256 hex) of
    finished connections). Threads, bounded by `timeout` per socket operation; `close()`
    (or leaving the `with`) stops it and joins every thread."""

    def __init__(self, mode: str = "echo", host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 60.0) -> None:
        if mode not in ("echo", "sink"):
            raise ValueError(f"mode must be echo or sink, not {mode!r}")
        self.mode, self.timeout = mode, timeout
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.addr = f"{host}:{self.port}"
        self.received: list[tuple[int, str]] = []
        self.errors: list[BaseException] = []
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        t = threading.Thread(target=self._accept, name=f"tcp-{mode}-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            c.settimeout(self.timeout)
            with self._lock:
                self.connections += 1
                self._conns.append(c)
                t = threading.Thread(target=self._serve, args=(c,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, c: socket.socket) -> None:
        h, n = hashlib.sha256(), 0
        try:
            while not self._stop.is_set():
                data = c.recv(1 << 16)
                if not data:
                    break
                n += len(data)
                if self.mode == "echo":
                    c.sendall(data)
                else:
                    h.update(data)
            if self.mode == "echo":
                c.shutdown(socket.SHUT_WR)
        except OSError as exc:
            if not self._stop.is_set():
                self.errors.append(exc)
        finally:
            c.close()
            with self._lock:
                self.received.append((n, h.hexdigest()))

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def exchange(addr: str, data: bytes, timeout: float = 60.0, chunk: int = 1 << 16) -> bytes:
    """Connect to `addr` ("ip:port"), send `data` while reading, half-close, and return
    everything read until EOF (or until len(data) bytes, for peers that do not close)."""
    host, port = _host_port(addr)
    got = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as c:
        err: list[BaseException] = []

        def send():
            try:
                for i in range(0, len(data), chunk):
                    c.sendall(data[i:i + chunk])
            except OSError as exc:
                err.append(exc)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        while len(got) < len(data) and time.monotonic() < deadline:
            b = c.recv(1 << 16)
            if not b:
                break
            got += b
        t.join(timeout)
        if err:
            raise err[0]
    return bytes(got)
