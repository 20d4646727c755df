"""The managed firewall in namespaces: the rules exist while paqet runs and are gone after a
clean stop (SIGINT), SIGTERM, an exception escaping the main loop, and SIGKILL followed by a
restart (stale cleanup); `firewall: manual` touches nothing; and with the rules (nftables or
the iptables fallback) the kernel answers frames at our port with no RST, while without them
it does (the contrast shows the count can fail)."""

import json
import signal
import subprocess

import pytest

from paqetlab import PY, Paqet, client_config, server_config, tempdir, wait_port

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def tables(lab, ns) -> list[str]:
    out = lab.run(ns, "nft", "list", "tables", "inet", check=False).stdout
    return [line.split()[2] for line in out.splitlines() if line.startswith("table inet paqet_")]


def ipt_chains(lab, ns) -> str:
    return lab.run(ns, "sh", "-c", "iptables-save; ip6tables-save", check=False).stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_rules_live_exactly_as_long_as_server_and_client(lab, sig):
    topo = lab.two_hosts()
    with tempdir() as d:
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        assert tables(lab, topo.server) == [f"paqet_9999_{srv.proc.pid}"]
        cli = Paqet(lab, topo.client, client_config(topo), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        ctabs = tables(lab, topo.client)
        assert len(ctabs) == 1 and ctabs[0].endswith(f"_{cli.proc.pid}"), ctabs
        port = int(ctabs[0].split("_")[1])
        assert 32768 <= port <= 65535  # the client's random local port
        rules = lab.run(topo.client, "nft", "list", "table", "inet", ctabs[0]).stdout
        assert f"elements = {{ {port} }}" in rules and "tcp dport @ports notrack" in rules
        assert cli.stop(sig) == 0 and srv.stop(sig) == 0
        assert tables(lab, topo.server) == [] and tables(lab, topo.client) == []


def test_sigkill_then_restart_removes_the_stale_table(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        srv.stop(sig=signal.SIGKILL)
        assert tables(lab, topo.server) == [f"paqet_9999_{srv.proc.pid}"]  # left behind
        srv2 = Paqet(lab, topo.server, server_config(topo), "server2", d)
        assert srv2.wait_log("listening for packets"), srv2.log()
        assert tables(lab, topo.server) == [f"paqet_9999_{srv2.proc.pid}"]
        assert "removed stale table" in srv2.log()
        assert srv2.stop() == 0
        assert tables(lab, topo.server) == []


def test_manual_firewall_touches_nothing(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        srv = Paqet(lab, topo.server, server_config(topo, firewall="manual"), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        assert tables(lab, topo.server) == [] and "PAQET_" not in ipt_chains(lab, topo.server)
        assert srv.stop() == 0


CRASH = r'''
import sys, time
from paqet.net.firewall import Firewall
Firewall(int(sys.argv[1]), "server", backend=sys.argv[2]).install()
print("installed", flush=True)
sys.stdin.readline()
raise RuntimeError("main loop crashed")
'''


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_an_exception_escaping_the_main_loop_removes_the_rules(lab, backend):
    topo = lab.two_hosts()
    p = lab.popen(topo.server, [PY, "-c", CRASH, "7777", backend], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "installed"
    if backend == "nft":
        assert tables(lab, topo.server) == [f"paqet_7777_{p.pid}"]
    else:
        assert f"PAQET_7777_{p.pid}" in ipt_chains(lab, topo.server)
    _, err = p.communicate("\n", timeout=20)
    assert "main loop crashed" in err and p.returncode == 1
    assert tables(lab, topo.server) == [] and "PAQET_" not in ipt_chains(lab, topo.server)


# -- no kernel RST for frames at our port ----------------------------------------------------

HOLD = r'''
import sys
from paqet.net.firewall import Firewall
fw = None
if sys.argv[2] != "none":
    fw = Firewall(int(sys.argv[1]), "server", backend=sys.argv[2])
    fw.install()
print("ready", flush=True)
sys.stdin.readline()
if fw:
    fw.remove()
'''

SEND = r'''
import sys, time
from paqet.net.afpacket import AfPacketBackend
iface, src4, src6, mac, dst4, dst6, port = sys.argv[1:8]
for flags in ([0x18], [0x10], [0x02]):   # PSH|ACK data, bare ACK, SYN: each draws an RST
    b = AfPacketBackend(iface, port=40000, src_ip4=src4, src_ip6=src6,
                        router_mac4=bytes.fromhex(mac), router_mac6=bytes.fromhex(mac),
                        local_flags=flags)
    for i in range(5):
        b.send(b"paqet-frame-%d" % i, (dst4, int(port)))
        b.send(b"paqet-frame-%d" % i, (dst6, int(port)))
    b.close()
time.sleep(0.5)
'''

COUNT = """table inet pqrst {
  counter rst4 { }
  counter rst6 { }
  chain pre { type filter hook prerouting priority -500; policy accept;
    meta nfproto ipv4 tcp sport %(port)d tcp flags & rst == rst counter name rst4
    meta nfproto ipv6 tcp sport %(port)d tcp flags & rst == rst counter name rst6
  }
}
"""


ARRIVED = """table inet pqrst {
  counter frames { }
  chain pre { type filter hook prerouting priority -500; policy accept;
    tcp dport %(port)d counter name frames
  }
}
"""


def _counter(lab, ns, name) -> int:
    out = lab.run(ns, "nft", "-j", "list", "counter", "inet", "pqrst", name).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return item["counter"]["packets"]
    raise AssertionError(out)


@pytest.mark.parametrize("backend", ["nft", "iptables", "none"])
def test_no_kernel_rst_for_frames_at_our_port(lab, backend):
    topo = lab.two_hosts()
    port = 9999
    lab.nft(topo.client, COUNT % {"port": port})  # RSTs arriving at the sender
    lab.nft(topo.server, ARRIVED % {"port": port})  # our frames arriving at the port
    holder = lab.popen(topo.server, [PY, "-c", HOLD, str(port), backend], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    mac = lab.mac(topo.server, topo.server_if).replace(":", "")
    lab.run(topo.client, PY, "-c", SEND, topo.client_if, topo.client_ip4, topo.client_ip6, mac,
            topo.server_ip4, topo.server_ip6, str(port))
    # the frames did arrive: the server namespace's kernel saw all 30 of them
    assert _counter(lab, topo.server, "frames") == 30
    rst4, rst6 = _counter(lab, topo.client, "rst4"), _counter(lab, topo.client, "rst6")
    holder.communicate("\n", timeout=20)
    if backend == "none":
        assert rst4 >= 10 and rst6 >= 10  # without the rules the kernel answers every frame
    else:
        assert (rst4, rst6) == (0, 0)
    assert tables(lab, topo.server) == [] and "PAQET_" not in ipt_chains(lab, topo.server)


def test_client_connections_share_one_table_with_every_port(lab):
    topo = lab.two_hosts()
    with tempdir() as d:
        srv = Paqet(lab, topo.server, server_config(topo), "server", d)
        assert srv.wait_log("listening for packets"), srv.log()
        cli = Paqet(lab, topo.client, client_config(topo, conn=3), "client", d)
        assert wait_port(lab, topo.client, 1080), cli.log()
        (table,) = tables(lab, topo.client)
        out = lab.run(topo.client, "nft", "-j", "list", "set", "inet", table, "ports").stdout
        elems = [item["set"].get("elem", []) for item in json.loads(out)["nftables"] if "set" in item][0]
        assert len(elems) == 3 and all(32768 <= p <= 65535 for p in elems), elems
        assert cli.stop() == 0
        assert tables(lab, topo.client) == []
