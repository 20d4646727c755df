"""The AF_PACKET and libpcap backends between two namespaces: frames sent in one are received, filtered
and decoded in the other (IPv4 and IPv6); our own frames and other ports are not
delivered; and with the managed firewall no kernel RST leaves either side."""

import json
import os

import pytest

from paqetlab import PY, Paqet, client_config, curl, http_server, make_blob, server_config, tempdir, wait_port

pytestmark = pytest.mark.root

SCRIPT = r'''
import json, sys, time, select
from paqet.net.afpacket import AfPacketBackend
from paqet.net.pcap import PcapBackend
role, iface, src4, src6, port, peer4, peer6, peer_port, mac, kind = sys.argv[1:11]
b = (PcapBackend if kind == "pcap" else AfPacketBackend)(iface, port=int(port), src_ip4=src4, src_ip6=src6,
                    router_mac4=bytes.fromhex(mac), router_mac6=bytes.fromhex(mac))
if role == "send":
    time.sleep(0.5)
    for i in range(20):
        b.send(b"v4-%d" % i, (peer4, int(peer_port)))
        b.send(b"v6-%d" % i, (peer6, int(peer_port)))
        b.send(b"other-%d" % i, (peer4, int(peer_port) + 1))
    time.sleep(0.3)
    got = b.recv_batch(1000)
    print(json.dumps({"own": len(got)}))
else:
    got = []
    end = time.time() + 4
    while time.time() < end and len(got) < 40:
        select.select([b], [], [], 0.2)
        got += [(p.decode(), a) for p, a in b.recv_batch(1000)]
    print(json.dumps({"got": got, "dropped": b.dropped}))
'''


@pytest.mark.parametrize("kind", ["afpacket", "pcap"])
def test_frames_cross_filtered_and_decoded(lab, tmp_path, kind):
    topo = lab.two_hosts()
    script = tmp_path / "b.py"
    script.write_text(SCRIPT)
    mac_s = lab.mac(topo.server, topo.server_if).replace(":", "")
    mac_c = lab.mac(topo.client, topo.client_if).replace(":", "")
    recv = lab.popen(topo.server, [PY, str(script), "recv", topo.server_if, topo.server_ip4,
                                   topo.server_ip6, "9999", topo.client_ip4, topo.client_ip6,
                                   "40000", mac_c, kind], stdout=-1, text=True)
    r = lab.run(topo.client, PY, str(script), "send", topo.client_if, topo.client_ip4,
                topo.client_ip6, "40000", topo.server_ip4, topo.server_ip6, "9999", mac_s, kind)
    assert json.loads(r.stdout)["own"] == 0  # our own outgoing frames are not delivered back
    out = json.loads(recv.communicate(timeout=20)[0])
    got = out["got"]
    v4 = [p for p, a in got if p.startswith("v4-")]
    v6 = [p for p, a in got if p.startswith("v6-")]
    assert len(v4) == 20 and len(v6) == 20
    assert not [p for p, _ in got if p.startswith("other")]  # the BPF filter kept them out
    assert {tuple(a) for p, a in got if p.startswith("v4")} == {(topo.client_ip4, 40000)}
    assert {tuple(a) for p, a in got if p.startswith("v6")} == {(topo.client_ip6, 40000)}


RSTCOUNT = """table inet rstcount {
  chain post { type filter hook postrouting priority 0; policy accept;
    oifname "%s" tcp flags & rst == rst counter
  }
}
"""


def _rsts(lab, ns):
    out = lab.run(ns, "nft", "-j", "list", "table", "inet", "rstcount").stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for e in rule["expr"]:
                if "counter" in e:
                    return e["counter"]["packets"]
    return 0


@pytest.mark.parametrize("firewall", ["managed", "manual"])
def test_no_kernel_rst_leaves_with_managed_rules(lab, firewall):
    topo = lab.two_hosts()
    for ns, ifname in ((topo.client, topo.client_if), (topo.server, topo.server_if)):
        lab.nft(ns, RSTCOUNT % ifname)  # RSTs that leave the namespace on the veth
    with tempdir() as d:
        make_blob(d, "blob", 10 << 20)
        http_server(lab, topo.server, d, bind="0.0.0.0")
        srv = Paqet(lab, topo.server, server_config(topo, firewall=firewall), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        cli = Paqet(lab, topo.client, client_config(topo, firewall=firewall), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        r = curl(lab, topo.client, f"http://{topo.server_ip4}:8000/blob")
        assert r.stdout.startswith("200 10485760"), r.stdout + r.stderr
        rsts = _rsts(lab, topo.client) + _rsts(lab, topo.server)
        if firewall == "managed":
            assert rsts == 0
        else:
            assert rsts > 0  # the contrast: without the rules the kernels do answer
