"""Run inside the client namespace by tests/e2e/test_faults.py; prints one JSON line.

    faults_tool.py fetch SOCKSPORT HOST PORT SIZE SEED      -> {"bytes", "ok"} (sha256 checked)
    faults_tool.py push SOCKSPORT HOST PORT SECONDS         -> {"sent", "stalled_s"}
    faults_tool.py reset SOCKSPORT HOST PORT SIZE SEED      -> {"bytes", "end", "elapsed"}
    faults_tool.py forever SOCKSPORT HOST PORT              -> reads until killed

Targets are tests/e2e/soak_target.py's (blob, echo, stuck and resetting ports).
"""

import hashlib
import json
import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))
from paqet.proto.socks5 import encode_address  # noqa: E402
from soak_target import blob_chunks  # noqa: E402
from socks_tool import negotiate, read_reply  # noqa: E402


def connect(sport, host, port, timeout=20.0):
    s, _ = negotiate(sport)
    s.settimeout(timeout)
    s.sendall(b"\x05\x01\x00" + encode_address(host, port))
    code, _ = read_reply(s)
    if code != 0:
        raise ConnectionError(f"SOCKS5 reply {code}")
    return s


def fetch(sport, host, port, size, seed):
    want = hashlib.sha256()
    for c in blob_chunks(size, seed):
        want.update(c)
    s = connect(sport, host, port)
    s.sendall(f"{size} {seed}\n".encode())
    got = hashlib.sha256()
    n = 0
    while data := s.recv(1 << 16):
        got.update(data)
        n += len(data)
    s.close()
    return {"bytes": n, "ok": n == size and got.digest() == want.digest()}


def push(sport, host, port, seconds):
    """Send as fast as the proxy takes it for `seconds`; report how long sending stalled."""
    s = connect(sport, host, port)
    s.setblocking(False)
    block = b"\xa5" * 65536
    sent = 0
    t0 = last_progress = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            sent += s.send(block)
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.02)
    stalled = time.monotonic() - last_progress
    # gone with a reset: a FIN would wait behind the bytes still queued, which the stuck
    # target never takes (docs/reliability.md)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return {"sent": sent, "stalled_s": round(stalled, 2)}


def reset(sport, host, port, size, seed):
    s = connect(sport, host, port, timeout=30.0)
    s.sendall(f"{size} {seed}\n".encode())
    n = 0
    t0 = time.monotonic()
    end = "eof"
    try:
        while data := s.recv(1 << 16):
            n += len(data)
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        end = "hung"
    s.close()
    return {"bytes": n, "end": end, "elapsed": round(time.monotonic() - t0, 2)}


def forever(sport, host, port):
    s = connect(sport, host, port)
    s.sendall(b"0 7\n")
    print(json.dumps({"started": True}), flush=True)
    while s.recv(1 << 16):
        pass


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    sport, host, port = int(args[0]), args[1], int(args[2])
    if cmd == "fetch":
        out = fetch(sport, host, port, int(args[3]), int(args[4]))
    elif cmd == "push":
        out = push(sport, host, port, float(args[3]))
    elif cmd == "reset":
        out = reset(sport, host, port, int(args[3]), int(args[4]))
    elif cmd == "forever":
        forever(sport, host, port)
        return
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
