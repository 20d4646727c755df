"""Run inside a namespace by the e2e tests: small SOCKS5/UDP clients that print one result.

    socks_tool.py rep SOCKSPORT HOST PORT [USER PASS]   -> SOCKS5 reply code (-1: auth refused)
    socks_tool.py udp SOCKSPORT HOST PORT N             -> answered UDP exchanges via ASSOCIATE
    socks_tool.py fwd LOCALPORT N                       -> answered exchanges via a UDP forward
    socks_tool.py cycles SOCKSPORT HOST PORT N          -> completed open/echo/close cycles
    socks_tool.py outcome SOCKSPORT HOST PORT           -> "REP END": the reply code, then how
        the connection ended after a request was sent (reset | eof | data)
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
from paqet.proto.socks5 import build_udp_header, encode_address, parse_udp_header  # noqa: E402


def negotiate(port, user=None, pw=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    if user is not None:
        s.sendall(b"\x05\x01\x02")
        assert s.recv(2) == b"\x05\x02"
        s.sendall(bytes((1, len(user))) + user.encode() + bytes((len(pw),)) + pw.encode())
        if s.recv(2) != b"\x01\x00":
            return s, False
    else:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
    return s, True


def read_reply(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    alen = {1: 4, 4: 16}.get(head[3]) or s.recv(1)[0]
    rest = b""
    while len(rest) < alen + 2:
        rest += s.recv(alen + 2 - len(rest))
    return head[1], rest


def rep(sport, host, port, user=None, pw=None):
    s, ok = negotiate(sport, user, pw)
    if not ok:
        return -1
    s.sendall(b"\x05\x01\x00" + encode_address(host, port))
    code, _ = read_reply(s)
    s.close()
    return code


def udp(sport, host, port, n):
    s, _ = negotiate(sport)
    s.sendall(b"\x05\x03\x00" + encode_address("0.0.0.0", 0))
    code, rest = read_reply(s)
    assert code == 0, code
    rport = int.from_bytes(rest[-2:], "big")
    rip = socket.inet_ntoa(rest[:4])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    ok = 0
    hdr = build_udp_header(host, port)
    for i in range(n):
        payload = os.urandom(64) + i.to_bytes(4, "big")
        u.sendto(hdr + payload, (rip, rport))
        try:
            data, _ = u.recvfrom(4096)
        except socket.timeout:
            continue
        if parse_udp_header(data)[4] == payload:
            ok += 1
    return ok


def fwd(lport, n):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    ok = 0
    for i in range(n):
        payload = os.urandom(64) + i.to_bytes(4, "big")
        u.sendto(payload, ("127.0.0.1", lport))
        try:
            data, _ = u.recvfrom(4096)
        except socket.timeout:
            continue
        ok += data == payload
    return ok


def cycles(sport, host, port, n):
    ok = 0
    for i in range(n):
        s, _ = negotiate(sport)
        s.sendall(b"\x05\x01\x00" + encode_address(host, port))
        code, _ = read_reply(s)
        if code == 0:
            msg = f"cycle {i}".encode()
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(100)
                if not chunk:
                    break
                got += chunk
            ok += got == msg
        s.close()
    time.sleep(0.5)
    return ok


def outcome(sport, host, port):
    s, _ = negotiate(sport)
    s.sendall(b"\x05\x01\x00" + encode_address(host, port))
    code, _ = read_reply(s)
    end = "-"
    if code == 0:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            end = "data" if s.recv(100) else "eof"
        except ConnectionResetError:
            end = "reset"
    s.close()
    return f"{code} {end}"


if __name__ == "__main__":
    cmd, *a = sys.argv[1:]
    if cmd == "rep":
        print(rep(int(a[0]), a[1], int(a[2]), *(a[3:5] if len(a) > 3 else ())))
    elif cmd == "udp":
        print(udp(int(a[0]), a[1], int(a[2]), int(a[3])))
    elif cmd == "fwd":
        print(fwd(int(a[0]), int(a[1])))
    elif cmd == "cycles":
        print(cycles(int(a[0]), a[1], int(a[2]), int(a[3])))
    elif cmd == "outcome":
        print(outcome(int(a[0]), a[1], int(a[2])))
