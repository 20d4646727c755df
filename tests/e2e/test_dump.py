"""`run_dump` on a veth in a namespace: upstream's view of frames sent at the port (IPv4 and
IPv6; other ports and our own frames not shown), and the decoded view of a real tunnel's
traffic in both directions with KCP headers."""

import re
import subprocess

import pytest

from paqetlab import PY, Paqet, client_config, curl, http_server, make_blob, server_config, tempdir, wait_port

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

DUMP = r'''
import json, sys, time
from paqet.net.dump import run_dump
iface, port, count, kw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
n = run_dump(iface, port, count=count, deadline=time.monotonic() + 20,
             on_open=lambda: print("open", file=sys.stderr, flush=True), **kw)
print("shown", n, flush=True)
'''

SEND = r'''
import sys
from paqet.net.afpacket import AfPacketBackend
iface, src4, src6, mac, dst4, dst6 = sys.argv[1:7]
b = AfPacketBackend(iface, port=40000, src_ip4=src4, src_ip6=src6,
                    router_mac4=bytes.fromhex(mac), router_mac6=bytes.fromhex(mac))
b.send(b"other port", (dst4, 9998))
b.send(b"PING", (dst4, 9999))
b.send(b"PING6", (dst6, 9999))
b.send(bytes(range(20)), (dst4, 9999))
b.close()
'''


def start_dump(lab, ns, iface, port, count, **kw):
    import json
    p = lab.popen(ns, [PY, "-c", DUMP, iface, str(port), str(count), json.dumps(kw)],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().strip() == "open"
    return p


def test_upstream_view_of_frames_at_the_port(lab):
    topo = lab.two_hosts()
    dump = start_dump(lab, topo.server, topo.server_if, 9999, 3, listen=":9999")
    mac = lab.mac(topo.server, topo.server_if).replace(":", "")
    lab.run(topo.client, PY, "-c", SEND, topo.client_if, topo.client_ip4, topo.client_ip6, mac,
            topo.server_ip4, topo.server_ip6)
    out, err = dump.communicate(timeout=30)
    blocks = out.split("--------------------------\n")
    assert out.endswith("shown 3\n"), (out, err)
    ts = r"\[\d\d:\d\d:\d\d\.\d{3}\]"
    assert re.fullmatch(ts + r" Packet: 198\.18\.0\.1:40000 -> :9999 \| Length: 4 bytes\n"
                        r"--- PAYLOAD \(HEX DUMP\) ---\n"
                        r"00000000  50 49 4e 47 {39}\|PING\|\n", blocks[0]), blocks[0]
    assert "Packet: [2001:2:0:1::1]:40000 -> :9999 | Length: 5 bytes" in blocks[1]
    assert "|PING6|" in blocks[1]
    assert "00000010  10 11 12 13" in blocks[2] and "Length: 20 bytes" in blocks[2]
    assert "other port" not in out


def test_decoded_view_of_a_live_tunnel_both_directions(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        make_blob(d, "blob", 64 << 10)
        http_server(lab, topo.server, d, bind="0.0.0.0")
        srv = Paqet(lab, topo.server, server_config(topo, block="aes", key="dump-key"), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        dump = start_dump(lab, topo.server, topo.server_if, 9999, 60, decoded=True,
                          direction="both", block="aes", key="dump-key")
        cli = Paqet(lab, topo.client, client_config(topo, block="aes", key="dump-key"), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/blob")
        assert r.stdout.startswith("200 65536"), r.stdout + r.stderr
        out, err = dump.communicate(timeout=30)
    assert out.endswith("shown 60\n"), (out[-2000:], err)
    lines = out.splitlines()
    ins = [x for x in lines if " IN  198.18.0.1:" in x and " > 198.18.0.2:9999 [PA]" in x]
    outs = [x for x in lines if " OUT 198.18.0.2:9999 > 198.18.0.1:" in x]
    assert ins and outs
    kcp = [x for x in lines if x.startswith("  kcp conv=0x")]
    assert any(" PUSH " in x for x in kcp) and any(" ACK " in x for x in kcp)
    assert len({x.split()[1] for x in kcp}) == 1  # one tunnel, one conv
    assert "not a datagram" not in out
