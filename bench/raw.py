"""Raw frame I/O cost over a veth pair between two namespaces: frames per second and µs per
frame for send (build + sendto) and receive (recv + filter + parse) with the AF_PACKET
backend (kernel-filled TCP checksum, and checksum summed in Python) and the libpcap backend,
next to a plain UDP socket pair measured in the same run. CPU time of the sending / receiving
process (process_time) per frame. Needs root.

    sudo .venv/bin/python bench/raw.py [--n 100000] [--burst 5000] [--repeat 3]

"drain" = the receive cost alone: frames queued while the receiver sleeps, then drained
without per-frame wakeups (libpcap's ring hands out at most one block per non-blocking
pass, so fewer frames survive there).
"""

import argparse
import json
import os
import sys
import time

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
    kw = {"afpacket-sum": {"csum_offload": False, "rx_ring": False},
          "afpacket-recv": {"rx_ring": False}}.get(kind, {})
    b = cls(iface, port=9999 if role != "send" else 40000, src_ip4=me,
            router_mac4=bytes.fromhex(mac), sockbuf=32 << 20, **kw)
    send = lambda: b.send(payload, (peer, 9999))
    def recv_batch():
        return len(b.recv_batch(256))
    fd = b
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE, as the raw backends
    s.bind((me, 9999 if role != "send" else 40000))
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
elif role == "drain":
    # Frames already queued (sender finished): the pure cost of draining them.
    print("ready", flush=True)
    sys.stdin.readline()
    t0, c0 = time.perf_counter(), time.process_time()
    got = 0
    for _ in range(100000):
        k = recv_batch()
        if not k and not select.select([fd], [], [], 0)[0]:
            break
        got += k
    print(json.dumps({"got": got, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
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


KINDS = tuple(os.environ.get("RAWBENCH_KINDS", "udp,afpacket,afpacket-recv,afpacket-sum,pcap").split(","))
LABELS = {"udp": "UDP socket pair (reference)",
          "afpacket": "AF_PACKET: kernel csum, RX ring",
          "afpacket-recv": "AF_PACKET: kernel csum, recv()",
          "afpacket-sum": "AF_PACKET: Python csum, recv()",
          "pcap": "libpcap (ctypes)"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--burst", type=int, default=5000, help="frames queued before a drain")
    ap.add_argument("--repeat", type=int, default=3)
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
        rows, drains = {k: [] for k in KINDS}, {k: [] for k in KINDS}
        for _ in range(a.repeat):  # interleaved, so a busy machine disturbs every kind alike
            for kind in KINDS:
                recv = lab.popen(topo.server, [PY, script, kind, "recv", topo.server_if,
                                               topo.server_ip4, topo.client_ip4, str(a.n), mac_s],
                                 stdout=-1, text=True)
                recv.stdout.readline()
                s = lab.run(topo.client, PY, script, kind, "send", topo.client_if, topo.client_ip4,
                            topo.server_ip4, str(a.n), mac_s, timeout=120)
                rows[kind].append((json.loads(s.stdout), json.loads(recv.communicate(timeout=60)[0])))
                drain = lab.popen(topo.server, [PY, script, kind, "drain", topo.server_if,
                                                topo.server_ip4, topo.client_ip4, str(a.burst), mac_s],
                                  stdin=-1, stdout=-1, text=True)
                drain.stdout.readline()
                lab.run(topo.client, PY, script, kind, "send", topo.client_if, topo.client_ip4,
                        topo.server_ip4, str(a.burst), mac_s, timeout=120)
                time.sleep(0.5)
                drains[kind].append(json.loads(drain.communicate("go\n", timeout=60)[0]))
        os.unlink(script)

    def per_frame(r, n):
        return r["cpu"] / max(1, n) * 1e6

    print(f"{a.n} frames of 1350 bytes, client namespace -> server namespace over a veth pair; "
          f"CPU µs per frame of the sending / receiving process, best of {a.repeat} interleaved runs")
    print(f"{'':<34}{'send µs/frame':>14}{'send frames/s':>14}{'recv µs/frame':>14}{'received':>10}"
          f"{'drain µs/frame':>15}{'drained':>8}")
    best = {}
    for kind in KINDS:
        send = min(per_frame(sr, a.n) for sr, _ in rows[kind])
        rate = max(a.n / sr["wall"] for sr, _ in rows[kind])
        recv = min(per_frame(rr, rr["got"]) for _, rr in rows[kind])
        got = min(rr["got"] for _, rr in rows[kind])
        drain = min(per_frame(d, d["got"]) for d in drains[kind])
        drained = min(d["got"] for d in drains[kind])
        best[kind] = (send, recv, drain)
        print(f"{LABELS[kind]:<34}{send:>14.2f}{rate:>14.0f}{recv:>14.2f}{got:>10}{drain:>15.2f}{drained:>8}")
    u = best["udp"]
    for kind in KINDS[1:]:
        b = best[kind]
        print(f"{kind} / udp CPU per frame: send {b[0] / u[0]:.2f}x, receive {b[1] / u[1]:.2f}x, "
              f"drain {b[2] / u[2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
