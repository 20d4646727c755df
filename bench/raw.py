"""Raw frame I/O cost over a veth pair between two namespaces: frames per second and µs per
frame for send (build + sendto) and receive (recv + filter + parse) with the AF_PACKET
backend (kernel-filled TCP checksum, and checksum summed in Python) and the libpcap backend,
next to a plain UDP socket pair measured in the same run. CPU time of the sending / receiving
process (process_time) per frame. Needs root.

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
if kind != "udp":
    from paqet.net.afpacket import AfPacketBackend
    from paqet.net.pcap import PcapBackend
    cls = PcapBackend if kind == "pcap" else AfPacketBackend
    kw = {"csum_offload": False} if kind == "afpacket-sum" else {}
    b = cls(iface, port=9999 if role == "recv" else 40000, src_ip4=me,
            router_mac4=bytes.fromhex(mac), sockbuf=32 << 20, **kw)
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


KINDS = ("udp", "afpacket", "afpacket-sum", "pcap")
LABELS = {"udp": "UDP socket pair (reference)", "afpacket": "AF_PACKET, kernel TCP checksum",
          "afpacket-sum": "AF_PACKET, checksum in Python", "pcap": "libpcap (ctypes)"}


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
        # As a deployment would (managed firewall): the kernels neither track nor answer
        # (RST) the raw frames; AF_PACKET sees them before netfilter.
        for ns, port in ((topo.server, 9999), (topo.client, 40000)):
            lab.nft(ns, "table inet rawbench {\n chain in {\n  type filter hook input priority 0; "
                        f"policy accept;\n  tcp dport {port} drop\n }}\n}}\n")
        mac_s = lab.mac(topo.server, topo.server_if).replace(":", "")
        script = f"/tmp/paqet-rawbench-{os.getpid()}.py"
        with open(script, "w") as f:
            f.write(WORKER)
        rows = {}
        for kind in KINDS:
            recv = lab.popen(topo.server, [PY, script, kind, "recv", topo.server_if, topo.server_ip4,
                                           topo.client_ip4, str(a.n), mac_s], stdout=-1, text=True)
            recv.stdout.readline()
            s = lab.run(topo.client, PY, script, kind, "send", topo.client_if, topo.client_ip4,
                        topo.server_ip4, str(a.n), mac_s, timeout=120)
            sr = json.loads(s.stdout)
            rr = json.loads(recv.communicate(timeout=60)[0])
            rows[kind] = (sr, rr)
        os.unlink(script)
    print(f"{a.n} frames of 1350 bytes, client namespace -> server namespace over a veth pair")
    print(f"{'':<34}{'send µs/frame':>14}{'send frames/s':>14}{'recv µs/frame':>14}"
          f"{'recv frames/s':>14}{'received':>10}")
    su, ru = rows["udp"]
    for kind, (sr, rr) in rows.items():
        got = max(1, rr["got"])
        print(f"{LABELS[kind]:<34}{sr['cpu'] / a.n * 1e6:>14.2f}{a.n / sr['wall']:>14.0f}"
              f"{rr['cpu'] / got * 1e6:>14.2f}{got / max(rr['wall'], 1e-9):>14.0f}{rr['got']:>10}")
    for kind, (sr, rr) in rows.items():
        if kind != "udp":
            print(f"CPU per frame {kind}/udp: send {sr['cpu'] / max(su['cpu'], 1e-9):.2f}x, receive "
                  f"{(rr['cpu'] / max(1, rr['got'])) / max(ru['cpu'] / max(1, ru['got']), 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
