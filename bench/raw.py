"""Raw frame I/O cost over a veth pair between two namespaces: frames per second and µs per
frame for send (build + sendto) and receive (recv + filter + parse) with the AF_PACKET
backend, next to a plain UDP socket pair measured in the same run. Needs root.

    sudo .venv/bin/python bench/raw.py [--n 100000]
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import netlab  # noqa: E402

PY = sys.executable
WORKER = r'''
import json, select, socket, sys, time
kind, role, iface, me, peer, n, mac = sys.argv[1:8]
n = int(n)
payload = b"x" * 1350
if kind == "raw":
    from paqet.net.afpacket import AfPacketBackend
    b = AfPacketBackend(iface, port=9999 if role == "recv" else 40000, src_ip4=me,
                        router_mac4=bytes.fromhex(mac), sockbuf=32 << 20)
    send = lambda: b.send(payload, (peer, 9999))
    def recv_batch():
        return len(b.recv_batch(256))
    fd = b
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.bind((me, 9999 if role == "recv" else 40000))
    s.setblocking(False)
    send = lambda: s.sendto(payload, (peer, 9999))
    def recv_batch():
        k = 0
        for _ in range(256):
            try:
                s.recvfrom(2048)
            except BlockingIOError:
                break
            k += 1
        return k
    fd = s
if role == "send":
    time.sleep(1.0)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        send()
    print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
else:
    got = 0
    print("ready", flush=True)
    t0 = c0 = None
    end = time.time() + 30
    while got < n and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            if got:
                break
            continue
        if t0 is None:
            t0, c0 = time.perf_counter(), time.process_time()
        got += recv_batch()
    print(json.dumps({"got": got, "wall": time.perf_counter() - (t0 or 0),
                      "cpu": time.process_time() - (c0 or 0)}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    a = ap.parse_args()
    reason = netlab.available()
    if reason:
        print(f"bench: cannot run: {reason}", file=sys.stderr)
        return 1
    with netlab.NetLab() as lab:
        topo = lab.two_hosts()
        mac_s = lab.mac(topo.server, topo.server_if).replace(":", "")
        script = f"/tmp/paqet-rawbench-{os.getpid()}.py"
        with open(script, "w") as f:
            f.write(WORKER)
        rows = {}
        for kind in ("udp", "raw"):
            recv = lab.popen(topo.server, [PY, script, kind, "recv", topo.server_if, topo.server_ip4,
                                           topo.client_ip4, str(a.n), mac_s], stdout=-1, text=True)
            recv.stdout.readline()
            s = lab.run(topo.client, PY, script, kind, "send", topo.client_if, topo.client_ip4,
                        topo.server_ip4, str(a.n), mac_s, timeout=120)
            sr = json.loads(s.stdout)
            rr = json.loads(recv.communicate(timeout=60)[0])
            rows[kind] = (sr, rr)
        os.unlink(script)
    print(f"{'':<10}{'send µs/frame':>15}{'send frames/s':>15}{'recv µs/frame':>15}{'received':>10}")
    for kind, (sr, rr) in rows.items():
        label = "UDP socket" if kind == "udp" else "AF_PACKET"
        print(f"{label:<10}{sr['cpu'] / a.n * 1e6:>15.2f}{a.n / sr['wall']:>15.0f}"
              f"{rr['cpu'] / max(1, rr['got']) * 1e6:>15.2f}{rr['got']:>10}")
    (su, ru), (sr_, rr_) = rows["udp"], rows["raw"]
    print(f"ratio raw/udp CPU per frame: send {sr_['cpu'] / max(su['cpu'], 1e-9):.2f}x, "
          f"receive {(rr_['cpu'] / max(1, rr_['got'])) / max(ru['cpu'] / max(1, ru['got']), 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
